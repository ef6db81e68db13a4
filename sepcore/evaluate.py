"""``sep evaluate``: score a checkpoint on a MUSDB-layout subset with BSSEval v4 (museval).

For each song: chunked inference (:func:`sepcore.separate.apply_model`) on the mixture, BSSEval v4
against the reference stems (museval's per-track JSON is written), SI-SDR over the whole song; then
the median-of-medians table in the paper's form (SDR / SIR / ISR / SAR per target).

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
from sepcore.metrics.sisdr import si_sdr
from sepcore.separate import apply_model

log = logging.getLogger(__name__)


@dataclass
class EvalResult:
    table: str
    scores: Any  # median of medians per target and metric (sepcore.metrics.aggregate)
    json_dir: Path
    sisdr: dict[str, dict[str, float]] = field(default_factory=dict)  # track -> target -> dB


def evaluate_checkpoint(
    checkpoint: str | Path,
    root: str | None = None,
    subset: str | None = None,
    out_dir: str | Path | None = None,
    max_tracks: int | None = None,
    tracks: list[str] | None = None,
    device: str = "auto",
    progress: bool = True,
) -> EvalResult:
    """Evaluate ``checkpoint`` on ``subset`` of ``root`` (defaults from the checkpoint's config)."""
    from sepcore.data import load_subset
    from sepcore.train import select_device

    dev = select_device(device)
    model, cfg = load_model(checkpoint, device=dev)
    data_cfg = replace(cfg.data, root=root) if root else cfg.data
    ev = cfg.eval
    subset = subset or ev.subset
    names = tracks or ev.tracks or None
    songs = load_subset(data_cfg, subset=subset, names=names,
                        max_tracks=max_tracks if max_tracks is not None else ev.max_tracks)
    if not songs:
        raise DataError(f"no songs to evaluate in {data_cfg.root}/{subset}")
    json_dir = Path(out_dir or ev.out_dir or Path(cfg.train.out_dir) / "eval")
    rate = model.sample_rate
    stores, sisdr = [], {}
    bar = tqdm(songs, desc="evaluate", unit="song",
               disable=not (progress and sys.stderr.isatty()))
    for song in bar:
        mixture = torch.from_numpy(np.ascontiguousarray(song.mixture))
        reference = song.targets(model.sources)  # (S, C, T)
        estimate = apply_model(model, mixture, segment=ev.segment, overlap=ev.overlap,
                               device=dev, references=torch.from_numpy(
                                   np.ascontiguousarray(reference))).numpy()  # (S, C, T)
        refs = {n: np.asarray(reference[i]).T for i, n in enumerate(model.sources)}
        ests = {n: estimate[i].T for i, n in enumerate(model.sources)}
        store = evaluate_track(refs, ests, track_name=song.name, rate=rate, win=ev.win,
                               hop=ev.hop)
        save_track_json(store, json_dir, subset)
        stores.append(store)
        values = si_sdr(torch.from_numpy(estimate), torch.from_numpy(np.asarray(reference)))
        sisdr[song.name] = dict(zip(model.sources, values.mean(dim=-1).tolist(), strict=True))
        log.info("evaluated %s", song.name)
    scores = aggregate(stores)
    return EvalResult(table=format_table(scores, model.sources), scores=scores,
                      json_dir=json_dir, sisdr=sisdr)
