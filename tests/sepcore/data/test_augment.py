"""Augmentations: gain range, channel swap, random channel, switches off = identity."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sepcore.config import AugmentConfig
from sepcore.data.augment import augment, channel_swap, random_channel, random_gain, remixed


def _stems(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((4, 2, 1000)).astype(np.float32)


def test_random_gain_per_source_within_range():
    stems = _stems()
    ratios = set()
    for seed in range(20):
        out = random_gain(stems, np.random.default_rng(seed), 0.75, 1.25)
        ratio = out / stems  # one constant ratio per source
        assert np.allclose(ratio, ratio[:, :1, :1], rtol=1e-5)
        assert ((ratio >= 0.75 - 1e-6) & (ratio <= 1.25 + 1e-6)).all()
        ratios.update(np.round(ratio[:, 0, 0], 4).tolist())
    assert len(ratios) > 20  # gains differ between sources and draws


def test_channel_swap_swaps_some_sources_and_keeps_others():
    stems = _stems()
    swapped = kept = 0
    for seed in range(10):
        out = channel_swap(stems, np.random.default_rng(seed))
        for s in range(4):
            if np.array_equal(out[s], stems[s, ::-1]):
                swapped += 1
            else:
                assert np.array_equal(out[s], stems[s])
                kept += 1
    assert swapped > 5 and kept > 5


def test_random_channel_makes_channels_equal():
    stems = _stems()
    out = random_channel(stems, np.random.default_rng(3))
    assert np.array_equal(out[:, 0], out[:, 1])
    assert np.array_equal(out[:, 0], stems[:, 0]) or np.array_equal(out[:, 0], stems[:, 1])


def test_switched_off_augment_is_identity():
    stems = _stems()
    cfg = AugmentConfig(random_channel=False, gain=False, channel_swap=False, remix=False)
    assert np.array_equal(augment(stems, cfg, np.random.default_rng(0)), stems)


def test_augment_is_deterministic_for_a_generator_state():
    stems = _stems()
    cfg = AugmentConfig(random_channel=True, gain=True, channel_swap=True)
    a = augment(stems, cfg, np.random.default_rng(7))
    b = augment(stems, cfg, np.random.default_rng(7))
    assert np.array_equal(a, b) and not np.array_equal(a, stems)
    assert np.array_equal(a[:, 0], a[:, 1])


def test_random_channel_per_source_picks_each_source_its_own_channel():
    stems = _stems()
    mixed = False
    for seed in range(10):
        out = random_channel(stems, np.random.default_rng(seed), per_source=True)
        assert out.shape == stems.shape and np.array_equal(out[:, 0], out[:, 1])
        picks = []
        for s in range(4):
            picks.append(0 if np.array_equal(out[s, 0], stems[s, 0]) else 1)
            assert np.array_equal(out[s, 0], stems[s, picks[-1]])
        mixed |= len(set(picks)) == 2
    assert mixed  # sources take different channels within one item
    mono = random_channel(stems, np.random.default_rng(0), per_source=True, channels=1)
    assert mono.shape == (4, 1, 1000)


def test_shared_random_channel_is_unchanged():
    """One pick for all sources, drawing exactly as before ``channel_pick`` existed."""
    stems = _stems()
    for seed in range(5):
        rng = np.random.default_rng(seed)
        pick = int(np.random.default_rng(seed).integers(2))
        expected = np.repeat(stems[:, pick:pick + 1], 2, axis=1)
        assert np.array_equal(random_channel(stems, rng), expected)
        after = np.random.default_rng(seed)
        after.integers(2)
        assert rng.bit_generator.state == after.bit_generator.state  # one draw, as before


def test_augment_picks_per_source_with_the_meta_tasnet_settings():
    stems = _stems()
    cfg = AugmentConfig(random_channel=True, channel_pick="source", gain=False,
                        channel_swap=False)
    out = augment(stems, cfg, np.random.default_rng(1), channels=1)
    assert out.shape == (4, 1, 1000)
    assert all(np.array_equal(out[s, 0], stems[s, 0]) or np.array_equal(out[s, 0], stems[s, 1])
               for s in range(4))


@pytest.mark.parametrize("share", [0.5, 0.25, 1 / 3, 0.0, 1.0])
def test_remixed_share_of_every_batch(share):
    flags = [remixed(i, share) for i in range(600)]
    for batch in range(1, 13):
        for start in range(0, 600 - batch, batch):
            count = sum(flags[start:start + batch])
            assert math.floor(batch * share) <= count <= math.ceil(batch * share)
            if share == 0.5 and batch % 2 == 0:
                assert count == batch // 2


@pytest.mark.parametrize("in_channels, channels", [(2, None), (2, 1), (1, None)])
@pytest.mark.parametrize("random, pick, gain, swap", [
    (False, "shared", False, False), (True, "shared", True, True), (True, "source", True, False),
    (False, "shared", True, True), (True, "source", False, True)])
def test_augment_equals_the_three_augmentations_in_turn(in_channels, channels, random, pick,
                                                        gain, swap):
    """The one-pass ``augment`` (on a list of views) draws and computes, bit for bit, what
    random_channel → random_gain → channel_swap on the stacked stems give."""
    stems = _stems()[:, :in_channels]
    cfg = AugmentConfig(random_channel=random, channel_pick=pick, gain=gain, channel_swap=swap)
    for seed in range(6):
        rng, reference_rng = np.random.default_rng(seed), np.random.default_rng(seed)
        expected = stems.copy()
        if random:
            expected = random_channel(expected, reference_rng, per_source=pick == "source",
                                      channels=channels)
        if gain:
            expected = random_gain(expected, reference_rng, cfg.gain_min, cfg.gain_max)
        if swap:
            expected = channel_swap(expected, reference_rng)
        out = augment(list(stems), cfg, rng, channels=channels)
        assert out.dtype == np.float32 and out.flags.c_contiguous
        assert out.shape == expected.shape and np.array_equal(out, expected)
        assert rng.bit_generator.state == reference_rng.bit_generator.state  # same draws
        assert not np.shares_memory(out, stems)
