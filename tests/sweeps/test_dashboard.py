"""The sweep report's Optuna study and parameter importance, from run records alone (no MLflow
store, no sweep): distributions from the search block or the logged values, conditional
parameters, fANOVA that finds the parameter the metric depends on, and the cases with too little
to rank. The page itself is tested in a browser in tests/sweeps/test_report.py."""

from __future__ import annotations

import csv
from types import SimpleNamespace

import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from sweeps.dashboard import (
    MISSING,
    build_study,
    param_importance,
    render_html,
    write_importance_csv,
)


def run(params: dict[str, str], value: float | None, name: str = "t") -> SimpleNamespace:
    metrics = {} if value is None else {"best_valid_sisdr": value}
    return SimpleNamespace(info=SimpleNamespace(run_id=name, run_name=name),
                           data=SimpleNamespace(params={f"search.{k}": v
                                                        for k, v in params.items()},
                                                metrics=metrics))


def test_the_metric_depends_on_one_parameter_and_fanova_says_so():
    # 16 trials: the metric is 10·lr; the encoder alternates and changes nothing
    runs = [run({"train.lr": str(i / 15), "model.encoder": "ab"[i % 2], "train.seed": str(i)},
                10 * i / 15, f"t{i}") for i in range(16)]
    study, params = build_study(runs, "valid_sisdr", "max")
    assert params == ["model.encoder", "train.lr"]  # the seed is pooled, not searched
    assert len(study.trials) == 16 and study.direction.name == "MAXIMIZE"
    importances, note = param_importance(study, params)
    ranked = dict(importances)
    assert [name for name, _ in importances][0] == "train.lr"
    assert ranked["train.lr"] > 0.8 > ranked["model.encoder"]
    assert sum(ranked.values()) == pytest.approx(1.0)
    assert "fANOVA" in note and "16 trials" in note


def test_distributions_come_from_the_search_block_when_there_is_one():
    spec = {"train.lr": ("loguniform", [1e-4, 1e-2]), "model.full_band": ("choice", [False, True]),
            "model.layers": ("randint", [1, 5]),
            "model.filterbank": ("choice", ["conv", "stft"])}
    runs = [run({"train.lr": "0.001", "model.full_band": "True", "model.layers": "2"}, 1.0),
            run({"train.lr": "0.005", "model.full_band": "True", "model.layers": "4",
                 "model.filterbank": "stft"}, 2.0)]  # the filterbank applies to one trial only
    study, params = build_study(runs, "valid_sisdr", "min", spec)
    dists = study.trials[0].distributions
    assert dists["train.lr"] == FloatDistribution(1e-4, 1e-2, log=True)
    assert dists["model.layers"] == IntDistribution(1, 4)
    # unsampled choices are kept; a parameter that does not apply is its own category
    assert dists["model.full_band"] == CategoricalDistribution(["False", "True"])
    assert dists["model.filterbank"] == CategoricalDistribution(["conv", "stft", MISSING])
    assert [t.params["model.filterbank"] for t in study.trials] == [MISSING, "stft"]
    assert study.trials[1].params["model.layers"] == 4 and study.direction.name == "MINIMIZE"


def test_without_a_search_block_numbers_are_ranges_and_constants_are_left_out():
    runs = [run({"model.num_bands": "1", "model.kind": "x", "train.epochs": "3"}, 1.0),
            run({"model.num_bands": "4", "model.kind": "y", "train.epochs": "3"}, 2.0),
            run({"model.num_bands": "2", "model.kind": "y", "train.epochs": "3"}, None)]
    study, params = build_study(runs, "valid_sisdr", "max")
    assert params == ["model.kind", "model.num_bands"]  # train.epochs never changed
    assert len(study.trials) == 2  # the run without the metric is not a trial
    assert study.trials[0].distributions["model.num_bands"] == FloatDistribution(1.0, 4.0)


@pytest.mark.parametrize("values,expected", [
    ([1.0], "1 trial(s) reported the metric (needs 2)"),
    ([], "0 trial(s) reported the metric (needs 2)"),
    ([3.0, 3.0, 3.0], "all 3 trials scored the same"),
])
def test_too_little_to_rank_says_why(values, expected, tmp_path):
    runs = [run({"train.lr": str(i), "model.kind": "xy"[i % 2]}, v) for i, v in enumerate(values)]
    study, params = build_study(runs, "valid_sisdr", "max")
    importances, note = param_importance(study, params)
    assert importances == [] and note.endswith(expected)
    path = write_importance_csv(importances, note, len(study.trials), tmp_path / "i.csv")
    rows = list(csv.reader(path.open()))
    assert rows[0] == ["param", "importance", "trials", "method"] and rows[1][3] == note


def test_one_searched_parameter_carries_all_the_variance():
    runs = [run({"train.lr": str(lr)}, v) for lr, v in ((0.1, 1.0), (0.2, 3.0), (0.3, 2.0))]
    study, params = build_study(runs, "valid_sisdr", "max")
    assert param_importance(study, params)[0] == [("train.lr", 1.0)]
    runs = [run({"train.lr": "0.1"}, v) for v in (1.0, 2.0)]  # searched but never varied
    study, params = build_study(runs, "valid_sisdr", "max")
    assert param_importance(study, params) == (
        [], "no parameter importance: no searched parameter took two values")


def test_the_page_escapes_what_the_runs_hold_and_fetches_nothing():
    page = render_html("sweep <x>", ["config a=<b>"], [("table", "<p>ok</p>")])
    assert "sweep &lt;x&gt;" in page and "config a=&lt;b&gt;" in page
    assert "http://" not in page and "https://" not in page and "<link" not in page
    assert 'setAttribute("data-plots"' in page
