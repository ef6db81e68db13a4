"""Training items per second of :class:`sepcore.data.TrainChunks` in one process.

Writes a small synthetic MUSDB18-HQ tree (``--tracks`` songs of ``--seconds`` at 44.1 kHz stereo,
into ``--scratch``, once), builds the training dataset with ``--segment``-second chunks and times
``dataset[i]`` (no DataLoader, no workers: the cost of one item) for three augmentation settings:
the defaults (gain, channel swap, cross-song remix), Meta-TasNet's (per-source channel pick for a
mono model, half of each batch remixed) and none. Prints items per second of this process's CPU
time (``time.process_time``: steadier than wall time on a shared machine) and of wall time, the
best of ``--runs`` passes over ``--items`` items after one warm-up pass (the audio cache is warm).

Usage: ``python tests/bench/data_items.py [--segment 8] [--items 200] [--runs 5]``
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

from sepcore.config import STEMS, AugmentConfig, DataConfig
from sepcore.data import build_datasets
from sepcore.data.synth import write_synthetic_musdb

SETTINGS = {
    "defaults": (AugmentConfig(), 2, ["vocals", "accompaniment"]),
    "meta-tasnet": (AugmentConfig(random_channel=True, channel_pick="source", gain=True,
                                  channel_swap=False, remix=True, remix_share=0.5), 1,
                    list(STEMS)),
    "none": (AugmentConfig(gain=False, channel_swap=False, remix=False), 2,
             ["vocals", "accompaniment"]),
}


def items_per_second(cfg: DataConfig, items: int, runs: int) -> tuple[float, float, float]:
    """(items per CPU second, items per wall second, MB of targets per item)."""
    train, _ = build_datasets(cfg, seed=0)
    train.set_epoch(1)
    count = min(items, len(train))
    size = 0
    for i in range(count):  # warm-up: page cache, allocator
        size = train[i][1].numel() * 4
    cpu, wall = [], []
    for _ in range(runs):
        c0, w0 = time.process_time(), time.perf_counter()
        for i in range(count):
            train[i]
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    return count / min(cpu), count / min(wall), size / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracks", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--segment", type=float, default=8.0)
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--scratch", default=str(Path(tempfile.gettempdir()) / "sep-data-bench"))
    args = parser.parse_args()
    root = Path(args.scratch) / f"musdb-{args.tracks}x{args.seconds:g}s"
    if not (root / "train").is_dir():
        write_synthetic_musdb(root, tracks=args.tracks, seconds=args.seconds, seed=0)
    base = DataConfig(root=str(root), segment=args.segment, samples_per_track=64,
                      valid_split="ratio", valid_ratio=0.2,
                      cache_dir=str(Path(args.scratch) / "cache"))
    print(f"{args.segment:g} s chunks, 44.1 kHz, best of {args.runs} x {args.items} items")
    for name, (augment, channels, targets) in SETTINGS.items():
        cfg = dataclasses.replace(base, augment=augment, channels=channels, targets=targets)
        cpu, wall, size = items_per_second(cfg, args.items, args.runs)
        print(f"{name:12s} {cpu:7.1f} items/CPU-s {wall:7.1f} items/s (wall) "
              f"{size:5.1f} MB of targets per item")


if __name__ == "__main__":
    main()
