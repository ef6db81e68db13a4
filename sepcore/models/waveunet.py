"""Wave-U-Net: a 1-D U-Net on raw waveforms (Stoller, Ewert & Dixon, ISMIR 2018).

Reads like the paper (Stoller et al. 2018, §3 and Fig. 1; the reference implementation
``Models/UnetAudioSeparator.py`` of github.com/f90/Wave-U-Net):

- ``L`` down-sampling blocks: ``Conv1d(kernel f_d = 15)`` with ``F_c · (i + 1)`` filters +
  LeakyReLU (slope 0.2, Stoller's ``Utils.LeakyReLU``); the block output is kept as a skip, then
  decimated by 2 (every other sample);
- a bottleneck ``Conv1d(f_d)`` with ``F_c · (L + 1)`` filters + LeakyReLU (or, for HTMD-Net's
  denoiser, Garoufis et al., EUSIPCO 2021, an LSTM, see :class:`UNet1dConfig`);
- ``L`` up-sampling blocks: ×2 interpolation (``linear``, or ``learned``: Stoller §3.2.2, one weight
  in [0, 1] per feature), concatenation with the skip of the same level, ``Conv1d(f_u = 5)`` with
  ``F_c · (L − i)`` filters + LeakyReLU;
- the input concatenated to the last features and a 1×1 conv per source with ``tanh`` output
  (Stoller's default ``output_activation``; the HTMD-Net paper does not say what its baseline used,
  so the reference default is kept; ``linear`` is the option).

The HTMD-Net paper (Garoufis, Zlatintsi & Maragos, EUSIPCO 2021; results and runtime tables)
compares against a Wave-U-Net of 10.3 M parameters on mono 22.05 kHz MUSDB18 vocals: ``L = 12``,
``F_c = 24`` (Stoller's M4/M5 size) gives 10,263,002 parameters for one mono source, see
``configs/paper/waveunet.yaml``.

Two paddings (``padding``):

- ``same`` (default): zero-padded convolutions; the input is padded on the right to a multiple of
  ``2**L`` so every decimation halves exactly, and the output is cropped back. Any length works;
  outputs depend on the decimation phase, so ``frame_hop = 2**L``.
- ``valid``: Stoller's "proper input context" (§3.2.3, models M3–M7): unpadded convolutions,
  upsampling to ``2W − 1`` samples, centre-cropped skips; the mixture is zero-padded by the needed
  context on both sides and the output cropped to the input length.

Choices where the paper is silent for a PyTorch form: the per-source 1×1 output convs are one conv
with ``S · C`` outputs (identical parameters); Stoller's "difference" output layer (last source =
mixture − the others) is not implemented since the HTMD-Net paper's systems estimate one source
(vocals).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from sepcore.errors import ConfigError
from sepcore.models import register
from sepcore.models.base import SeparationModel

UPSAMPLINGS = ("linear", "learned")
PADDINGS = ("same", "valid")
OUTPUT_ACTIVATIONS = ("tanh", "linear")
LEAKY_SLOPE = 0.2  # Stoller's Utils.LeakyReLU


@dataclass
class UNet1dConfig:
    """The layers of a Wave-U-Net (Stoller et al. 2018, Table/§3 names in comments).

    ``bottleneck_lstm_layers > 0`` replaces the bottleneck conv by a bidirectional LSTM of that many
    layers whose output width (``2 × hidden``) equals the conv's ``F_c · (L + 1)`` (HTMD-Net's
    denoiser, Garoufis et al. 2021: "LSTM placed in bottleneck"); 0 is Stoller's conv bottleneck.
    """

    num_layers: int = 12  # L: down-sampling (and up-sampling) blocks
    num_filters: int = 24  # F_c: filters added per level
    down_kernel: int = 15  # f_d
    up_kernel: int = 5  # f_u
    upsampling: str = "linear"  # linear | learned
    padding: str = "same"  # same | valid
    output_activation: str = "tanh"  # tanh | linear
    bottleneck_lstm_layers: int = 0  # 0 = conv bottleneck (Stoller); > 0 = bi-LSTM (HTMD-Net)


@dataclass
class WaveUNetConfig:
    sources: list[str] = field(default_factory=lambda: ["vocals"])
    audio_channels: int = 1
    sample_rate: int = 22050
    unet: UNet1dConfig = field(default_factory=UNet1dConfig)


def check_unet_config(cfg: UNet1dConfig, key: str = "model.unet") -> None:
    """Raise ConfigError naming the key of an invalid Wave-U-Net setting."""
    choices = {"upsampling": UPSAMPLINGS, "padding": PADDINGS,
               "output_activation": OUTPUT_ACTIVATIONS}
    for name, allowed in choices.items():
        value = getattr(cfg, name)
        if value not in allowed:
            raise ConfigError(f"{key}.{name} = {value!r}; choose from {list(allowed)}",
                              key=f"{key}.{name}")
    for name in ("num_layers", "num_filters"):
        if getattr(cfg, name) < 1:
            raise ConfigError(f"{key}.{name} must be >= 1, got {getattr(cfg, name)}",
                              key=f"{key}.{name}")
    for name in ("down_kernel", "up_kernel"):
        value = getattr(cfg, name)
        if value < 1 or value % 2 == 0:
            raise ConfigError(f"{key}.{name} must be odd and >= 1 (centred skips), got {value}",
                              key=f"{key}.{name}")
    if cfg.bottleneck_lstm_layers < 0:
        raise ConfigError(f"{key}.bottleneck_lstm_layers must be >= 0, got "
                          f"{cfg.bottleneck_lstm_layers}", key=f"{key}.bottleneck_lstm_layers")


# --- blocks -------------------------------------------------------------------------------------


class Interpolation(nn.Module):
    """×2 upsampling: each sample, then a weighted mean of it and its right neighbour.

    ``linear`` uses the weight 0.5; ``learned`` one weight ``sigmoid(w_f)`` per feature (Stoller
    §3.2.2, initialised at 0.5). With ``extend`` (same padding) the last sample is repeated as its
    own neighbour, giving ``2W`` samples; without (valid padding) ``2W − 1``. Fine sample ``2j`` is
    coarse sample ``j``, the inverse of the decimation ``x[..., ::2]``.
    """

    def __init__(self, channels: int, learned: bool, extend: bool):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(channels)) if learned else None
        self.extend = extend

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, F, W)
        right = torch.cat([x[..., 1:], x[..., -1:]], dim=-1) if self.extend else x[..., 1:]
        left = x[..., : right.shape[-1]]
        w = 0.5 if self.weight is None else torch.sigmoid(self.weight)[:, None]  # (F, 1)
        middle = w * left + (1 - w) * right  # (B, F, W | W-1)
        out = torch.stack([left, middle], dim=-1).flatten(-2)  # (B, F, 2W | 2W-2)
        return out if self.extend else torch.cat([out, x[..., -1:]], dim=-1)  # (B, F, 2W | 2W-1)


def centre_crop(x: torch.Tensor, length: int) -> torch.Tensor:
    """Crop the time axis of ``x`` (..., W) to its central ``length`` samples."""
    start = (x.shape[-1] - length) // 2
    return x[..., start:start + length]


class BottleneckLSTM(nn.Module):
    """Bidirectional LSTM over the bottleneck frames: (B, F_in, W) → (B, 2·hidden, W)."""

    def __init__(self, in_channels: int, hidden: int, layers: int):
        super().__init__()
        self.lstm = nn.LSTM(in_channels, hidden, num_layers=layers, batch_first=True,
                            bidirectional=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, F_in, W)
        y, _ = self.lstm(x.transpose(1, 2))  # (B, W, 2·hidden)
        return y.transpose(1, 2)  # (B, 2·hidden, W)


class UNet1d(nn.Module):
    """Wave-U-Net body: (B, in_channels, T) → (B, out_channels, T) at the same length.

    Args:
        in_channels: input channels (the mixture's C, or HTMD-Net's estimate [+ mixture]).
        out_channels: output channels (``S · C``).
        cfg: the layer configuration.
    References: Stoller, Ewert & Dixon, "Wave-U-Net", ISMIR 2018, §3, Fig. 1.
    """

    def __init__(self, in_channels: int, out_channels: int, cfg: UNet1dConfig):
        super().__init__()
        check_unet_config(cfg)
        self.cfg = cfg
        L, Fc, same = cfg.num_layers, cfg.num_filters, cfg.padding == "same"
        pad_d, pad_u = (cfg.down_kernel // 2, cfg.up_kernel // 2) if same else (0, 0)
        widths = [Fc * (i + 1) for i in range(L)]  # down-block outputs, level 0 .. L-1
        self.down = nn.ModuleList(
            nn.Conv1d(c_in, c_out, cfg.down_kernel, padding=pad_d)
            for c_in, c_out in zip([in_channels, *widths[:-1]], widths, strict=True))
        if cfg.bottleneck_lstm_layers:
            hidden = (Fc * (L + 1) + 1) // 2
            self.bottleneck: nn.Module = BottleneckLSTM(widths[-1], hidden,
                                                        cfg.bottleneck_lstm_layers)
            bottom = 2 * hidden
        else:
            self.bottleneck = nn.Conv1d(widths[-1], Fc * (L + 1), cfg.down_kernel, padding=pad_d)
            bottom = Fc * (L + 1)
        ups_in = [bottom, *widths[::-1][:-1]]  # coarse features entering each up block
        self.upsample = nn.ModuleList(
            Interpolation(c, cfg.upsampling == "learned", extend=same) for c in ups_in)
        self.up = nn.ModuleList(
            nn.Conv1d(c_in + skip, skip, cfg.up_kernel, padding=pad_u)
            for c_in, skip in zip(ups_in, widths[::-1], strict=True))
        self.output = nn.Conv1d(Fc + in_channels, out_channels, 1)

    # geometry --------------------------------------------------------------------------------
    @property
    def hop(self) -> int:
        """Input samples per bottleneck frame; outputs repeat under shifts by multiples of it."""
        return 2 ** self.cfg.num_layers

    @property
    def has_lstm(self) -> bool:
        return self.cfg.bottleneck_lstm_layers > 0

    def _valid_sizes(self, bottleneck: int) -> tuple[int, int, int]:
        """(input, output, smallest up-path size) of the valid net for a bottleneck input size."""
        cfg = self.cfg
        inp = bottleneck
        for _ in range(cfg.num_layers):
            inp = 2 * inp - 1 + cfg.down_kernel - 1  # undo decimation (odd size), then the conv
        out = bottleneck if self.has_lstm else bottleneck - (cfg.down_kernel - 1)
        smallest = out
        for _ in range(cfg.num_layers):
            out = 2 * out - 1 - (cfg.up_kernel - 1)
            smallest = min(smallest, out)
        return inp, out, smallest

    def valid_plan(self, length: int) -> tuple[int, int]:
        """Valid padding: (input, output) sizes of the smallest net whose output >= ``length``."""
        bottleneck = 1
        while True:
            inp, out, smallest = self._valid_sizes(bottleneck)
            if smallest >= 1 and out >= max(length, 1):
                return inp, out
            bottleneck += 1

    def valid_length(self, length: int) -> int:
        if self.cfg.padding == "valid":
            return self.valid_plan(length)[1]
        return max(1, -(-length // self.hop)) * self.hop

    @property
    def receptive_field(self) -> int | None:
        """Span (samples, centred) of the input one output sample depends on; None with an LSTM.

        Same padding: each level ``l`` (``2**l`` input samples per step) adds ``f_d // 2`` steps per
        side in the down conv, ``f_u // 2`` in the up conv and up to 2 steps for the interpolation
        (a conservative bound). Valid padding: the context the net consumes, plus two hops for the
        decimation phases (the dependency is slightly asymmetric).
        """
        if self.has_lstm:
            return None
        cfg = self.cfg
        if cfg.padding == "valid":
            inp, out = self.valid_plan(1)
            return inp - out + 1 + 2 * self.hop
        side = (cfg.down_kernel // 2) * (2 ** (cfg.num_layers + 1) - 1)  # down convs + bottleneck
        side += sum((cfg.up_kernel // 2) * 2**level + 2 ** (level + 1)
                    for level in range(cfg.num_layers))
        return 2 * side + 1

    # maths -----------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        length = x.shape[-1]  # x: (B, C_in, T)
        if self.cfg.padding == "valid":
            inp, out = self.valid_plan(length)
            left = (inp - out) // 2
            x = F.pad(x, (left, inp - length - left))  # (B, C_in, T_in): context on both sides
        else:
            x = F.pad(x, (0, self.valid_length(length) - length))  # (B, C_in, k·2**L)
        skips = []
        h = x
        for conv in self.down:
            h = F.leaky_relu(conv(h), LEAKY_SLOPE)  # (B, Fc·(i+1), W)
            skips.append(h)
            h = h[..., ::2]  # (B, Fc·(i+1), ceil(W/2)): decimation
        h = self.bottleneck(h)  # (B, Fc·(L+1), W_L)
        if not self.has_lstm:
            h = F.leaky_relu(h, LEAKY_SLOPE)
        for upsample, conv, skip in zip(self.upsample, self.up, reversed(skips), strict=True):
            h = upsample(h)  # (B, F, 2W | 2W-1)
            h = torch.cat([h, centre_crop(skip, h.shape[-1])], dim=1)  # (B, F + F_skip, W')
            h = F.leaky_relu(conv(h), LEAKY_SLOPE)  # (B, F_skip, W'')
        h = torch.cat([h, centre_crop(x, h.shape[-1])], dim=1)  # (B, Fc + C_in, T')
        y = self.output(h)  # (B, C_out, T')
        if self.cfg.output_activation == "tanh":
            y = torch.tanh(y)
        return y[..., :length]  # (B, C_out, T)


# --- the model ----------------------------------------------------------------------------------


class WaveUNet(SeparationModel):
    """Wave-U-Net separator: mixture (B, C, T) → sources (B, S, C, T).

    References: Stoller, Ewert & Dixon, ISMIR 2018; the HTMD-Net paper's baseline (10.3 M).
    """

    def __init__(self, cfg: WaveUNetConfig):
        super().__init__()
        self.cfg = cfg
        if cfg.audio_channels < 1 or not cfg.sources:
            raise ConfigError("model needs audio_channels >= 1 and at least one source",
                              key="model.sources")
        self.unet = UNet1d(cfg.audio_channels, len(cfg.sources) * cfg.audio_channels, cfg.unet)

    @property
    def frame_hop(self) -> int:
        return self.unet.hop

    @property
    def receptive_field(self) -> int | None:
        return self.unet.receptive_field

    def valid_length(self, length: int) -> int:
        return self.unet.valid_length(length)

    def forward(self, mixture: torch.Tensor) -> torch.Tensor:
        if mixture.dim() != 3 or mixture.shape[1] != self.audio_channels:
            raise ValueError(f"expected a mixture of shape (batch, {self.audio_channels}, time), "
                             f"got {tuple(mixture.shape)}")
        batch, channels, length = mixture.shape
        y = self.unet(mixture)  # (B, S·C, T)
        return y.view(batch, len(self.sources), channels, length)  # (B, S, C, T)


register("waveunet", WaveUNetConfig, WaveUNet)
