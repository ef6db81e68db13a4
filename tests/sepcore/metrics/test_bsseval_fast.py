"""sepcore's BSSEval v4 against museval: every metric within 1e-3 dB, NaN exactly where museval's.

Also ``sep score`` against its museval backend, and median-of-medians against ``museval.EvalStore``.
"""

from __future__ import annotations

import json

import museval
import numpy as np
import pytest
import soundfile as sf

from sepcore.cli import main
from sepcore.metrics.aggregate import METRICS, aggregate
from sepcore.metrics.bsseval import evaluate, evaluate_track

TOL = 1e-3  # dB


def _signals(seed: int, nsrc: int, seconds: float, rate: int, nchan: int):
    """References (random, one band-limited), estimates = refs + leakage + noise."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    refs = rng.standard_normal((nsrc, n, nchan))
    refs[0] = np.cumsum(refs[0], axis=0) * 0.05  # a low-passed, strongly correlated source
    ests = refs + 0.3 * np.roll(refs, 1, axis=0) + 0.1 * rng.standard_normal(refs.shape)
    return refs, ests


def _assert_matches(refs, ests, win, hop):
    ours = np.stack(evaluate(refs, ests, win=win, hop=hop))
    theirs = np.stack(museval.evaluate(refs, ests, win=win, hop=hop, mode="v4"))
    assert ours.shape == theirs.shape
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(theirs))
    finite = ~np.isnan(theirs)
    assert finite.any()
    np.testing.assert_allclose(ours[finite], theirs[finite], rtol=0, atol=TOL)
    return ours


@pytest.mark.parametrize(
    ("nsrc", "nchan", "rate", "seconds", "hop_ratio"),
    [
        (2, 1, 8000, 3.0, 1.0),  # mono, 2 sources
        (2, 2, 8000, 3.5, 1.0),  # stereo, partial last second dropped
        (4, 2, 8000, 3.0, 1.0),  # 4 stereo sources
        (3, 2, 8000, 3.0, 0.75),  # overlapping windows
    ],
)
def test_random_leakage_noise_matches_museval(nsrc, nchan, rate, seconds, hop_ratio):
    refs, ests = _signals(nsrc + nchan, nsrc, seconds, rate, nchan)
    _assert_matches(refs, ests, win=rate, hop=int(rate * hop_ratio))


def test_real_window_at_44100():
    refs, ests = _signals(7, 2, 3.0, 44100, 2)
    ours = _assert_matches(refs, ests, win=44100, hop=44100)
    assert ours.shape == (4, 2, 3)


def test_silent_windows_are_nan_where_museval_says():
    rate = 8000
    refs, ests = _signals(3, 3, 4.0, rate, 2)
    refs[1, rate : 2 * rate] = 0.0  # a silent reference window
    ests[2, 3 * rate : 4 * rate] = 0.0  # a silent estimate window
    ours = _assert_matches(refs, ests, win=rate, hop=rate)
    assert np.isnan(ours[:, :, 1]).all() and np.isnan(ours[:, :, 3]).all()
    assert not np.isnan(ours[:, :, 0]).any()


def test_track_shorter_than_one_window():
    refs, ests = _signals(5, 2, 0.6, 8000, 2)
    ours = _assert_matches(refs, ests, win=8000, hop=8000)
    assert ours.shape == (4, 2, 1)


def test_torch_input_and_padding_like_museval():
    import torch

    refs, ests = _signals(9, 2, 2.0, 8000, 1)
    short = ests[:, :-100]
    want = museval.evaluate(refs, short, win=8000, hop=8000)
    got = evaluate(torch.from_numpy(refs), torch.from_numpy(short), win=8000, hop=8000)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, atol=TOL)


def test_silent_source_raises_like_museval():
    refs, ests = _signals(1, 2, 1.0, 8000, 1)
    refs[1] = 0.0
    with pytest.raises(ValueError, match="non-silent"):
        evaluate(refs, ests, win=8000, hop=8000)


def test_unknown_backend():
    refs, ests = _signals(1, 2, 1.0, 8000, 1)
    with pytest.raises(ValueError, match="backend"):
        evaluate(refs, ests, backend="bss")


def _write_tree(root, seed: int, songs: int, rate: int = 8000, seconds: float = 3.0):
    stems = ("vocals", "drums", "bass")
    for s in range(songs):
        refs, ests = _signals(seed + s, len(stems), seconds, rate, 2)
        for kind, audio in (("references", refs), ("estimates", ests)):
            folder = root / kind / f"song {s}"
            folder.mkdir(parents=True)
            for i, name in enumerate(stems):
                sf.write(folder / f"{name}.wav", audio[i] / 8, rate, subtype="FLOAT")


def _frames(path):
    data = json.loads(path.read_text())
    return {t["name"]: t["frames"] for t in data["targets"]}


def test_sep_score_equals_museval_backend_and_evalstore(tmp_path, capsys):
    _write_tree(tmp_path, seed=20, songs=2)
    refs, ests = tmp_path / "references", tmp_path / "estimates"
    assert main(["score", "--references", str(refs), "--estimates", str(ests),
                 "--out", str(tmp_path / "ours")]) == 0
    table = capsys.readouterr().out
    assert main(["score", "--references", str(refs), "--estimates", str(ests),
                 "--out", str(tmp_path / "theirs"), "--reference", "museval"]) == 0
    assert table.splitlines()[0].split() == ["target", "SDR", "SIR", "ISR", "SAR"]

    for song in ("song 0", "song 1"):
        ours = _frames(tmp_path / "ours" / "test" / f"{song}.json")
        theirs = _frames(tmp_path / "theirs" / "test" / f"{song}.json")
        assert ours.keys() == theirs.keys() == {"vocals", "drums", "bass"}
        for name, frames in ours.items():
            for a, b in zip(frames, theirs[name], strict=True):
                for metric in METRICS:
                    assert a["metrics"][metric] == pytest.approx(b["metrics"][metric], abs=TOL)

    store = museval.EvalStore()
    store.add_eval_dir(tmp_path / "ours")
    want = store.agg_frames_tracks_scores()
    got = aggregate(tmp_path / "ours", subset="test")
    for target, scores in got.items():
        for metric in METRICS:
            assert scores[metric] == pytest.approx(want[(target, metric)], abs=1e-9)


def test_sep_score_errors_name_the_culprit(tmp_path, capsys):
    _write_tree(tmp_path, seed=30, songs=1, seconds=1.0)
    refs, ests = tmp_path / "references", tmp_path / "estimates"
    (ests / "song 9").mkdir()
    sf.write(ests / "song 9" / "bass.wav", np.zeros((800, 2)), 8000)
    args = ["score", "--references", str(refs), "--estimates", str(ests), "--out",
            str(tmp_path / "out")]
    assert main(args) == 2
    assert "song 9" in capsys.readouterr().err

    (ests / "song 9" / "bass.wav").unlink()
    (ests / "song 9").rmdir()
    audio, rate = sf.read(ests / "song 0" / "bass.wav")
    sf.write(ests / "song 0" / "bass.wav", audio[:-10], rate)
    assert main(args) == 2
    assert "bass.wav" in capsys.readouterr().err

    sf.write(ests / "song 0" / "bass.wav", audio, 16000)
    assert main(args) == 2
    assert "16000 Hz" in capsys.readouterr().err


def test_evaluate_track_backends_agree():
    refs, ests = _signals(40, 3, 2.0, 8000, 2)
    names = ("vocals", "drums", "bass")
    r = {n: refs[i] for i, n in enumerate(names)}
    e = {n: ests[i] for i, n in enumerate(names)}
    fast = evaluate_track(r, e, "t", rate=8000)
    slow = evaluate_track(r, e, "t", rate=8000, backend="museval")
    for a, b in zip(fast.scores["targets"], slow.scores["targets"], strict=True):
        for fa, fb in zip(a["frames"], b["frames"], strict=True):
            for metric in METRICS:
                assert float(fa["metrics"][metric]) == pytest.approx(
                    float(fb["metrics"][metric]), abs=TOL)


def test_solve_cholesky_and_lu_fallback_agree_with_numpy() -> None:
    """``_solve``: Cholesky on a positive definite Gram, LU (numpy) where Cholesky breaks down."""
    import numpy as np
    import torch

    from sepcore.metrics import bsseval

    rng = np.random.default_rng(0)
    a = rng.standard_normal((64, 80))
    gram = a @ a.T  # positive definite: Cholesky path
    rhs = rng.standard_normal((64, 3))
    eps = np.finfo(float).eps
    ours = bsseval._solve(torch.from_numpy(gram), torch.from_numpy(rhs)).numpy()
    np.testing.assert_allclose(ours, np.linalg.solve(gram + eps * np.eye(64), rhs), rtol=1e-8)
    ev = np.linalg.eigvalsh(gram)
    indefinite = gram - 0.5 * (ev[31] + ev[32]) * np.eye(64)  # well posed, Cholesky fails
    ours = bsseval._solve(torch.from_numpy(indefinite), torch.from_numpy(rhs)).numpy()
    np.testing.assert_allclose(ours, np.linalg.solve(indefinite + eps * np.eye(64), rhs),
                               rtol=1e-6, atol=1e-10)
