"""A real (tiny) sweep on local Ray: MLflow runs, artifact store, registry, report, faults."""

from __future__ import annotations

import csv
import hashlib
import logging
import os
from pathlib import Path

import pytest
from mlflow import MlflowClient

from sweeps.lineage import SIGNATURE_TAG
from sweeps.runner import run_sweep
from sweeps.spec import load_sweep
from sweeps.tracking import TRIAL_TAG, child_runs

pytestmark = pytest.mark.slow


def _best_logged(client, run_id: str) -> float:
    return max(m.value for m in client.get_metric_history(run_id, "valid_sisdr"))


def _check_outcome(outcome, trials: int):
    client = MlflowClient(outcome.tracking_uri)
    parent = client.get_run(outcome.parent_run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["sepcore.kind"] == "sweep"
    children = child_runs(client, parent.info.experiment_id, parent.info.run_id)
    trial_ids = [c.data.tags[TRIAL_TAG] for c in children]
    assert len(children) == trials and len(set(trial_ids)) == trials  # one run per trial
    for child in children:
        assert child.info.status in ("FINISHED", "KILLED")
        history = client.get_metric_history(child.info.run_id, "valid_sisdr")
        steps = sorted({m.step for m in history})
        assert steps == list(range(1, len(steps) + 1)) and steps
        assert "model.num_bands" in child.data.params and "train.lr" in child.data.params
        assert child.data.metrics["params"] > 0
    # registry: the pushed checkpoint is the champion, its checksum matches the stored file
    version = client.get_model_version_by_alias("sepcore-tiny", "champion")
    assert version.source == outcome.pushed[0]["uri"]
    stored = Path(version.source.removeprefix("file://"))
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == outcome.pushed[0]["sha256"]
    assert version.tags["sepcore.checkpoint_sha256"] == outcome.pushed[0]["sha256"]
    return client, children


def _check_lineage(client, outcome, children):
    """Experiment kind, source tags on every run, dataset inputs on every trial, and the
    registered version's lineage tags equal to its trial's (sweeps.lineage)."""
    import re

    from sweeps import lineage

    parent = client.get_run(outcome.parent_run_id)
    experiment = client.get_experiment(parent.info.experiment_id)
    assert experiment.tags[lineage.EXPERIMENT_KIND_TAG] == lineage.EXPERIMENT_KIND
    commit = parent.data.tags[lineage.MLFLOW_GIT_COMMIT]
    assert re.fullmatch(r"[0-9a-f]{40}", commit)  # the checkout the sweeps package runs from
    assert parent.data.tags["sepcore.git_commit"] == commit
    assert parent.data.tags[lineage.MLFLOW_SOURCE_NAME].endswith("tiny.yaml")
    assert parent.data.tags["sepcore.ray_job_id"]
    for child in children:
        tags = child.data.tags
        assert tags[lineage.MLFLOW_GIT_COMMIT] == commit
        assert tags["sepcore.ray_job_id"] == parent.data.tags["sepcore.ray_job_id"]
        assert re.fullmatch(r"[0-9a-f]{16}", tags[lineage.DATA_TAG])
        assert re.fullmatch(r"[0-9a-f]{16}", tags[lineage.SIGNATURE_TAG])
        inputs = client.get_run(child.info.run_id).inputs.dataset_inputs
        assert sorted(t.value for i in inputs for t in i.tags) == ["test", "train", "valid"]
        assert all(i.dataset.name.endswith("-8000Hz-mono") for i in inputs)
    version = client.get_model_version_by_alias("sepcore-tiny", "champion")
    trial = client.get_run(version.run_id).data.tags
    assert version.tags["sepcore.git_commit"] == commit
    assert version.tags[lineage.DATA_TAG] == trial[lineage.DATA_TAG]
    assert version.tags[lineage.SIGNATURE_TAG] == trial[lineage.SIGNATURE_TAG]
    assert version.tags["sepcore.sweep"] == parent.info.run_name


def test_tiny_sweep_end_to_end(tiny_sweep, local_ray):
    seen = []  # what Tune's ResultGrid logs ("ray" does not propagate to pytest's caplog)
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    logging.getLogger("ray.tune.analysis.experiment_analysis").addHandler(handler)
    try:
        outcome = run_sweep(load_sweep(tiny_sweep()))
    finally:
        logging.getLogger("ray.tune.analysis.experiment_analysis").removeHandler(handler)
    client, children = _check_outcome(outcome, trials=3)
    # no per-trial result files in Tune's folder (Tune uploads the folder whole at each snapshot),
    # and no warning from Tune's ResultGrid about them
    folder = Path(outcome.experiment_path)
    assert folder.is_dir() and any(folder.glob("*/checkpoint_*"))
    assert not [p for p in folder.rglob("*") if p.name in ("result.json", "progress.csv",
                                                           "params.json", "params.pkl")]
    assert not [m for m in seen if "Failed to fetch metrics" in m]
    parent = client.get_run(outcome.parent_run_id)
    # the pushed checkpoint is the trial with the best validation SI-SDR in MLflow (no trial was
    # retried here, so MLflow's history holds exactly what Tune ranked)
    assert _best_logged(client, outcome.pushed[0]["run_id"]) == max(
        _best_logged(client, c.info.run_id) for c in children)
    for child in children:  # the sweep-level step's one write per trial
        assert child.data.metrics["best_valid_sisdr"] == _best_logged(client, child.info.run_id)
        assert child.data.tags["sepcore.stopped_early"] in ("True", "False")
    finished = [c for c in children if "test_vocals_SDR" in c.data.metrics]
    assert finished, "finished trials log the paper's test metrics"
    # a trial's own test scoring covers test_max_tracks songs (1); the best trial is scored
    # again after the sweep on the whole test set (the synthetic tree's 2 songs)
    tracks = {c.info.run_id: c.data.metrics.get("test_tracks") for c in finished}
    assert tracks.pop(outcome.pushed[0]["run_id"]) == 2 and set(tracks.values()) <= {1}
    assert "config" in outcome.report and "vocals_SDR" in outcome.report
    artifacts = [a.path for a in client.list_artifacts(outcome.parent_run_id, "report")]
    assert {"report/comparison.csv", "report/comparison.png", "report/report.html",
            "report/importance.csv", "report/importance.png"} <= set(artifacts)
    _check_lineage(client, outcome, children)
    # a second sweep: the first again with --reuse (the same seeded TPE suggestions; one trial,
    # to keep the suite short) replays its finished run (same signature) and trains nothing;
    # `show` finds both runs of that signature
    again = run_sweep(load_sweep(tiny_sweep(), overrides=["tune.num_samples=1",
                                                          "tune.optuna_storage=sqlite:///o.db"]),
                      reuse=True)
    assert again.report.startswith("1 reused: 1 of 1 trials replayed")
    again_children = child_runs(client, parent.info.experiment_id, again.parent_run_id)
    originals = {c.info.run_id: c for c in children}
    for child in again_children:
        source = originals[child.data.tags["sepcore.reused_from"]]
        assert child.data.tags[SIGNATURE_TAG] == source.data.tags[SIGNATURE_TAG]
        assert not [a for a in client.list_artifacts(child.info.run_id)
                    if a.path == "loss_curve.png"]  # logged by every trained epoch
        assert child.data.metrics["best_valid_sisdr"] == source.data.metrics["best_valid_sisdr"]
    assert len(again_children) == 1 and again.pushed[0]["value"] == _best_logged(
        client, again_children[0].data.tags["sepcore.reused_from"])
    # it takes the champion alias only if it beats the first
    assert again.registered["alias"] in ("champion", "challenger")
    # its Optuna study is in the database, under the experiment's name (optuna-dashboard's view)
    import optuna

    study = optuna.load_study(study_name=Path(again.experiment_path).name,
                              storage=f"sqlite:///{Path('o.db').resolve()}")
    [trial] = study.get_trials(states=[optuna.trial.TrialState.COMPLETE])
    assert trial.params["model.num_bands"] in (1, 2, 4)
    assert client.get_run(again.parent_run_id).data.tags["sepcore.optuna_study"] == study.study_name
    champion = client.get_model_version_by_alias("sepcore-tiny", "champion")
    # each version's best validation SI-SDR, read from its trial's MLflow history (not from the
    # tags the registry wrote): the champion is the higher one (version 1 on a tie)
    best = {v: _best_logged(client, client.get_model_version("sepcore-tiny", v).run_id)
            for v in ("1", "2")}
    for v, value in best.items():
        assert float(client.get_model_version("sepcore-tiny", v).tags[
            "sepcore.metric_value"]) == value
    assert str(champion.version) == ("2" if best["2"] > best["1"] else "1")

    # by hand: promote version 2 / the first sweep's run; report a finished sweep
    from sweeps.__main__ import main

    assert main(["promote", "sepcore-tiny", "--version", "2"]) == 0
    assert str(client.get_model_version_by_alias("sepcore-tiny", "champion").version) == "2"
    assert main(["promote", "sepcore-tiny", "--run", outcome.pushed[0]["run_id"]]) == 0
    assert str(client.get_model_version_by_alias("sepcore-tiny", "champion").version) == "1"
    assert str(client.get_model_version_by_alias("sepcore-tiny",
                                                 "previous-champion").version) == "2"
    assert main(["promote", "sepcore-tiny", "--version", "99"]) == 2
    name = client.get_run(outcome.parent_run_id).info.run_name
    assert main(["report", name, "--out", "report-out"]) == 0
    csv_text = Path("report-out/comparison.csv").read_text()
    assert csv_text.startswith("config,runs,test_songs,best_valid_sisdr_mean")
    # the rows say how many songs their test scores average: the best trial's all 2 of them
    songs = [row[2] for row in list(csv.reader(csv_text.strip().splitlines()))[1:]]
    assert "2" in songs and set(songs) <= {"1", "2", "-"}, songs
    assert len(csv_text.strip().splitlines()) == 1 + len({c.data.params["search.model.num_bands"]
                                                          + c.data.params["search.train.lr"]
                                                          for c in children})
    assert main(["report", "no-such-sweep"]) == 2
    signature = again_children[0].data.tags[SIGNATURE_TAG]
    assert main(["show", signature]) == 0


def test_killed_trial_is_retried_from_its_checkpoint(tiny_sweep, local_ray, tmp_path):
    from sweeps.trainable import FAULT_DIR_ENV, FAULT_EPOCH_ENV

    sweep = load_sweep(tiny_sweep(), overrides=["tune.num_samples=2",
                                                    "tune.scheduler.type=fifo"])
    faults = {FAULT_EPOCH_ENV: "2", FAULT_DIR_ENV: str(tmp_path / "faults")}
    # a Ray of its own whose workers carry the fault injection; afterwards the module's Ray is
    # clean again (checked by `isolated`), and this process's environment was never touched
    with local_ray.isolated(faults):
        assert local_ray.worker_env([FAULT_EPOCH_ENV]) == {FAULT_EPOCH_ENV: "2"}
        outcome = run_sweep(sweep)
    assert FAULT_EPOCH_ENV not in os.environ
    killed = list((tmp_path / "faults").glob("killed-*"))
    assert len(killed) == 2  # every trial was killed once at epoch 2
    client, children = _check_outcome(outcome, trials=2)
    for child in children:
        epochs = [m.step for m in client.get_metric_history(child.info.run_id, "epoch")]
        # killed during epoch 2, resumed from epoch 1's checkpoint (not from scratch): epoch 1
        # ran once, epoch 2 twice (its first attempt died before its checkpoint), epoch 3 once
        assert sorted(epochs) == [1, 2, 2, 3]
    # each trial kept its best checkpoint (num_to_keep 1) and its latest, through the retry
    for trial_dir in (p for p in Path(outcome.experiment_path).iterdir() if p.is_dir()):
        assert 1 <= len(list(trial_dir.glob("checkpoint_*"))) <= 2, trial_dir


def test_a_row_starting_from_another_row_runs_after_it_on_its_checkpoint(tiny_sweep,
                                                                          local_ray, cache_dir):
    """The multi-band masking paper's M5 (frozen encoder/decoder of a trained M1) in small:
    ``train.init_from: row:M1`` makes the runner train M1 first (stage 1), then M5 from M1's
    best checkpoint (stage 2), under one MLflow parent run; M5's frozen encoder is M1's."""
    from safetensors.torch import load_file

    path = tiny_sweep()
    text = path.read_text()
    search = text[text.index("search:"):text.index("tune:")]
    path.write_text(text.replace(search, """search:
  row:
    grid:
      - {id: M1, model: {name: convtasnet, encoder: {N: 32, L: 16},
                         masker: {B: 16, H: 32, X: 2, R: 1}}}
      - id: M5
        train: {init_from: "row:M1", init_keys: ["encoder.*", "decoder.*"],
                frozen: ["encoder.*", "decoder.*"]}
        published: {source: "Table 1", test_vocals_SDR: 6.31}
"""))
    sweep = load_sweep(path, overrides=["tune.search_alg=grid", "tune.num_samples=1",
                                        "tune.scheduler.type=fifo", "base.train.epochs=1",
                                        "tune.test_eval=false", "artifacts.top_k=2"])
    outcome = run_sweep(sweep)
    client = MlflowClient(outcome.tracking_uri)
    parent = client.get_run(outcome.parent_run_id)
    children = child_runs(client, parent.info.experiment_id, parent.info.run_id)
    rows = {c.data.params["search.row"]: c for c in children}
    assert set(rows) == {"M1", "M5"} and all(c.info.status == "FINISHED" for c in children)
    assert rows["M5"].info.start_time >= rows["M1"].info.end_time  # stage 2 after stage 1
    # M1's best checkpoint went through the artifact store; the M5 trial fetched its own copy
    # into its node's cache (data.cache_dir/checkpoints), verified against the driver's SHA-256
    (stored,) = (Path("store") / "tiny").glob("*/rows/M1.safetensors")
    digest = hashlib.sha256(stored.read_bytes()).hexdigest()
    assert rows["M5"].data.params["train.init_from"] == stored.resolve().as_uri()
    assert rows["M5"].data.tags["sepcore.init_sha256"] == digest
    start = cache_dir / "checkpoints" / f"{digest}.safetensors"
    assert start.read_bytes() == stored.read_bytes()
    pushed = {p["run_id"]: p for p in outcome.pushed}
    m5 = load_file(pushed[rows["M5"].info.run_id]["uri"].removeprefix("file://"))
    m1 = load_file(stored)
    encoder = [k for k in m1 if k.startswith(("model.encoder.", "model.decoder."))]
    assert encoder and all((m5[k] == m1[k]).all() for k in encoder)  # loaded, then frozen
    assert "M5" in outcome.report and "[6.31" in outcome.report  # the paper's number beside it


def test_paused_sweep_resumes_then_extends_under_one_parent(tiny_sweep, local_ray):
    """`pause` leaves a restorable experiment whose searcher is not finished, `resume` clears
    the marker and runs the trial, `extend` adds one trial under the same parent with the
    sweep's Optuna study (the running-trials-end-their-epoch part: tests/sweeps/test_extend.py)."""
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    from sweeps import pause
    from sweeps.__main__ import main
    from sweeps.runner import extend_sweep, resume_sweep
    from sweeps.tracking import EXPERIMENT_TAG

    args = ["tune.num_samples=1", "tune.scheduler.type=fifo", "base.train.epochs=1",
            "tune.test_eval=false"]
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    reset = pause.reset

    def pause_at_start(experiment_path=None):  # the user types `pause` as the sweep starts
        reset(experiment_path)
        if experiment_path and not getattr(pause_at_start, "done", False):
            pause_at_start.done = True
            assert main(["pause", experiment_path]) == 0

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pause, "reset", pause_at_start)
        paused = run_sweep(load_sweep(tiny_sweep(), overrides=args), overrides=args)
    assert paused.paused and tune.Tuner.can_restore(paused.experiment_path)
    parent = client.get_run(paused.parent_run_id)
    assert parent.info.status == "SCHEDULED" and parent.data.tags[pause.PAUSED_TAG] == "true"
    assert not client.search_model_versions("name = 'sepcore-tiny'")  # nothing finished yet

    resumed = resume_sweep(paused.experiment_path)
    assert not resumed.paused and resumed.parent_run_id == paused.parent_run_id
    assert not pause.pause_requested(paused.experiment_path)
    [first] = child_runs(client, parent.info.experiment_id, parent.info.run_id)

    extended = extend_sweep(paused.experiment_path, 1)
    assert extended.parent_run_id == paused.parent_run_id
    assert extended.experiment_path.endswith(f"{parent.info.run_name}-x1")
    parent = client.get_run(paused.parent_run_id)
    assert parent.info.status == "FINISHED" and parent.data.tags[pause.PAUSED_TAG] == "false"
    children = child_runs(client, parent.info.experiment_id, parent.info.run_id, orphans=True)
    trial_ids = [c.data.tags[TRIAL_TAG] for c in children]
    assert len(children) == 2 and len(set(trial_ids)) == 2  # one new run, none doubled
    assert {c.data.tags[EXPERIMENT_TAG] for c in children} == {
        parent.info.run_name, f"{parent.info.run_name}-x1"}
    assert all(c.info.status == "FINISHED" for c in children)
    # the extension's searcher continued the sweep's Optuna study: both trials are in it
    searcher = OptunaSearch(metric="valid_sisdr", mode="max")
    searcher.restore_from_dir(extended.experiment_path)
    told = [t for t in searcher._ot_study.trials if t.value is not None]
    assert len(told) == 2
    assert float(first.data.params["train.lr"]) in [t.params["train.lr"] for t in told]
