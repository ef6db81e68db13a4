"""Conv-TasNet: a learned encoder, a TCN mask estimator and a learned decoder.

Reads like the paper (Luo & Mesgarani, "Conv-TasNet", IEEE/ACM TASLP 2019, Fig. 1 and §III) in the
music form of Défossez et al. 2019 ("Music Source Separation in the Waveform Domain", §4, the
``demucs/tasnet.py`` reference), which the multi-band masking paper (Papantonakis, Garoufis &
Maragos, EUSIPCO 2022, Table 1) uses as its baseline M1:

- encoder: ``Conv1d(C, N, L, stride)`` + ReLU (no bias), giving a non-negative latent;
- separator: layer norm, 1×1 bottleneck ``N → B``, ``R`` repeats of ``X`` 1-D conv blocks with
  dilation ``2**x`` (block = 1×1 ``B → H``, activation, norm, depthwise conv kernel ``P``,
  activation, norm, 1×1 ``H → B`` residual [+ ``H → skip`` skip path]), then a 1×1 conv to
  ``S × N`` mask scores and a mask non-linearity (sigmoid, softmax over sources, ReLU);
- decoder: ``ConvTranspose1d(N, C, L, stride)`` on each masked latent (the same maths as demucs'
  ``Linear(N, C·L)`` + overlap-and-add).

Choices where the papers leave details open (as the demucs reference does): no bias in encoder,
decoder and 1×1 convs; ``skip = 0`` means no skip path (the separator output is the residual
stream, as in demucs); ``cLN`` is the channel-wise (per-frame) layer norm of Luo's code, ``gLN``
the global one over (channels, time), ``BN`` batch norm. ``causal`` pads the dilated convs on the
left only.

The encoder/decoder pair is built by :func:`sepcore.models.filterbanks.build_encoding` from
``EncoderConfig`` (thesis ch. 5 encodings); the default ``simple`` + ``conv`` is exactly the pair
above (state-dict keys ``encoder.weight``, ``decoder.weight``).

:class:`EncoderMaskerDecoder` is the shared template forward (encode → mask → apply → decode) that
the multi-band and filterbank models reuse with their own maskers and encoders.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from sepcore.errors import ConfigError
from sepcore.models import register
from sepcore.models.base import SeparationModel, float32
from sepcore.models.filterbanks import build_encoding

NORMS = ("gLN", "cLN", "BN")
MASK_NONLINEARITIES = ("sigmoid", "softmax", "relu")
ACTIVATIONS = ("prelu", "leakyrelu")


@dataclass
class EncoderConfig:
    """The encoder/decoder pair shared by every encoder-masker-decoder model.

    ``encoding``/``filterbank``/``fb_ratio``/``filters``/``depth``/``who_is_pinv``/``init_type``
    follow the thesis's names (Mocanu, "Musical source separation", EPFL / Logitech, 2020, Table
    A.1; see ``sepcore.models.filterbanks``). The
    default (``simple`` + ``conv``) is Conv-TasNet's learned conv encoder and transposed-conv
    decoder. A pre-trained and/or frozen encoder/decoder (rows M5/M6 of Papantonakis et al.,
    "Multi-band Masking for Waveform-based Singing Voice Separation", EUSIPCO 2022) is a training
    set-up, not a model setting: ``train.init_from`` + ``train.init_keys`` + ``train.frozen``
    (see ``sepcore.train.apply_transfer``); a model never reads a file.
    """

    N: int = 256  # number of latent channels
    L: int = 20  # filter length in samples
    stride: int | None = None  # hop in samples (None = L // 2)
    encoding: str = "simple"  # simple | filterbanks | hybrid | deep
    filterbank: str = "conv"  # conv | param_sinc | pmpgtf | stft | mel
    fb_ratio: float = 0.5  # hybrid: share of the N channels given to the filterbank branch
    filters: int = 1  # hybrid: parallel layers per branch, each doubling the kernel (padded)
    depth: int = 2  # deep: stacked layers
    who_is_pinv: str | None = None  # enc | dec | None: that side is the other's pseudo-inverse
    init_type: str = "mel"  # mel | uniform: initial centre frequencies of parameterised filters
    num_mels: int = 256  # filterbank mel: channels of the mel branch (Meta-TasNet encoder)
    n_fft: int | None = None  # filterbank mel: STFT size (None = 1024 · sample_rate // 8000)


@dataclass
class TCNConfig:
    """The temporal convolutional separator (Conv-TasNet Table I names)."""

    B: int = 256  # bottleneck / residual channels
    H: int = 512  # channels inside a conv block
    skip: int = 0  # skip-connection channels (0 = no skip path, demucs style)
    P: int = 3  # depthwise kernel size
    X: int = 8  # conv blocks per repeat (dilations 1 .. 2**(X-1))
    R: int = 3  # repeats
    norm: str = "gLN"  # gLN | cLN | BN
    causal: bool = False
    activation: str = "prelu"  # prelu | leakyrelu
    mask_nonlinear: str = "relu"  # sigmoid | softmax | relu


@dataclass
class ConvTasNetConfig:
    sources: list[str] = field(default_factory=lambda: ["vocals", "accompaniment"])
    audio_channels: int = 2
    sample_rate: int = 44100
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    masker: TCNConfig = field(default_factory=TCNConfig)


def check_tcn_config(cfg: TCNConfig, key: str = "model.masker") -> None:
    """Raise ConfigError naming the key of an invalid TCN setting."""
    choices = {"norm": NORMS, "mask_nonlinear": MASK_NONLINEARITIES, "activation": ACTIVATIONS}
    for name, allowed in choices.items():
        value = getattr(cfg, name)
        if value not in allowed:
            raise ConfigError(f"{key}.{name} = {value!r}; choose from {list(allowed)}",
                              key=f"{key}.{name}")
    for name in ("B", "H", "P", "X", "R"):
        if getattr(cfg, name) < 1:
            raise ConfigError(f"{key}.{name} must be >= 1, got {getattr(cfg, name)}",
                              key=f"{key}.{name}")
    if cfg.skip < 0:
        raise ConfigError(f"{key}.skip must be >= 0, got {cfg.skip}", key=f"{key}.skip")


def encoder_stride(cfg: EncoderConfig) -> int:
    stride = cfg.stride if cfg.stride is not None else cfg.L // 2
    if cfg.N < 1 or cfg.L < 1 or stride < 1 or stride > cfg.L:
        raise ConfigError(f"model.encoder needs N >= 1, L >= 1 and 1 <= stride <= L; got "
                          f"N={cfg.N}, L={cfg.L}, stride={stride}", key="model.encoder")
    return stride


# --- normalisations -----------------------------------------------------------------------------


class GlobalLayerNorm(nn.Module):
    """gLN: normalise over channels and time (Conv-TasNet eq. 13)."""

    def __init__(self, channels: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(1, channels, 1))
        self.beta = nn.Parameter(torch.zeros(1, channels, 1))

    @float32
    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, K)
        # gLN is a group norm with one group: torch's fused kernel (one pass for the statistics,
        # one for the affine) instead of seven elementwise passes over (B, C, K); the affine may
        # be generated in half precision (Meta-TasNet): it follows x (float32, or float64)
        return F.group_norm(x, 1, self.gamma.to(x.dtype).view(-1),
                            self.beta.to(x.dtype).view(-1), eps=1e-8)


class ChannelwiseLayerNorm(nn.Module):
    """cLN: normalise over channels, frame by frame (Luo's ``ChannelwiseLayerNorm``)."""

    def __init__(self, channels: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(1, channels, 1))
        self.beta = nn.Parameter(torch.zeros(1, channels, 1))

    @float32
    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, K)
        mean = x.mean(dim=1, keepdim=True)
        var = (x - mean).pow(2).mean(dim=1, keepdim=True)
        return self.gamma.to(x.dtype) * (x - mean) / torch.sqrt(var + 1e-8) + \
            self.beta.to(x.dtype)


def make_norm(kind: str, channels: int) -> nn.Module:
    if kind == "gLN":
        return GlobalLayerNorm(channels)
    if kind == "cLN":
        return ChannelwiseLayerNorm(channels)
    if kind == "BN":
        return nn.BatchNorm1d(channels)
    raise ConfigError(f"unknown norm {kind!r}; choose from {list(NORMS)}", key="model.masker.norm")


def make_activation(kind: str) -> nn.Module:
    return nn.PReLU() if kind == "prelu" else nn.LeakyReLU(0.01)


@float32
def apply_mask_nonlinearity(scores: torch.Tensor, kind: str) -> torch.Tensor:
    """Mask scores (B, S, N, K) → masks; softmax normalises across the sources axis."""
    if kind == "sigmoid":
        return torch.sigmoid(scores)
    if kind == "softmax":
        return torch.softmax(scores, dim=1)
    if kind == "relu":
        return F.relu(scores)
    raise ConfigError(f"unknown mask non-linearity {kind!r}; choose from "
                      f"{list(MASK_NONLINEARITIES)}", key="model.masker.mask_nonlinear")


# --- the TCN separator --------------------------------------------------------------------------


class ConvBlock(nn.Module):
    """One 1-D conv block (Conv-TasNet Fig. 1C) with residual and optional skip outputs."""

    def __init__(self, cfg: TCNConfig, dilation: int):
        super().__init__()
        B, H, P = cfg.B, cfg.H, cfg.P
        self.causal = cfg.causal
        self.pad = (P - 1) * dilation
        self.in_conv = nn.Conv1d(B, H, 1, bias=False)
        self.act1 = make_activation(cfg.activation)
        self.norm1 = make_norm(cfg.norm, H)
        # non-causal with an even total padding (odd P): the conv pads, no padded copy of (B, H, K)
        self.conv_pad = self.pad // 2 if not self.causal and self.pad % 2 == 0 else 0
        self.depthwise = nn.Conv1d(H, H, P, dilation=dilation, groups=H, bias=False,
                                   padding=self.conv_pad)
        self.act2 = make_activation(cfg.activation)
        self.norm2 = make_norm(cfg.norm, H)
        self.res_conv = nn.Conv1d(H, B, 1, bias=False)
        self.skip_conv = nn.Conv1d(H, cfg.skip, 1, bias=False) if cfg.skip else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        y = self.norm1(self.act1(self.in_conv(x)))  # (B, H, K)
        if not self.conv_pad and self.pad:
            left = self.pad if self.causal else self.pad // 2
            y = F.pad(y, (left, self.pad - left))  # same length out of the dilated conv
        y = self.norm2(self.act2(self.depthwise(y)))  # (B, H, K)
        skip = self.skip_conv(y) if self.skip_conv is not None else None
        return x + self.res_conv(y), skip  # (B, Bn, K), (B, skip, K) | None


class TCN(nn.Module):
    """Temporal convolutional network: latent (B, in, K) → mask scores (B, S, out, K).

    Args:
        in_channels: latent channels it reads (N, or N/Q for one band of a multi-band model).
        out_channels: mask channels per source it writes.
        num_sources: S.
        cfg: the block configuration.
    Returns scores before the mask non-linearity (see :func:`apply_mask_nonlinearity`).
    """

    def __init__(self, in_channels: int, out_channels: int, num_sources: int, cfg: TCNConfig):
        super().__init__()
        check_tcn_config(cfg)
        self.cfg = cfg
        self.num_sources = num_sources
        self.out_channels = out_channels
        self.in_norm = (ChannelwiseLayerNorm(in_channels) if cfg.norm != "BN"
                        else nn.BatchNorm1d(in_channels))
        self.bottleneck = nn.Conv1d(in_channels, cfg.B, 1, bias=False)
        self.blocks = nn.ModuleList(
            ConvBlock(cfg, dilation=2**x) for _ in range(cfg.R) for x in range(cfg.X))
        head_in = cfg.skip if cfg.skip else cfg.B
        self.head_act = make_activation(cfg.activation) if cfg.skip else nn.Identity()
        self.mask_conv = nn.Conv1d(head_in, num_sources * out_channels, 1, bias=False)

    @property
    def context_frames(self) -> int:
        """Span in latent frames (both sides together) that one output frame depends on."""
        return self.cfg.R * (self.cfg.P - 1) * (2**self.cfg.X - 1)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        x = self.bottleneck(self.in_norm(latent))  # (B, Bn, K)
        skips = 0
        for block in self.blocks:
            x, skip = block(x)
            if skip is not None:
                skips = skips + skip
        head = self.head_act(skips) if self.cfg.skip else x  # (B, Bn|skip, K)
        scores = self.mask_conv(head)  # (B, S*out, K)
        return scores.view(x.shape[0], self.num_sources, self.out_channels, -1)  # (B, S, out, K)


# --- the encoder-masker-decoder template --------------------------------------------------------


class EncoderMaskerDecoder(SeparationModel):
    """Template forward: encode → mask scores → non-linearity → apply → decode.

    Subclasses build ``self.masker`` in their ``__init__`` and may override :meth:`mask_scores`
    and :attr:`context_frames`; ``self.cfg`` needs ``encoder`` (EncoderConfig) and ``masker``
    (TCNConfig, whose ``mask_nonlinear``, ``norm`` and ``causal`` apply model-wide).
    """

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        if cfg.audio_channels < 1 or not cfg.sources:
            raise ConfigError("model needs audio_channels >= 1 and at least one source",
                              key="model.sources")
        if getattr(cfg, "masker", None) is not None:  # oracles (FB-IRM) have no masker
            check_tcn_config(cfg.masker)
        self.stride = encoder_stride(cfg.encoder)
        # (B, C, T) -> (B, N, K) and (B*, N, K) -> (B*, C, (K-1)·stride + L); see filterbanks.py
        self.encoder, self.decoder = build_encoding(cfg.encoder, cfg.audio_channels,
                                                    cfg.sample_rate)

    # contract ------------------------------------------------------------------------------------
    @property
    def frame_hop(self) -> int:
        return self.stride

    @property
    def context_frames(self) -> int:
        return self.masker.context_frames

    @property
    def conv_receptive_field(self) -> int:
        """Input samples one output sample depends on through the convolutions alone.

        The frames whose decoder windows (``decoder.window`` samples) cover an output sample span
        ``decoder.window - hop`` samples; each depends on ``context_frames`` neighbouring frames of
        the masker plus the stacked layers' context of encoder and decoder (deep encodings), and
        each frame reads ``encoder.window`` samples (L, or the widest hybrid kernel).
        """
        frames = self.context_frames + self.encoder.context_frames + self.decoder.context_frames
        return frames * self.stride + self.encoder.window + self.decoder.window - self.stride

    @property
    def receptive_field(self) -> int | None:
        masker = getattr(self.cfg, "masker", None)
        if masker is not None and masker.norm == "gLN":
            return None  # the global norm sees the whole input
        if getattr(self.encoder, "global_context", False):
            return None  # e.g. the mel branch, interpolated over the whole input
        return self.conv_receptive_field

    def valid_length(self, length: int) -> int:
        L, hop = self.cfg.encoder.L, self.stride
        frames = max(1, -(-(max(length, L) - L) // hop) + 1)
        return (frames - 1) * hop + L

    # maths ---------------------------------------------------------------------------------------
    def encode(self, mixture: torch.Tensor) -> torch.Tensor:
        """Latent (B, N, K); non-negative for simple/filterbanks (the encoder ends in a ReLU)."""
        return self.encoder(mixture)  # (B, C, T) -> (B, N, K)

    def mask_scores(self, latent: torch.Tensor) -> torch.Tensor:
        return self.masker(latent)  # (B, S, N, K)

    def decode(self, masked: torch.Tensor) -> torch.Tensor:
        batch, sources, n, frames = masked.shape
        out = self.decoder(masked.reshape(batch * sources, n, frames))  # (B*S, C, T)
        return out.view(batch, sources, out.shape[1], out.shape[2])  # (B, S, C, T)

    def forward(self, mixture: torch.Tensor) -> torch.Tensor:
        if mixture.dim() != 3 or mixture.shape[1] != self.audio_channels:
            raise ValueError(f"expected a mixture of shape (batch, {self.audio_channels}, time), "
                             f"got {tuple(mixture.shape)}")
        length = mixture.shape[-1]
        x = F.pad(mixture, (0, self.valid_length(length) - length))  # (B, C, T')
        latent = self.encode(x)  # (B, N, K)
        masks = apply_mask_nonlinearity(self.mask_scores(latent), self.cfg.masker.mask_nonlinear)
        estimates = self.decode(latent.unsqueeze(1) * masks)  # (B, S, C, T')
        return estimates[..., :length]  # (B, S, C, T)


class ConvTasNet(EncoderMaskerDecoder):
    """Conv-TasNet (Luo & Mesgarani 2019) in the music form of Défossez et al. 2019."""

    def __init__(self, cfg: ConvTasNetConfig):
        super().__init__(cfg)
        self.masker = TCN(cfg.encoder.N, cfg.encoder.N, len(cfg.sources), cfg.masker)


register("convtasnet", ConvTasNetConfig, ConvTasNet)
