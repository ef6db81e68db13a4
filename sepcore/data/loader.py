"""The training DataLoader: worker count, pinned memory, persistent workers, epoch-keyed items.

``train_loader(cfg, dataset, device)`` is built once per run and reused every epoch. Its workers
are persistent, so their copies of the dataset never see ``TrainChunks.set_epoch``; the epoch
travels with the index instead: :class:`EpochSampler` (in the main process) yields
``(epoch, index)`` keys in order, and an item is a pure function of ``(seed, epoch, index)``
whichever worker builds it, with any ``data.num_workers`` — which exact resume relies on.

``data.num_workers: auto`` (the default) is one worker per CPU core this process may use, less one
for the training loop, when training on CUDA, and 0 (items built in the training process) on the
CPU, where workers would compete with the model for the same cores.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from sepcore.config import ExperimentConfig

# batches each worker prepares ahead: at least this many in flight over all workers
BATCHES_AHEAD = 4


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def resolve_num_workers(value: int | str, device: torch.device) -> int:
    """``data.num_workers``: ``auto`` → cores − 1 on CUDA, 0 on the CPU; an integer as is
    (validated by the config layer: ``auto`` or an integer >= 0)."""
    if value == "auto":
        return max(usable_cores() - 1, 0) if device.type == "cuda" else 0
    return int(value)


class EpochSampler(Sampler[tuple[int, int]]):
    """``(epoch, index)`` for ``index`` in ``range(size)``, in order; :meth:`set_epoch` sets the
    epoch of the next pass. It lives in the main process, so persistent workers see every epoch."""

    def __init__(self, size: int, epoch: int = 0):
        self.size = int(size)
        self.epoch = int(epoch)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.epoch
        return ((epoch, index) for index in range(self.size))


def train_loader(cfg: ExperimentConfig, dataset: Dataset, device: torch.device) -> DataLoader:
    """In-order batches of ``cfg.train.batch_size`` items of ``dataset`` (incomplete last batch
    dropped); call ``loader.sampler.set_epoch(epoch)`` before each epoch's pass.

    Workers: :func:`resolve_num_workers`, persistent, each ``ceil(BATCHES_AHEAD / workers)``
    (at least 2) batches ahead; batches pinned when training on CUDA. The loader's own generator
    seeds the workers, so building or re-iterating it never draws from torch's global RNG (the
    model's random state is the same with and without workers, and after a resume).
    """
    workers = resolve_num_workers(cfg.data.num_workers, device)
    generator = torch.Generator().manual_seed(cfg.train.seed % 2**63)
    return DataLoader(dataset, batch_size=cfg.train.batch_size, drop_last=True,
                      sampler=EpochSampler(len(dataset)), num_workers=workers,
                      pin_memory=device.type == "cuda", persistent_workers=workers > 0,
                      prefetch_factor=max(2, math.ceil(BATCHES_AHEAD / workers)) if workers
                      else None, generator=generator)
