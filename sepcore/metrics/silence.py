"""Metrics on silent target segments (PES, VAD), segment-wise statistics and NSDR.

BSSEval scores no window where the reference is silent (museval gives NaN), yet a vocal estimate
that leaks accompaniment into the rests is a real fault. The HTMD-Net paper (Garoufis, Zlatintsi &
Maragos, "HTMD-Net: A Hybrid Masking-Denoising Approach to Time-Domain Monaural Singing Voice
Separation", EUSIPCO 2021; "Evaluation Protocol" and its Tables) therefore reports, on the *silent
segments* of the target:

- **PES** (Predicted Energy at Silence, dB; lower is better): the energy of the estimate in a
  segment where the target is silent, ``10·log10(Σ ŝ² + eps)``, averaged over the silent segments
  of a song (Schulze-Forster et al., "Weakly informed audio source separation", WASPAA 2019).
- **VAD** (%; higher is better): the share of silent target segments in which the estimate is
  silent too, i.e. where a voice activity detector thresholding the estimate's level agrees.

Choices where the paper is silent (documented here and in ``sep evaluate``): segments are BSSEval's
windows (1 s, hop 1 s); a segment is silent when its mean power over channels is below
``threshold_db`` (−60 dB re full scale; exact zeros in synthetic data); ``eps`` = 1e-10 so an
all-zero estimate scores −100 dB.

Also here: segment-wise mean and median of BSSEval's per-window values (the paper's "Segment-wise:
median/mean"), and NSDR (the SDR improvement over using the mixture as the estimate).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

EPS = 1e-10
THRESHOLD_DB = -60.0


def _segments(length: int, win: int, hop: int) -> list[tuple[int, int]]:
    """BSSEval's windows: full windows only, like museval (a shorter track gives one window)."""
    if length < win:
        return [(0, length)]
    return [(start, start + win) for start in range(0, length - win + 1, hop)]


def _power_db(x: np.ndarray) -> float:
    """Mean power over samples and channels of a (T, C) segment, in dB re full scale."""
    return 10.0 * math.log10(float(np.mean(np.square(x, dtype=np.float64))) + EPS)


def silent_segments(reference: np.ndarray, win: int, hop: int,
                    threshold_db: float = THRESHOLD_DB) -> list[tuple[int, int]]:
    """The (start, end) windows where ``reference`` (T, C) is silent."""
    return [(a, b) for a, b in _segments(len(reference), win, hop)
            if _power_db(reference[a:b]) < threshold_db]


@dataclass
class SilenceScores:
    pes: float  # dB, mean over silent segments (nan when the target is never silent)
    vad: float  # %, share of silent segments where the estimate is silent too
    segments: int  # number of silent target segments


def silence_scores(reference: np.ndarray, estimate: np.ndarray, rate: int, win: float = 1.0,
                   hop: float = 1.0, threshold_db: float = THRESHOLD_DB) -> SilenceScores:
    """PES and VAD of one target of one song; arrays are (T, C) (or (T,))."""
    reference = np.asarray(reference).reshape(len(reference), -1)
    estimate = np.asarray(estimate).reshape(len(estimate), -1)
    if reference.shape != estimate.shape:
        raise ValueError(f"reference {reference.shape} and estimate {estimate.shape} differ")
    spans = silent_segments(reference, int(win * rate), int(hop * rate), threshold_db)
    if not spans:
        return SilenceScores(pes=math.nan, vad=math.nan, segments=0)
    energies = [10.0 * math.log10(float(np.sum(np.square(estimate[a:b], dtype=np.float64)))
                                  + EPS) for a, b in spans]
    silent = [_power_db(estimate[a:b]) < threshold_db for a, b in spans]
    return SilenceScores(pes=float(np.mean(energies)), vad=100.0 * float(np.mean(silent)),
                         segments=len(spans))


def segment_statistics(frames: list[dict[str, float]],
                       metrics: tuple[str, ...] = ("SDR", "SIR", "SAR")) -> dict[str, float]:
    """Mean and median over all BSSEval windows (NaN windows ignored): ``SDR_mean``, ...

    ``frames`` are museval's per-window dicts (``{"SDR": ..., "SIR": ..., ...}``), pooled over
    every song of the evaluation.
    """
    out: dict[str, float] = {}
    for metric in metrics:
        values = np.array([f[metric] for f in frames if f.get(metric) is not None],
                          dtype=np.float64)
        values = values[np.isfinite(values)]
        out[f"{metric}_mean"] = float(values.mean()) if values.size else math.nan
        out[f"{metric}_median"] = float(np.median(values)) if values.size else math.nan
    return out


def nsdr(sdr_estimate: float, sdr_mixture: float) -> float:
    """Normalised SDR: the improvement of the estimate over the mixture used as the estimate."""
    return float(sdr_estimate - sdr_mixture)
