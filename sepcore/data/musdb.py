"""Songs of a MUSDB18 / MUSDB18-HQ root (or any tree laid out the same way), via ``musdb.DB``.

``list_songs`` lists a subset (``train``/``test``, optionally musdb's ``train``/``valid`` split of
``train``); ``read_song`` decodes a song's four stems through the cache (:mod:`sepcore.data.cache`)
at the requested rate and channel count. For WAV trees each ``<song>/<stem>.wav`` is read with
:func:`~sepcore.data.audio.read_audio`, so an unreadable file is named in the error; all files of a
song must have the same length, which also catches truncated WAVs that libsndfile reads without
complaint. ``.stem.mp4`` files (MUSDB18) are decoded by musdb/stempeg (ffmpeg).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sepcore.config import STEMS, DataConfig
from sepcore.data import audio
from sepcore.data.cache import cache_key, cached_audio
from sepcore.errors import ConfigError, DataError

log = logging.getLogger(__name__)

SUBSETS = ("train", "test")
_LISTINGS: dict[tuple, list[SongRef]] = {}


@dataclass(frozen=True)
class SongRef:
    """Where a song lives: its name, subset and files (WAV tree) or musdb track (stem.mp4)."""

    name: str
    subset: str
    files: dict[str, Path]  # "mixture" and stem name → WAV file (empty for .stem.mp4)
    track: Any = None  # the musdb.MultiTrack for .stem.mp4 songs

    @property
    def source(self) -> Path:
        """The song's folder (WAV tree) or its ``.stem.mp4`` file."""
        return Path(self.track.path) if self.track is not None else self.files[STEMS[0]].parent


def list_songs(cfg: DataConfig, subset: str, split: str | None = None) -> list[SongRef]:
    """Songs of ``subset`` under ``cfg.root`` sorted by name; ``split`` is musdb's train/valid."""
    root = Path(cfg.root).expanduser()
    if not root.is_dir():
        raise DataError(f"MUSDB root not found: {root}")
    if subset not in SUBSETS:
        raise ConfigError(f"unknown subset {subset!r}; choose from {list(SUBSETS)}",
                          key="eval.subset")
    if split is not None and (subset != "train" or split not in ("train", "valid")):
        raise DataError(f"musdb split {split!r} needs subset 'train' and split 'train' or "
                        f"'valid' (got subset {subset!r})")
    folder = root / subset
    if not folder.is_dir():
        raise DataError(f"MUSDB root {root} has no '{subset}' folder: {folder} not found")
    key = (str(root.absolute()), cfg.is_wav, subset, split, folder.stat().st_mtime_ns)
    if key not in _LISTINGS:
        _LISTINGS[key] = _scan(root, cfg.is_wav, subset, split)
    return list(_LISTINGS[key])


def _scan(root: Path, is_wav: bool, subset: str, split: str | None) -> list[SongRef]:
    import musdb

    try:
        db = musdb.DB(root=str(root), is_wav=is_wav, subsets=subset, split=split)
    except Exception as exc:  # noqa: BLE001 - stempeg/ffprobe raise assorted types
        raise DataError(f"cannot list MUSDB songs in {root / subset}: {exc}") from exc
    songs = []
    for track in db.tracks:
        if not is_wav:
            songs.append(SongRef(name=track.name, subset=subset, files={}, track=track))
            continue
        folder = root / subset / track.name
        files = {"mixture": folder / "mixture.wav"}
        for stem in STEMS:
            files[stem] = folder / f"{stem}.wav"
            if not files[stem].is_file():
                raise DataError(f"song '{track.name}' has no {stem} stem: {files[stem]} not found")
        songs.append(SongRef(name=track.name, subset=subset, files=files))
    return sorted(songs, key=lambda song: song.name)


def read_song(song: SongRef, sample_rate: int, channels: int,
              cache_dir: str | Path | None) -> dict[str, np.ndarray]:
    """The four stems of ``song``, float32 ``(channels, T)`` at ``sample_rate`` (read-only)."""
    if song.track is None:
        _check_wav_lengths(song)
        stems = {stem: _cached_wav(song.files[stem], sample_rate, channels, cache_dir)
                 for stem in STEMS}
    else:
        stems = {stem: _cached_mp4(song, stem, sample_rate, channels, cache_dir)
                 for stem in STEMS}
    lengths = {stem: array.shape[-1] for stem, array in stems.items()}
    reference = Counter(lengths.values()).most_common(1)[0][0]
    for stem, n in lengths.items():
        if n != reference:
            where = song.files.get(stem, song.source)
            raise DataError(f"{where} ({stem}) has {n} samples at {sample_rate} Hz but the other "
                            f"stems of song '{song.name}' have {reference}: {lengths}")
    return stems


def _check_wav_lengths(song: SongRef) -> None:
    """Every WAV of the song must announce the same number of frames; name the odd one out."""
    frames = {kind: audio.audio_frames(path) for kind, path in song.files.items()
              if kind != "mixture" or path.is_file()}
    counts = Counter(frames.values()).most_common()
    if len(counts) == 1:
        return
    reference = counts[0][0]
    if len(counts) > 1 and counts[0][1] == counts[1][1] and "mixture" in frames:
        reference = frames["mixture"]
    for kind, n in frames.items():
        if n != reference:
            raise DataError(f"{song.files[kind]} has {n} samples but the other files of song "
                            f"'{song.name}' have {reference} (truncated or mismatched file?)")


def _cached_wav(path: Path, rate: int, channels: int, cache_dir: str | Path | None) -> np.ndarray:
    def decode() -> np.ndarray:
        data, file_rate = audio.read_audio(path)
        return audio.to_channels(audio.resample(data, file_rate, rate), channels)

    return cached_audio(cache_key(path, rate, channels), decode, cache_dir)


def _cached_mp4(song: SongRef, stem: str, rate: int, channels: int,
                cache_dir: str | Path | None) -> np.ndarray:
    def decode() -> np.ndarray:
        source = song.track.sources.get(stem)
        if source is None:
            raise DataError(f"{song.source} has no {stem} stem")
        try:
            data = np.asarray(source.audio, dtype=np.float32).T  # (C, T)
        except Exception as exc:  # noqa: BLE001 - stempeg/ffmpeg raise assorted types
            raise DataError(f"cannot decode the {stem} stem of {song.source}: {exc}") from exc
        return audio.to_channels(audio.resample(data, int(song.track.rate), rate), channels)

    return cached_audio(cache_key(song.source, rate, channels, stem), decode, cache_dir)


def clear_listing_cache() -> None:
    """Forget the song listings of this process (they are keyed by the folder's mtime)."""
    _LISTINGS.clear()


__all__ = ["SUBSETS", "SongRef", "clear_listing_cache", "list_songs", "read_song"]
