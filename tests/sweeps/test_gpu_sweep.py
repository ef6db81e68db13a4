"""One trial of the demo sweep on CUDA with half a GPU (marked ``gpu``: skipped without CUDA).

The paper profiles of the sweep files ask for GPUs; this is the check that a trial really lands on
the device Tune gave it: ``tune.resources.gpu=0.5`` (two trials could share the GPU) and
``base.train.device=cuda``, one trial, and the trial's MLflow run must say it trained on CUDA and
report finite validation scores.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from mlflow import MlflowClient

from sweeps.runner import run_sweep
from sweeps.spec import load_sweep
from sweeps.tracking import child_runs

pytestmark = [pytest.mark.gpu, pytest.mark.slow]

DEMO = Path(__file__).resolve().parents[2] / "sweeps" / "demo.yaml"


def test_one_demo_trial_on_half_a_gpu(synth_root, cache_dir, tmp_path, monkeypatch, local_ray):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlruns.db")
    monkeypatch.chdir(tmp_path)
    sweep = load_sweep(DEMO, profile="smoke", overrides=[
        "tune.num_samples=1", "tune.resources.gpu=0.5", "base.train.device=cuda",
        "tune.test_eval=false", f"base.data.root={synth_root}",
        f"base.data.cache_dir={cache_dir}", f"tune.storage_path={tmp_path / 'ray'}",
        f"artifacts.uri={tmp_path / 'store'}"])
    outcome = run_sweep(sweep)
    client = MlflowClient(outcome.tracking_uri)
    parent = client.get_run(outcome.parent_run_id)
    (child,) = child_runs(client, parent.info.experiment_id, parent.info.run_id)
    assert child.data.tags["sepcore.device"].startswith("cuda"), child.data.tags
    history = client.get_metric_history(child.info.run_id, "valid_sisdr")
    assert history and all(math.isfinite(m.value) for m in history)
