"""Multitrack folder datasets grouped into instrument classes (thesis ch. 4.1, ch. 6.1).

A folder dataset has one folder per song and one WAV per stem with any stem names (e.g. the
Karaoke Version tracks of the thesis (Mocanu, "Musical source separation", EPFL / Logitech, 2020)
§4.1, or a concert's instrument recordings in §6.1), optionally
under ``<root>/<subset>/``. A mapping file (YAML) groups stems into classes::

    classes:                      # class -> the stem names (file names without .wav) it holds
      vocal: [lead_vocals, backing_vocals]
      guitar: [electric_guitar]
      bass: [bass]
    other: other                  # optional catch-all: stems listed nowhere go to this class
    missing: filter               # a song lacking a class: "filter" (drop it, thesis §4.2.2
                                  # "all_instruments", §6.1) or "silence" (a silent class stem)
    mixing: adaptive              # summing | averaging | scaling | adaptive (sepcore.data.mixing)

Each song becomes a :class:`ClassTrack`, a :class:`~sepcore.data.track.TrackAudio` whose stems are
the class stems, so ``audio.sources`` are class names; its ``mixture`` is the one the mixing
procedure gives (the sum of the class stems for summing and adaptive rescaling). A stem named in no
class without a catch-all is a :class:`~sepcore.errors.DataError` naming the file; a song's
``mixture.wav``, if any, is ignored (the mixture is rebuilt from its stems).

:func:`noisy_copy` implements the live-music protocol of ch. 6: models trained on clean data are
evaluated on stems that carry crowd noise and bleed from the other instruments.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from sepcore.config import ACCOMPANIMENT
from sepcore.data import audio
from sepcore.data.cache import cache_key, cached_audio
from sepcore.data.mixing import PROCEDURES, adaptive_rescaling, group_instruments, mix
from sepcore.data.track import TrackAudio
from sepcore.errors import ConfigError, DataError

log = logging.getLogger(__name__)

__all__ = ["ClassMapping", "ClassTrack", "FolderSong", "as_class_track", "list_folder_songs",
           "load_folder_subset", "load_mapping", "noisy_copy", "read_folder_song"]

MISSING_POLICIES = ("filter", "silence")
IGNORED_FILES = ("mixture",)


@dataclass
class ClassMapping:
    """Stem → class grouping of a folder dataset (see the module docstring for the YAML form)."""

    classes: dict[str, list[str]]  # class -> stem names, in class order
    other: str | None = None  # catch-all class for unlisted stems (None = they are errors)
    missing: str = "filter"  # "filter" or "silence"
    mixing: str = "summing"  # a key of sepcore.data.mixing.PROCEDURES
    source: str | None = None  # the file it was read from (for messages)

    def __post_init__(self) -> None:
        where = f" in {self.source}" if self.source else ""
        if not self.classes:
            raise ConfigError(f"mapping has no classes{where}", key="classes", file=self.source)
        if self.missing not in MISSING_POLICIES:
            raise ConfigError(f"missing must be one of {list(MISSING_POLICIES)}, got "
                              f"{self.missing!r}{where}", key="missing", file=self.source)
        if self.mixing not in PROCEDURES:
            raise ConfigError(f"mixing must be one of {sorted(PROCEDURES)}, got "
                              f"{self.mixing!r}{where}", key="mixing", file=self.source)
        seen: dict[str, str] = {}
        for name, stems in self.classes.items():
            for stem in stems:
                if stem in seen:
                    raise ConfigError(f"stem {stem!r} is in both classes {seen[stem]!r} and "
                                      f"{name!r}{where}", key="classes", file=self.source)
                seen[stem] = name
        self._class_of = seen

    @property
    def class_names(self) -> list[str]:
        """The classes in file order, plus the catch-all class if it is a new name."""
        names = list(self.classes)
        if self.other is not None and self.other not in names:
            names.append(self.other)
        return names

    def class_of(self, stem: str) -> str | None:
        """The class of ``stem`` (the catch-all for unlisted stems), None if unmapped."""
        return self._class_of.get(stem, self.other)


def load_mapping(path: str | Path, missing: str | None = None) -> ClassMapping:
    """Read a mapping YAML; ``missing`` overrides the file's policy. ConfigError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"class mapping file not found: {path}", file=str(path))
    try:
        node = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"cannot parse class mapping {path}: {exc}", file=str(path)) from None
    if not isinstance(node, dict) or not isinstance(node.get("classes"), dict):
        raise ConfigError(f"class mapping {path} needs a 'classes:' mapping of class -> list "
                          "of stem names", key="classes", file=str(path))
    unknown = sorted(set(node) - {"classes", "other", "missing", "mixing"})
    if unknown:
        raise ConfigError(f"unknown keys {unknown} in class mapping {path}", key=unknown[0],
                          file=str(path))
    classes = {}
    for name, stems in node["classes"].items():
        stems = [stems] if isinstance(stems, str) else stems
        if not isinstance(stems, list) or not all(isinstance(s, str) for s in stems):
            raise ConfigError(f"class {name!r} in {path} must list stem names, got {stems!r}",
                              key=f"classes.{name}", file=str(path))
        classes[str(name)] = list(stems)
    return ClassMapping(classes=classes, other=node.get("other"),
                        missing=missing or node.get("missing", "filter"),
                        mixing=node.get("mixing", "summing"), source=str(path))


@dataclass
class ClassTrack(TrackAudio):
    """A song's class stems (``stems``: class name → ``(C, T)``) and the mixture built from them.

    ``mix`` is the mixing procedure's mixture; None means the sum of the class stems.
    ``accompaniment`` is available as a target when a ``vocals`` class exists (sum of the others).
    """

    classes: tuple[str, ...] = ()
    mix: np.ndarray | None = field(default=None, repr=False)

    @property
    def num_samples(self) -> int:
        return int(self.stems[self.classes[0]].shape[-1])

    def stacked(self) -> np.ndarray:
        """The class stems as one ``(K, C, T)`` array in class order."""
        return np.stack([self.stems[name] for name in self.classes])

    @property
    def mixture(self) -> np.ndarray:
        if self.mix is not None:
            return self.mix
        return self.stacked().sum(axis=0, dtype=np.float32)

    def targets(self, names: Sequence[str]) -> np.ndarray:
        """``(S, C, T)`` float32 class stems named by ``names``."""
        out = []
        for name in names:
            if name in self.stems:
                out.append(self.stems[name])
            elif name == ACCOMPANIMENT and "vocals" in self.stems:
                out.append(sum(self.stems[c] for c in self.classes if c != "vocals"))
            else:
                raise DataError(f"song '{self.name}' has no class {name!r}; classes: "
                                f"{list(self.classes)}")
        return np.stack(out).astype(np.float32, copy=False)


@dataclass(frozen=True)
class FolderSong:
    """A song folder and its stem files (stem name → WAV path)."""

    name: str
    folder: Path
    files: dict[str, Path]


def list_folder_songs(root: str | Path, subset: str | None = None) -> list[FolderSong]:
    """Song folders under ``root/subset`` (or ``root`` when ``subset`` is None), sorted by name."""
    root = Path(root).expanduser()
    folder = root / subset if subset else root
    if not folder.is_dir():
        raise DataError(f"folder dataset not found: {folder}")
    songs = []
    for song in sorted(p for p in folder.iterdir() if p.is_dir()):
        files = {p.stem: p for p in sorted(song.glob("*.wav")) if p.stem not in IGNORED_FILES}
        if files:
            songs.append(FolderSong(name=song.name, folder=song, files=files))
    if not songs:
        raise DataError(f"no song folders with WAV stems in {folder}")
    return songs


def _read_stem(path: Path, rate: int, channels: int, cache_dir: str | Path | None) -> np.ndarray:
    def decode() -> np.ndarray:
        data, file_rate = audio.read_audio(path)
        return audio.to_channels(audio.resample(data, file_rate, rate), channels)

    return cached_audio(cache_key(path, rate, channels), decode, cache_dir)


def read_folder_song(song: FolderSong, mapping: ClassMapping, sample_rate: int, channels: int,
                     cache_dir: str | Path | None = None) -> ClassTrack | None:
    """Group ``song``'s stems into classes with ``mapping.mixing``; None when it is filtered out.

    Raises:
        DataError: a stem in no class (and no catch-all), or stems of different lengths; the
            message names the file.
    """
    names = mapping.class_names
    assignment: dict[str, str] = {}
    for stem, path in song.files.items():
        cls = mapping.class_of(stem)
        if cls is None:
            raise DataError(f"{path}: stem {stem!r} is in no class of the mapping "
                            f"{mapping.source or ''} (classes {names}); add it to a class or set "
                            "'other:' to a catch-all class")
        assignment[stem] = cls
    absent = [c for c in names if c not in assignment.values() and c != mapping.other]
    if absent and mapping.missing == "filter":
        log.info("song '%s' has no %s: filtered out", song.name, absent)
        return None
    tracks = {stem: _read_stem(path, sample_rate, channels, cache_dir)
              for stem, path in song.files.items()}
    lengths = {stem: t.shape[-1] for stem, t in tracks.items()}
    length = max(lengths.values())
    for stem, n in lengths.items():
        if n != length:
            raise DataError(f"{song.files[stem]} has {n} samples at {sample_rate} Hz but other "
                            f"stems of song '{song.name}' have {length}: {lengths}")
    stems = list(tracks)
    instruments = np.stack([tracks[s] for s in stems])  # (N, C, T)
    reduce = "mean" if mapping.mixing == "averaging" else "sum"
    grouped = group_instruments(instruments, [names.index(assignment[s]) for s in stems],
                                len(names), reduce=reduce)  # (K, C, T)
    class_stems, mixture = mix(mapping.mixing, grouped)
    exact_sum = mapping.mixing in ("summing", "adaptive")
    return ClassTrack(name=song.name, stems=dict(zip(names, class_stems, strict=True)),
                      classes=tuple(names), mix=None if exact_sum else mixture)


def load_folder_subset(root: str | Path, mapping: ClassMapping | str | Path,
                       subset: str | None = None, sample_rate: int = 44100, channels: int = 2,
                       cache_dir: str | Path | None = None, names: Sequence[str] | None = None,
                       max_tracks: int | None = None) -> list[ClassTrack]:
    """The (unfiltered) songs of a folder dataset as :class:`ClassTrack` objects, by name."""
    if not isinstance(mapping, ClassMapping):
        mapping = load_mapping(mapping)
    songs = list_folder_songs(root, subset)
    if names:
        available = {s.name for s in songs}
        unknown = [n for n in names if n not in available]
        if unknown:
            raise DataError(f"tracks {unknown} not found in {root}; available: {sorted(available)}")
        songs = [s for s in songs if s.name in set(names)]
    out: list[ClassTrack] = []
    for song in songs:
        if max_tracks is not None and len(out) >= max_tracks:
            break
        track = read_folder_song(song, mapping, sample_rate, channels, cache_dir)
        if track is not None:
            out.append(track)
    return out


def _crowd_noise(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Pink-ish (−3 dB/octave) noise ``(C, T)``: the broadband hiss of a crowd, unit power."""
    channels, length = shape
    spectrum = rng.standard_normal((channels, length // 2 + 1)) + \
        1j * rng.standard_normal((channels, length // 2 + 1))
    spectrum /= np.sqrt(np.maximum(np.arange(length // 2 + 1), 1.0))  # 1/f power
    noise = np.fft.irfft(spectrum, n=length, axis=-1)
    return (noise / (noise.std() + 1e-12)).astype(np.float32)


def noisy_copy(track: TrackAudio, snr_db: float, rng: np.random.Generator,
               bleed_db: float | None = -20.0, names: Sequence[str] | None = None) -> ClassTrack:
    """A live-music version of ``track`` (thesis ch. 6: crowd noise and bleed in every stem).

    On stage every microphone also records the crowd and the other instruments (§6 intro), and the
    references of the live dataset are those noisy tracks. Each class stem ``s_k`` becomes
    ``s̃_k = s_k + 10^(bleed_db/20) Σ_{j≠k} s_j + g_k n`` with ``n`` one pink crowd noise shared
    by all microphones and ``g_k`` such that ``10 log10(‖s_k‖² / ‖g_k n‖²) = snr_db``; the noisy
    stems and their sum are then rescaled by one α as in §6.1 (adaptive rescaling). No reverb.

    Args:
        track: a clean song (MUSDB-layout :class:`TrackAudio` or :class:`ClassTrack`).
        snr_db: stem-to-crowd-noise ratio in dB.
        rng: draws the noise.
        bleed_db: level of the other stems leaking into each stem (None = no bleed).
        names: the classes (default: the track's classes, or the four MUSDB stems).

    Returns:
        A :class:`ClassTrack` whose stems are the noisy class stems and mixture their sum.
    """
    if names is None:
        names = list(getattr(track, "classes", ()) or track.stems)
    clean = track.targets(names) if isinstance(track, ClassTrack) else \
        np.stack([track.stems[n] for n in names])  # (K, C, T)
    total = clean.sum(axis=0)  # (C, T)
    crowd = _crowd_noise(clean.shape[1:], rng)  # (C, T)
    noisy = []
    for stem in clean:
        out = stem.copy()
        if bleed_db is not None:
            out += np.float32(10 ** (bleed_db / 20)) * (total - stem)
        power = float(np.mean(stem.astype(np.float64) ** 2))
        if power > 0:
            out += np.float32(np.sqrt(power / 10 ** (snr_db / 10))) * crowd
        noisy.append(out)
    stems, _ = adaptive_rescaling(np.stack(noisy))
    return ClassTrack(name=track.name, stems=dict(zip(names, stems, strict=True)),
                      classes=tuple(names))


def as_class_track(track: TrackAudio, names: Sequence[str] | None = None) -> ClassTrack:
    """A MUSDB-layout :class:`TrackAudio` viewed as a :class:`ClassTrack` (classes = its stems)."""
    if isinstance(track, ClassTrack):
        return track
    names = list(names or track.stems)
    return ClassTrack(name=track.name, stems={n: track.stems[n] for n in names},
                      classes=tuple(names))
