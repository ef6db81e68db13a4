"""The training loader: worker count, epoch keys that reach persistent workers, items equal to
the previous implementation's, exact resume with workers."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from sepcore.config import STEMS, AugmentConfig, DataConfig
from sepcore.data import build_datasets
from sepcore.data.augment import channel_swap, random_channel, random_gain, remixed
from sepcore.data.loader import EpochSampler, resolve_num_workers, train_loader
from tests.sepcore.helpers import tiny_config

META_TASNET = AugmentConfig(random_channel=True, channel_pick="source", gain=True,
                            channel_swap=False, remix=True, remix_share=0.5)
SETTINGS = {  # (augment, channels, targets)
    "defaults": (AugmentConfig(), 2, ["vocals", "accompaniment"]),
    "meta-tasnet": (META_TASNET, 1, list(STEMS)),
    "shared-pick": (AugmentConfig(random_channel=True, remix_share=0.5), 2,
                    ["accompaniment", "bass"]),
    "none": (AugmentConfig(gain=False, channel_swap=False, remix=False), 1, ["vocals"]),
}


def _data(root, cache, setting: str) -> DataConfig:
    augment, channels, targets = SETTINGS[setting]
    return DataConfig(root=str(root), sample_rate=8000, channels=channels, segment=1.0,
                      samples_per_track=6, valid_segment=4.0, cache_dir=str(cache),
                      targets=targets, augment=augment)


def _previous_item(train, epoch: int, index: int) -> tuple[np.ndarray, np.ndarray]:
    """``TrainChunks[index]`` at ``epoch`` as built before items were written from views: the
    whole chunk stacked, each augmentation a new array, targets stacked from the stems."""
    aug, names = train.cfg.augment, train.stem_names
    rng = np.random.default_rng([train.seed % 2**63, epoch, index])
    if aug.remix and remixed(index, aug.remix_share):
        picks = [int(p) for p in rng.integers(len(train.songs), size=len(names))]
        offsets = [train._offset(p, rng) for p in picks]
    else:
        picks = [train._song_of(index, epoch)] * len(names)
        offsets = [train._offset(picks[0], rng)] * len(names)
    stems = np.stack([train.songs[p].stems[name][:, o : o + train.chunk]
                      for p, o, name in zip(picks, offsets, names, strict=True)])
    if aug.random_channel:
        stems = random_channel(stems, rng, per_source=aug.channel_pick == "source",
                               channels=train.cfg.channels)
    if aug.gain:
        stems = random_gain(stems, rng, aug.gain_min, aug.gain_max)
    if aug.channel_swap:
        stems = channel_swap(stems, rng)
    mixture = np.zeros(stems[0].shape, dtype=np.float32)
    for stem in stems:
        mixture += stem
    targets = [stems[1] + stems[2] + stems[3] if name == "accompaniment"
               else stems[STEMS.index(name)] for name in train.cfg.targets]
    return mixture, np.stack(targets).astype(np.float32)


@pytest.mark.parametrize("setting", sorted(SETTINGS))
def test_items_are_bitwise_those_of_the_previous_implementation(synth_root, cache_dir, setting):
    train, _ = build_datasets(_data(synth_root, cache_dir, setting), seed=11)
    for epoch in (1, 2):
        train.set_epoch(epoch)
        for index in range(0, len(train), 5):
            mixture, targets = train[(epoch, index)]
            expected_mixture, expected_targets = _previous_item(train, epoch, index)
            assert np.array_equal(mixture.numpy(), expected_mixture), (epoch, index)
            assert np.array_equal(targets.numpy(), expected_targets), (epoch, index)
            assert torch.equal(train[index][1], targets)  # a plain index: the set epoch
            assert targets.is_contiguous() and targets.dtype == torch.float32


def test_num_workers_auto_is_cores_less_one_on_cuda_and_none_on_cpu(monkeypatch):
    import sepcore.data.loader as loader_mod

    monkeypatch.setattr(loader_mod.os, "sched_getaffinity", lambda pid: set(range(16)),
                        raising=False)
    assert resolve_num_workers("auto", torch.device("cuda")) == 15
    assert resolve_num_workers("auto", torch.device("cuda:1")) == 15
    assert resolve_num_workers("auto", torch.device("cpu")) == 0
    assert resolve_num_workers(3, torch.device("cpu")) == 3
    assert resolve_num_workers(0, torch.device("cuda")) == 0
    monkeypatch.setattr(loader_mod.os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert resolve_num_workers("auto", torch.device("cuda")) == 0


def test_epoch_sampler_keys_every_index_with_the_epoch_set():
    sampler = EpochSampler(5)
    assert len(sampler) == 5 and list(sampler) == [(0, i) for i in range(5)]
    sampler.set_epoch(3)
    assert list(sampler) == [(3, i) for i in range(5)]


def _loader(synth_root, cache_dir, tmp_path, workers, batch_size=4):
    cfg = tiny_config(synth_root, tmp_path / "out", cache_dir, size="mini", batch_size=batch_size,
                      channels=2)
    cfg.data = dataclasses.replace(cfg.data, augment=META_TASNET, num_workers=workers)
    train, _ = build_datasets(cfg.data, seed=cfg.train.seed)
    return train, train_loader(cfg, train, torch.device("cpu"))


def test_batches_at_an_epoch_are_the_same_with_zero_and_two_workers(synth_root, cache_dir,
                                                                    tmp_path):
    """Persistent workers see each new epoch (the key carries it), so a batch depends only on
    (seed, epoch, index), however many workers build it."""
    train, inline = _loader(synth_root, cache_dir, tmp_path, workers=0)
    _, parallel = _loader(synth_root, cache_dir, tmp_path, workers=2)
    assert parallel.num_workers == 2 and parallel.persistent_workers and not parallel.pin_memory
    assert inline.num_workers == 0 and len(inline) == len(parallel) == len(train) // 4
    passes = []
    for epoch in (1, 2, 1):
        inline.sampler.set_epoch(epoch)
        parallel.sampler.set_epoch(epoch)
        batches = list(zip(inline, parallel, strict=True))
        for (mix_a, tgt_a), (mix_b, tgt_b) in batches:
            assert torch.equal(mix_a, mix_b) and torch.equal(tgt_a, tgt_b)
        first = batches[0][1]
        assert torch.equal(first[1], torch.stack([train[(epoch, i)][1] for i in range(4)]))
        passes.append(first[0])
    assert not torch.equal(passes[0], passes[1])  # epoch 2 drew new chunks in the workers
    assert torch.equal(passes[0], passes[2])  # and epoch 1 again the same ones


def test_an_interrupted_pass_does_not_leak_into_the_next_epoch(synth_root, cache_dir, tmp_path):
    """``train.steps_per_epoch`` stops a pass early: the batches the workers had prefetched for
    it are dropped, and the next epoch starts at its own first batch."""
    train, parallel = _loader(synth_root, cache_dir, tmp_path, workers=2, batch_size=2)
    parallel.sampler.set_epoch(1)
    next(iter(parallel))
    parallel.sampler.set_epoch(2)
    mixture, _ = next(iter(parallel))
    assert torch.equal(mixture, torch.stack([train[(2, i)][0] for i in range(2)]))


def test_loader_never_draws_from_the_global_torch_rng(synth_root, cache_dir, tmp_path):
    """The model's random state is the same with and without workers, and after a resume."""
    _, parallel = _loader(synth_root, cache_dir, tmp_path, workers=2)
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    for epoch in (1, 2):
        parallel.sampler.set_epoch(epoch)
        next(iter(parallel))
    assert torch.equal(torch.rand(3), expected)


def test_resume_with_two_workers_is_exact(synth_root, cache_dir, tmp_path):
    """2 epochs in one go == 1 epoch, resume, 1 epoch, with data.num_workers=2 (persistent
    workers, Meta-TasNet's half-batch remix): bitwise the same weights and losses."""
    from sepcore.checkpoint import load_checkpoint
    from sepcore.train import fit

    def config(out, epochs, resume=None):
        cfg = tiny_config(synth_root, tmp_path / out, cache_dir, size="mini", epochs=epochs,
                          steps_per_epoch=2, batch_size=2, deterministic=True, resume=resume)
        cfg.data = dataclasses.replace(cfg.data, augment=META_TASNET, num_workers=2)
        return cfg

    enabled = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    try:
        straight = fit(config("a", 2))
        fit(config("b", 1))
        resumed = fit(config("b", 2, resume="auto"))
    finally:
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
    a = load_checkpoint(straight.last_checkpoint).model_state
    b = load_checkpoint(resumed.last_checkpoint).model_state
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [h["train_loss"] for h in straight.history] == \
        [h["train_loss"] for h in resumed.history]


@pytest.mark.parametrize("value", ["many", "3", -1, 1.5, None])
def test_bad_num_workers_is_a_config_error_naming_the_key(value):
    from sepcore.config import config_from_dict
    from sepcore.errors import ConfigError

    raw = {"model": {"name": "convtasnet"}}
    assert config_from_dict(raw).data.num_workers == "auto"
    assert config_from_dict({**raw, "data": {"num_workers": 3}}).data.num_workers == 3
    with pytest.raises(ConfigError, match="data.num_workers") as info:
        config_from_dict({**raw, "data": {"num_workers": value}})
    assert info.value.key == "data.num_workers" and "\n" not in str(info.value)


@pytest.mark.gpu
def test_on_cuda_auto_workers_build_pinned_batches(synth_root, cache_dir, tmp_path):
    from sepcore.data.loader import usable_cores

    cfg = tiny_config(synth_root, tmp_path / "out", cache_dir, size="mini")
    assert cfg.data.num_workers == "auto"
    train, _ = build_datasets(cfg.data, seed=cfg.train.seed)
    loader = train_loader(cfg, train, torch.device("cuda"))
    assert loader.num_workers == max(usable_cores() - 1, 0) and loader.pin_memory
    loader.sampler.set_epoch(1)
    mixture, targets = next(iter(loader))
    assert mixture.is_pinned() and targets.is_pinned()
    assert torch.equal(targets, torch.stack([train[(1, i)][1] for i in range(len(targets))]))
