"""PES / VAD on silent target segments, segment-wise statistics and NSDR, with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sepcore.metrics.silence import (
    EPS,
    nsdr,
    segment_statistics,
    silence_scores,
    silent_segments,
)

RATE = 1000


def _target_with_rests():
    """4 s: sound in seconds 0 and 2, exact silence in seconds 1 and 3; (T, 2)."""
    rng = np.random.default_rng(0)
    target = rng.standard_normal((4 * RATE, 2)) * 0.1
    target[RATE:2 * RATE] = 0
    target[3 * RATE:] = 0
    return target


def test_silent_segments_are_found():
    assert silent_segments(_target_with_rests(), RATE, RATE) == [(1000, 2000), (3000, 4000)]


def test_all_zero_estimate_over_silence_is_perfect():
    target = _target_with_rests()
    estimate = target.copy()  # perfect where the target sounds, exact zeros in the rests
    scores = silence_scores(target, estimate, RATE)
    assert scores.segments == 2
    assert scores.pes == pytest.approx(10 * math.log10(EPS))  # -100 dB
    assert scores.vad == 100.0


def test_loud_estimate_over_silence_is_penalised():
    target = _target_with_rests()
    estimate = target.copy()
    estimate[RATE:2 * RATE] = 0.5  # constant 0.5 on both channels during the first rest
    scores = silence_scores(target, estimate, RATE)
    energy = 10 * math.log10(0.25 * RATE * 2 + EPS)  # sum of squares over the segment
    assert scores.pes == pytest.approx((energy + 10 * math.log10(EPS)) / 2)
    assert scores.vad == 50.0  # one rest of two predicted silent


def test_quiet_leak_below_threshold_counts_as_silent_but_raises_pes():
    target = _target_with_rests()
    estimate = target.copy()
    estimate[RATE:2 * RATE] = 1e-4  # -80 dB: under the -60 dB threshold
    quiet = silence_scores(target, estimate, RATE)
    assert quiet.vad == 100.0
    assert quiet.pes > silence_scores(target, target, RATE).pes


def test_target_never_silent_gives_nan():
    target = np.ones((3 * RATE, 1))
    scores = silence_scores(target, target, RATE)
    assert scores.segments == 0 and math.isnan(scores.pes) and math.isnan(scores.vad)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="differ"):
        silence_scores(np.zeros((100, 2)), np.zeros((100, 1)), RATE)


def test_segment_statistics_ignore_nan_windows():
    frames = [{"SDR": 1.0, "SIR": 2.0, "SAR": 3.0}, {"SDR": float("nan"), "SIR": 5.0,
                                                     "SAR": 1.0},
              {"SDR": 5.0, "SIR": 8.0, "SAR": 2.0}]
    stats = segment_statistics(frames)
    assert stats["SDR_mean"] == 3.0 and stats["SDR_median"] == 3.0
    assert stats["SIR_mean"] == 5.0 and stats["SAR_median"] == 2.0


def test_nsdr_is_the_gain_over_the_mixture():
    assert nsdr(6.5, 1.5) == 5.0
