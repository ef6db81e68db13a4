"""Multi-band masking: one TCN separator per latent sub-band (seed 000, MODELS.md §2).

"Multi-band Masking for Waveform-based Singing Voice Separation" (seed 000, Fig. 1 and Table 1):
the N-dim encoder latent is split into Q sub-bands; Q separators each read their own sub-band and
produce the masks of that sub-space; the masks are concatenated and multiplied with the latent.
With ``full_band`` an extra separator reads the whole latent and writes full-size masks; the band
masks and the full-band masks are concatenated (2N per source) and a linear layer restores the
latent dimensionality N (models M3 / "Q bands + 1 full band").

Choices the paper leaves open: separators output mask *scores*; the concatenation, the optional
linear layer (shared across sources, with bias) and then the mask non-linearity follow, so that a
softmax mask still sums to one across sources. ``band_split = "contiguous"`` splits filters in
encoder order (the paper's M2–M4); "sorted" (filters ordered by centre frequency, M6) arrives with
the filterbank step.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from sepcore.errors import ConfigError
from sepcore.models import register
from sepcore.models.convtasnet import TCN, EncoderConfig, EncoderMaskerDecoder, TCNConfig

BAND_SPLITS = ("contiguous",)


@dataclass
class MultiBandConfig:
    sources: list[str] = field(default_factory=lambda: ["vocals", "accompaniment"])
    audio_channels: int = 2
    sample_rate: int = 44100
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    masker: TCNConfig = field(default_factory=TCNConfig)  # one per band
    num_bands: int = 2  # Q
    band_split: str = "contiguous"
    full_band: bool = False  # add a full-band separator + the linear layer (M3)
    full_band_masker: TCNConfig | None = None  # its blocks (None = same as ``masker``)


class MultiBand(EncoderMaskerDecoder):
    """Encoder → Q band separators (+ full-band separator → linear) → masks → decoder."""

    def __init__(self, cfg: MultiBandConfig):
        super().__init__(cfg)
        n, q, s = cfg.encoder.N, cfg.num_bands, len(cfg.sources)
        if cfg.band_split not in BAND_SPLITS:
            hint = " (filters sorted by centre frequency arrive with step 3, the filterbank " \
                   "models)" if cfg.band_split == "sorted" else ""
            raise ConfigError(f"model.band_split = {cfg.band_split!r} is not available; choose "
                              f"from {list(BAND_SPLITS)}{hint}", key="model.band_split")
        if q < 1 or n % q:
            raise ConfigError(f"model.num_bands = {q} must divide encoder.N = {n}",
                              key="model.num_bands")
        self.band_size = n // q
        self.bands = nn.ModuleList(TCN(self.band_size, self.band_size, s, cfg.masker)
                                   for _ in range(q))
        if cfg.full_band:
            self.full = TCN(n, n, s, cfg.full_band_masker or cfg.masker)
            self.restore = nn.Linear(2 * n, n)
        else:
            self.full, self.restore = None, None

    @property
    def context_frames(self) -> int:
        frames = [band.context_frames for band in self.bands]
        if self.full is not None:
            frames.append(self.full.context_frames)
        return max(frames)

    @property
    def receptive_field(self) -> int | None:
        full = self.cfg.full_band_masker
        if self.full is not None and full is not None and full.norm == "gLN":
            return None
        return super().receptive_field

    def mask_scores(self, latent: torch.Tensor) -> torch.Tensor:
        bands = latent.split(self.band_size, dim=1)  # Q × (B, N/Q, K)
        scores = torch.cat([sep(band) for sep, band in zip(self.bands, bands, strict=True)],
                           dim=2)  # (B, S, N, K)
        if self.full is None:
            return scores
        both = torch.cat([scores, self.full(latent)], dim=2)  # (B, S, 2N, K)
        return self.restore(both.transpose(2, 3)).transpose(2, 3)  # (B, S, N, K)


register("multiband", MultiBandConfig, MultiBand)
