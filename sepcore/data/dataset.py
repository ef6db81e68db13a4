"""Datasets of fixed-length chunks for training and of whole songs/chunks for validation.

``build_datasets(cfg, seed)`` splits the train subset (:mod:`sepcore.data.split`), loads every song
once through the cache (resampled to ``cfg.sample_rate``, converted to ``cfg.channels``) and returns
a :class:`TrainChunks` (random, augmented chunks; each item is a pure function of
``(seed, epoch, index)`` so neither DataLoader workers nor iteration order change it, which exact
resume relies on; an item is asked for by index or by ``(epoch, index)``, the key that
:class:`sepcore.data.loader.EpochSampler` gives workers, which never see ``set_epoch``; with
``data.augment.remix_share`` < 1 only that share of every in-order batch is remixed across songs,
see :func:`sepcore.data.augment.remixed`) and a :class:`ValidChunks` (no augmentation). Items are
``(mixture (C, T), targets (S, C, T))`` float32 tensors with the mixture the sum of all four stems.

With ``data.layout = "folders"`` the songs come from a multitrack folder dataset grouped into
classes by ``data.mapping`` (:mod:`sepcore.data.folders`): the stems are then the classes, targets
are class names, and training mixtures are the sum of the (augmented) class stems.
"""

from __future__ import annotations

import dataclasses
import logging
import warnings

import numpy as np
import torch
from torch.utils.data import Dataset

from sepcore.config import STEMS, DataConfig
from sepcore.data.augment import augment, remixed
from sepcore.data.musdb import SongRef, list_songs, read_song
from sepcore.data.split import split_train_valid
from sepcore.data.track import TrackAudio, check_targets, targets_from_stems
from sepcore.errors import ConfigError, DataError

log = logging.getLogger(__name__)


def list_tracks(cfg: DataConfig, subset: str, split: str | None = None) -> list[SongRef]:
    """The songs of ``subset`` (``train``/``test``; ``split`` = musdb's train/valid) by name."""
    return list_songs(cfg, subset, split)


def load_song(song: SongRef, cfg: DataConfig) -> TrackAudio:
    """Decode (or fetch from the cache) ``song`` at ``cfg.sample_rate`` and ``cfg.channels``."""
    _check_audio_config(cfg)
    stems = read_song(song, cfg.sample_rate, cfg.channels, cfg.cache_dir)
    return TrackAudio(name=song.name, stems=stems)


def _folder_subset(cfg: DataConfig, subset: str, names: list[str] | None = None,
                   max_tracks: int | None = None) -> list[TrackAudio]:
    """Songs of a folder dataset (``root/subset/`` when it exists, else ``root/``)."""
    from pathlib import Path

    from sepcore.data.folders import load_folder_subset, load_mapping

    _check_audio_config(cfg)
    if not cfg.mapping:
        raise ConfigError("data.layout='folders' needs data.mapping", key="data.mapping")
    where = subset if (Path(cfg.root).expanduser() / subset).is_dir() else None
    return load_folder_subset(cfg.root, load_mapping(cfg.mapping, missing=cfg.missing),
                              subset=where, sample_rate=cfg.sample_rate, channels=cfg.channels,
                              cache_dir=cfg.cache_dir, names=names, max_tracks=max_tracks)


def load_subset(cfg: DataConfig, subset: str = "test", names: list[str] | None = None,
                max_tracks: int | None = None) -> list[TrackAudio]:
    """Songs of ``subset`` sorted by name, optionally only ``names`` and at most ``max_tracks``."""
    if cfg.layout == "folders":
        return _folder_subset(cfg, subset, names, max_tracks)
    songs = list_songs(cfg, subset)
    if names:
        available = {song.name for song in songs}
        missing = [name for name in names if name not in available]
        if missing:
            raise DataError(f"tracks {missing} not found in {cfg.root}/{subset}; "
                            f"available: {sorted(available)}")
        songs = [song for song in songs if song.name in set(names)]
    if max_tracks is not None:
        songs = songs[:max_tracks]
    return [load_song(song, cfg) for song in songs]


def _training_read_config(cfg: DataConfig) -> DataConfig:
    """How training songs are read: in stereo when a mono model picks a channel per source
    (Meta-TasNet's ``random_channels`` picks from the stereo stems; a mono mixdown has no
    channel to pick), else as ``cfg`` says."""
    aug = cfg.augment
    if aug.random_channel and aug.channel_pick == "source" and cfg.channels == 1:
        return dataclasses.replace(cfg, channels=2)
    return cfg


def build_datasets(cfg: DataConfig, seed: int) -> tuple[TrainChunks, ValidChunks]:
    """Training and validation datasets of ``cfg.root``'s train subset (see the module doc)."""
    read = _training_read_config(cfg)
    if cfg.layout == "folders":
        from sepcore.data.split import _named, _ratio

        songs = _folder_subset(cfg, "train")
        held = _named(cfg, songs) if cfg.valid_tracks else _ratio(cfg, songs, seed)
        train_songs = songs if read is cfg else _folder_subset(read, "train")
        return (TrainChunks([s for s in train_songs if s.name not in held], cfg, seed),
                ValidChunks([s for s in songs if s.name in held], cfg))
    check_targets(cfg.targets)
    _check_audio_config(cfg)
    train_songs, valid_songs = split_train_valid(cfg, seed)
    train = TrainChunks([load_song(song, read) for song in train_songs], cfg, seed)
    valid = ValidChunks([load_song(song, cfg) for song in valid_songs], cfg)
    return train, valid


def _check_audio_config(cfg: DataConfig) -> None:
    if cfg.channels not in (1, 2):
        raise ConfigError(f"audio.channels must be 1 or 2, got {cfg.channels}",
                          key="audio.channels")
    if cfg.sample_rate <= 0:
        raise ConfigError(f"audio.sample_rate must be positive, got {cfg.sample_rate}",
                          key="audio.sample_rate")


def _stem_names(songs: list[TrackAudio]) -> tuple[str, ...]:
    """The stems every song holds: the four MUSDB stems, or a folder dataset's classes."""
    classes = getattr(songs[0], "classes", None) if songs else None
    return tuple(classes) if classes else STEMS


def _check_names(cfg: DataConfig, stem_names: tuple[str, ...]) -> None:
    if cfg.layout != "folders":
        check_targets(cfg.targets)
        return
    unknown = [t for t in cfg.targets if t not in stem_names]
    if unknown or not cfg.targets:
        raise ConfigError(f"audio.sources {list(cfg.targets)}: {unknown} are not classes of the "
                          f"mapping {cfg.mapping} ({list(stem_names)})", key="audio.sources")


def _to_tensors(stems: np.ndarray | list[np.ndarray], names: list[str],
                stem_names: tuple[str, ...] = STEMS,
                owned: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Stems ``(C, T)`` → (mixture ``(C, T)`` = sum of all stems, targets ``(S, C, T)``).

    ``owned``: ``stems`` is a fresh ``(K, C, T)`` float32 array nobody else holds, which becomes
    the targets as it is when they are the stems in order (no copy).
    """
    mixture = np.zeros(stems[0].shape, dtype=np.float32)
    for stem in stems:
        mixture += stem
    if owned and list(names) == list(stem_names):
        targets = stems
    elif stem_names == STEMS:
        targets = targets_from_stems(stems, names)
    else:  # classes of a folder dataset
        targets = np.empty((len(names), *mixture.shape), dtype=np.float32)  # (S, C, T)
        for s, name in enumerate(names):
            targets[s] = stems[stem_names.index(name)]
    return torch.from_numpy(mixture), torch.from_numpy(targets)


class TrainChunks(Dataset):
    """``len(songs) × samples_per_track`` random chunks of ``segment`` seconds per epoch."""

    def __init__(self, songs: list[TrackAudio], cfg: DataConfig, seed: int):
        self.stem_names = _stem_names(songs)
        _check_names(cfg, self.stem_names)
        if cfg.short_tracks not in ("pad", "skip"):
            raise ConfigError(f"data.short_tracks must be 'pad' or 'skip', got "
                              f"{cfg.short_tracks!r}", key="data.short_tracks")
        if cfg.segment <= 0 or cfg.samples_per_track < 1:
            raise ConfigError(f"data.segment ({cfg.segment}) and data.samples_per_track "
                              f"({cfg.samples_per_track}) must be positive", key="data.segment")
        self.cfg = cfg
        self.seed = int(seed)
        self.epoch = 0
        self._order, self._order_epoch = None, None  # see _song_of
        self.chunk = int(round(cfg.segment * cfg.sample_rate))
        self.songs = [song for song in (self._fit(song) for song in songs) if song is not None]
        if not self.songs:
            raise DataError(f"no training song in {cfg.root}/train is usable (songs shorter than "
                            f"{cfg.segment} s are skipped with data.short_tracks='skip')")

    def _fit(self, song: TrackAudio) -> TrackAudio | None:
        """Pad (with a warning) or drop (with a warning) a song shorter than one chunk."""
        n = song.num_samples
        if n >= self.chunk:
            return song
        what = "zero-padded" if self.cfg.short_tracks == "pad" else "skipped"
        warnings.warn(f"song '{song.name}' is shorter than one training chunk ({n} < {self.chunk}"
                      f" samples at {self.cfg.sample_rate} Hz): {what}", stacklevel=2)
        if self.cfg.short_tracks == "skip":
            return None
        stems = {name: np.pad(a, ((0, 0), (0, self.chunk - n))) for name, a in song.stems.items()}
        return dataclasses.replace(song, stems=stems)

    def set_epoch(self, epoch: int) -> None:
        """Chunks are a function of (seed, epoch, index): a new epoch draws new chunks.

        The epoch of items asked for by a plain index; a DataLoader's workers hold copies of the
        dataset, so the trainer passes ``(epoch, index)`` keys instead (see ``EpochSampler``).
        """
        self.epoch = int(epoch)

    def _song_of(self, index: int, epoch: int) -> int:
        """The song of an item that keeps its own song's stems together.

        In order (item ``i`` from song ``i // samples_per_track``) unless only a share of each
        batch is remixed: then a permutation drawn from (seed, epoch) spreads the songs over
        the batches (as the Meta-TasNet reference draws each item's song at random) while every
        song still gives ``samples_per_track`` items per epoch.
        """
        if not self.cfg.augment.remix or self.cfg.augment.remix_share >= 1.0:
            return index // self.cfg.samples_per_track
        if self._order_epoch != epoch:
            rng = np.random.default_rng([self.seed % 2**63, epoch, 2**32])
            self._order = rng.permutation(len(self))
            self._order_epoch = epoch
        return int(self._order[index]) // self.cfg.samples_per_track

    def __len__(self) -> int:
        return len(self.songs) * self.cfg.samples_per_track

    def _offset(self, song: int, rng: np.random.Generator) -> int:
        return int(rng.integers(self.songs[song].num_samples - self.chunk + 1))

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Item ``key`` = ``index`` (of the epoch set by :meth:`set_epoch`) or ``(epoch, index)``:
        ``(mixture (C, T), targets (S, C, T))``, built from views of the songs' stems (only the
        chunk is read from the memory-mapped cache) into one augmented ``(K, C, T)`` array."""
        epoch, index = key if isinstance(key, tuple) else (self.epoch, key)
        if not 0 <= index < len(self):
            raise IndexError(f"chunk {index} out of range for {len(self)} chunks")
        rng = np.random.default_rng([self.seed % 2**63, int(epoch), int(index)])
        aug = self.cfg.augment
        if aug.remix and remixed(index, aug.remix_share):  # each stem: own random song, offset
            picks = [int(p) for p in rng.integers(len(self.songs), size=len(self.stem_names))]
            offsets = [self._offset(p, rng) for p in picks]
        else:
            picks = [self._song_of(index, epoch)] * len(self.stem_names)
            offsets = [self._offset(picks[0], rng)] * len(self.stem_names)
        views = [self.songs[p].stems[name][:, o : o + self.chunk]
                 for p, o, name in zip(picks, offsets, self.stem_names, strict=True)]  # K × (C, T)
        stems = augment(views, aug, rng, channels=self.cfg.channels)  # (K, C, T), a new array
        return _to_tensors(stems, list(self.cfg.targets), self.stem_names, owned=True)


class ValidChunks(Dataset):
    """Validation items: whole songs (``valid_segment`` None) or consecutive chunks of them."""

    def __init__(self, songs: list[TrackAudio], cfg: DataConfig):
        self.stem_names = _stem_names(songs)
        _check_names(cfg, self.stem_names)
        self.cfg = cfg
        self.songs = songs
        self.items: list[tuple[int, int, int]] = []  # (song, start, length)
        size = None if cfg.valid_segment is None else int(round(cfg.valid_segment *
                                                                cfg.sample_rate))
        if size is not None and size <= 0:
            raise ConfigError(f"data.valid_segment must be positive, got {cfg.valid_segment}",
                              key="data.valid_segment")
        for k, song in enumerate(songs):
            n = song.num_samples
            if size is None or n < size:
                self.items.append((k, 0, n))
            else:
                self.items.extend((k, start, size) for start in range(0, n - size + 1, size))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        k, start, length = self.items[index]
        stems = [self.songs[k].stems[name][:, start : start + length]
                 for name in self.stem_names]
        return _to_tensors(stems, list(self.cfg.targets), self.stem_names)
