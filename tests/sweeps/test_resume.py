"""A driver killed mid-sweep is finished by `python -m sweeps resume`: no trial lost or doubled.

The driver is killed at a point read from Tune's own experiment state (what `resume` restores
from), not after some wall-clock time: as soon as that state records one trial as finished.
What the state held then decides, trial by trial, what resume may and may not run again.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from sweeps.tracking import ORPHAN_TAG, TRIAL_TAG, child_runs
from tests.procs import LOOPBACK_RAY_ENV, kill_strays, run_group, short_tmpdir, stop_group

pytestmark = pytest.mark.slow
TRIALS = 4


def _tune_state(experiment: Path) -> dict[str, tuple[str, bool]] | None:
    """{trial id: (status, has a checkpoint)} from the newest experiment state Tune saved there,
    or None while there is none (or it is being written)."""
    from ray.tune import ExperimentAnalysis

    if not list(experiment.glob("experiment_state-*.json")):
        return None
    try:
        analysis = ExperimentAnalysis(str(experiment))
        return {t.trial_id: (t.status, analysis.get_last_checkpoint(t) is not None)
                for t in analysis.trials}
    except Exception:  # noqa: BLE001 - a half-copied state file: read it again
        return None


def test_killed_driver_is_finished_by_resume(tiny_sweep, tmp_path):
    import ray

    if ray.is_initialized():
        ray.shutdown()
    path = tiny_sweep()
    uri = os.environ["MLFLOW_TRACKING_URI"]
    ray_tmp = short_tmpdir()  # the drivers' local Ray lives here: its processes can be found
    # Tune saves its state every 10 s or more by default (it forces no snapshot per checkpoint
    # since trials keep their own: sweeps.retention); every second here, so that a state with one
    # finished trial is written while the others still run
    env = {**os.environ, **LOOPBACK_RAY_ENV, "RAY_TMPDIR": str(ray_tmp),
           "TUNE_GLOBAL_CHECKPOINT_S": "1"}
    env.pop("RAY_ADDRESS", None)
    args = [f"tune.num_samples={TRIALS}", "tune.scheduler.type=fifo", "base.train.epochs=3"]
    try:
        driver = subprocess.Popen([sys.executable, "-m", "sweeps", "run", str(path), *args],
                                  cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            state = None
            deadline = time.monotonic() + 400  # a safety net only: the trigger is Tune's state
            while True:
                assert driver.poll() is None, "the sweep ended before it could be interrupted"
                assert time.monotonic() < deadline, f"no trial finished; Tune state: {state}"
                experiments = [p for p in (tmp_path / "ray").glob("*") if p.is_dir()]
                state = _tune_state(experiments[0]) if experiments else None
                if state and any(status == "TERMINATED" for status, _ in state.values()):
                    break
                time.sleep(0.5)
            assert driver.poll() is None
        finally:
            with contextlib.suppress(ProcessLookupError):  # the driver and its local Ray die
                os.killpg(driver.pid, signal.SIGKILL)  # together, as on a lost machine
            stop_group(driver)  # reaps it
        assert len(experiments) == 1
        finished = {t for t, (status, _) in state.items() if status == "TERMINATED"}
        checkpointed = {t for t, (status, ckpt) in state.items() if ckpt and t not in finished}
        assert 1 <= len(finished) < TRIALS

        parent_before = _parents(uri)
        done = run_group([sys.executable, "-m", "sweeps", "resume", str(experiments[0])],
                         timeout=500, cwd=tmp_path, env=env)
        assert done.returncode == 0, done.stderr[-4000:]
    finally:
        strays = kill_strays(str(ray_tmp))
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert not strays, f"Ray processes of the killed or resumed driver were left: {strays}"

    client = MlflowClient(uri)
    assert _parents(uri) == parent_before and len(parent_before) == 1  # the same parent, resumed
    parent = client.get_run(parent_before[0])
    assert parent.info.status == "FINISHED"
    children = child_runs(client, parent.info.experiment_id, parent.info.run_id)
    trial_ids = [c.data.tags[TRIAL_TAG] for c in children]
    assert len(trial_ids) == TRIALS and len(set(trial_ids)) == TRIALS  # none lost, none doubled
    # a trial that started after Tune's last saved state (the kill can land there) is not
    # continued by resume: its run is closed as KILLED, tagged, and not one of the trials above
    for orphan in child_runs(client, parent.info.experiment_id, parent.info.run_id, orphans=True):
        if orphan.data.tags.get(ORPHAN_TAG) == "true":
            assert orphan.info.status == "KILLED"
            assert orphan.data.tags[TRIAL_TAG] not in state and \
                orphan.data.tags[TRIAL_TAG] not in trial_ids
    assert finished | checkpointed <= set(trial_ids)
    for child in children:
        trial = child.data.tags[TRIAL_TAG]
        epochs = sorted(m.step for m in client.get_metric_history(child.info.run_id, "epoch"))
        assert set(epochs) == {1, 2, 3}, (trial, epochs)
        if trial in finished:  # finished before the kill: resume did not run it again
            assert epochs == [1, 2, 3], (trial, epochs)
        if trial in checkpointed:  # continued from its checkpoint, not started from scratch
            assert epochs.count(1) == 1, (trial, epochs)
    assert client.get_model_version_by_alias("sepcore-tiny", "champion")


def _parents(uri: str) -> list[str]:
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("tiny")
    runs = client.search_runs([experiment.experiment_id], "tags.`sepcore.kind` = 'sweep'")
    return [r.info.run_id for r in runs]
