"""On-the-fly augmentations of training stems (Uhlich et al. 2017, Défossez et al.
2019 "Music Source Separation in the Waveform Domain" §4, Meta-TasNet: Samuel, Ganeshan &
Naradowsky, "Meta-learning Extractors for Music Source Separation", ICASSP 2020, reference code
``pfnet-research/meta-tasnet`` ``dataset.py``).

Each function takes stems shaped ``(sources, channels, time)`` (NumPy) and an explicit
``np.random.Generator`` and returns new stems; the mixture is built *after* augmentation, as the
sum of the augmented stems, so it stays consistent with the targets. :func:`augment`, which the
training items use, draws exactly as ``channel_swap(random_gain(random_channel(…)))`` but writes
its output once, straight from views of the songs (no stacked copy, no intermediate arrays).
Cross-song remixing (each stem from a different random song and offset) needs the song list and
lives in
:class:`sepcore.data.dataset.TrainChunks`, which also decides which items of a batch are remixed
(:func:`remixed`).

Meta-TasNet's reference augmentation, in sepcore's terms (``data.augment``): ``random_channel:
true, channel_pick: source`` (``random_channels``: every instrument takes the left or the right
channel, drawn per instrument), ``gain: true`` in [0.75, 1.25] per instrument (``random_amp``),
no channel swap (the reference defines ``random_channel_swap`` but never calls it), and
``remix: true, remix_share: 0.5`` (``shuffle_p = 0.5``: half of every batch is remixed across
songs, the other half keeps each chunk's own song).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from sepcore.config import AugmentConfig


def random_channel(stems: np.ndarray, rng: np.random.Generator, per_source: bool = False,
                   channels: int | None = None) -> np.ndarray:
    """Pick a channel at random and copy it to ``channels`` channels (default: as many as in).

    Args:
        stems: (S, C, T).
        per_source: one pick per source (Meta-TasNet's ``random_channels``) instead of one pick
            for all sources.
        channels: output channels (1 for a mono model reading stereo stems).
    Returns:
        (S, channels, T). Mono input is returned unchanged (nothing to pick).
    """
    sources, in_channels = stems.shape[:2]
    channels = in_channels if channels is None else channels
    if in_channels == 1:
        return stems
    if per_source:
        picks = rng.integers(in_channels, size=sources)  # (S,)
    else:
        picks = np.full(sources, int(rng.integers(in_channels)))
    picked = stems[np.arange(sources), picks][:, None]  # (S, 1, T)
    return np.repeat(picked, channels, axis=1)  # (S, channels, T)


def remixed(index: int, share: float) -> bool:
    """Whether item ``index`` is remixed when a ``share`` of every batch is.

    Items ``i`` with ``floor((i + 1)·share) > floor(i·share)`` are remixed: any run of ``B``
    consecutive indices (a batch of the trainer's in-order loader) holds ``floor(B·share)`` or
    ``ceil(B·share)`` of them — exactly ``B / 2`` for ``share = 0.5`` and an even batch —
    whatever the batch size, so an item stays a pure function of its index.
    """
    if share >= 1.0:
        return True
    return math.floor((index + 1) * share) > math.floor(index * share)


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


def augment(stems: np.ndarray | Sequence[np.ndarray], cfg: AugmentConfig,
            rng: np.random.Generator, channels: int | None = None) -> np.ndarray:
    """Apply the augmentations switched on in ``cfg`` (channel pick, gain, channel swap).

    Equal, bit for bit and draw for draw, to :func:`random_channel`, then :func:`random_gain`,
    then :func:`channel_swap` on ``np.stack(stems)``; but the draws come first and the output is
    written once, each output channel from its input channel (times the source's gain), so
    ``stems`` can be views of whole songs and nothing else of the song is copied.

    Args:
        stems: S arrays ``(C, T)`` (or one ``(S, C, T)`` array), float32.
        channels: the model's channel count when the stems were read with more channels so that
            a per-source pick has channels to pick from (see ``TrainChunks``); default: unchanged.
    Returns:
        A new ``(S, channels, T)`` float32 array.
    """
    stems = [np.asarray(stem, dtype=np.float32) for stem in stems]
    sources, (in_channels, length) = len(stems), stems[0].shape
    route = np.tile(np.arange(in_channels), (sources, 1))  # (S, C_out): input channel of each
    if cfg.random_channel and in_channels > 1:
        if cfg.channel_pick == "source":
            picks = rng.integers(in_channels, size=sources)  # (S,)
        else:
            picks = np.full(sources, int(rng.integers(in_channels)))
        route = np.repeat(picks[:, None], in_channels if channels is None else channels, axis=1)
    gains = None
    if cfg.gain:
        gains = rng.uniform(cfg.gain_min, cfg.gain_max, size=sources).astype(np.float32)  # (S,)
    if cfg.channel_swap and route.shape[1] > 1:
        swap = rng.random(sources) < 0.5  # (S,)
        route[swap] = route[swap, ::-1]
    out = np.empty((sources, route.shape[1], length), dtype=np.float32)  # (S, C_out, T)
    for s, stem in enumerate(stems):
        for c, source_channel in enumerate(route[s]):
            if gains is None:
                out[s, c] = stem[source_channel]
            else:
                np.multiply(stem[source_channel], gains[s], out=out[s, c])
    return out
