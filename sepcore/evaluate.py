"""``sep evaluate``: score a checkpoint on a MUSDB-layout subset with BSSEval v4 (museval).

For each song: chunked inference (:func:`sepcore.separate.apply_model`) on the mixture, BSSEval v4
against the reference stems (museval's per-track JSON is written), SI-SDR over the whole song, PES
and VAD on the target's silent segments (:mod:`sepcore.metrics.silence`); then the median-of-medians
table in the paper's form (SDR / SIR / ISR / SAR per target) and a second table with the
segment-wise mean/median, PES, VAD (and NSDR with ``eval.nsdr``).

Scores are computed at the model's sample rate and channel count (the references are converted the
same way as the mixture), so 8 kHz exploration models are scored against 8 kHz references.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from sepcore.checkpoint import load_model
from sepcore.errors import DataError
from sepcore.metrics.aggregate import aggregate, format_table
from sepcore.metrics.bsseval import evaluate_track, save_track_json
from sepcore.metrics.silence import nsdr, segment_statistics, silence_scores
from sepcore.metrics.sisdr import si_sdr
from sepcore.models.oracles import with_references
from sepcore.separate import apply_model

log = logging.getLogger(__name__)


@dataclass
class EvalResult:
    table: str
    scores: Any  # median of medians per target and metric (sepcore.metrics.aggregate)
    json_dir: Path
    sisdr: dict[str, dict[str, float]] = field(default_factory=dict)  # track -> target -> dB
    extra: dict[str, dict[str, float]] = field(default_factory=dict)  # target -> PES, VAD, ...
    extra_table: str = ""


def evaluate_checkpoint(
    checkpoint: str | Path,
    overrides: list[str] | tuple[str, ...] = (),
    *,
    root: str | None = None,
    subset: str | None = None,
    out_dir: str | Path | None = None,
    max_tracks: int | None = None,
    tracks: list[str] | None = None,
    device: str | None = None,
    progress: bool = True,
) -> EvalResult:
    """Evaluate ``checkpoint`` with its own config (``sep evaluate CHECKPOINT [overrides…]``).

    ``overrides`` are dotlist overrides of the checkpoint's data/eval/train sections
    (``data.root=…``, ``eval.subset=train``, ``eval.max_tracks=2``, ``eval.device=cpu``); the
    keyword arguments, when given, take precedence over both (for callers in Python).
    """
    from sepcore.data import load_subset
    from sepcore.train import select_device

    model, cfg = load_model(checkpoint, overrides=overrides)
    given = {"subset": subset, "out_dir": out_dir, "max_tracks": max_tracks, "tracks": tracks,
             "device": device}
    ev = replace(cfg.eval, **{k: v for k, v in given.items() if v is not None})
    data_cfg = replace(cfg.data, root=root) if root else cfg.data
    dev = select_device(ev.device)
    model.to(dev)
    subset = ev.subset
    songs = load_subset(data_cfg, subset=subset, names=ev.tracks or None,
                        max_tracks=ev.max_tracks)
    if not songs:
        raise DataError(f"no songs to evaluate in {data_cfg.root}/{subset}")
    json_dir = Path(ev.out_dir or Path(cfg.train.out_dir) / "eval")
    rate = model.sample_rate
    stores, sisdr = [], {}
    silent: dict[str, list] = {name: [] for name in model.sources}
    nsdrs: dict[str, list[float]] = {name: [] for name in model.sources}
    bar = tqdm(songs, desc="evaluate", unit="song",
               disable=not (progress and sys.stderr.isatty()))
    for song in bar:
        mix_np = np.ascontiguousarray(song.mixture)  # (C, T); a property that sums the stems
        mixture = torch.from_numpy(mix_np)
        reference = song.targets(model.sources)  # (S, C, T)
        runner, inputs = with_references(  # oracles (FB-IRM) see the true sources
            model, mixture, torch.from_numpy(np.ascontiguousarray(reference)))
        estimate = apply_model(runner, inputs, segment=ev.segment, overlap=ev.overlap,
                               device=dev).numpy()  # (S, C, T)
        refs = {n: np.asarray(reference[i]).T for i, n in enumerate(model.sources)}
        ests = {n: estimate[i].T for i, n in enumerate(model.sources)}
        if len(model.sources) == 1:
            # BSSEval needs two targets: score the residual (mixture − estimate) as the second,
            # as museval does for vocals/accompaniment (the HTMD-Net paper separates vocals only)
            name = model.sources[0]
            rest = "accompaniment" if name == "vocals" else f"not_{name}"
            refs[rest] = mix_np.T - refs[name]
            ests[rest] = mix_np.T - ests[name]
        store = evaluate_track(refs, ests, track_name=song.name, rate=rate, win=ev.win,
                               hop=ev.hop)
        save_track_json(store, json_dir, subset)
        stores.append(store)
        values = si_sdr(torch.from_numpy(estimate), torch.from_numpy(np.asarray(reference)))
        sisdr[song.name] = dict(zip(model.sources, values.mean(dim=-1).tolist(), strict=True))
        for name in model.sources:
            silent[name].append(silence_scores(refs[name], ests[name], rate, ev.win, ev.hop,
                                               ev.silence_threshold_db))
        if ev.nsdr:
            # the mixture as the estimate of every scored target (also a residual one)
            mix = dict.fromkeys(refs, np.ascontiguousarray(mix_np.T))
            mix_sdr = _song_sdr(evaluate_track(refs, mix, track_name=song.name, rate=rate,
                                               win=ev.win, hop=ev.hop))
            est_sdr = _song_sdr(store)
            for name in model.sources:
                nsdrs[name].append(nsdr(est_sdr.get(name, np.nan), mix_sdr.get(name, np.nan)))
        log.info("evaluated %s", song.name)

    scores = aggregate(stores)
    extra = _extra_scores(stores, silent, nsdrs, model.sources)
    return EvalResult(table=format_table(scores, list(scores)), scores=scores,
                      json_dir=json_dir, sisdr=sisdr, extra=extra,
                      extra_table=format_extra_table(extra, model.sources))


def _frames(store, target: str) -> list[dict[str, float]]:
    for entry in store.scores["targets"]:
        if entry["name"] == target:
            return [frame["metrics"] for frame in entry["frames"]]
    return []


def _song_sdr(store) -> dict[str, float]:
    """Median over windows of SDR per target (the song-wise number)."""
    out = {}
    for entry in store.scores["targets"]:
        values = np.array([f["metrics"]["SDR"] for f in entry["frames"]], dtype=np.float64)
        values = values[np.isfinite(values)]
        out[entry["name"]] = float(np.median(values)) if values.size else float("nan")
    return out


def _extra_scores(stores, silent, nsdrs, sources) -> dict[str, dict[str, float]]:
    """Per target: segment-wise mean/median, PES, VAD (pooled over silent segments), NSDR."""
    extra: dict[str, dict[str, float]] = {}
    for name in sources:
        frames = [f for store in stores for f in _frames(store, name)]
        row = segment_statistics(frames)
        scored = [s for s in silent[name] if s.segments]
        count = sum(s.segments for s in scored)
        row["PES"] = (sum(s.pes * s.segments for s in scored) / count) if count else float("nan")
        row["VAD"] = (sum(s.vad * s.segments for s in scored) / count) if count else float("nan")
        row["silent_segments"] = float(count)
        if nsdrs.get(name):
            row["NSDR"] = float(np.nanmedian(nsdrs[name]))
        extra[name] = row
    return extra


def format_extra_table(extra: dict[str, dict[str, float]], sources) -> str:
    """Segment-wise mean/median SDR/SIR/SAR, PES (dB, lower is better), VAD (%)."""
    columns = ["SDR_mean", "SDR_median", "SIR_mean", "SIR_median", "SAR_mean", "SAR_median",
               "PES", "VAD"]
    if any("NSDR" in extra[s] for s in sources):
        columns.append("NSDR")
    header = f"{'target':<14}" + "".join(f"{c:>11}" for c in columns)
    lines = [header, "-" * len(header)]
    for name in sources:
        lines.append(f"{name:<14}" + "".join(f"{extra[name].get(c, float('nan')):>11.2f}"
                                             for c in columns))
    return "\n".join(lines)
