"""Whole platform: a Ray head on loopback (token authentication on), the demo sweep submitted with
`ray job submit` and with `python -m sweeps submit`, both at once, then MLflow, the registry and
the store."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from mlflow import MlflowClient

from sweeps.tracking import child_runs
from tests.procs import BIN, run_group, start_ray_head

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """`ray start --head` on loopback with token authentication; yields (address, env).

    The head has its own temp folder and process group; the finalizer ends exactly that group
    (also when a test fails) and checks that no Ray process of that folder is left.
    """
    import ray

    if ray.is_initialized():
        ray.shutdown()
    folder = tmp_path_factory.mktemp("ray-head")
    token = folder / "auth_token"
    token.write_text(secrets.token_hex(32))
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
    head = start_ray_head(env, num_cpus=2, ready_codes=(200, 401))
    try:
        # token authentication is on: a request without the token is refused
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"{head.address}/api/jobs/", timeout=10)
        assert err.value.code == 401
        yield head.address, head.env
    finally:
        strays = head.stop()
        assert not strays, f"Ray processes outlived the head's process group: {strays}"


def _overrides(tmp: Path, root: Path, cache: Path) -> list[str]:
    return [f"base.data.root={root}", f"base.data.cache_dir={cache}",
            f"tune.storage_path={tmp / 'ray'}", f"artifacts.uri={tmp / 'store'}",
            "tune.test_max_tracks=1"]


def _check_mlflow(uri: str, trials: int, submission_id: str) -> None:
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("sepcore-demo")
    parents = client.search_runs([experiment.experiment_id], "tags.`sepcore.kind` = 'sweep'")
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["sepcore.ray_submission_id"] == submission_id
    assert parent.data.tags["sepcore.profile"] == "smoke"
    children = child_runs(client, experiment.experiment_id, parent.info.run_id)
    assert len(children) == trials
    assert all(client.get_metric_history(c.info.run_id, "valid_sisdr") for c in children)
    champion = client.get_model_version_by_alias("sepcore-demo", "champion")
    stored = Path(champion.source.removeprefix("file://"))
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == \
        champion.tags["sepcore.checkpoint_sha256"]


def test_two_jobs_at_once_through_the_cli_and_the_sdk(ray_head, synth_root, cache_dir, tmp_path):
    """Two users submit the demo sweep at once (one job's trials wait for the CPUs the other's
    hold): `python -m sweeps submit` (Job Submission SDK), followed with `ray job status`, and
    `ray job submit` (the CLI, which waits for its job); each job has its own MLflow store."""
    address, env = ray_head
    sdk, cli = tmp_path / "sdk", tmp_path / "cli"
    sdk.mkdir()
    cli.mkdir()
    sdk_uri, cli_uri = f"sqlite:///{sdk}/mlruns.db", f"sqlite:///{cli}/mlruns.db"
    done = run_group(
        [sys.executable, "-m", "sweeps", "submit", "sweeps/demo.yaml", "--address", address,
         "--profile", "smoke", "--env", "SEPCORE_CLUSTER=0",
         *_overrides(sdk, synth_root, cache_dir)],
        timeout=120, cwd=REPO, env={**env, "MLFLOW_TRACKING_URI": sdk_uri})
    assert done.returncode == 0, done.stderr[-3000:]
    job_id = done.stdout.split("submitted job ", 1)[1].split()[0]
    assert f"ray job logs --address {address} --follow {job_id}" in done.stdout

    # a sqlite store and local folders: allowed only because this cluster is one machine
    runtime_env = json.dumps({"env_vars": {"MLFLOW_TRACKING_URI": cli_uri,
                                           "SEPCORE_CLUSTER": "0"}})
    cmd = [str(BIN / "ray"), "job", "submit", "--address", address, "--working-dir", ".",
           "--runtime-env-json", runtime_env, "--submission-id", "sepcore-e2e-cli", "--",
           "python", "-m", "sweeps", "run", "sweeps/demo.yaml", "--profile", "smoke",
           *_overrides(cli, synth_root, cache_dir)]
    done = run_group(cmd, timeout=500, cwd=REPO, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "succeeded" in done.stdout + done.stderr
    _check_mlflow(cli_uri, trials=2, submission_id="sepcore-e2e-cli")

    deadline = time.time() + 400
    while True:
        status = run_group([str(BIN / "ray"), "job", "status", "--address", address, job_id],
                           timeout=60, env=env)
        text = status.stdout + status.stderr
        if "SUCCEEDED" in text or "succeeded" in text:
            break
        assert "FAILED" not in text and "failed" not in text, text[-3000:]
        assert time.time() < deadline, "job did not finish"
        time.sleep(3)
    _check_mlflow(sdk_uri, trials=2, submission_id=job_id)
