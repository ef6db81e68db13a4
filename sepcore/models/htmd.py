"""HTMD-Net: a hybrid time-domain masking-denoising separator (the HTMD-Net paper).

Garoufis, Zlatintsi & Maragos, "HTMD-Net: A Hybrid Masking-Denoising Approach to Time-Domain
Monaural Singing Voice Separation", EUSIPCO 2021 (slides "Overview" and "Network Parameters"):

- a **masking network**, "Conv-TasNet base architecture, 1 vertical stack, 9 dilated convolutional
  layers, Batch Normalization, LeakyReLU activation": :class:`~sepcore.models.convtasnet.ConvTasNet`
  with ``R = 1``, ``X = 9``, ``norm = BN``, ``activation = leakyrelu``, giving the intermediate
  estimate;
- a **denoising network**, "Wave-U-Net base architecture, amount of filters halved, LSTM placed in
  bottleneck, 12 downsampling/upsampling blocks": :class:`~sepcore.models.waveunet.UNet1d` with
  ``L = 12``, ``F_c = 12`` (half of Stoller's 24) and a bidirectional LSTM bottleneck, refining the
  intermediate estimate into the final one;
- **deep supervision**, "applying loss functions at multiple probe points": the trainer's
  ``train.aux_weight · train.aux_loss(intermediate) + train.loss_weight · train.loss(final)``
  (β·L_a + α·L_d; best song-wise SDR (MSE, MAE) with (β, α) = (1, 0.1), results table II).

Choices where the paper is silent (read from its slide deck; sizes from its parameter table, 4.5 M):

- masker sizes: Luo & Mesgarani's Conv-TasNet (TASLP 2019, Table best non-causal row) ``N = 512,
  L = 16, B = 128, H = 512, Sc = 128, P = 3``, as in the paper's Conv-TasNet* (5.5 M with
  ``X = 9, R = 3``), so the masking network is that model with one stack; sigmoid masks (Luo §II-C);
- the LSTM *replaces* Wave-U-Net's bottleneck conv: 2 bidirectional layers of ``F_c·(L+1)/2 = 78``
  units per direction, so its output width equals the conv it replaces. With one layer the total is
  4.32 M (−4 %), with the conv kept plus one LSTM layer 4.66 M (+3.6 %); two layers give 4.47 M;
- the denoiser reads only the intermediate estimate of each source (``condition_on_mixture = true``
  adds the mixture as extra input channels) and writes the final estimate with Wave-U-Net's own
  output layer (input concatenated, 1×1 conv, ``tanh``); one denoiser is shared by all sources.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from sepcore.errors import ConfigError
from sepcore.models import register
from sepcore.models.base import Separation, SeparationModel
from sepcore.models.convtasnet import ConvTasNet, ConvTasNetConfig, EncoderConfig, TCNConfig
from sepcore.models.waveunet import UNet1d, UNet1dConfig


def _htmd_encoder() -> EncoderConfig:
    return EncoderConfig(N=512, L=16, stride=8)


def _htmd_masker() -> TCNConfig:
    return TCNConfig(B=128, H=512, skip=128, P=3, X=9, R=1, norm="BN", activation="leakyrelu",
                     mask_nonlinear="sigmoid")


def _htmd_denoiser() -> UNet1dConfig:
    return UNet1dConfig(num_layers=12, num_filters=12, bottleneck_lstm_layers=2)


@dataclass
class HTMDConfig:
    sources: list[str] = field(default_factory=lambda: ["vocals"])
    audio_channels: int = 1
    sample_rate: int = 22050
    encoder: EncoderConfig = field(default_factory=_htmd_encoder)  # masking network
    masker: TCNConfig = field(default_factory=_htmd_masker)  # masking network
    denoiser: UNet1dConfig = field(default_factory=_htmd_denoiser)  # denoising network
    condition_on_mixture: bool = False  # denoiser input: estimate (False) or estimate ‖ mixture


class HTMDNet(SeparationModel):
    """Masking network → intermediate estimate → denoising network → final estimate.

    ``forward(mixture (B, C, T)) -> (B, S, C, T)`` is the final estimate; ``separate`` also returns
    the masking network's estimate as ``intermediate["masking"]`` for deep supervision.
    References: Garoufis et al., EUSIPCO 2021, slides "Overview", "Network Parameters", results.
    """

    has_intermediate = True

    def __init__(self, cfg: HTMDConfig):
        super().__init__()
        self.cfg = cfg
        if cfg.audio_channels < 1 or not cfg.sources:
            raise ConfigError("model needs audio_channels >= 1 and at least one source",
                              key="model.sources")
        self.masking = ConvTasNet(ConvTasNetConfig(
            sources=list(cfg.sources), audio_channels=cfg.audio_channels,
            sample_rate=cfg.sample_rate, encoder=cfg.encoder, masker=cfg.masker))
        channels = cfg.audio_channels
        in_channels = 2 * channels if cfg.condition_on_mixture else channels
        try:
            self.denoising = UNet1d(in_channels, channels, cfg.denoiser)
        except ConfigError as exc:
            key = (exc.key or "").replace("model.unet", "model.denoiser")
            raise ConfigError(str(exc).replace("model.unet", "model.denoiser"), key=key) from None

    # contract ------------------------------------------------------------------------------------
    @property
    def frame_hop(self) -> int:
        return math.lcm(self.masking.frame_hop, self.denoising.hop)

    @property
    def receptive_field(self) -> int | None:
        masking, denoising = self.masking.receptive_field, self.denoising.receptive_field
        if masking is None or denoising is None:
            return None  # gLN or the bottleneck LSTM see the whole input
        return masking + denoising  # spans of the two stages in series (conservative)

    def valid_length(self, length: int) -> int:
        n = length
        while True:  # smallest length both stages take without padding
            m = self.denoising.valid_length(self.masking.valid_length(n))
            if m == n:
                return n
            n = m

    # maths ---------------------------------------------------------------------------------------
    def separate(self, mixture: torch.Tensor) -> Separation:
        """Final and intermediate estimates, each (B, S, C, T), of a mixture (B, C, T)."""
        intermediate = self.masking(mixture)  # (B, S, C, T)
        batch, sources, channels, length = intermediate.shape
        x = intermediate.reshape(batch * sources, channels, length)  # (B·S, C, T)
        if self.cfg.condition_on_mixture:
            mix = mixture.unsqueeze(1).expand(batch, sources, channels, length)
            mix = mix.reshape(batch * sources, channels, length)  # (B·S, C, T)
            x = torch.cat([x, mix], dim=1)  # (B·S, 2C, T)
        final = self.denoising(x).view(batch, sources, channels, length)  # (B, S, C, T)
        return Separation(estimate=final, intermediate={"masking": intermediate})

    def forward(self, mixture: torch.Tensor) -> torch.Tensor:
        return self.separate(mixture).estimate  # (B, S, C, T)


register("htmd", HTMDConfig, HTMDNet)
