"""The scoring protocol of ``sep evaluate``: SiSEC (estimates back at the references' native rate
and channels) against scoring at the model's own rate, BSSEval v3 against museval's ``mode="v3"``,
NSDR/GNSDR, ``summary.json`` and the config checks.

An 8 kHz mono toy oracle (``tests.sepcore.toy_models``: 0.9 × the true source + 0.1 × the
mixture, at the model's rate) runs on the synthetic MUSDB tree (44.1 kHz stereo WAVs). Under the
SiSEC protocol its scores must be museval's, run here by hand on the estimates resampled with
sepcore's resampler, cut to the references' length and copied to both channels.
"""

from __future__ import annotations

import dataclasses
import json
import math

import museval
import numpy as np
import pytest
import soundfile as sf

from sepcore.checkpoint import Checkpoint, save_checkpoint
from sepcore.cli import main
from sepcore.config import config_from_dict
from sepcore.data import load_subset
from sepcore.data.audio import resample
from sepcore.errors import ConfigError
from sepcore.evaluate import evaluate_checkpoint, to_native
from sepcore.metrics.bsseval import evaluate, evaluate_track
from tests.sepcore.helpers import experiment_config
from tests.sepcore.toy_models import register_toy_models

LEAK = 0.1
# the per-track JSON stores museval's 5 decimals: half a quantum, plus the README's 1e-7 dB
JSON_TOL = 5e-6 + 1e-7


@pytest.fixture(autouse=True)
def toy_models(monkeypatch):
    register_toy_models(monkeypatch)


def _checkpoint(path, synth_root, cache_dir, *, rate=8000, channels=1, **evaluation):
    cfg = experiment_config({"name": "true_sources", "leak": LEAK}, synth_root,
                            path.parent / "run", cache_dir, rate=rate, channels=channels,
                            evaluation={"max_tracks": 1, **evaluation})
    return save_checkpoint(path, Checkpoint(config=cfg.to_dict(), model_state={})), cfg


def _frames(json_path, target, metric):
    scores = json.loads(json_path.read_text())
    entry = next(t for t in scores["targets"] if t["name"] == target)
    return np.array([np.nan if f["metrics"][metric] is None else f["metrics"][metric]
                     for f in entry["frames"]], dtype=float)


def _self_noise(refs, ests, rate):
    """Largest change of museval's v4 metrics when ``refs`` (S, C, T) move by 1e-12 relative."""
    refs, ests = refs.transpose(0, 2, 1).astype(np.float64), ests.transpose(0, 2, 1)
    a = museval.evaluate(refs, ests, win=rate, hop=rate)
    moved = refs * (1 + 1e-12 * np.random.default_rng(1).standard_normal(refs.shape))
    b = museval.evaluate(moved, ests, win=rate, hop=rate)
    return {m: float(np.nanmax(np.abs(x - y))) for m, x, y in
            zip(("SDR", "ISR", "SIR", "SAR"), a, b, strict=True)}


@pytest.mark.slow
def test_sisec_scores_an_8khz_mono_model_at_44k_stereo_as_museval_does(synth_root, cache_dir,
                                                                       tmp_path, capsys):
    path, cfg = _checkpoint(tmp_path / "oracle.safetensors", synth_root, cache_dir)
    assert main(["evaluate", str(path), f"eval.out_dir={tmp_path / 'sisec'}",
                 "eval.device=cpu"]) == 0
    out = capsys.readouterr().out
    assert "protocol sisec: 44100 Hz, 2 ch, BSSEval v4" in out
    summary = json.loads((tmp_path / "sisec" / "summary.json").read_text())
    assert (summary["protocol"], summary["sample_rate"], summary["channels"],
            summary["bsseval"]) == ("sisec", 44100, 2, "v4")
    assert (summary["model_sample_rate"], summary["model_channels"]) == (8000, 1)
    assert set(summary["scores"]) == {"vocals", "accompaniment"}

    # by hand: the oracle's estimate at 8 kHz mono, resampled (sepcore's soxr HQ), cut to the
    # native length, copied to both channels; museval v4 against the native stems
    song = load_subset(cfg.data, "test", max_tracks=1)[0]
    mono = song.targets(["vocals", "accompaniment"])  # (S, 1, T) at 8 kHz
    estimate = (1 - LEAK) * mono + LEAK * np.asarray(song.mixture)[None]
    vocals_wav = synth_root / "test" / song.name / "vocals.wav"
    assert (sf.info(str(vocals_wav)).samplerate, sf.info(str(vocals_wav)).channels) == (44100, 2)
    native = load_subset(dataclasses.replace(cfg.data, sample_rate=44100, channels=2), "test",
                         names=[song.name])[0]
    refs = native.targets(["vocals", "accompaniment"])  # (S, 2, T') at 44.1 kHz
    ests = np.stack([np.repeat(resample(e, 8000, 44100)[:, :refs.shape[-1]], 2, axis=0)
                     for e in estimate])
    assert ests.shape == refs.shape  # soxr gives T' samples (or more): nothing is padded here
    want = museval.evaluate(refs.transpose(0, 2, 1), ests.transpose(0, 2, 1), win=44100,
                            hop=44100, mode="v4")
    # how far museval's own answer moves when the references move by 1e-12 (relative): the
    # synthetic voice is almost dual-mono (L/R correlation 0.995), so its spatial Gram is badly
    # conditioned and museval's ISR/SIR/SAR (the projections onto it) carry ~1e-6 dB of
    # round-off of their own (README, Metrics); SDR needs no projection and is exact
    noise = _self_noise(refs, ests, 44100)
    assert noise["SAR"] < 1e-4  # well posed at 44.1 kHz stereo
    written = tmp_path / "sisec" / "test" / f"{song.name}.json"
    for i, target in enumerate(("vocals", "accompaniment")):
        for k, metric in enumerate(("SDR", "ISR", "SIR", "SAR")):
            got = _frames(written, target, metric)
            assert got.shape == want[k][i].shape == (12,)
            # NaN exactly where museval gives NaN (windows of the one-bar intro without voice)
            np.testing.assert_array_equal(np.isnan(got), ~np.isfinite(want[k][i]))
            scored = np.isfinite(got)
            assert scored.sum() >= 9
            tol = JSON_TOL if metric == "SDR" else JSON_TOL + 20 * max(noise.values())
            assert np.abs(got[scored] - want[k][i][scored]).max() <= tol, (target, metric)

    # today's scoring at the model's rate is ill-posed on the same estimate: the 8 kHz references
    # are empty above soxr's anti-alias cut, and museval's own SAR moves by orders of magnitude
    # more under the same 1e-12 change of its input
    model_noise = _self_noise(mono, estimate, 8000)
    print(f"museval round-off: sisec {noise}, model rate {model_noise}")
    assert model_noise["SAR"] > 100 * noise["SAR"] and model_noise["SAR"] > 1e-3

    # the same model scored at its own rate: other numbers, and the tables say so
    assert main(["evaluate", str(path), f"eval.out_dir={tmp_path / 'model'}", "eval.device=cpu",
                 "eval.protocol=model"]) == 0
    assert "protocol model: 8000 Hz, 1 ch" in capsys.readouterr().out
    model = json.loads((tmp_path / "model" / "summary.json").read_text())
    assert (model["protocol"], model["sample_rate"], model["channels"]) == ("model", 8000, 1)
    for metric in ("ISR", "SAR"):
        sisec_value = summary["scores"]["vocals"][metric]
        model_value = model["scores"]["vocals"][metric]
        print(f"vocals {metric}: sisec {sisec_value:.2f} dB, model {model_value:.2f} dB")
        assert abs(sisec_value - model_value) > 1.0


def test_estimates_reach_the_references_format_exactly():
    """Resampled with sepcore's resampler, cut or zero-padded to the reference's length, a mono
    estimate copied to every channel."""
    rng = np.random.default_rng(0)
    estimate = rng.standard_normal((2, 1, 800)).astype(np.float32)  # 0.1 s at 8 kHz
    long = to_native(estimate, 8000, 44100, (2, 4000))  # 4410 samples resampled, cut to 4000
    short = to_native(estimate, 8000, 44100, (2, 5000))  # zero-padded to 5000
    want = resample(estimate[1], 8000, 44100)
    assert long.shape == (2, 2, 4000) and short.shape == (2, 2, 5000)
    np.testing.assert_array_equal(long[1, 0], want[0, :4000])
    np.testing.assert_array_equal(long[1, 1], long[1, 0])
    np.testing.assert_array_equal(short[1, :, :want.shape[1]], np.repeat(want, 2, axis=0))
    assert not short[:, :, want.shape[1]:].any()


def _song(seconds=2.0, rate=8000, seed=0, channels=2):
    """Two sources (low-passed noise, 16-bit grid) and an estimate with cross-talk."""
    from scipy.signal import lfilter

    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    refs = lfilter([1.0], [1.0, -0.9], rng.standard_normal((2, n, channels)), axis=1) * 0.05
    refs = np.round(refs * 32768) / 32768
    ests = refs + 0.3 * refs[::-1] + 0.01 * rng.standard_normal(refs.shape)
    return refs, ests


def test_v3_is_museval_mode_v3_over_the_whole_signal():
    refs, ests = _song(seconds=1.0)
    n = refs.shape[1]
    want = museval.evaluate(refs, ests, win=n, hop=n, mode="v3")
    store = evaluate_track({"vocals": refs[0], "accompaniment": refs[1]},
                           {"vocals": ests[0], "accompaniment": ests[1]}, track_name="t",
                           rate=8000, version="v3")
    fast = evaluate(refs, ests, win=n, hop=n, mode="v3")  # the fast path, unquantised
    for i, target in enumerate(("vocals", "accompaniment")):
        entry = next(t for t in json.loads(store.json)["targets"] if t["name"] == target)
        assert len(entry["frames"]) == 1 and entry["frames"][0]["duration"] == n / 8000
        for k, metric in enumerate(("SDR", "ISR", "SIR", "SAR")):
            assert want[k].shape == (2, 1)
            assert abs(fast[k][i, 0] - want[k][i, 0]) <= 1e-7
            assert abs(entry["frames"][0]["metrics"][metric] - want[k][i, 0]) <= JSON_TOL
    # v3 with shorter windows (per-window filters) is museval's own computation
    refs, ests = _song(seconds=1.0, channels=1)
    windowed = evaluate(refs, ests, win=4000, hop=4000, mode="v3")
    for got, expected in zip(windowed, museval.evaluate(refs, ests, win=4000, hop=4000,
                                                        mode="v3"), strict=True):
        np.testing.assert_array_equal(got, expected)
    v4 = evaluate(refs, ests, win=4000, hop=4000)
    assert not np.allclose(v4[1], windowed[1])  # per-window filters change ISR


@pytest.mark.slow
def test_v3_with_nsdr_reports_gnsdr(synth_root, cache_dir, tmp_path):
    """The Fusion-Net / MaD protocol: one whole-song BSSEval v3 SDR per song, NSDR = its gain
    over the mixture, GNSDR the length-weighted mean. The oracle's vocal error is 0.1 × the
    accompaniment and the mixture's is 1 × it: NSDR = 20 dB on every song, and so is GNSDR."""
    path, cfg = _checkpoint(tmp_path / "v3.safetensors", synth_root, cache_dir, channels=2,
                            max_tracks=None, nsdr=True, bsseval="v3", protocol="model")
    result = evaluate_checkpoint(path, out_dir=tmp_path / "ev", device="cpu", progress=False)
    assert result.protocol["bsseval"] == "v3"
    songs = load_subset(cfg.data, "test")
    assert len(songs) == 2
    for song in songs:
        refs = song.targets(["vocals", "accompaniment"]).transpose(0, 2, 1)  # (S, T, C)
        ests = (1 - LEAK) * refs + LEAK * np.asarray(song.mixture).T[None]
        n = refs.shape[1]
        want = museval.evaluate(refs, ests, win=n, hop=n, mode="v3")[0]
        got = _frames(tmp_path / "ev" / "test" / f"{song.name}.json", "vocals", "SDR")
        assert got.shape == (1,) and abs(got[0] - want[0, 0]) <= JSON_TOL
    assert result.extra["vocals"]["NSDR"] == pytest.approx(20.0, abs=0.01)
    assert result.extra["vocals"]["GNSDR"] == pytest.approx(20.0, abs=0.01)
    assert "GNSDR" in result.extra_table
    summary = json.loads(result.summary_path.read_text())
    assert summary["bsseval"] == "v3" and summary["segmentwise"]["vocals"]["GNSDR"] == \
        pytest.approx(20.0, abs=0.01)


def test_gnsdr_weights_songs_by_length():
    from sepcore.evaluate import _extra_scores

    nsdrs = {"vocals": [(2.0, 100), (8.0, 300), (math.nan, 50)]}
    row = _extra_scores([], {"vocals": []}, nsdrs, ["vocals"])["vocals"]
    assert row["NSDR"] == 5.0 and row["GNSDR"] == pytest.approx((2 * 100 + 8 * 300) / 400)


@pytest.mark.parametrize("key,value", [("protocol", "native"), ("bsseval", "v5")])
def test_bad_protocol_or_bsseval_is_a_one_line_config_error(key, value):
    raw = {"model": {"name": "convtasnet"}, "eval": {key: value}}
    with pytest.raises(ConfigError, match=f"eval.{key}") as err:
        config_from_dict(raw, file="run.yaml")
    assert err.value.key == f"eval.{key}" and value in str(err.value)
    assert "\n" not in str(err.value) and "run.yaml" in str(err.value)
    cfg = config_from_dict({"model": {"name": "convtasnet"}})
    assert (cfg.eval.protocol, cfg.eval.bsseval) == ("sisec", "v4")

