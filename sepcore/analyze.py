"""``sep analyze filters``: centre frequency and bandwidth of the learned encoder filters.

The multi-band masking paper (Papantonakis, Garoufis & Maragos, "Multi-band Masking for
Waveform-based Singing Voice Separation", EUSIPCO 2022; §4, the figure after Table 1) compares the
distribution of the encoder filters' centre frequencies and bandwidths per latent band of a
multi-band model with the baseline's. This module measures them from each filter's magnitude
spectrum (``sepcore.models.filterbanks``) and draws one scatter (centre frequency vs bandwidth) and
one histogram of centre frequencies, coloured by the band each latent channel feeds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sepcore.errors import ConfigError


@dataclass
class FilterAnalysis:
    centre_hz: np.ndarray  # (N,)
    bandwidth_hz: np.ndarray  # (N,)
    band: np.ndarray  # (N,) index of the latent band each channel belongs to (0 without bands)
    sample_rate: int
    model_name: str


def analyze_filters(model: torch.nn.Module, model_name: str = "") -> FilterAnalysis:
    """Measure the encoder filters of an encoder-masker-decoder model."""
    from sepcore.models.filterbanks import centre_frequencies_and_bandwidths, filter_responses

    encoder = getattr(model, "encoder", None)
    if encoder is None:
        raise ConfigError(f"{model_name or type(model).__name__} has no learned encoder to "
                          f"analyse", key="model.name")
    with torch.no_grad():
        responses = filter_responses(encoder)  # (N, C, L)
        centre, bandwidth = centre_frequencies_and_bandwidths(responses, model.sample_rate)
    centre = np.asarray(centre, dtype=np.float64)
    bandwidth = np.asarray(bandwidth, dtype=np.float64)
    band = np.zeros(len(centre), dtype=int)
    band_size = getattr(model, "band_size", None)
    if band_size:
        order = getattr(model, "band_order", None)
        channels = np.arange(len(centre)) if order is None else np.asarray(order.cpu())
        for position, channel in enumerate(channels):
            band[channel] = position // band_size
    return FilterAnalysis(centre, bandwidth, band, model.sample_rate, model_name)


def plot_filters(analysis: FilterAnalysis, path: str | Path) -> Path:
    """Scatter (centre vs bandwidth) and centre-frequency histogram per band, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_scatter, ax_hist) = plt.subplots(1, 2, figsize=(10, 3.8))
    bands = sorted(set(analysis.band.tolist()))
    bins = np.linspace(0, analysis.sample_rate / 2, 41)
    for b in bands:
        chosen = analysis.band == b
        label = f"band {b + 1}" if len(bands) > 1 else "all filters"
        ax_scatter.scatter(analysis.centre_hz[chosen], analysis.bandwidth_hz[chosen], s=8,
                           alpha=0.7, label=label)
        ax_hist.hist(analysis.centre_hz[chosen], bins=bins, alpha=0.6, label=label)
    ax_scatter.set_xlabel("centre frequency (Hz)")
    ax_scatter.set_ylabel("bandwidth (Hz)")
    ax_hist.set_xlabel("centre frequency (Hz)")
    ax_hist.set_ylabel("filters")
    for ax in (ax_scatter, ax_hist):
        ax.legend(fontsize=8)
    fig.suptitle(f"encoder filters of {analysis.model_name} ({len(analysis.centre_hz)} filters, "
                 f"{analysis.sample_rate} Hz)", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def analyze_checkpoint(checkpoint: str | Path, out: str | Path) -> tuple[FilterAnalysis, Path]:
    """Load ``checkpoint``, measure its encoder filters and write the figure to ``out``."""
    from sepcore.checkpoint import load_model
    from sepcore.errors import DataError

    if Path(out).is_dir():
        raise DataError(f"--out {out} is a folder; give the PNG file to write")
    model, cfg = load_model(checkpoint)
    analysis = analyze_filters(model, cfg.model_name)
    return analysis, plot_filters(analysis, out)
