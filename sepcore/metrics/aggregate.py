"""Median of medians over BSSEval windows and tracks, and the paper-style results table.

Per track and target, each metric's windows are reduced by their median (NaN windows ignored);
the per-track medians are then reduced by their median over tracks (tracks whose every window is
NaN ignored). This is SiSEC 2018's headline number and equals museval's
``EvalStore().agg_frames_tracks_scores()`` on the same JSON files.

References:
    Stöter, Liutkus, Ito, "The 2018 Signal Separation Evaluation Campaign", LVA/ICA 2018, §4.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["METRICS", "aggregate", "format_table", "track_medians"]

METRICS = ("SDR", "SIR", "ISR", "SAR")

Scores = dict[str, dict[str, float]]  # target -> metric -> dB


def _load_json(path: Path) -> tuple[str, dict[str, Any]]:
    return path.stem, json.loads(path.read_text())


def _track_scores(
    source: str | os.PathLike[str] | Iterable[Any], subset: str | None
) -> list[tuple[str, dict[str, Any]]]:
    """(track name, museval JSON dict) for a folder, JSON paths or ``museval.TrackStore``s."""
    if isinstance(source, str | os.PathLike):
        root = Path(source)
        if not root.is_dir():
            raise FileNotFoundError(f"no evaluation folder at {root}")
        pattern = f"{subset}/**/*.json" if subset else "**/*.json"
        return [_load_json(p) for p in sorted(root.glob(pattern))]
    tracks = []
    for item in source:
        if isinstance(item, str | os.PathLike):
            tracks.append(_load_json(Path(item)))
        else:  # a museval.TrackStore: go through its JSON so values are quantised as on disk
            tracks.append((item.track_name, json.loads(item.json)))
    return tracks


def _nanmedian(values: Sequence[float]) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN -> NaN, as pandas
        return float(np.nanmedian(np.asarray(values, dtype=np.float64)))


def track_medians(
    source: str | os.PathLike[str] | Iterable[Any], subset: str | None = None
) -> dict[str, Scores]:
    """Median over windows (NaN ignored) per track, target and metric.

    Args:
        source: a folder of museval JSONs (searched recursively, the file stem is the track name),
            or an iterable of JSON paths and/or ``museval.TrackStore`` objects.
        subset: with a folder, only read ``<folder>/<subset>/**/*.json`` (museval reads ``test``).

    Returns:
        ``{track: {target: {metric: median dB}}}``.
    """
    frames: dict[str, dict[str, dict[str, list[float]]]] = {}
    for track, scores in _track_scores(source, subset):
        for target in scores["targets"]:
            per_metric = frames.setdefault(track, {}).setdefault(
                target["name"], {m: [] for m in METRICS}
            )
            for frame in target["frames"]:
                for metric in METRICS:
                    value = frame["metrics"][metric]
                    per_metric[metric].append(np.nan if value is None else float(value))
    return {
        track: {
            target: {metric: _nanmedian(values) for metric, values in per_metric.items()}
            for target, per_metric in targets.items()
        }
        for track, targets in frames.items()
    }


def aggregate(source: str | os.PathLike[str] | Iterable[Any], subset: str | None = None) -> Scores:
    """Median over windows per track, then median over tracks, per target and metric.

    Args:
        source: a folder of museval JSONs (searched recursively, the file stem is the track name),
            or an iterable of JSON paths and/or ``museval.TrackStore`` objects.
        subset: with a folder, only read ``<folder>/<subset>/**/*.json``; pass ``"test"`` to read
            exactly what ``museval.EvalStore.add_eval_dir`` reads.

    Returns:
        ``{target: {"SDR": dB, "SIR": dB, "ISR": dB, "SAR": dB}}``, targets in first-seen order.
    """
    per_target: dict[str, dict[str, list[float]]] = {}
    for targets in track_medians(source, subset).values():
        for target, medians in targets.items():
            lists = per_target.setdefault(target, {m: [] for m in METRICS})
            for metric in METRICS:
                lists[metric].append(medians[metric])
    return {
        target: {metric: _nanmedian(values) for metric, values in lists.items()}
        for target, lists in per_target.items()
    }


def format_table(agg: Scores, targets: Sequence[str] | None = None) -> str:
    """Plain-text table in the papers' form: one row per target, SDR / SIR / ISR / SAR in dB.

    Args:
        agg: the output of :func:`aggregate`.
        targets: rows in this order (default: every target of ``agg``); a target missing from
            ``agg`` gets a row of ``-``.

    Returns:
        The table, lines joined by newlines, values with 2 decimals.
    """
    rows = list(agg) if targets is None else list(targets)
    width = max([len("target"), *(len(t) for t in rows)])
    lines = ["target".ljust(width) + "".join(f"{m:>8}" for m in METRICS)]
    lines.append("-" * len(lines[0]))
    for target in rows:
        scores = agg.get(target)
        cells = (
            "".join(f"{scores[m]:>8.2f}" for m in METRICS)
            if scores is not None
            else "".join(f"{'-':>8}" for _ in METRICS)
        )
        lines.append(target.ljust(width) + cells)
    return "\n".join(lines)
