"""The four mixing procedures of thesis §4.1.2 (sepcore.data.mixing) against their definitions."""

from __future__ import annotations

import numpy as np
import pytest

from sepcore.data.mixing import (
    adaptive_rescaling,
    anti_overflow_gain,
    averaging,
    group_instruments,
    mix,
    scaling,
    summing,
)
from sepcore.errors import ConfigError


def _stems(peaks=(3.0, 0.5, 1.7), length=4000, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    stems = rng.standard_normal((len(peaks), 2, length)).astype(np.float32)
    return stems / np.abs(stems).max(axis=(1, 2), keepdims=True) * \
        np.asarray(peaks, dtype=np.float32)[:, None, None]  # (K, C, T)


def test_adaptive_rescaling_mixture_is_exact_sum_and_nothing_clips():
    for seed in range(5):
        stems = _stems(seed=seed)
        out, mixture = adaptive_rescaling(stems)
        assert out.shape == stems.shape and out.dtype == mixture.dtype == np.float32
        np.testing.assert_array_equal(mixture, out.sum(axis=0, dtype=np.float32))
        assert np.abs(mixture).max() <= 1.0 and np.abs(out).max() <= 1.0
        # one α for every stem after its own anti-overflow gain (thesis: the same α for all)
        gained = np.stack([s * anti_overflow_gain(s) for s in stems])
        ratios = [np.sum(o * g) / np.sum(g * g) for o, g in zip(out, gained, strict=True)]
        np.testing.assert_allclose(ratios, ratios[0], rtol=1e-5)
        assert 0 < ratios[0] < 1  # the sum of these stems overflows: α < 1
        np.testing.assert_allclose(out, ratios[0] * gained, atol=1e-6)


def test_adaptive_rescaling_leaves_quiet_stems_alone():
    stems = _stems(peaks=(0.2, 0.1, 0.3))
    out, mixture = adaptive_rescaling(stems)
    np.testing.assert_array_equal(out, stems)
    np.testing.assert_array_equal(mixture, stems.sum(axis=0))


def test_summing_and_averaging_match_their_definitions():
    stems = _stems()
    out, mixture = summing(stems)
    np.testing.assert_array_equal(out, stems)
    np.testing.assert_allclose(mixture, stems[0] + stems[1] + stems[2], atol=1e-6)
    assert np.abs(mixture).max() > 1  # summing may clip, which is why the thesis rescales
    out, mixture = averaging(stems)
    np.testing.assert_array_equal(out, stems)
    np.testing.assert_allclose(mixture, (stems[0] + stems[1] + stems[2]) / 3, atol=1e-6)


def test_scaling_given_random_and_anti_overflow_gains():
    stems = _stems()
    out, mixture = scaling(stems, gains=[0.5, 2.0, 0.1])
    np.testing.assert_allclose(out, stems * np.array([0.5, 2.0, 0.1])[:, None, None], atol=1e-6)
    total = out.sum(axis=0)
    np.testing.assert_allclose(mixture, total * min(1.0, 1 / np.abs(total).max()), atol=1e-6)
    assert np.abs(mixture).max() <= 1.0 + 1e-6
    # random gains: reproducible and in range
    a, _ = scaling(stems, rng=np.random.default_rng(3))
    b, _ = scaling(stems, rng=np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)
    gains = [np.sum(x * s) / np.sum(s * s) for x, s in zip(a, stems, strict=True)]
    assert all(0.75 <= g <= 1.25 for g in gains)
    # default: each stem brought within full scale on its own (thesis "rescale ... overflowing")
    out, _ = scaling(stems)
    np.testing.assert_allclose(np.abs(out).max(axis=(1, 2)), [1.0, 0.5, 1.0], rtol=1e-6)
    with pytest.raises(ValueError, match="one gain per class stem"):
        scaling(stems, gains=[1.0])


def test_mix_dispatch_and_group_instruments():
    stems = _stems()
    np.testing.assert_array_equal(mix("summing", stems)[1], summing(stems)[1])
    with pytest.raises(ConfigError, match="unknown mixing procedure 'loud'"):
        mix("loud", stems)
    instruments = np.arange(4 * 1 * 3, dtype=np.float32).reshape(4, 1, 3)
    grouped = group_instruments(instruments, [0, 1, 0, 0], 3)
    np.testing.assert_array_equal(grouped[0], instruments[0] + instruments[2] + instruments[3])
    np.testing.assert_array_equal(grouped[1], instruments[1])
    np.testing.assert_array_equal(grouped[2], 0)  # a class without instruments is silent
    mean = group_instruments(instruments, [0, 1, 0, 0], 3, reduce="mean")
    np.testing.assert_allclose(mean[0], grouped[0] / 3)
