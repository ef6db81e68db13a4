"""BSSEval v4 wrapper against museval: evaluate, per-track JSON, median-of-medians aggregation."""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from types import SimpleNamespace

import museval
import numpy as np
import pytest

from sepcore.metrics.aggregate import METRICS, aggregate, format_table, track_medians
from sepcore.metrics.bsseval import evaluate, evaluate_track, save_track_json

RATE = 8000
SECONDS = 3
STEMS = ("vocals", "drums", "bass")


def _track(seed: int, silent_vocals_window: int | None = None, channels: int = 2):
    """Stems (T, C); estimates = stems + leakage + noise; optionally one silent vocals second."""
    rng = np.random.default_rng(seed)
    n = RATE * SECONDS
    refs = {name: rng.standard_normal((n, channels)) for name in STEMS}
    if silent_vocals_window is not None:
        start = silent_vocals_window * RATE
        refs["vocals"][start : start + RATE] = 0.0
    refs["accompaniment"] = refs["drums"] + refs["bass"]
    ests = {}
    for i, name in enumerate(refs):
        leak = refs[STEMS[(i + 1) % len(STEMS)]]
        ests[name] = refs[name] + 0.3 * leak + 0.2 * rng.standard_normal((n, channels))
    return refs, ests


def _fake_musdb_track(name: str, refs: dict[str, np.ndarray]):
    targets = OrderedDict((k, SimpleNamespace(audio=v)) for k, v in refs.items())
    return SimpleNamespace(name=name, subset="test", rate=RATE, targets=targets)


def test_evaluate_equals_museval():
    rng = np.random.default_rng(0)
    refs = rng.standard_normal((2, RATE * SECONDS, 2))
    ests = refs + 0.5 * rng.standard_normal(refs.shape)
    ours = evaluate(refs, ests, win=RATE, hop=RATE, backend="museval")
    theirs = museval.evaluate(refs, ests, win=RATE, hop=RATE)
    assert len(ours) == 4
    for a, b in zip(ours, theirs, strict=True):
        assert a.shape == (2, SECONDS)
        np.testing.assert_array_equal(a, b)


def test_evaluate_track_equals_eval_mus_track_and_round_trips(tmp_path):
    refs, ests = _track(seed=1, silent_vocals_window=1)
    store = evaluate_track(refs, ests, "song a", rate=RATE, backend="museval")
    theirs = museval.eval_mus_track(
        _fake_musdb_track("song a", refs), ests, output_dir=tmp_path / "museval"
    )
    assert store.json == theirs.json  # NaN != NaN as Decimal, so compare the JSON text
    # vocals/accompaniment scored in their own run, the other stems jointly
    assert [t["name"] for t in store.scores["targets"]] == [
        "drums",
        "bass",
        "vocals",
        "accompaniment",
    ]
    # a silent reference window is NaN for every target of that run
    vocals = next(t for t in store.scores["targets"] if t["name"] == "vocals")
    assert math.isnan(vocals["frames"][1]["metrics"]["SDR"])
    assert not math.isnan(vocals["frames"][0]["metrics"]["SDR"])

    path = save_track_json(store, tmp_path, "test")
    assert path == tmp_path / "test" / "song a.json"
    loaded = json.loads(path.read_text())
    assert path.read_text() == store.json
    assert [t["name"] for t in loaded["targets"]] == [t["name"] for t in store.scores["targets"]]
    assert (tmp_path / "museval" / "test" / "song a.json").read_text() == path.read_text()


def test_evaluate_track_single_target_warns():
    refs, ests = _track(seed=2)
    with pytest.warns(UserWarning, match="at least two"):
        store = evaluate_track({"drums": refs["drums"]}, ests, "lonely", rate=RATE)
    assert store.scores["targets"] == []


def test_aggregate_equals_museval_evalstore(tmp_path):
    stores = []
    for i, silent in enumerate([None, 1, 0]):
        refs, ests = _track(seed=10 + i, silent_vocals_window=silent, channels=1)
        store = evaluate_track(refs, ests, f"track {i}", rate=RATE)
        save_track_json(store, tmp_path, "test")
        stores.append(store)
    save_track_json(stores[0], tmp_path, "train")  # museval reads test/ only

    evalstore = museval.EvalStore()
    evalstore.add_eval_dir(tmp_path)
    theirs = evalstore.agg_frames_tracks_scores()
    frames = evalstore.agg_frames_scores()

    from_dir = aggregate(tmp_path, subset="test")
    from_stores = aggregate(stores)
    assert set(from_dir) == {"vocals", "drums", "bass", "accompaniment"}
    for target, metrics in from_dir.items():
        for metric in METRICS:
            want = theirs[(target, metric)]
            assert metrics[metric] == pytest.approx(want, abs=1e-9)
            assert from_stores[target][metric] == pytest.approx(want, abs=1e-9)
    medians = track_medians(tmp_path, subset="test")
    for (track, target, metric), want in frames.items():
        assert medians[track][target][metric] == pytest.approx(want, abs=1e-9, nan_ok=True)

    table = format_table(from_dir, ["vocals", "accompaniment", "drums", "bass", "piano"])
    lines = table.splitlines()
    assert lines[0].split() == ["target", "SDR", "SIR", "ISR", "SAR"]
    assert lines[2].split()[0] == "vocals"
    assert lines[2].split()[1] == f"{from_dir['vocals']['SDR']:.2f}"
    assert lines[-1].split() == ["piano", "-", "-", "-", "-"]
