"""U-Net on magnitude spectrogram patches with soft time-frequency masking (Jansson et al.).

Reads like the paper: Jansson et al., "Singing voice separation with deep U-Net convolutional
networks", ISMIR 2017 (§3), as the Fusion-Net paper (Li, Qian, Hasegawa-Johnson and Akagi,
"Monaural singing voice separation using Fusion-Net with time-frequency masking", §II, Fig. 1,
eqs. (1)–(4)) uses it as its baseline:

- front end: mono audio at 8192 Hz, STFT with a 1024-sample Hann window and hop 768 (513 bins; the
  top, Nyquist, bin is dropped to get 512), magnitude patches of 512 bins × 128 frames (≈ 11.9 s);
- encoder: 6 strided (stride 2) 5×5 2-D convs with 16, 32, 64, 128, 256, 512 channels, each with
  batch norm and leaky ReLU 0.2 (512×128×1 → 8×2×512);
- decoder: 6 strided 5×5 transposed convs back to 512×128, batch norm, plain ReLU, dropout 0.5 on
  the first three; concatenation skips from the encoder layer of the same size; a sigmoid mask out;
- Li et al.'s two estimates ŷ1 (voice), ŷ2 (music), one network each, combined by the soft
  time-frequency mask ŷi / (ŷ1 + ŷ2) ⊙ X (eq. 2), and the mixture phase P = angle(X) put back
  before the iSTFT (eqs. 3–4).

The spectrogram glue (STFT, patches, masks, iSTFT) is :class:`SpectrogramMasker`, shared with
Fusion-Net (``sepcore.models.fusionnet``), which swaps only the network; :class:`ConvBlock2d` is
the conv/deconv + BN + activation unit both networks are made of.

Choices where the papers are silent:

- Stereo input is separated channel by channel with the same (monaural) network, as the papers
  downmix to mono; ``audio_channels: 1`` is the paper setting.
- The STFT is centred with zero padding (``center=True, pad_mode="constant"``) after the end is
  zero padded to a multiple of the hop, so any length, including T = 1, gives
  ``1 + ceil(T / hop)`` frames covering every sample; the iSTFT crops back to exactly T samples.
- Songs are cut into *non-overlapping* patches of ``patch_frames`` frames; the last one is padded
  with zero frames, which are dropped after the network. Outputs therefore depend on the patch
  grid (``receptive_field = None``): ``sepcore.separate`` cross-fades chunks of long songs.
- ``normalize``: each patch is divided by its largest magnitude before the network (Jansson et
  al. feed spectrograms scaled to [0, 1]); masks are applied to the unscaled mixture, so the model
  is gain-equivariant.
- The dropped Nyquist bin gets the mask of the bin below it, so soft masks sum to one over
  sources at every bin and the estimates sum to the mixture (as reconstructed by STFT → iSTFT).
- ``mask: soft`` is eq. (2) with a small ε added to every ŷi (masks stay a partition of one when
  all ŷi vanish); ``mask: sigmoid`` uses each network's sigmoid mask alone (Jansson et al.).
- ``shared_network: false`` builds one network per source (Li et al.'s two); ``true`` one network
  whose last layer has one output channel per source.
- Convolutions keep their biases (TensorFlow/Keras defaults of both reference implementations).
- Training goes through sepcore's trainer, whose loss (``train.loss``, e.g. ``l1``) is on the
  waveforms after the iSTFT rather than on magnitudes as eq. (1): the call contract keeps the
  trainer domain-free; the iSTFT is linear, so the waveform L1 still drives ŷ1, ŷ2 to the targets.

References: Jansson et al., ISMIR 2017, §3 and Fig. 1; Li et al. (Fusion-Net paper), §II-A/B,
eqs. (1)–(4), Table I.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from sepcore.errors import ConfigError
from sepcore.models import register
from sepcore.models.base import SeparationModel, float32

MASKS = ("soft", "sigmoid")
_EPS = 1e-8


@dataclass
class STFTConfig:
    """The magnitude-spectrogram front end (Jansson et al. 2017, §3; Li et al., Fig. 1)."""

    n_fft: int = 1024  # window length in samples; n_fft // 2 bins are kept (Nyquist dropped)
    hop: int = 768
    patch_frames: int = 128  # frames per network input patch
    normalize: bool = True  # divide each patch by its largest magnitude before the network


@dataclass
class UNetConfig:
    """Jansson et al.'s U-Net (the Fusion-Net paper's baseline). Defaults are the paper's sizes."""

    sources: list[str] = field(default_factory=lambda: ["vocals", "accompaniment"])
    audio_channels: int = 1
    sample_rate: int = 8192
    stft: STFTConfig = field(default_factory=STFTConfig)
    channels: list[int] = field(default_factory=lambda: [16, 32, 64, 128, 256, 512])
    kernel_size: int = 5
    leakiness: float = 0.2  # encoder leaky ReLU slope
    dropout: float = 0.5
    dropout_layers: int = 3  # the first decoder layers with dropout (never the last)
    mask: str = "soft"  # soft (Li et al. eq. 2) | sigmoid (Jansson et al.)
    shared_network: bool = False  # one network with S outputs instead of one per source


def check_spectrogram_config(cfg) -> None:
    """Raise ConfigError naming the key of an invalid setting common to the spectrogram U-Nets."""
    if cfg.audio_channels < 1:
        raise ConfigError(f"model.audio_channels must be >= 1, got {cfg.audio_channels}",
                          key="model.audio_channels")
    if not cfg.sources:
        raise ConfigError("model.sources must name at least one source", key="model.sources")
    if cfg.mask not in MASKS:
        raise ConfigError(f"model.mask = {cfg.mask!r}; choose from {list(MASKS)}",
                          key="model.mask")
    if cfg.mask == "soft" and len(cfg.sources) < 2:
        raise ConfigError(f"model.mask = 'soft' needs >= 2 sources (masks sum to one), got "
                          f"{list(cfg.sources)}", key="model.mask")
    st = cfg.stft
    if st.n_fft < 2 or st.n_fft % 2:
        raise ConfigError(f"model.stft.n_fft must be even and >= 2, got {st.n_fft}",
                          key="model.stft.n_fft")
    if not 1 <= st.hop < st.n_fft:
        raise ConfigError(f"model.stft.hop must be in [1, n_fft) = [1, {st.n_fft}), got "
                          f"{st.hop}", key="model.stft.hop")
    if not cfg.channels or min(cfg.channels) < 1:
        raise ConfigError(f"model.channels must be positive, got {list(cfg.channels)}",
                          key="model.channels")
    if cfg.kernel_size < 1 or cfg.kernel_size % 2 == 0:
        raise ConfigError(f"model.kernel_size must be odd, got {cfg.kernel_size}",
                          key="model.kernel_size")
    scale = 2 ** len(cfg.channels)
    for key, size in (("n_fft", st.n_fft // 2), ("patch_frames", st.patch_frames)):
        if size < scale or size % scale:
            raise ConfigError(
                f"model.stft.{key}: {size} {'bins' if key == 'n_fft' else 'frames'} must be a "
                f"multiple of 2**len(channels) = {scale}", key=f"model.stft.{key}")


# --- blocks --------------------------------------------------------------------------------------


class ConvBlock2d(nn.Module):
    """5×5 conv (or transposed conv) → batch norm → activation → dropout.

    Strided blocks halve (conv) or double (transposed conv) both axes exactly; stride-1 blocks keep
    the size. ``activation`` is ``"leaky"`` (encoders), ``"relu"`` (decoders) or ``None``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 5, stride: int = 1,
                 transposed: bool = False, activation: str | None = "relu",
                 leakiness: float = 0.2, dropout: float = 0.0, norm: bool = True):
        super().__init__()
        pad = kernel_size // 2
        if transposed:
            self.conv = nn.ConvTranspose2d(in_channels, out_channels, kernel_size, stride, pad,
                                           output_padding=stride - 1)
        else:
            self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, pad)
        self.norm = nn.BatchNorm2d(out_channels) if norm else nn.Identity()
        acts = {"leaky": lambda: nn.LeakyReLU(leakiness), "relu": nn.ReLU, None: nn.Identity}
        self.act = acts[activation]()
        self.drop = nn.Dropout(dropout) if dropout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, D_in, F, K)
        return self.drop(self.act(self.norm(self.conv(x))))  # (N, D_out, F', K')


class UNet2d(nn.Module):
    """Jansson et al.'s U-Net: (N, 1, F, K) magnitudes → (N, out_channels, F, K) sigmoid masks."""

    def __init__(self, cfg: UNetConfig, out_channels: int):
        super().__init__()
        ch, k = list(cfg.channels), cfg.kernel_size
        ins = [1, *ch[:-1]]
        self.encoder = nn.ModuleList(
            ConvBlock2d(i, o, k, stride=2, activation="leaky", leakiness=cfg.leakiness)
            for i, o in zip(ins, ch, strict=True))
        depth = len(ch)
        outs = [*reversed(ch[:-1]), out_channels]  # 256, 128, 64, 32, 16, S
        dec_ins = [ch[-1]] + [2 * c for c in reversed(ch[:-1])]  # 512, 512, 256, 128, 64, 32
        self.decoder = nn.ModuleList()
        for i, (c_in, c_out) in enumerate(zip(dec_ins, outs, strict=True)):
            last = i == depth - 1
            self.decoder.append(ConvBlock2d(
                c_in, c_out, k, stride=2, transposed=True, activation=None if last else "relu",
                dropout=cfg.dropout if i < cfg.dropout_layers and not last else 0.0,
                norm=not last))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, 1, F, K)
        skips = []
        for block in self.encoder:
            x = block(x)  # (N, D_l, F / 2**l, K / 2**l)
            skips.append(x)
        skips.pop()  # the bottleneck (N, 512, F/64, K/64) feeds the decoder directly
        for i, block in enumerate(self.decoder):
            if i:
                x = torch.cat([x, skips.pop()], dim=1)  # (N, 2·D, F', K')
            x = block(x)
        return torch.sigmoid(x)  # (N, out, F, K)


# --- the spectrogram glue shared with Fusion-Net -------------------------------------------------


@float32
def soft_masks(masks: torch.Tensor) -> torch.Tensor:
    """(N, S, F, K) network masks mi → Li et al.'s eq. (2) masks, in float32.

    ŷi / Σj ŷj with ŷi = mi ⊙ X: X cancels, leaving (mi + ε) / Σj (mj + ε) — in float32, where ε
    is not 0 (in fp16 it is, and masks that all vanish would give 0/0).
    """
    masks = masks + _EPS
    return masks / masks.sum(dim=1, keepdim=True)  # (N, S, F, K)


class SpectrogramMasker(SeparationModel):
    """STFT → magnitude patches → per-source networks → masks → mixture phase → iSTFT.

    Subclasses implement :meth:`build_network` (``(N, 1, F, K)`` magnitudes → ``(N, n, F, K)``
    masks in (0, 1)); everything else (Li et al., Fig. 1 and eqs. (2)–(4)) lives here.
    """

    def __init__(self, cfg):
        super().__init__()
        check_spectrogram_config(cfg)
        self.cfg = cfg
        num_sources = len(cfg.sources)
        if cfg.shared_network:
            self.networks = nn.ModuleList([self.build_network(num_sources)])
        else:  # Li et al.: one network per estimate ŷ1, ŷ2
            self.networks = nn.ModuleList(self.build_network(1) for _ in range(num_sources))
        self.register_buffer("window", torch.hann_window(cfg.stft.n_fft), persistent=False)

    def build_network(self, out_channels: int) -> nn.Module:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def frame_hop(self) -> int:
        return int(self.cfg.stft.hop)

    @property
    def receptive_field(self) -> int | None:
        return None  # outputs depend on the patch grid and the per-patch normalisation

    # maths ---------------------------------------------------------------------------------------
    @float32
    def stft(self, audio: torch.Tensor) -> torch.Tensor:
        """(M, T) real → (M, n_fft/2 + 1, 1 + ceil(T / hop)) complex, centred, zero padded.

        The end is zero padded to a multiple of ``hop`` first: with hop > n_fft / 2 (the paper's
        768 > 512) the last centred frame would otherwise not reach the final samples.
        """
        st = self.cfg.stft
        audio = F.pad(audio, (0, -audio.shape[-1] % st.hop))  # (M, hop · ceil(T / hop))
        return torch.stft(audio, st.n_fft, st.hop, window=self.window, center=True,
                          pad_mode="constant", return_complex=True)

    @float32
    def istft(self, spec: torch.Tensor, length: int) -> torch.Tensor:
        """(M, n_fft/2 + 1, K) complex → (M, length) real; inverts :meth:`stft`."""
        st = self.cfg.stft
        padded = length + (-length % st.hop)
        return torch.istft(spec, st.n_fft, st.hop, window=self.window, center=True,
                           length=padded)[..., :length]

    def patch_masks(self, patches: torch.Tensor) -> torch.Tensor:
        """(N, 1, F, K) magnitude patches → (N, S, F, K) masks (eq. 2 for ``mask: soft``)."""
        if self.cfg.stft.normalize:
            scale = patches.amax(dim=(2, 3), keepdim=True).clamp_min(_EPS)  # (N, 1, 1, 1)
            patches = patches / scale
        masks = torch.cat([net(patches) for net in self.networks], dim=1)  # (N, S, F, K)
        return soft_masks(masks) if self.cfg.mask == "soft" else masks.float()

    def masks(self, magnitude: torch.Tensor) -> torch.Tensor:
        """(M, F + 1, K) mixture magnitudes → (M, S, F + 1, K) masks, patch by patch."""
        m, bins, frames = magnitude.shape
        size = self.cfg.stft.patch_frames
        num = -(-frames // size)  # P patches, the last one zero padded
        x = F.pad(magnitude[:, :-1], (0, num * size - frames))  # (M, F, P·Kp), Nyquist dropped
        x = x.reshape(m, bins - 1, num, size).permute(0, 2, 1, 3)  # (M, P, F, Kp)
        masks = self.patch_masks(x.reshape(m * num, 1, bins - 1, size))  # (M·P, S, F, Kp)
        s = masks.shape[1]
        masks = masks.reshape(m, num, s, bins - 1, size).permute(0, 2, 3, 1, 4)  # (M,S,F,P,Kp)
        masks = masks.reshape(m, s, bins - 1, num * size)[..., :frames]  # (M, S, F, K)
        return torch.cat([masks, masks[:, :, -1:]], dim=2)  # (M, S, F + 1, K): Nyquist copies

    def forward(self, mixture: torch.Tensor) -> torch.Tensor:
        """(B, C, T) mixture → (B, S, C, T) estimates, channel by channel."""
        b, c, t = mixture.shape
        spec = self.stft(mixture.reshape(b * c, t).float())  # (B·C, F + 1, K) complex
        masks = self.masks(spec.abs())  # (B·C, S, F + 1, K)
        # Y ⊙ cos P + i Y ⊙ sin P with Y = mask ⊙ |X| and P = angle(X) (eqs. 3–4) = mask ⊙ X
        est = masks * spec.unsqueeze(1)  # (B·C, S, F + 1, K) complex
        s = est.shape[1]
        audio = self.istft(est.reshape(b * c * s, *est.shape[2:]), t)  # (B·C·S, T)
        return audio.reshape(b, c, s, t).permute(0, 2, 1, 3).to(mixture.dtype)  # (B, S, C, T)


class UNet(SpectrogramMasker):
    """Jansson et al.'s U-Net with Li et al.'s soft masking. ``forward``: (B, C, T) → (B, S, C, T).

    References: Jansson et al., ISMIR 2017, §3; Li et al., §II-B and Fig. 4 (the U-Net baseline).
    """

    def __init__(self, cfg: UNetConfig):
        if not 0.0 <= cfg.dropout < 1.0:
            raise ConfigError(f"model.dropout must be in [0, 1), got {cfg.dropout}",
                              key="model.dropout")
        if cfg.dropout_layers < 0:
            raise ConfigError(f"model.dropout_layers must be >= 0, got {cfg.dropout_layers}",
                              key="model.dropout_layers")
        super().__init__(cfg)

    def build_network(self, out_channels: int) -> nn.Module:
        return UNet2d(self.cfg, out_channels)


register("unet", UNetConfig, UNet)
