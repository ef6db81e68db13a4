"""``sep evaluate`` prints and writes exactly what BSSEval gives on the model's estimates.

Toy oracles (``tests.sepcore.toy_models``) make the estimates known without running a network: a
perfect separator (the true sources), and a leaky one (0.9 × the source + 0.1 × the mixture). The
JSON files and tables of ``sep evaluate`` must equal :func:`sepcore.metrics.bsseval.evaluate_track`
and :mod:`sepcore.metrics.aggregate` run here on the same arrays; PES/VAD have closed forms.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import sepcore.evaluate as evaluate_mod
from sepcore.checkpoint import Checkpoint, save_checkpoint
from sepcore.cli import main
from sepcore.data import load_subset
from sepcore.errors import ConfigError
from sepcore.evaluate import evaluate_checkpoint
from sepcore.metrics.aggregate import aggregate, format_table
from sepcore.metrics.bsseval import evaluate_track
from tests.sepcore.helpers import experiment_config
from tests.sepcore.toy_models import register_toy_models

RATE = 8000


@pytest.fixture(autouse=True)
def toy_models(monkeypatch):
    register_toy_models(monkeypatch)


def _checkpoint(path, synth_root, cache_dir, targets=("vocals", "accompaniment"), **model):
    cfg = experiment_config({"name": "true_sources", **model}, synth_root, path.parent / "run",
                            cache_dir, rate=RATE, channels=2, targets=targets,
                            evaluation={"nsdr": True, "protocol": "model"})
    return save_checkpoint(path, Checkpoint(config=cfg.to_dict(), model_state={})), cfg


def _expected_stores(cfg, leak):
    """evaluate_track on the estimates the toy oracle gives, computed here from the songs."""
    stores, arrays = [], {}
    for song in load_subset(cfg.data, "test"):
        refs = torch.from_numpy(song.targets(cfg.data.targets))  # (S, C, T)
        mixture = torch.from_numpy(np.ascontiguousarray(song.mixture))  # (C, T)
        ests = refs.clone() if not leak else (1 - leak) * refs + leak * mixture[None]
        ref_map = {n: refs[i].numpy().T for i, n in enumerate(cfg.data.targets)}
        est_map = {n: ests[i].numpy().T for i, n in enumerate(cfg.data.targets)}
        stores.append(evaluate_track(ref_map, est_map, track_name=song.name, rate=RATE))
        arrays[song.name] = (ref_map, est_map)
    return stores, arrays


def _extra_row(out: str, target: str) -> dict[str, float]:
    """The row of ``target`` in the second table ``sep evaluate`` prints."""
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("target") and "VAD" in line)
    columns = lines[header].split()[1:]
    row = next(line for line in lines[header:] if line.split()[:1] == [target])
    return dict(zip(columns, map(float, row.split()[1:]), strict=True))


def _frame_values(stores, target, metric):
    """Every window's value of ``metric`` for ``target``, from the museval JSON (inf -> NaN)."""
    return np.array([np.nan if frame["metrics"][metric] is None else frame["metrics"][metric]
                     for store in stores for entry in json.loads(store.json)["targets"]
                     if entry["name"] == target for frame in entry["frames"]], dtype=float)


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def _nanmedian(values) -> float:
    values = np.asarray(values, dtype=float)
    return math.nan if np.isnan(values).all() else float(np.nanmedian(values))


def _silence(arrays, target, threshold_db=-60.0, eps=1e-10):
    """PES and VAD from their definitions (HTMD-Net paper's evaluation protocol): over the 1 s
    windows where the reference's mean power is below -60 dB, PES = mean of 10 log10(energy of
    the estimate + eps), VAD = % of those windows where the estimate's mean power is below it."""
    pes, silent = [], []
    for refs, ests in arrays.values():
        ref, est = refs[target].astype(np.float64), ests[target].astype(np.float64)  # (T, C)
        for start in range(0, len(ref) - RATE + 1, RATE):
            window = slice(start, start + RATE)
            if 10 * np.log10(np.mean(ref[window] ** 2) + eps) < threshold_db:
                pes.append(10 * np.log10(np.sum(est[window] ** 2) + eps))
                silent.append(10 * np.log10(np.mean(est[window] ** 2) + eps) < threshold_db)
    assert silent, "the synthetic voice has rests"
    return float(np.mean(pes)), 100.0 * float(np.mean(silent))


def _nsdr(stores, mixture_stores, target):
    """Median over songs of (median SDR over windows of the estimate − of the mixture)."""
    gains = [_nanmedian(_frame_values([est], target, "SDR"))
             - _nanmedian(_frame_values([mix], target, "SDR"))
             for est, mix in zip(stores, mixture_stores, strict=True)]
    return _nanmedian(gains)


def _assert_sdr_closed_form(stores, arrays):
    """BSSEval's SDR needs no projection: s_target + e_spat + e_interf + e_artif = the estimate, so
    SDR = 10 log10(||s||^2 / ||estimate - s||^2) per window (Vincent et al., TASLP 2006, eq. 11;
    museval's v4 windows: 1 s, hop 1 s, full windows). Checked on every window BSSEval scores."""
    scored = 0
    for store in stores:
        refs, ests = arrays[store.track_name]
        for entry in json.loads(store.json)["targets"]:
            ref = refs[entry["name"]].astype(np.float64)
            error = ests[entry["name"]].astype(np.float64) - ref
            for k, frame in enumerate(entry["frames"]):
                if frame["metrics"]["SDR"] is None or math.isnan(frame["metrics"]["SDR"]):
                    continue  # a window where some reference or estimate is all zero
                window = slice(k * RATE, (k + 1) * RATE)
                want = 10 * np.log10(np.sum(ref[window] ** 2) / np.sum(error[window] ** 2))
                # the JSON keeps 5 decimals
                assert frame["metrics"]["SDR"] == pytest.approx(want, abs=2e-5), (entry, k)
                scored += 1
    assert scored >= 20


@pytest.mark.parametrize("leak", [0.0, 1e-4, 0.1])
def test_sep_evaluate_prints_and_writes_bsseval_of_the_estimates(leak, synth_root, cache_dir,
                                                                 tmp_path, capsys):
    path, cfg = _checkpoint(tmp_path / "oracle.safetensors", synth_root, cache_dir, leak=leak)
    assert main(["evaluate", str(path), f"eval.out_dir={tmp_path / 'ev'}",
                 "eval.device=cpu"]) == 0
    out = capsys.readouterr().out
    stores, arrays = _expected_stores(cfg, leak)
    assert len(stores) == 2  # both synthetic test songs
    for store in stores:  # the per-track museval JSON, value for value
        written = json.loads((tmp_path / "ev" / "test" / f"{store.track_name}.json").read_text())
        assert written == json.loads(store.json)
    scores = aggregate(stores)
    assert format_table(scores, list(scores)) in out  # the median-of-medians table

    vocals = _extra_row(out, "vocals")
    sdr_frames = _frame_values(stores, "vocals", "SDR")
    mixture_stores = [evaluate_track(refs, dict.fromkeys(refs, sum(refs.values())),
                                     track_name=name, rate=RATE)
                      for name, (refs, _) in arrays.items()]
    nsdr = _nsdr(stores, mixture_stores, "vocals")
    pes, vad = _silence(arrays, "vocals")
    for column, want in (("SDR_median", _nanmedian(sdr_frames)), ("NSDR", nsdr), ("PES", pes),
                         ("VAD", vad)):  # printed with 2 decimals
        assert _same(vocals[column], round(want, 2)), (column, vocals[column], want)
    sdr = scores["vocals"]["SDR"]
    print(f"leak {leak}: vocals SDR {sdr:.2f} dB, NSDR {nsdr:.2f} dB, {vocals}")
    if leak == 0:
        # a perfect estimate: silent exactly where the target is (VAD 100 %, PES = 10 log10(eps)),
        # infinite SDR, which museval's JSON stores as NaN; ISR/SIR/SAR are round-off only
        assert vocals["VAD"] == 100.0 and vocals["PES"] == -100.0
        assert np.isnan(sdr_frames).all() and math.isnan(sdr) and math.isnan(nsdr)
        return
    # the vocal estimate is v + leak·a, the mixture v + a: NSDR = 20 log10(1 / leak) exactly
    assert nsdr == pytest.approx(-20 * math.log10(leak), abs=0.01)
    _assert_sdr_closed_form(stores, arrays)
    if leak == 1e-4:
        # 1e-4 x the accompaniment (-80 dB) leaks in: still silent in the rests (< -60 dB)
        assert vocals["VAD"] == 100.0
        assert sdr > 75 and scores["accompaniment"]["SDR"] > 75  # measured 80.40 dB
    else:
        # 0.1 x the accompaniment fills every rest of the voice: no silent segment stays silent
        assert vocals["VAD"] == 0.0
        assert 15 < sdr < 25  # measured 20.40 dB


def test_single_source_models_are_scored_with_the_residual(synth_root, cache_dir, tmp_path):
    """A vocals-only model (HTMD-Net, Garoufis et al., EUSIPCO 2021) gets BSSEval scores with
    accompaniment = mixture − vocals estimate, as museval scores vocals/accompaniment."""
    path, cfg = _checkpoint(tmp_path / "v.safetensors", synth_root, cache_dir,
                            targets=("vocals",), leak=0.1)
    result = evaluate_checkpoint(path, out_dir=tmp_path / "eval", device="cpu", progress=False)
    stores = []
    for song in load_subset(cfg.data, "test"):
        mixture = torch.from_numpy(np.ascontiguousarray(song.mixture))  # (C, T)
        vocals = torch.from_numpy(song.targets(["vocals"])[0])  # (C, T)
        estimate = 0.9 * vocals + 0.1 * mixture
        refs = {"vocals": vocals.numpy().T, "accompaniment": (mixture - vocals).numpy().T}
        ests = {"vocals": estimate.numpy().T, "accompaniment": (mixture - estimate).numpy().T}
        stores.append(evaluate_track(refs, ests, track_name=song.name, rate=RATE))
    assert result.scores == aggregate(stores)
    assert set(result.scores) == {"vocals", "accompaniment"}
    # NSDR: the mixture is the estimate of both targets, vocals gain 20 log10(1 / 0.1) dB
    assert result.extra["vocals"]["NSDR"] == pytest.approx(20.0, abs=0.01)


@pytest.mark.parametrize("version", ["v4", "v3"])
def test_bsseval_on_tensors_gives_the_numbers_of_the_numpy_route(version, synth_root, cache_dir,
                                                                  tmp_path, monkeypatch):
    """The route a GPU takes (torch tensors on the metrics device to evaluate_track), forced here
    on CPU tensors: the same scores, per-track JSON and NSDR as the numpy route, to round-off
    (the museval-equality tolerance of tests/sepcore/metrics, WELL_POSED)."""
    from tests.sepcore.metrics.test_bsseval_fast import WELL_POSED

    path, _ = _checkpoint(tmp_path / "oracle.safetensors", synth_root, cache_dir, leak=0.1)
    given = []
    real = evaluate_mod.evaluate_track

    def spy(refs, ests, **kwargs):
        given.extend(type(v) for v in (*refs.values(), *ests.values()))
        return real(refs, ests, **kwargs)

    monkeypatch.setattr(evaluate_mod, "evaluate_track", spy)
    results = {}
    for route, forced in (("numpy", None), ("tensor", torch.device("cpu"))):
        given.clear()
        with monkeypatch.context() as patch:
            if forced is not None:
                patch.setattr(evaluate_mod, "bsseval_device", lambda *_, forced=forced: forced)
            results[route] = evaluate_checkpoint(path, [f"eval.bsseval={version}"],
                                                 out_dir=tmp_path / route, device="cpu",
                                                 progress=False)
        assert set(given) == {np.ndarray if forced is None else torch.Tensor}, route
    numpy_route, tensor_route = results["numpy"], results["tensor"]
    for target, row in numpy_route.scores.items():
        np.testing.assert_allclose(list(tensor_route.scores[target].values()), list(row.values()),
                                   rtol=0, atol=WELL_POSED)
        assert math.isfinite(row["SDR"])
        np.testing.assert_allclose(tensor_route.extra[target]["NSDR"],
                                   numpy_route.extra[target]["NSDR"], rtol=0, atol=WELL_POSED)
    for song in numpy_route.sisdr:
        frames = [_frame_values([_store(route, song)], "vocals", "SDR")
                  for route in (tmp_path / "numpy", tmp_path / "tensor")]
        np.testing.assert_allclose(frames[1], frames[0], rtol=0, atol=WELL_POSED)


def _store(folder, song):
    """A written per-track JSON, as an object with the ``json`` attribute _frame_values reads."""
    return type("Store", (), {"json": (folder / "test" / f"{song}.json").read_text()})


def test_bsseval_device_follows_the_model_and_names_the_key(monkeypatch):
    cpu, gpu = torch.device("cpu"), torch.device("cuda", 1)
    assert evaluate_mod.bsseval_device("auto", cpu) is None  # numpy on the CPU
    assert evaluate_mod.bsseval_device("auto", gpu) == gpu  # no CUDA call: the model's device
    assert evaluate_mod.bsseval_device("cpu", gpu) is None
    assert evaluate_mod.bsseval_device("cuda", gpu) == gpu
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="eval.metrics_device='cuda'") as info:
        evaluate_mod.bsseval_device("cuda", cpu)
    assert info.value.key == "eval.metrics_device"


def test_metrics_device_is_checked_with_the_config(synth_root, cache_dir, tmp_path):
    with pytest.raises(ConfigError, match="eval.metrics_device must be one of auto, cpu, cuda, "
                                          "got 'gpu'") as info:
        experiment_config({"name": "true_sources"}, synth_root, tmp_path, cache_dir,
                          evaluation={"metrics_device": "gpu"})
    assert info.value.key == "eval.metrics_device"


def test_evaluate_on_cuda_without_one_names_eval_device(monkeypatch, synth_root, cache_dir,
                                                        tmp_path):
    path, _ = _checkpoint(tmp_path / "v.safetensors", synth_root, cache_dir,
                          targets=("vocals",), leak=0.1)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="eval.device='cuda'") as info:
        evaluate_checkpoint(path, out_dir=tmp_path / "eval", device="cuda", progress=False)
    assert info.value.key == "eval.device"
    assert not (tmp_path / "eval").exists()  # refused before anything is written
