"""One song's decoded stems and the targets (single stems or accompaniment) built from them.

A target name is one of the four MUSDB stems (``vocals``, ``drums``, ``bass``, ``other``) or
``accompaniment`` = drums + bass + other; the mixture is the sum of the four stems.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sepcore.config import ACCOMPANIMENT, STEMS
from sepcore.errors import ConfigError, DataError

TARGET_NAMES = (*STEMS, ACCOMPANIMENT)


def check_targets(names: Sequence[str]) -> None:
    """ConfigError (key ``audio.sources``, which fills ``data.targets``) unless every name is a
    stem or ``accompaniment``."""
    if not names:
        raise ConfigError("audio.sources is empty", key="audio.sources")
    for name in names:
        if name not in TARGET_NAMES:
            raise ConfigError(f"unknown source {name!r} in audio.sources; choose from "
                              f"{list(TARGET_NAMES)}", key="audio.sources")


def targets_from_stems(stems: np.ndarray | Sequence[np.ndarray],
                       names: Sequence[str]) -> np.ndarray:
    """Four ``(C, T)`` float32 stems in STEMS order → ``(S, C, T)`` float32 targets named by
    ``names``, each written once into the result (no per-target temporaries)."""
    stems = [np.asarray(stem, dtype=np.float32) for stem in stems]
    out = np.empty((len(names), *stems[0].shape), dtype=np.float32)  # (S, C, T)
    for s, name in enumerate(names):
        if name in STEMS:
            out[s] = stems[STEMS.index(name)]
        elif name == ACCOMPANIMENT:  # drums + bass + other, summed in that order
            np.add(stems[1], stems[2], out=out[s])
            out[s] += stems[3]
        else:
            raise DataError(f"unknown target {name!r}; choose from {list(TARGET_NAMES)}")
    return out


@dataclass
class TrackAudio:
    """A song's four stems, each float32 ``(C, T)`` at the data config's rate and channels."""

    name: str
    stems: dict[str, np.ndarray]

    @property
    def num_samples(self) -> int:
        return int(self.stems[STEMS[0]].shape[-1])

    def stacked(self) -> np.ndarray:
        """The four stems as one ``(4, C, T)`` array in STEMS order."""
        return np.stack([self.stems[name] for name in STEMS])

    @property
    def mixture(self) -> np.ndarray:
        """Sum of the four stems, ``(C, T)`` float32."""
        total = np.zeros_like(self.stems[STEMS[0]], dtype=np.float32)
        for name in STEMS:
            total += self.stems[name]
        return total

    def targets(self, names: Sequence[str]) -> np.ndarray:
        """``(S, C, T)`` float32 targets for ``names`` (stems or ``accompaniment``)."""
        return targets_from_stems([self.stems[name] for name in STEMS], names)
