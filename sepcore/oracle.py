"""``sep oracle``: how separable is each class? The IRM/IBM oracle per class (thesis §4.1.2).

The thesis (Mocanu, "Musical source separation", master thesis, EPFL / Logitech, 2020) judges
candidate instrument classes by the score of the ideal ratio mask (α = 2, eq. 4.1) before training
anything: "for each of the instrument classes [...] we computed both the SDR and the
SI-SDR using IRM. The SDR for a song was computed as the median over 6 second chunks and, for a set
of songs, we took the median of these values. [...] we computed the SI-SDR on whole songs and took
the median over all songs" (Tables 4.1–4.3; Table 4.2 is MUSDB18-HQ). The table printed here has,
per class, the number of songs where it is active, SI-SDR mean and median over songs, and the
median over songs of the per-song BSSEval v4 SDR median over 6 s chunks.

The oracle separates a *partition* of the mixture: the four MUSDB stems (or vocals/accompaniment
when exactly those are asked for) or all the classes of a folder dataset's mapping; a requested
``accompaniment`` is then the sum of the non-vocal estimates. Songs where a class is silent do not
count for that class. :func:`score_model` scores a trained model the same way, and
:func:`live_protocol` scores it on noisy copies of the songs (thesis ch. 6).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from sepcore.config import ACCOMPANIMENT, STEMS, DataConfig, ExperimentConfig
from sepcore.data.folders import ClassTrack, as_class_track, load_folder_subset, noisy_copy
from sepcore.data.track import TrackAudio
from sepcore.errors import ConfigError, DataError
from sepcore.metrics.bsseval import evaluate as bss_evaluate
from sepcore.metrics.sisdr import si_sdr
from sepcore.models import build_model
from sepcore.models.oracles import with_references

log = logging.getLogger(__name__)

__all__ = ["ClassScores", "build_oracle", "live_protocol", "load_tracks", "oracle_from_config",
           "oracle_scores", "score_model", "score_tracks"]

ORACLES = ("irm", "ibm")
Estimator = Callable[[ClassTrack, list[str]], np.ndarray]  # (track, sources) → (S, C, T)


@dataclass
class ClassScores:
    """Per-song and per-class scores (dB); NaN where a class is silent in a song."""

    classes: list[str]
    sisdr: dict[str, dict[str, float]] = field(default_factory=dict)  # song → class → SI-SDR
    sdr: dict[str, dict[str, float]] = field(default_factory=dict)  # song → class → SDR median
    summary: dict[str, dict[str, float]] = field(default_factory=dict)  # class → statistic
    table: str = ""


def partition(track_classes: Sequence[str], requested: Sequence[str]) -> list[str]:
    """The sources the oracle separates for ``requested`` classes (see the module docstring)."""
    have = list(track_classes)
    if set(requested) == {"vocals", ACCOMPANIMENT} and ACCOMPANIMENT not in have and \
            "vocals" in have:
        return ["vocals", ACCOMPANIMENT]
    for name in requested:
        if name not in have and not (name == ACCOMPANIMENT and "vocals" in have):
            raise ConfigError(f"unknown class {name!r}; the dataset's classes are {have}"
                              + (f" (and {ACCOMPANIMENT!r})" if "vocals" in have else ""),
                              key="classes")
    return have


def load_tracks(root: str | Path, subset: str | None = "test", sample_rate: int = 44100,
                channels: int = 2, mapping: str | Path | None = None,
                missing: str | None = None, max_tracks: int | None = None,
                cache_dir: str | Path | None = None) -> list[ClassTrack]:
    """Songs of a MUSDB-layout tree (no ``mapping``) or of a folder dataset, as ClassTracks."""
    if mapping is None:
        from sepcore.data import load_subset

        cfg = DataConfig(root=str(root), sample_rate=sample_rate, channels=channels,
                         cache_dir=None if cache_dir is None else str(cache_dir))
        songs = load_subset(cfg, subset=subset or "test", max_tracks=max_tracks)
        return [as_class_track(song, STEMS) for song in songs]
    from sepcore.data.folders import load_mapping

    class_map = load_mapping(mapping, missing=missing)
    where = subset if subset and (Path(root) / subset).is_dir() else None
    return load_folder_subset(root, class_map, subset=where, sample_rate=sample_rate,
                              channels=channels, cache_dir=cache_dir, max_tracks=max_tracks)


def _active(x: np.ndarray) -> bool:
    return bool(np.any(x != 0))


def _sdr_medians(refs: np.ndarray, ests: np.ndarray, win: int) -> np.ndarray:
    """Per source, the median over ``win``-sample chunks of BSSEval v4 SDR (NaN if impossible)."""
    out = np.full(refs.shape[0], np.nan)
    active = [k for k in range(refs.shape[0]) if _active(refs[k]) and _active(ests[k])]
    if not active:
        return out
    win = min(win, refs.shape[-1])
    sdr, _isr, _sir, _sar = bss_evaluate(np.transpose(refs[active], (0, 2, 1)),
                                         np.transpose(ests[active], (0, 2, 1)),
                                         win=win, hop=win)  # (S', nwin)
    for k, row in zip(active, sdr, strict=True):
        if np.isfinite(row).any():
            out[k] = float(np.nanmedian(row))
    return out


def _song_sisdr(refs: np.ndarray, ests: np.ndarray) -> np.ndarray:
    """Per source, SI-SDR over the whole song (mean over channels); NaN for a silent source."""
    values = np.asarray(si_sdr(ests.astype(np.float64), refs.astype(np.float64))).mean(axis=-1)
    return np.where([_active(r) for r in refs], values, np.nan)


def score_tracks(tracks: Sequence[TrackAudio], classes: Sequence[str],
                 estimate: Estimator, sources: Callable[[ClassTrack], list[str]],
                 sample_rate: int, chunk: float = 6.0) -> ClassScores:
    """Score ``estimate`` per class on ``tracks`` (SI-SDR whole songs, SDR median of chunks).

    Args:
        tracks: songs (MUSDB-layout TrackAudio or ClassTrack).
        classes: the classes to report (``accompaniment`` is derived when not estimated).
        estimate: ``(track, sources) → (S, C, T)`` estimates of ``sources``.
        sources: the sources to estimate for a track (a partition of its mixture).
        sample_rate: of the audio (for the chunk length).
        chunk: BSSEval window and hop in seconds (6 s in the thesis).
    """
    result = ClassScores(classes=list(classes))
    win = max(1, int(round(chunk * sample_rate)))
    for raw in tracks:
        track = as_class_track(raw)
        names = sources(track)
        refs = track.targets(names)  # (S, C, T)
        ests = np.asarray(estimate(track, names), dtype=np.float32)  # (S, C, T)
        if ests.shape != refs.shape:
            raise DataError(f"estimates of song '{track.name}' have shape {ests.shape}, "
                            f"references {refs.shape}")
        sisdr = dict(zip(names, _song_sisdr(refs, ests).tolist(), strict=True))
        sdr = dict(zip(names, _sdr_medians(refs, ests, win).tolist(), strict=True))
        if ACCOMPANIMENT in classes and ACCOMPANIMENT not in names:
            rest = [k for k, n in enumerate(names) if n != "vocals"]
            vocals = names.index("vocals")
            pair_refs = np.stack([refs[vocals], refs[rest].sum(axis=0)])
            pair_ests = np.stack([ests[vocals], ests[rest].sum(axis=0)])
            sisdr[ACCOMPANIMENT] = float(_song_sisdr(pair_refs, pair_ests)[1])
            sdr[ACCOMPANIMENT] = float(_sdr_medians(pair_refs, pair_ests, win)[1])
        result.sisdr[track.name] = {c: sisdr[c] for c in classes}
        result.sdr[track.name] = {c: sdr[c] for c in classes}
        log.info("scored %s", track.name)
    result.summary = _summarise(result)
    result.table = format_class_table(result.summary)
    return result


def _summarise(scores: ClassScores) -> dict[str, dict[str, float]]:
    summary = {}
    for name in scores.classes:
        si = np.array([song[name] for song in scores.sisdr.values()], dtype=np.float64)
        sd = np.array([song[name] for song in scores.sdr.values()], dtype=np.float64)
        finite_si, finite_sd = si[np.isfinite(si)], sd[np.isfinite(sd)]
        summary[name] = {
            "songs": float(finite_si.size),
            "SI-SDR mean": float(finite_si.mean()) if finite_si.size else math.nan,
            "SI-SDR median": float(np.median(finite_si)) if finite_si.size else math.nan,
            "SDR median": float(np.median(finite_sd)) if finite_sd.size else math.nan,
        }
    return summary


def format_class_table(summary: dict[str, dict[str, float]]) -> str:
    """Per-class table (thesis Tables 4.1–4.3 form): songs, SI-SDR mean/median, SDR median."""
    columns = ["songs", "SI-SDR mean", "SI-SDR median", "SDR median"]
    lines = [f"{'class':<16}" + "".join(f"{c:>15}" for c in columns)]
    for name, row in summary.items():
        cells = [f"{int(row['songs']):>15d}"] + [f"{row[c]:>15.3f}" for c in columns[1:]]
        lines.append(f"{name:<16}" + "".join(cells))
    return "\n".join(lines)


def build_oracle(oracle: str, sources: Sequence[str], sample_rate: int, channels: int,
                 alpha: float = 2.0, n_fft: int = 4096, hop: int = 1024) -> torch.nn.Module:
    """The ``irm``/``ibm`` model of :mod:`sepcore.models.oracles` for ``sources``."""
    if oracle not in ORACLES:
        raise ConfigError(f"unknown oracle {oracle!r}; choose from {list(ORACLES)}",
                          key="oracle")
    return build_model(oracle, {"sources": list(sources), "audio_channels": channels,
                                "sample_rate": sample_rate, "n_fft": n_fft, "hop": hop,
                                "alpha": alpha}).eval()


def oracle_scores(root: str | Path, classes: Sequence[str], oracle: str = "irm",
                  alpha: float = 2.0, subset: str | None = "test", sample_rate: int = 44100,
                  channels: int = 2, mapping: str | Path | None = None,
                  missing: str | None = None, n_fft: int = 4096, hop: int = 1024,
                  chunk: float = 6.0, max_tracks: int | None = None,
                  segment: float = 30.0, cache_dir: str | Path | None = None) -> ClassScores:
    """Score each class of a dataset with the IRM/IBM oracle (``sep oracle``, Tables 4.1–4.3).

    Args:
        root: a MUSDB-layout tree (classes vocals/drums/bass/other/accompaniment) or, with
            ``mapping``, a folder dataset (``root/subset/<song>/`` or ``root/<song>/``).
        classes: the classes to report.
        oracle: ``"irm"`` (α from ``alpha``: 2 Wiener-like, 1 magnitude) or ``"ibm"``.
        mapping: the stem → class YAML of a folder dataset; ``missing`` overrides its policy.
        n_fft, hop: STFT of the oracle (SiSEC 2018: 4096 / 1024 at 44.1 kHz).
        chunk: BSSEval window/hop in seconds (6 s in the thesis).
        segment: seconds per inference chunk (chunking is exact for the oracles).
    """
    if not classes:
        raise ConfigError("no classes given", key="classes")
    tracks = load_tracks(root, subset, sample_rate, channels, mapping, missing, max_tracks,
                         cache_dir)
    if not tracks:
        raise DataError(f"no songs to score in {root} (subset {subset!r})")
    models: dict[tuple[str, ...], torch.nn.Module] = {}

    def estimate(track: ClassTrack, names: list[str]) -> np.ndarray:
        from sepcore.separate import apply_model

        model = models.setdefault(tuple(names), build_oracle(oracle, names, sample_rate,
                                                             channels, alpha, n_fft, hop))
        refs = torch.from_numpy(np.ascontiguousarray(track.targets(names)))
        mix = torch.from_numpy(np.ascontiguousarray(track.mixture))
        return apply_model(*with_references(model, mix, refs), segment=segment).numpy()

    return score_tracks(tracks, classes, estimate, lambda t: partition(t.classes, classes),
                        sample_rate, chunk)


def oracle_from_config(cfg: ExperimentConfig) -> ClassScores:
    """``sep oracle CONFIG [overrides…]``: :func:`oracle_scores` with every setting from the config.

    ``model.name`` is ``irm`` or ``ibm`` (its ``n_fft``, ``hop``, ``alpha``); the classes are
    ``audio.sources``, scored at ``audio.sample_rate`` and ``audio.channels``; the songs are
    ``eval.subset`` of ``data.root`` (a folder dataset with ``data.layout=folders`` and
    ``data.mapping``), at most ``eval.max_tracks``; BSSEval chunks are ``eval.win`` seconds,
    non-overlapping (``eval.hop`` must equal it), inference runs in ``eval.segment`` chunks.
    """
    if cfg.model_name not in ORACLES:
        raise ConfigError(f"model.name must be one of {list(ORACLES)} for `sep oracle`, got "
                          f"{cfg.model_name!r}", key="model.name")
    ev = cfg.eval
    if ev.hop != ev.win:
        raise ConfigError(f"the oracle scores non-overlapping chunks: eval.hop = {ev.hop:g} must "
                          f"equal eval.win = {ev.win:g}", key="eval.hop")
    m = cfg.model
    return oracle_scores(cfg.data.root, list(cfg.audio.sources), oracle=cfg.model_name,
                         alpha=m.alpha, subset=ev.subset, sample_rate=cfg.audio.sample_rate,
                         channels=cfg.audio.channels,
                         mapping=cfg.data.mapping if cfg.data.layout == "folders" else None,
                         missing=cfg.data.missing, n_fft=m.n_fft, hop=m.hop, chunk=ev.win,
                         max_tracks=ev.max_tracks, segment=ev.segment,
                         cache_dir=cfg.data.cache_dir)


def score_model(model: torch.nn.Module, tracks: Sequence[TrackAudio],
                classes: Sequence[str] | None = None, chunk: float = 6.0,
                segment: float = 10.0, device: str | torch.device | None = None) -> ClassScores:
    """Score a trained sepcore model per class like the oracle (its sources must be classes)."""
    from sepcore.separate import apply_model

    sources = list(model.sources)

    def estimate(track: ClassTrack, names: list[str]) -> np.ndarray:
        mix = torch.from_numpy(np.ascontiguousarray(track.mixture))
        refs = torch.from_numpy(np.ascontiguousarray(track.targets(names)))
        return apply_model(*with_references(model, mix, refs), segment=segment,
                           device=device).numpy()

    return score_tracks(tracks, list(classes or sources), estimate, lambda _t: sources,
                        int(model.sample_rate), chunk)


def live_protocol(model: torch.nn.Module, tracks: Sequence[TrackAudio], snr_db: float = 10.0,
                  bleed_db: float | None = -20.0, seed: int = 0, **kwargs) -> ClassScores:
    """Thesis ch. 6: a model trained on clean data, scored on noisy (live-like) copies of songs.

    Each song gets crowd noise at ``snr_db`` and bleed at ``bleed_db`` in every class stem
    (:func:`sepcore.data.folders.noisy_copy`); the noisy stems are the references, as for the
    Montreux Jazz Festival recordings.
    """
    rng = np.random.default_rng(seed)
    names = list(model.sources)
    noisy = [noisy_copy(as_class_track(t), snr_db, rng, bleed_db, names=names) for t in tracks]
    return score_model(model, noisy, **kwargs)
