"""Sweep files: parsing, profiles, overrides, conditional grids, and every bad-file error."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from sweeps.errors import SweepError
from sweeps.spec import grid_points, load_sweep

SWEEPS = Path(__file__).resolve().parents[2] / "sweeps"

TINY_BASE = """
base:
  model:
    name: multiband
    num_bands: 2
    encoder: {N: 32, L: 16}
    masker: {B: 16, H: 32, X: 2, R: 1}
  audio: {sample_rate: 8000, channels: 1}
  data: {root: data/x}
  train: {epochs: 2}
"""


def write(tmp_path, body: str, name="s.yaml") -> Path:
    path = tmp_path / name
    path.write_text(TINY_BASE + textwrap.dedent(body))
    return path


@pytest.mark.parametrize("name,points", [("demo", 1), ("bands", 3), ("filterbanks", 6),
                                         ("fb_ratio", 4), ("fb_irm", 2), ("loss_weights", 6),
                                         ("openunmix_transfer", 3), ("mad_recurrent", 3),
                                         ("metatasnet_stages", 3)])
def test_shipped_runnable_sweeps_parse(name, points):
    sweep = load_sweep(SWEEPS / f"{name}.yaml", profile="smoke")
    assert sweep.params and sweep.tune.metric == "valid_sisdr"
    assert len(grid_points(sweep.params)) == points
    for point in grid_points(sweep.params):  # every grid point builds
        sweep.config_for(point)


@pytest.mark.parametrize("profile", ["paper", "smoke"])
def test_bands_profiles(profile, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no trained M1 anywhere: the sweep validates without reading one
    sweep = load_sweep(SWEEPS / "bands.yaml", profile=profile)
    rows = {p["row"]["id"]: p for p in grid_points(sweep.params)}
    m1, m2, m5 = (sweep.config_for(rows[i]) for i in ("M1", "M2", "M5"))
    assert (m1.model_name, m2.model_name, m5.model_name) == ("convtasnet", "multiband",
                                                             "multiband")
    assert m2.train.frozen in (None, []) and m2.train.init_from is None
    # M5 starts from the M1 row of the same sweep: encoder/decoder loaded, then frozen
    assert m5.train.frozen == ["encoder.*", "decoder.*"] and m5.train.init_from == "row:M1"
    assert m5.train.init_keys == ["encoder.*", "decoder.*"]
    assert sweep.tune.scheduler.type == "fifo"  # every row trains to its stopping rule
    if profile == "smoke":
        assert set(rows) == {"M1", "M2", "M5"}
        assert m2.model.sample_rate == 8000 and m2.train.device == "cpu"
        assert sweep.tune.resources.gpu == 0
    else:
        assert set(rows) == {"M1", "M2", "M3", "M4", "M5", "M6", "S1", "S2"}
        assert m2.model.sample_rate == 44100 and sweep.tune.resources.gpu == 1
        assert sweep.artifacts.uri.startswith("s3://")
        assert sweep.config_for(rows["M6"]).model.band_split == "sorted"
        assert sweep.config_for(rows["M3"]).model.full_band is True
        assert set(sweep.published) == set(rows)  # Table 1 beside every row
        assert sweep.published["M2"]["test_vocals_SDR"] == 6.37


def test_bands_explore_profile_keeps_asha_at_matched_size():
    sweep = load_sweep(SWEEPS / "bands.yaml", profile="explore")
    assert sweep.tune.scheduler.type == "asha"
    bands = [sweep.config_for(p).model.num_bands for p in grid_points(sweep.params)]
    assert bands == [1, 2, 4, 8]


GPU_PROFILES = [(path.stem, name) for path in sorted(SWEEPS.glob("*.yaml"))
                for name in (OmegaConf.load(path).get("profiles") or {})
                if name in ("paper", "explore")]


@pytest.mark.parametrize("name,profile", GPU_PROFILES, ids=lambda v: str(v))
def test_full_size_profiles_score_trials_on_a_few_test_songs(name, profile):
    """Each trial of a paper/explore profile scores its best checkpoint on test_max_tracks
    songs (the fast evaluation); the sweep's best trial is scored on all of them afterwards."""
    node = OmegaConf.load(SWEEPS / f"{name}.yaml")  # (load_sweep builds every full-size model)
    tune = OmegaConf.merge(node.get("tune") or {}, node.profiles[profile].get("tune") or {})
    assert tune.get("test_eval", True) and tune.get("test_max_tracks") == 10


def test_a_sweep_for_an_unbuilt_model_says_so(tmp_path):
    path = tmp_path / "future.yaml"
    path.write_text("# NOT RUNNABLE YET: needs the MaD model of step 6\n"
                    "requires: the MaD model of step 6 (sepcore/models/mad.py)\n"
                    "base: paper/m1.yaml\n")
    with pytest.raises(SweepError, match="not built yet") as err:
        load_sweep(path)
    assert err.value.key == "requires" and "step 6" in str(err.value)


def test_overrides_and_digest(tmp_path):
    path = write(tmp_path, """
        search: {train.lr: {loguniform: [1.0e-4, 1.0e-2]}}
        tune: {num_samples: 3}
    """)
    a = load_sweep(path)
    b = load_sweep(path, overrides=["tune.num_samples=5", "base.train.epochs=7"])
    assert b.tune.num_samples == 5 and b.config_for({}).train.epochs == 7
    assert a.digest != b.digest


def test_conditional_grid_has_no_meaningless_duplicates(tmp_path):
    path = write(tmp_path, """
        search:
          model.full_band: {grid: [false, true]}
          model.full_band_masker.X: {grid: [1, 2, 3], when: {model.full_band: true}}
          model.num_bands: {grid: [1, 2]}
        tune: {search_alg: grid}
    """)
    points = grid_points(load_sweep(path).params)
    # 2 bands x (1 without full band + 3 with) = 8, not 2 x 2 x 3 = 12
    assert len(points) == 8
    assert all("model.full_band_masker.X" not in p for p in points if not p["model.full_band"])
    assert len({tuple(sorted(p.items())) for p in points}) == 8


def test_conditional_optuna_space_only_suggests_applicable(tmp_path):
    import optuna

    from sweeps.space import optuna_space

    path = write(tmp_path, """
        search:
          model.full_band: {choice: [false, true]}
          model.full_band_masker.X: {randint: [1, 4], when: {model.full_band: true}}
          train.lr: {quniform: [0.001, 0.01, 0.001]}
    """)
    define = optuna_space(load_sweep(path))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(12):
        trial = study.ask()
        define(trial)
        params = trial.params
        assert ("model.full_band_masker.X" in params) == params["model.full_band"]
        study.tell(trial, 0.0)


BAD = [
    ("unknown block", "tunes: {metric: valid_sisdr}\n", "tunes"),
    ("unknown tune key", "tune: {metrik: valid_sisdr}\n", "tune.metrik"),
    ("unknown distribution", "search: {train.lr: {normal: [0, 1]}}\n", "search.train.lr"),
    ("bad bounds", "search: {train.lr: {uniform: [0.1, 0.01]}}\n", "search.train.lr.uniform"),
    ("loguniform at zero", "search: {train.lr: {loguniform: [0, 0.1]}}\n",
     "search.train.lr.loguniform"),
    ("quniform step", "search: {train.lr: {quniform: [0.0, 1.0, 0]}}\n",
     "search.train.lr.quniform"),
    ("randint floats", "search: {model.num_bands: {randint: [1.5, 4]}}\n",
     "search.model.num_bands.randint"),
    ("empty grid", "search: {model.num_bands: {grid: []}}\n", "search.model.num_bands.grid"),
    ("metric never reported", "tune: {metric: valid_sdr}\n", "tune.metric"),
    ("metric under a name fit does not use", "tune: {metric: epoch_seconds}\n", "tune.metric"),
    ("bad mode", "tune: {mode: maximise}\n", "tune.mode"),
    ("bad scheduler", "tune: {scheduler: {type: hyperband}}\n", "tune.scheduler.type"),
    ("bad reduction factor", "tune: {scheduler: {reduction_factor: 1}}\n",
     "tune.scheduler.reduction_factor"),
    ("search path not in config", "search: {model.num_band: {choice: [1, 2]}}\n",
     "search.model.num_band"),
    ("search value does not build", "search: {model.num_bands: {choice: [2, 3]}}\n",
     "search.model.num_bands"),
    ("when on unknown param", "search: {train.lr: {uniform: [0.1, 0.2], when: {x: 1}}}\n",
     "search.train.lr.when"),
    ("parameter twice", "search: {train.lr: {choice: [0.1]}, train: {lr: {choice: [0.2]}}}\n",
     "search.train.lr"),
    ("bad profile key", "profiles: {smoke: {search2: {}}}\n", "profiles.smoke.search2"),
    ("negative or NaN learning rate", "search: {train.lr: {choice: [-1, .nan]}}\n",
     "search.train.lr"),
    ("zero batch size", "search: {train.batch_size: {grid: [0]}}\n", "search.train.batch_size"),
    ("overlap range reaching 1", "search: {eval.overlap: {uniform: [0.5, 1.0]}}\n",
     "search.eval.overlap"),
    ("frozen pattern matches nothing", "search: {train.frozen: {grid: [[], [masker.*]]}}\n",
     "search.train.frozen"),
    ("optuna storage without optuna", "tune: {search_alg: random, optuna_storage: "
     "'sqlite:///o.db'}\n", "tune.optuna_storage"),
    ("optuna storage not a URL", "tune: {optuna_storage: optuna.db}\n", "tune.optuna_storage"),
    ("row without an id", "search: {row: {grid: [{model: {num_bands: 1}}]}}\n",
     "search.row.grid[0]"),
    ("row id twice", "search: {row: {grid: [{id: A}, {id: A, model: {num_bands: 1}}]}}\n",
     "search.row"),
    ("row with an unknown key", "search: {row: {grid: [{id: A, modle: {}}]}}\n",
     "search.row.grid[0].modle"),
    ("row published not a number", "search: {row: {grid: [{id: A, published: "
     "{test_vocals_SDR: high}}]}}\n", "search.row.grid[0].published.test_vocals_SDR"),
    ("row starting from an unknown row", "search: {row: {grid: [{id: A}, {id: B, train: "
     "{init_from: 'row:C'}}]}}\n", "search.row.B.train.init_from"),
    ("row that does not build", "search: {row: {grid: [{id: A, model: {num_bands: 3}}]}}\n"
     "tune: {search_alg: grid}\n", "search.row.A"),
    ("row as a choice", "search: {row: {choice: [{id: A}]}}\n", "search.row"),
    ("published number no trial logs", "search: {row: {grid: [{id: A, published: "
     "{test_drums_SDR: 5.0}}]}}\ntune: {search_alg: grid}\n",
     "search.row.A.published.test_drums_SDR"),
    ("rows under optuna", "search: {row: {grid: [{id: A}]}}\ntune: {search_alg: optuna}\n",
     "tune.search_alg"),
]


@pytest.mark.parametrize("what,body,key", BAD, ids=[b[0] for b in BAD])
def test_bad_sweep_files_name_file_and_key(tmp_path, what, body, key):
    path = write(tmp_path, body)
    with pytest.raises(SweepError) as err:
        load_sweep(path, profile="smoke" if "profiles" in body else None)
    assert err.value.key == key, str(err.value)
    assert str(path) in str(err.value) and key in str(err.value)
    assert "\n" not in str(err.value)


def test_base_that_does_not_build(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("base: {model: {name: multiband, num_bands: 3}, data: {root: x}}\n")
    with pytest.raises(SweepError, match="base config does not build|does not build") as err:
        load_sweep(path)
    assert str(path) in str(err.value) and err.value.key.startswith("base")


def test_missing_base_file_and_unknown_profile(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("base: nowhere.yaml\n")
    with pytest.raises(SweepError, match="nowhere.yaml") as err:
        load_sweep(path)
    assert err.value.key == "base"
    with pytest.raises(SweepError, match="unknown profile 'gpu'"):
        load_sweep(SWEEPS / "demo.yaml", profile="gpu")


def test_cli_reports_bad_file_in_one_line(tmp_path, capsys):
    from sweeps.__main__ import main

    path = write(tmp_path, "tune: {metric: nope}\n")
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "tune.metric" in err and str(path) in err


def test_every_metric_the_validator_accepts_is_reported_by_fit(synth_root, cache_dir, tmp_path):
    """tune.metric is checked against sepcore.train's one list of epoch metrics: a tiny run
    reports exactly those names, each a finite number, and each validates as tune.metric."""
    import math

    from sepcore.train import fit
    from sweeps.spec import reported_metrics
    from tests.sepcore.helpers import tiny_config

    cfg = tiny_config(synth_root, tmp_path / "run", cache_dir, epochs=1, steps_per_epoch=1)
    seen: list[dict] = []

    class Hook:
        def on_epoch_end(self, metrics):
            seen.append(dict(metrics))

    result = fit(cfg, hooks=[Hook()])
    accepted = reported_metrics(list(cfg.audio.sources))
    assert len(seen) == 1 and set(seen[0]) == accepted == set(result.history[0])
    assert {"epoch", "step", "epoch_time", "valid_sisdr_vocals"} <= accepted
    assert all(isinstance(v, int | float) and math.isfinite(v) for v in seen[0].values()), seen
    for metric in sorted(accepted):
        assert load_sweep(write(tmp_path, f"tune: {{metric: {metric}}}\n")).tune.metric == metric


def test_an_optuna_storage_with_a_password_is_refused_without_showing_it(tmp_path):
    """``tune.optuna_storage`` would be saved with the searcher in Tune's experiment state (the
    study itself landing there is checked by tests/sweeps/test_runner.py's sweep)."""
    path = write(tmp_path, "tune: {optuna_storage: 'sqlite:///optuna.db'}\n")
    assert load_sweep(path).tune.optuna_storage == "sqlite:///optuna.db"
    with pytest.raises(SweepError) as err:
        load_sweep(path, overrides=["tune.optuna_storage=postgresql://u:pa55word@db/optuna"])
    assert err.value.key == "tune.optuna_storage" and "pa55word" not in str(err.value)
