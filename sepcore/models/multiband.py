"""Multi-band masking: one TCN separator per latent sub-band.

Papantonakis, Garoufis, Maragos, "Multi-band Masking for Waveform-based Singing Voice Separation"
(EUSIPCO 2022), Fig. 1 and Table 1: the N-dim encoder latent is split into Q sub-bands; Q
separators each read their own sub-band and produce the masks of that sub-space; the masks are
concatenated and multiplied with the latent. With ``full_band`` an extra separator reads the whole
latent and writes full-size masks; the band masks and the full-band masks are concatenated (2N per
source) and a linear layer restores the latent dimensionality N (models M3 / "Q bands + 1 full
band").

Choices the paper leaves open: separators output mask *scores*; the concatenation, the optional
linear layer (shared across sources, with bias) and then the mask non-linearity follow, so that a
softmax mask still sums to one across sources. ``band_split = "contiguous"`` splits filters in
encoder order (the paper's M2–M4); ``"sorted"`` (M6) first orders the latent channels by the
centre frequency of their encoder filter, measured from each filter's magnitude spectrum, so band
1 holds the lowest frequencies.

The order is a buffer (``band_order``) computed from the model's *current* encoder weights, never
from a file: at construction from the initial filters (deterministic given the seed), and again by
:meth:`MultiBand.after_transfer`, which the trainer calls once ``train.init_from`` has loaded
pre-trained encoder weights (the paper's M6: the filters of a trained M1). It is saved with the
checkpoint and fixed thereafter: loading a checkpoint uses the stored order, nothing is recomputed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from sepcore.errors import ConfigError
from sepcore.models import register
from sepcore.models.convtasnet import TCN, EncoderConfig, EncoderMaskerDecoder, TCNConfig

BAND_SPLITS = ("contiguous", "sorted")


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
            raise ConfigError(f"model.band_split = {cfg.band_split!r}; choose from "
                              f"{list(BAND_SPLITS)}", key="model.band_split")
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
        if cfg.band_split == "sorted":
            order = self._order_by_centre_frequency()
            self.register_buffer("band_order", order)  # (N,) latent channel per band position
            self.register_buffer("band_inverse", torch.argsort(order))  # (N,)
        else:
            self.band_order = None

    def after_transfer(self, changed: set[str]) -> None:
        """Re-measure the band order after the trainer replaced weights (``train.init_from``).

        ``changed`` holds the state-dict names that ``init_from`` loaded or ``reinit`` reset. The
        order follows the encoder's new filters unless the order itself was loaded (a checkpoint
        of a sorted model keeps the order its separators were trained with).
        """
        if self.band_order is None or "band_order" in changed:
            return
        if not any(name.startswith("encoder.") for name in changed):
            return
        order = self._order_by_centre_frequency().to(self.band_order.device)
        self.band_order.copy_(order)
        self.band_inverse.copy_(torch.argsort(order))

    def _order_by_centre_frequency(self) -> torch.Tensor:
        from sepcore.models.filterbanks import centre_frequencies_and_bandwidths, filter_responses

        try:
            with torch.no_grad():
                responses = filter_responses(self.encoder).cpu()  # (N, C, L)
        except ConfigError as exc:
            raise ConfigError(f"model.band_split = 'sorted' needs a linear encoder whose filters "
                              f"can be measured: {exc}", key="model.band_split") from None
        centre, _ = centre_frequencies_and_bandwidths(responses, self.cfg.sample_rate)
        return torch.argsort(torch.as_tensor(centre), stable=True)

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
        ordered = latent if self.band_order is None else latent[:, self.band_order]
        bands = ordered.split(self.band_size, dim=1)  # Q × (B, N/Q, K)
        scores = torch.cat([sep(band) for sep, band in zip(self.bands, bands, strict=True)],
                           dim=2)  # (B, S, N, K) in band order
        if self.band_order is not None:
            scores = scores[:, :, self.band_inverse]  # back to the latent's channel order
        if self.full is None:
            return scores
        both = torch.cat([scores, self.full(latent)], dim=2)  # (B, S, 2N, K)
        return self.restore(both.transpose(2, 3)).transpose(2, 3)  # (B, S, N, K)


register("multiband", MultiBandConfig, MultiBand)
