"""``sep score``: BSSEval v4 of a folder of estimates against a folder of references.

What ``museval.eval_dir`` does for one song, for a tree of songs:
``<references>/<song>/<target>.wav`` and ``<estimates>/<song>/<target>.wav``. Every song of the
estimates folder is scored against its references (targets present in both, grouped as
:func:`sepcore.metrics.bsseval.evaluate_track` groups them), one museval JSON per song is written
to ``<out>/test/<song>.json`` (so that ``museval.EvalStore().add_eval_dir(out)`` reads it), and
the median of medians is returned.

References:
    Stöter, Liutkus, Ito, "The 2018 Signal Separation Evaluation Campaign", LVA/ICA 2018, §3-4.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from sepcore.data.audio import describe_sample, first_non_finite
from sepcore.errors import DataError
from sepcore.metrics.aggregate import Scores, aggregate, format_table
from sepcore.metrics.bsseval import evaluate_track, save_track_json

__all__ = ["ScoreResult", "score_dirs"]

logger = logging.getLogger(__name__)


@dataclass
class ScoreResult:
    """Scores of a folder of songs: per-song JSON paths, median of medians, the table."""

    json_paths: list[Path] = field(default_factory=list)
    scores: Scores = field(default_factory=dict)
    table: str = ""
    # one line per file holding NaN/inf samples: its scores are NaN, as museval's
    warnings: list[str] = field(default_factory=list)


def _read_wav(path: Path) -> tuple[np.ndarray, int]:
    """(T, C) float64 as museval reads it, and the sample rate."""
    try:
        audio, rate = sf.read(str(path), dtype="float64", always_2d=True)
    except (sf.SoundFileError, RuntimeError, OSError, ValueError) as exc:
        raise DataError(f"cannot decode audio file {path}: {exc}") from None
    return audio, int(rate)


def _read_song(folder: Path, role: str,
               warnings: list[str]) -> tuple[dict[str, np.ndarray], int]:
    """Every ``*.wav`` of ``folder`` as target name -> (T, C), checked for one sample rate; a
    file with NaN/inf samples adds a line to ``warnings``."""
    stems: dict[str, np.ndarray] = {}
    rate = None
    for path in sorted(folder.glob("*.wav")):
        audio, file_rate = _read_wav(path)
        bad = first_non_finite(audio)
        if bad is not None:
            what = "its target" if role == "estimate" else "every target of the song"
            warnings.append(f"{path} has non-finite samples (the first: "
                            f"{describe_sample(audio, bad, file_rate)}): {what} scores NaN, as "
                            "in museval")
        if rate is not None and file_rate != rate:
            raise DataError(f"{path}: sample rate {file_rate} Hz, other stems of {folder} have "
                            f"{rate} Hz")
        rate = file_rate
        stems[path.stem] = audio
    if rate is None:
        raise DataError(f"no WAV files in {folder}")
    return stems, rate


def _check_song(song: str, ref_dir: Path, est_dir: Path, refs: dict[str, np.ndarray],
                ests: dict[str, np.ndarray], ref_rate: int, est_rate: int) -> None:
    if ref_rate != est_rate:
        raise DataError(f"song {song!r}: estimates in {est_dir} are at {est_rate} Hz, "
                        f"references in {ref_dir} at {ref_rate} Hz")
    for name in refs:
        if name in ests and ests[name].shape != refs[name].shape:
            raise DataError(
                f"{est_dir / (name + '.wav')}: shape (samples, channels) {ests[name].shape} "
                f"does not match the reference {ref_dir / (name + '.wav')} {refs[name].shape}"
            )
    for folder, stems, what in ((ref_dir, refs, "reference"), (est_dir, ests, "estimate")):
        for name, audio in stems.items():
            if name in refs and name in ests and not np.any(audio):
                raise DataError(f"{folder / (name + '.wav')}: the {what} is silent (all zeros); "
                                "BSSEval v4 cannot score a silent source (museval refuses it too)")


def score_dirs(
    references: str | os.PathLike[str],
    estimates: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    backend: str = "sepcore",
    win: float = 1.0,
    hop: float = 1.0,
) -> ScoreResult:
    """Scores every song folder of ``estimates`` against the same-named folder of ``references``.

    Args:
        references: folder with one sub-folder of ``<target>.wav`` per song.
        estimates: folder with one sub-folder of ``<target>.wav`` per song.
        out_dir: where ``test/<song>.json`` (museval's format) is written.
        backend: ``"sepcore"`` or ``"museval"`` (see :func:`~sepcore.metrics.bsseval.evaluate`).
        win: window in seconds.
        hop: hop in seconds.

    Returns:
        The JSON paths, the median of medians per target and metric, and its table.

    Raises:
        DataError: a folder is missing or empty, a song has no reference folder, stems differ
            in sample rate or length, or a scored stem is silent (all zeros).

    A stem with NaN/inf samples is scored as museval scores it (NaN) and named in
    ``warnings``.
    """
    ref_root, est_root = Path(references), Path(estimates)
    for root in (ref_root, est_root):
        if not root.is_dir():
            raise DataError(f"no such folder: {root}")
    if Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise DataError(f"--out {out_dir} is a file, not a folder")
    songs = sorted(p.name for p in est_root.iterdir() if p.is_dir())
    if not songs:
        raise DataError(f"no song folders in {est_root}")
    result = ScoreResult()
    stores = []
    for song in songs:
        ref_dir, est_dir = ref_root / song, est_root / song
        if not ref_dir.is_dir():
            raise DataError(f"song {song!r} of {est_root} has no reference folder {ref_dir}")
        refs, ref_rate = _read_song(ref_dir, "reference", result.warnings)
        ests, est_rate = _read_song(est_dir, "estimate", result.warnings)
        _check_song(song, ref_dir, est_dir, refs, ests, ref_rate, est_rate)
        store = evaluate_track(refs, ests, track_name=song, rate=ref_rate, win=win, hop=hop,
                               backend=backend)
        result.json_paths.append(save_track_json(store, out_dir, "test"))
        stores.append(store)
        logger.info("scored %s", song)
    result.scores = aggregate(stores)
    result.table = format_table(result.scores)
    return result
