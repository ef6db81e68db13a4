"""On-the-fly augmentations of training stems (Uhlich et al. 2017, Défossez et al.
2019 "Music Source Separation in the Waveform Domain" §4, as in Meta-TasNet).

Each function takes stems shaped ``(sources, channels, time)`` (NumPy) and an explicit
``np.random.Generator`` and returns new stems; the mixture is built *after* augmentation, as the
sum of the augmented stems, so it stays consistent with the targets. Cross-song remixing (each
stem from a different random song and offset) needs the song list and lives in
:class:`sepcore.data.dataset.TrainChunks`.
"""

from __future__ import annotations

import numpy as np

from sepcore.config import AugmentConfig


def random_channel(stems: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Pick one channel at random (one pick for all sources) and copy it to every channel."""
    channels = stems.shape[1]
    if channels == 1:
        return stems
    pick = int(rng.integers(channels))
    return np.repeat(stems[:, pick : pick + 1], channels, axis=1)  # (S, C, T)


def random_gain(stems: np.ndarray, rng: np.random.Generator, gain_min: float = 0.75,
                gain_max: float = 1.25) -> np.ndarray:
    """Scale every source by its own gain drawn uniformly from ``[gain_min, gain_max]``."""
    gains = rng.uniform(gain_min, gain_max, size=stems.shape[0]).astype(np.float32)  # (S,)
    return stems * gains[:, None, None]


def channel_swap(stems: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Per source, with probability 0.5, reverse the channel order (swap left and right)."""
    if stems.shape[1] == 1:
        return stems
    swap = rng.random(stems.shape[0]) < 0.5  # (S,)
    return np.where(swap[:, None, None], stems[:, ::-1], stems)


def augment(stems: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """Apply the augmentations switched on in ``cfg`` (channel pick, gain, channel swap)."""
    out = np.asarray(stems, dtype=np.float32)
    if cfg.random_channel:
        out = random_channel(out, rng)
    if cfg.gain:
        out = random_gain(out, rng, cfg.gain_min, cfg.gain_max)
    if cfg.channel_swap:
        out = channel_swap(out, rng)
    return out.astype(np.float32, copy=False)
