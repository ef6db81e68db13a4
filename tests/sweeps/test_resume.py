"""A driver killed mid-sweep is finished by `python -m sweeps resume`: no trial lost or doubled."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from mlflow import MlflowClient

from sweeps.tracking import TRIAL_TAG, child_runs

pytestmark = pytest.mark.slow


def _finished_children(uri: str) -> tuple[list, str | None]:
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("tiny")
    if experiment is None:
        return [], None
    parents = client.search_runs([experiment.experiment_id], "tags.`sepcore.kind` = 'sweep'")
    if not parents:
        return [], None
    runs = child_runs(client, experiment.experiment_id, parents[0].info.run_id)
    return [r for r in runs if "epochs_run" in r.data.metrics], parents[0].info.run_id


def test_killed_driver_is_finished_by_resume(tiny_sweep, tmp_path):
    import ray

    if ray.is_initialized():
        ray.shutdown()
    path = tiny_sweep()
    uri = os.environ["MLFLOW_TRACKING_URI"]
    env = {**os.environ}
    env.pop("RAY_ADDRESS", None)
    args = ["tune.num_samples=4", "tune.scheduler.type=fifo", "base.train.epochs=3"]
    driver = subprocess.Popen([sys.executable, "-m", "sweeps", "run", str(path), *args],
                              cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    try:
        while len(_finished_children(uri)[0]) < 1:
            assert driver.poll() is None, "the sweep ended before it could be interrupted"
            assert time.time() < deadline
            time.sleep(0.5)
    finally:
        os.killpg(driver.pid, signal.SIGKILL)  # the driver and its local Ray die together
        driver.wait()
    finished_before, parent_before = _finished_children(uri)
    assert 1 <= len(finished_before) < 4

    experiments = [p for p in (tmp_path / "ray").iterdir() if p.is_dir()]
    assert len(experiments) == 1
    done = subprocess.run([sys.executable, "-m", "sweeps", "resume", str(experiments[0])],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-4000:]

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("tiny")
    parents = client.search_runs([experiment.experiment_id], "tags.`sepcore.kind` = 'sweep'")
    assert [p.info.run_id for p in parents] == [parent_before]  # the same parent run, resumed
    assert parents[0].info.status == "FINISHED"
    children = child_runs(client, experiment.experiment_id, parent_before)
    trial_ids = [c.data.tags[TRIAL_TAG] for c in children]
    assert len(trial_ids) == 4 and len(set(trial_ids)) == 4  # none lost, none doubled
    for child in children:
        epochs = {m.step for m in client.get_metric_history(child.info.run_id, "epoch")}
        assert epochs == {1, 2, 3}, (child.data.tags[TRIAL_TAG], epochs)
    # trials finished before the kill were not started again from scratch (at most the epoch
    # whose report the killed driver had not yet recorded runs a second time)
    for run in finished_before:
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "epoch")]
        assert steps.count(1) == 1 and len(steps) <= 4
    assert client.get_model_version_by_alias("sepcore-tiny", "champion")
