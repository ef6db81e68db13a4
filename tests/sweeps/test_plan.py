"""``python -m sweeps plan``: trials, seeds, sizes, receptive fields and the scheduler of a sweep,
without running it; the multi-band masking paper's Table 1 sizes as the acceptance check."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from sepcore.models import build_model
from sepcore.models.base import count_parameters
from sweeps.__main__ import main
from sweeps.plan import format_plan, plan_sweep
from sweeps.spec import grid_points, load_sweep, split_stages, with_row_checkpoints
from sweeps.trainable import search_params

SWEEPS = Path(__file__).resolve().parents[2] / "sweeps"

# Papantonakis et al., "Multi-band Masking for Waveform-based Singing Voice Separation"
# (EUSIPCO 2022), Table 1: parameter counts in millions
TABLE_1 = {"M1": 6.6, "M2": 6.58, "M3": 12.97, "M4": 6.71, "M5": 6.56, "M6": 6.56,
           "S1": 7.32, "S2": 7.31}


def test_bands_paper_plan_has_table_1_rows_at_their_sizes(capsys):
    assert main(["plan", str(SWEEPS / "bands.yaml"), "--profile", "paper", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["sweep"] == "bands" and plan["profile"] == "paper"
    assert plan["scheduler"] == "FIFO"
    rows = {t["overrides"]["row"]["id"]: t for t in plan["trials"]}
    assert list(rows) == list(TABLE_1)
    for row, millions in TABLE_1.items():
        assert abs(rows[row]["params"] / 1e6 - millions) <= 0.02 * millions, row
        assert rows[row]["seeds"] == [42, 43, 44]
        assert rows[row]["published"]["params"] == millions * 1e6
    # M5/M6 wait for M1, whose encoder/decoder they load and freeze
    assert [r for r, t in rows.items() if t["stage"] == 2] == ["M5", "M6"]
    assert rows["M5"]["after"] == "M1" and rows["M5"]["trainable_params"] < \
        rows["M5"]["params"]
    assert rows["M1"]["receptive_field_samples"] > rows["M2"]["receptive_field_samples"]


def test_plan_enumerates_choices_and_shows_the_sampled_space(tmp_path, capsys):
    path = tmp_path / "s.yaml"
    path.write_text(textwrap.dedent("""
        base:
          model: {name: multiband, num_bands: 2, encoder: {N: 32, L: 16},
                  masker: {B: 16, H: 32, X: 2, R: 1}}
          audio: {sample_rate: 8000, channels: 1}
          train: {seed: 7}
        search:
          model.num_bands: {choice: [1, 2, 4]}
          model.full_band: {grid: [false, true]}
          train.lr: {loguniform: [1.0e-4, 1.0e-2]}
        tune: {num_samples: 5, search_alg: optuna}
    """))
    sweep = load_sweep(path)
    plan = plan_sweep(sweep)
    assert plan["scheduler"] == "ASHA" and plan["scheduler_args"]["grace_period"] == 1
    assert plan["sampled"] == {"train.lr": {"loguniform": [1.0e-4, 1.0e-2]}}
    points = [t["overrides"] for t in plan["trials"]]
    assert len(points) == 6 and {"model.num_bands": 4, "model.full_band": True} in points
    for trial in plan["trials"]:  # the count of the model the trial builds
        cfg = sweep.config_for(trial["overrides"])
        assert trial["params"] == count_parameters(build_model(cfg.model_name, cfg.model))
        assert trial["seeds"] == [7]  # no tune.seeds: the base config's seed
    assert main(["plan", str(path)]) == 0
    text = capsys.readouterr().out
    assert "scheduler ASHA" in text and "sampled train.lr" in text and "Optuna draws 5" in text


def test_plan_time_is_cpu_measured_and_scaled(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(textwrap.dedent("""
        base:
          model: {name: multiband, num_bands: 2, encoder: {N: 16, L: 16},
                  masker: {B: 8, H: 16, X: 1, R: 1}}
          audio: {sample_rate: 8000, channels: 1}
          data: {segment: 0.5}
          train: {epochs: 3, steps_per_epoch: 2, batch_size: 2}
        search:
          row: {grid: [{id: A}, {id: B, model: {num_bands: 1}}]}
        tune: {search_alg: grid, seeds: [1, 2]}
    """))
    plan = plan_sweep(load_sweep(path), timed=True)
    for trial in plan["trials"]:
        timing = trial["timing"]
        assert timing["measured_on"] == "cpu" and timing["step_seconds"] > 0
        assert timing["steps_per_epoch"] == 2  # the smoke profile's train.steps_per_epoch
        assert timing["hours"] == pytest.approx(
            timing["step_seconds"] * 2 * trial["epochs"] * len(trial["seeds"]) / 3600.0)
    assert plan["measured_on"] == "cpu"
    assert plan["hours"] == pytest.approx(sum(t["timing"]["hours"] for t in plan["trials"]))
    assert "CPU-measured h" in format_plan(plan)


def test_rows_split_into_stages_and_take_the_checkpoint_of_their_row():
    sweep = load_sweep(SWEEPS / "bands.yaml", profile="smoke")
    first, second = split_stages(sweep)
    assert [p["row"]["id"] for p in grid_points(first.params)] == ["M1", "M2"]
    assert [p["row"]["id"] for p in grid_points(second.params)] == ["M5"]
    resolved = with_row_checkpoints(second, {"M1": "/ckpt/M1.safetensors"})
    (point,) = grid_points(resolved.params)
    assert resolved.config_for(point).train.init_from == "/ckpt/M1.safetensors"
    assert grid_points(sweep.params)[2]["row"]["train"]["init_from"] == "row:M1"  # unchanged
    assert split_stages(load_sweep(SWEEPS / "demo.yaml", profile="smoke"))[1] is None


def test_a_row_is_logged_by_its_id():
    assert search_params({"row": {"id": "M5", "model": {"num_bands": 2}}, "train.seed": 42}) \
        == {"search.row": "M5", "search.train.seed": 42}


def test_under_the_grid_generator_a_choice_is_sampled_not_enumerated(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(textwrap.dedent("""
        base:
          model: {name: multiband, num_bands: 2, encoder: {N: 32, L: 16},
                  masker: {B: 16, H: 32, X: 2, R: 1}}
          audio: {sample_rate: 8000, channels: 1}
        search:
          model.num_bands: {choice: [1, 2, 4]}
          model.full_band: {grid: [false, true]}
        tune: {num_samples: 2, search_alg: grid, scheduler: {type: fifo}}
    """))
    plan = plan_sweep(load_sweep(path))
    assert plan["scheduler"] == "FIFO" and plan["scheduler_args"] == {}
    assert [t["overrides"] for t in plan["trials"]] == [{"model.full_band": False},
                                                        {"model.full_band": True}]
    assert plan["sampled"] == {"model.num_bands": {"choice": [1, 2, 4]}}
    assert all(t["repeats"] == 2 for t in plan["trials"])


def test_timing_on_a_missing_gpu_is_refused_in_one_line(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    assert main(["plan", str(SWEEPS / "demo.yaml"), "--time", "--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--device cuda" in err and "\n" not in err
