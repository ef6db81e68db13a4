"""Oracle separators: STFT IRM/IBM (thesis §4.1.2, eq. 4.1) and FB-IRM in a learned latent (§5.1).

The thesis is Mocanu, "Musical source separation", master thesis, EPFL / Logitech, 2020.

**IRM / IBM** (registered ``"irm"``, ``"ibm"``): with ``Y_j(f, t)`` the STFT of the true source j
and ``X`` that of the mixture, the ideal ratio mask is ``M_j = |Y_j|^α / Σ_j' |Y_j'|^α`` (thesis
eq. 4.1; α = 2 is the Wiener-like "power" oracle the thesis uses to predict how separable a class
is, Tables 4.1–4.3; α = 1 the magnitude IRM of SiSEC 2018) and the ideal binary mask puts each bin
wholly in its loudest source. The estimate is ``iSTFT(M_j · X)``. Both mask families sum to one
over sources in every bin (silent bins: 1/J for the IRM, source 0 for the IBM), so the estimates sum
to the mixture (iSTFT is linear). Masks are computed per channel.

**FB-IRM**: the ideal ratio mask in a learned latent (thesis §5.1, Fig. 5.1).

"Given J encoded source signals y_j(n, t) [...] the Ideal Ratio Mask separator computes the mask
to be applied to the mixture encoding as M_j = |y_j| / Σ_j' |y_j'|" (thesis, ch. 5). The true
sources are encoded with the same encoder as the mixture, the masks multiply the mixture latent and
the decoder synthesises each source. With no TCN to train, an encoder/decoder pair can be trained
(gradients reach it through both the masks and the latent) and judged on its own, as the thesis
does to explore encodings quickly. Bins where no source has energy get equal masks 1/J, so the
masks always sum to one. ``power`` generalises the magnitude ratio (α = 1, the thesis)
to |y_j|^α (α = 2 is the Wiener-like IRM of SiSEC's oracle).

Oracles break the plain call contract in one documented way: they read the true sources through
``forward(mixture, references=...)`` and declare ``needs_references = True``. Code that holds the
true sources (the trainer, ``sepcore.evaluate``, ``sepcore.oracle``) binds them once with
:func:`with_references`, which stacks them onto the mixture along the channel axis and wraps the
oracle in :class:`WithReferences`, a plain-contract model of that stacked input. Chunked inference
(``sepcore.separate.apply_model``) then cuts mixture and sources together and never sees
``references=``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from sepcore.errors import ConfigError
from sepcore.models import register
from sepcore.models.base import SeparationModel
from sepcore.models.convtasnet import EncoderConfig, EncoderMaskerDecoder


@dataclass
class FBIRMConfig:
    sources: list[str] = field(default_factory=lambda: ["vocals", "accompaniment"])
    audio_channels: int = 2
    sample_rate: int = 44100
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    power: float = 1.0  # α in M_j = |y_j|^α / Σ |y_j'|^α


class FBIRM(EncoderMaskerDecoder):
    """Encoder → ideal ratio masks of the encoded true sources → decoder."""

    needs_references = True

    def __init__(self, cfg: FBIRMConfig):
        if cfg.power <= 0:
            raise ConfigError(f"model.power must be > 0, got {cfg.power}", key="model.power")
        super().__init__(cfg)
        self.masker = None

    @property
    def context_frames(self) -> int:
        return 0  # a frame's mask depends on that frame only

    def ratio_masks(self, references: torch.Tensor) -> torch.Tensor:
        """True sources (B, S, C, T') → masks (B, S, N, K) that sum to one over sources."""
        batch, sources = references.shape[:2]
        encoded = self.encode(references.flatten(0, 1))  # (B*S, N, K)
        encoded = encoded.view(batch, sources, *encoded.shape[1:])  # (B, S, N, K)
        weight = encoded.abs().pow(self.cfg.power)
        total = weight.sum(dim=1, keepdim=True)
        # where no source has energy (a ReLU latent is often exactly 0) share the bin equally
        return torch.where(total > 0, weight / total.clamp_min(1e-12), 1.0 / sources)

    def forward(self, mixture: torch.Tensor,
                references: torch.Tensor | None = None) -> torch.Tensor:
        if references is None:
            raise ValueError("FB-IRM is an oracle: call it as model(mixture, references=sources)")
        if references.dim() != 4 or references.shape[0] != mixture.shape[0] or \
                references.shape[1] != len(self.sources) or references.shape[-1] != \
                mixture.shape[-1]:
            raise ValueError(f"references must be (batch, {len(self.sources)}, channels, time) "
                             f"matching the mixture {tuple(mixture.shape)}, got "
                             f"{tuple(references.shape)}")
        length = mixture.shape[-1]
        pad = self.valid_length(length) - length
        latent = self.encode(F.pad(mixture, (0, pad)))  # (B, N, K)
        masks = self.ratio_masks(F.pad(references, (0, pad)))  # (B, S, N, K)
        estimates = self.decode(latent.unsqueeze(1) * masks)  # (B, S, C, T')
        return estimates[..., :length]  # (B, S, C, T)


register("fb_irm", FBIRMConfig, FBIRM)


@dataclass
class STFTOracleConfig:
    sources: list[str] = field(default_factory=lambda: ["vocals", "drums", "bass", "other"])
    audio_channels: int = 2
    sample_rate: int = 44100
    n_fft: int = 4096  # Hann window length (SiSEC 2018 oracles: 4096 at 44.1 kHz)
    hop: int = 1024
    alpha: float = 2.0  # IRM exponent: 2 = Wiener-like (thesis eq. 4.1), 1 = magnitude; IBM: unused


def _check_references(name: str, mixture: torch.Tensor, references: torch.Tensor | None,
                      sources: int) -> torch.Tensor:
    if references is None:
        raise ValueError(f"{name} is an oracle: call it as model(mixture, references=sources)")
    if references.dim() != 4 or references.shape[0] != mixture.shape[0] or \
            references.shape[1] != sources or references.shape[2:] != mixture.shape[1:]:
        raise ValueError(f"references must be (batch, {sources}, channels, time) matching the "
                         f"mixture {tuple(mixture.shape)}, got {tuple(references.shape)}")
    return references


class STFTOracle(SeparationModel):
    """Mask the mixture STFT with masks computed from the true sources' STFTs (no parameters)."""

    needs_references = True

    def __init__(self, cfg: STFTOracleConfig):
        super().__init__()
        self.cfg = cfg
        if cfg.n_fft < 2 or not 0 < cfg.hop <= cfg.n_fft // 2:
            raise ConfigError(f"model.n_fft ({cfg.n_fft}) must be >= 2 and model.hop ({cfg.hop})"
                              " in (0, n_fft/2] so that the Hann-window iSTFT is exact",
                              key="model.hop")
        if cfg.alpha <= 0:
            raise ConfigError(f"model.alpha must be > 0, got {cfg.alpha}", key="model.alpha")
        if cfg.audio_channels < 1 or not cfg.sources:
            raise ConfigError("model needs audio_channels >= 1 and at least one source",
                              key="model.sources")
        self.register_buffer("window", torch.hann_window(cfg.n_fft), persistent=False)

    @property
    def frame_hop(self) -> int:
        return int(self.cfg.hop)

    @property
    def receptive_field(self) -> int:
        # an output sample depends on the frames centred within n_fft/2 of it, each spanning
        # n_fft: with this much context (and hop-aligned chunks) chunked inference is exact
        return 2 * int(self.cfg.n_fft)

    def _stft(self, x: torch.Tensor) -> torch.Tensor:
        """(..., T) → (..., F, frames) complex; reflect padding needs T > n_fft/2, else zeros."""
        shape = x.shape
        mode = "reflect" if shape[-1] > self.cfg.n_fft // 2 else "constant"
        spec = torch.stft(x.reshape(-1, shape[-1]), self.cfg.n_fft, self.cfg.hop,
                          window=self.window.to(x.dtype), center=True, pad_mode=mode,
                          return_complex=True)  # (B*, F, frames)
        return spec.view(*shape[:-1], *spec.shape[-2:])

    def masks(self, spectra: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, mixture: torch.Tensor,
                references: torch.Tensor | None = None) -> torch.Tensor:
        references = _check_references(type(self).__name__, mixture, references,
                                        len(self.sources))
        length = mixture.shape[-1]
        mix_spec = self._stft(mixture)  # (B, C, F, frames)
        masks = self.masks(self._stft(references).abs())  # (B, S, C, F, frames)
        estimates = masks * mix_spec.unsqueeze(1)  # (B, S, C, F, frames)
        shape = estimates.shape
        out = torch.istft(estimates.reshape(-1, *shape[-2:]), self.cfg.n_fft, self.cfg.hop,
                          window=self.window.to(mixture.dtype), center=True,
                          length=length)  # (B*S*C, T)
        return out.view(*shape[:3], length)  # (B, S, C, T)


class IRM(STFTOracle):
    """Ideal ratio mask ``M_j = |Y_j|^α / Σ_j' |Y_j'|^α`` (thesis eq. 4.1)."""

    def masks(self, magnitudes: torch.Tensor) -> torch.Tensor:
        """Source magnitudes (B, S, ...) → masks (B, S, ...) summing to one over S."""
        weight = magnitudes.pow(self.cfg.alpha)
        total = weight.sum(dim=1, keepdim=True)
        return torch.where(total > 0, weight / total.clamp_min(1e-30), 1.0 / weight.shape[1])


class IBM(STFTOracle):
    """Ideal binary mask: each bin goes wholly to the source of largest magnitude."""

    def masks(self, magnitudes: torch.Tensor) -> torch.Tensor:
        winner = magnitudes.argmax(dim=1, keepdim=True)  # (B, 1, ...)
        return torch.zeros_like(magnitudes).scatter_(1, winner, 1.0)


register("irm", STFTOracleConfig, IRM)
register("ibm", STFTOracleConfig, IBM)


# --- oracles bound to their true sources --------------------------------------------------------


class WithReferences(nn.Module):
    """An oracle as a plain-contract model of the mixture with its true sources stacked on it.

    The input is ``(B, C + S·C, T)``: the mixture's C channels, then source 0's C channels, source
    1's, ... (what :func:`with_references` builds); the output is the oracle's ``(B, S, C, T)``.
    Whatever chunking does to the time axis it does to mixture and sources alike, so chunked
    inference needs no knowledge of oracles. ``sample_rate``, ``sources``, ``audio_channels`` (of
    the mixture and of each estimate), ``frame_hop``, ``receptive_field`` and ``valid_length`` are
    the oracle's; its parameters are this module's.
    """

    needs_references = False

    def __init__(self, oracle: nn.Module):
        super().__init__()
        self.oracle = oracle

    @property
    def sample_rate(self) -> int:
        return self.oracle.sample_rate

    @property
    def sources(self) -> list[str]:
        return self.oracle.sources

    @property
    def audio_channels(self) -> int:
        return self.oracle.audio_channels

    @property
    def frame_hop(self) -> int:
        return getattr(self.oracle, "frame_hop", 1)

    @property
    def receptive_field(self) -> int | None:
        return self.oracle.receptive_field

    def valid_length(self, length: int) -> int:
        return self.oracle.valid_length(length)

    def forward(self, stacked: torch.Tensor) -> torch.Tensor:
        sources = len(self.oracle.sources)
        if stacked.dim() != 3 or stacked.shape[1] % (sources + 1):
            raise ValueError(f"expected the mixture with its {sources} true sources stacked on the "
                             f"channel axis, (batch, channels * {sources + 1}, time), got "
                             f"{tuple(stacked.shape)}")
        channels = stacked.shape[1] // (sources + 1)
        mixture = stacked[:, :channels].contiguous()  # (B, C, T)
        references = stacked[:, channels:].unflatten(1, (sources, channels)).contiguous()
        return self.oracle(mixture, references=references)  # (B, S, C, T)


def with_references(model: nn.Module, mixture: torch.Tensor,
                    references: torch.Tensor | None) -> tuple[nn.Module, torch.Tensor]:
    """What to run and on what, so that an oracle sees the true sources.

    Args:
        model: any sepcore model.
        mixture: ``(C, T)`` or ``(B, C, T)``.
        references: the true sources, ``(S, C, T)`` or ``(B, S, C, T)`` to match; ignored (may be
            None) unless ``model.needs_references``.

    Returns:
        ``(model, mixture)`` unchanged for a plain model; for an oracle, ``WithReferences(model)``
        and the stacked input ``(C + S·C, T)`` or ``(B, C + S·C, T)``. Either pair runs as
        ``runner(input)`` or ``sepcore.separate.apply_model(runner, input)``.
    """
    if not getattr(model, "needs_references", False):
        return model, mixture
    name = type(model).__name__
    if references is None:
        raise ValueError(f"{name} is an oracle: it needs the true sources (references)")
    sources = len(model.sources)
    if references.dim() != mixture.dim() + 1 or references.shape[-3] != sources or \
            references.shape[:-3] + references.shape[-2:] != mixture.shape:
        raise ValueError(f"{name}: references must be the {sources} true sources of the mixture "
                         f"{tuple(mixture.shape)}, i.e. {tuple(mixture.shape[:-2])} + "
                         f"({sources}, {', '.join(map(str, mixture.shape[-2:]))}), got "
                         f"{tuple(references.shape)}")
    references = references.to(mixture.device, mixture.dtype).flatten(-3, -2)  # (.., S·C, T)
    return WithReferences(model), torch.cat([mixture, references], dim=-2)
