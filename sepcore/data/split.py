"""Train/validation split of the ``train`` subset, chosen by ``data.valid_split``.

- ``musdb``: musdb's own ``split="valid"`` (its 14 named MUSDB18 tracks; they must be present);
- ``tracks``: the songs named in ``data.valid_tracks``;
- ``ratio``: ``max(1, round(valid_ratio × n))`` songs drawn deterministically from the sorted names
  with a generator seeded by the training seed;
- ``auto``: ``tracks`` when ``valid_tracks`` is set, else ``musdb`` when the tree holds musdb's
  validation tracks, else ``ratio``.

The training songs are the ``train`` subset minus the validation songs.
"""

from __future__ import annotations

import logging

import numpy as np

from sepcore.config import DataConfig
from sepcore.data.musdb import SongRef, list_songs
from sepcore.errors import ConfigError, DataError

log = logging.getLogger(__name__)

VALID_SPLITS = ("auto", "musdb", "tracks", "ratio")


def resolve_valid_split(cfg: DataConfig) -> str:
    """The concrete split mode (``musdb``, ``tracks`` or ``ratio``) ``cfg.valid_split`` means."""
    mode = cfg.valid_split
    if mode not in VALID_SPLITS:
        raise ConfigError(f"unknown data.valid_split {mode!r}; choose from {list(VALID_SPLITS)}",
                          key="data.valid_split")
    if mode != "auto":
        return mode
    if cfg.valid_tracks:
        return "tracks"
    return "musdb" if list_songs(cfg, "train", split="valid") else "ratio"


def split_train_valid(cfg: DataConfig, seed: int) -> tuple[list[SongRef], list[SongRef]]:
    """``(train songs, validation songs)`` of ``cfg.root``'s train subset, disjoint, by name."""
    mode = resolve_valid_split(cfg)
    songs = list_songs(cfg, "train")
    if mode == "musdb":
        valid = list_songs(cfg, "train", split="valid")
        if not valid:
            raise DataError(f"data.valid_split='musdb' but none of musdb's 14 named validation "
                            f"tracks is in {cfg.root}/train; use valid_split 'ratio' or 'tracks'")
        names = {song.name for song in valid}
    elif mode == "tracks":
        names = _named(cfg, songs)
    else:
        names = _ratio(cfg, songs, seed)
    train = [song for song in songs if song.name not in names]
    valid = [song for song in songs if song.name in names]
    if not train:
        raise DataError(f"no training songs left in {cfg.root}/train after holding out "
                        f"{sorted(names)} for validation")
    log.info("validation split %r: %d train, %d validation songs", mode, len(train), len(valid))
    return train, valid


def _named(cfg: DataConfig, songs: list[SongRef]) -> set[str]:
    if not cfg.valid_tracks:
        raise ConfigError("data.valid_split='tracks' needs data.valid_tracks",
                          key="data.valid_tracks")
    available = {song.name for song in songs}
    missing = [name for name in cfg.valid_tracks if name not in available]
    if missing:
        raise DataError(f"validation tracks {missing} not found in {cfg.root}/train; "
                        f"available: {sorted(available)}")
    return set(cfg.valid_tracks)


def _ratio(cfg: DataConfig, songs: list[SongRef], seed: int) -> set[str]:
    if not 0.0 < cfg.valid_ratio < 1.0:
        raise ConfigError(f"data.valid_ratio must be in (0, 1), got {cfg.valid_ratio}",
                          key="data.valid_ratio")
    if len(songs) < 2:
        raise DataError(f"{cfg.root}/train holds {len(songs)} song(s): a ratio validation split "
                        f"needs at least 2 (set data.valid_tracks or add songs)")
    names = sorted(song.name for song in songs)
    count = min(max(1, round(cfg.valid_ratio * len(names))), len(names) - 1)
    picks = np.random.default_rng(seed % 2**63).choice(len(names), size=count, replace=False)
    return {names[int(i)] for i in picks}
