"""The four mixing procedures of instrument tracks into class stems and a mixture (thesis §4.1.2).

The thesis (Mocanu, "Musical source separation", master thesis, EPFL / Logitech, 2020; ch. 4,
"Instrument tracks mixing") compares four ways of turning a song's instrument
tracks into instrument-category ("class") signals and a mixture, scored with the IRM oracle in
Table 4.1. Every function here is pure and works on class stems ``(K, C, T)`` (K classes), and
returns ``(class_stems, mixture)`` with ``class_stems`` ``(K, C, T)`` and ``mixture`` ``(C, T)``,
both float32. With ``s_k`` the k-th class stem and ``peak`` the full scale (1.0 for float audio):

- **summing**: ``s_k`` unchanged, ``mix = Σ_k s_k`` (may exceed the full scale, i.e. clip);
- **averaging**: ``mix = (1/K) Σ_k s_k`` (the class stems are the mean of their instruments, see
  :func:`group_instruments`); the mixture is *not* the sum of the class stems;
- **scaling**: ``s_k ← g_k s_k`` with a gain per stem (given, random, or by default the
  anti-overflow gain ``g_k = min(1, peak / max|s_k|)``), then ``mix = β Σ_k s_k`` with
  ``β = min(1, peak / max|Σ_k s_k|)``; the mixture is again rescaled on its own, so it is not the
  sum of the class stems once ``β < 1``;
- **adaptive rescaling**: ``s_k ← g_k s_k`` with the anti-overflow gains, then one
  ``α = min(1, peak / max|Σ_k s_k|)`` rescales the mixture *and* every class stem:
  ``mix = Σ_k α s_k`` exactly, ``|mix| ≤ peak`` and ``|α s_k| ≤ peak`` (thesis: "we apply the
  rescaling factor α to the mixture signal and to the instrument category signals as well"; the
  same α scheme builds the live-music categories of ch. 6.1).

The thesis keeps adaptive rescaling: best SI-SDR for six of eleven classes, and the mixture stays
the sum of the class stems (which SDR, unlike SI-SDR, needs).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from sepcore.errors import ConfigError

__all__ = ["PROCEDURES", "adaptive_rescaling", "anti_overflow_gain", "averaging",
           "group_instruments", "mix", "scaling", "summing"]


def _as_stems(stems: np.ndarray) -> np.ndarray:
    stems = np.asarray(stems, dtype=np.float32)
    if stems.ndim != 3 or stems.shape[0] < 1:
        raise ValueError(f"class stems must be (K, C, T) with K >= 1, got {stems.shape}")
    return stems


def anti_overflow_gain(signal: np.ndarray, peak: float = 1.0) -> float:
    """``min(1, peak / max|signal|)``: the largest gain ≤ 1 keeping ``signal`` within ``peak``."""
    top = float(np.max(np.abs(signal))) if np.size(signal) else 0.0
    return 1.0 if top <= peak else peak / top


def summing(stems: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Class stems unchanged, mixture = their sum (thesis §4.1.2 "summing").

    Args:
        stems: (K, C, T) class stems.

    Returns:
        ``(stems (K, C, T), mixture (C, T))`` with ``mixture = Σ_k stems[k]``.
    """
    stems = _as_stems(stems)
    return stems, stems.sum(axis=0, dtype=np.float32)


def averaging(stems: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Class stems unchanged, mixture = their mean (thesis §4.1.2 "averaging")."""
    stems = _as_stems(stems)
    return stems, stems.mean(axis=0, dtype=np.float32)


def scaling(stems: np.ndarray, gains: Sequence[float] | np.ndarray | None = None,
            rng: np.random.Generator | None = None, gain_range: tuple[float, float] = (0.75, 1.25),
            peak: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Each class stem by its own gain, the mixture rescaled on its own (thesis §4.1.2 "scaling").

    Args:
        stems: (K, C, T) class stems.
        gains: K gains, one per stem. When None: random gains uniform in ``gain_range`` if ``rng``
            is given, else the thesis's anti-overflow gains ``min(1, peak / max|s_k|)``.
        rng: draws the random gains (only when ``gains`` is None).
        gain_range: range of the random gains.
        peak: full scale.

    Returns:
        ``(g_k s_k (K, C, T), β Σ_k g_k s_k (C, T))`` with ``β = min(1, peak / max|Σ_k g_k s_k|)``.
    """
    stems = _as_stems(stems)
    if gains is None:
        if rng is not None:
            gains = rng.uniform(gain_range[0], gain_range[1], size=stems.shape[0])
        else:
            gains = [anti_overflow_gain(s, peak) for s in stems]
    gains = np.asarray(gains, dtype=np.float32).reshape(-1)
    if gains.shape[0] != stems.shape[0]:
        raise ValueError(f"scaling needs one gain per class stem ({stems.shape[0]}), got "
                         f"{gains.shape[0]}")
    scaled = stems * gains[:, None, None]  # (K, C, T)
    total = scaled.sum(axis=0, dtype=np.float32)  # (C, T)
    return scaled, (total * np.float32(anti_overflow_gain(total, peak))).astype(np.float32)


def adaptive_rescaling(stems: np.ndarray, peak: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """One α for the mixture and every class stem (thesis §4.1.2 "adaptive rescaling", §6.1).

    Each stem first gets its anti-overflow gain, then ``α = min(1, peak / max|Σ_k s_k|)`` rescales
    all of them; the mixture is computed as the sum of the rescaled stems, so it equals that sum
    exactly (in float32), and α is nudged down in the rare case rounding lands a sample above
    ``peak``.

    Returns:
        ``(α s_k (K, C, T), Σ_k α s_k (C, T))`` with ``|mixture| ≤ peak`` and ``|α s_k| ≤ peak``.
    """
    stems = _as_stems(stems)
    gains = np.asarray([anti_overflow_gain(s, peak) for s in stems], dtype=np.float32)
    stems = stems * gains[:, None, None]  # (K, C, T), each within peak
    alpha = np.float32(anti_overflow_gain(stems.sum(axis=0, dtype=np.float32), peak))
    while True:
        scaled = stems * alpha  # (K, C, T)
        mixture = scaled.sum(axis=0, dtype=np.float32)  # (C, T)
        if np.max(np.abs(mixture), initial=0.0) <= peak and \
                np.max(np.abs(scaled), initial=0.0) <= peak:
            return scaled, mixture
        alpha = np.nextafter(alpha, np.float32(0))  # float32 rounding: one ulp down


PROCEDURES: dict[str, Callable[..., tuple[np.ndarray, np.ndarray]]] = {
    "summing": summing,
    "averaging": averaging,
    "scaling": scaling,
    "adaptive": adaptive_rescaling,
}


def mix(procedure: str, stems: np.ndarray, **kwargs) -> tuple[np.ndarray, np.ndarray]:
    """``PROCEDURES[procedure](stems, **kwargs)``; ConfigError naming the choices otherwise."""
    if procedure not in PROCEDURES:
        raise ConfigError(f"unknown mixing procedure {procedure!r}; choose from "
                          f"{sorted(PROCEDURES)}", key="mixing")
    return PROCEDURES[procedure](stems, **kwargs)


def group_instruments(instruments: np.ndarray, classes: Sequence[int], num_classes: int,
                      reduce: str = "sum") -> np.ndarray:
    """Instrument tracks ``(N, C, T)`` → class stems ``(K, C, T)`` (first level of §4.1.2).

    Args:
        instruments: (N, C, T) instrument tracks.
        classes: N class indices in ``[0, num_classes)``.
        num_classes: K.
        reduce: ``"sum"`` (summing, scaling, adaptive rescaling) or ``"mean"`` (averaging); a
            class with no instrument is silent.
    """
    instruments = np.asarray(instruments, dtype=np.float32)
    if instruments.ndim != 3 or len(classes) != instruments.shape[0]:
        raise ValueError(f"instruments must be (N, C, T) with N = len(classes) = {len(classes)},"
                         f" got {instruments.shape}")
    if reduce not in ("sum", "mean"):
        raise ValueError(f"reduce must be 'sum' or 'mean', got {reduce!r}")
    out = np.zeros((num_classes, *instruments.shape[1:]), dtype=np.float32)  # (K, C, T)
    counts = np.zeros(num_classes, dtype=np.int64)
    for track, k in zip(instruments, classes, strict=True):
        if not 0 <= k < num_classes:
            raise ValueError(f"class index {k} out of range [0, {num_classes})")
        out[k] += track
        counts[k] += 1
    if reduce == "mean":
        out /= np.maximum(counts, 1)[:, None, None].astype(np.float32)
    return out
