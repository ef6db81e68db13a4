"""Whole platform: a Ray head on loopback (token authentication on), the demo sweep submitted with
`ray job submit` and with `python -m sweeps submit`, then MLflow, the registry and the store."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from sweeps.tracking import child_runs

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """`ray start --head` on loopback with token authentication; yields (address, env)."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    folder = tmp_path_factory.mktemp("ray-head")
    token = folder / "auth_token"
    token.write_text(secrets.token_hex(32))
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token),
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("RAY_ADDRESS", None)
    port, dashboard = _free_port(), _free_port()
    subprocess.run([str(BIN / "ray"), "start", "--head", "--node-ip-address", "127.0.0.1",
                    "--port", str(port), "--dashboard-host", "127.0.0.1", "--dashboard-port",
                    str(dashboard), "--num-cpus", "2", "--disable-usage-stats"],
                   env=env, check=True, capture_output=True, timeout=120)
    address = f"http://127.0.0.1:{dashboard}"
    try:
        # token authentication is on: a request without the token is refused
        import urllib.error
        import urllib.request

        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"{address}/api/jobs/", timeout=10)
        assert err.value.code == 401
        yield address, env
    finally:
        subprocess.run([str(BIN / "ray"), "stop", "--force"], env=env, capture_output=True,
                       timeout=120)


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


def test_ray_job_submit_cli(ray_head, synth_root, cache_dir, tmp_path):
    address, env = ray_head
    uri = f"sqlite:///{tmp_path}/mlruns.db"
    runtime_env = json.dumps({"env_vars": {"MLFLOW_TRACKING_URI": uri}})
    cmd = [str(BIN / "ray"), "job", "submit", "--address", address, "--working-dir", ".",
           "--runtime-env-json", runtime_env, "--submission-id", "sepcore-e2e-cli", "--",
           "python", "-m", "sweeps", "run", "sweeps/demo.yaml", "--profile", "smoke",
           *_overrides(tmp_path, synth_root, cache_dir)]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=500)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "succeeded" in done.stdout + done.stderr
    _check_mlflow(uri, trials=2, submission_id="sepcore-e2e-cli")


def test_sweeps_submit_sdk(ray_head, synth_root, cache_dir, tmp_path):
    """`python -m sweeps submit` (Job Submission SDK), followed with `ray job status`."""
    address, env = ray_head
    uri = f"sqlite:///{tmp_path}/mlruns.db"
    done = subprocess.run(
        [sys.executable, "-m", "sweeps", "submit", "sweeps/demo.yaml", "--address", address,
         "--profile", "smoke", *_overrides(tmp_path, synth_root, cache_dir)],
        cwd=REPO, env={**env, "MLFLOW_TRACKING_URI": uri}, capture_output=True, text=True,
        timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    job_id = done.stdout.split("submitted job ", 1)[1].split()[0]
    assert f"ray job logs --address {address} --follow {job_id}" in done.stdout
    deadline = time.time() + 400
    while True:
        status = subprocess.run([str(BIN / "ray"), "job", "status", "--address", address, job_id],
                                env=env, capture_output=True, text=True, timeout=60)
        text = status.stdout + status.stderr
        if "SUCCEEDED" in text or "succeeded" in text:
            break
        assert "FAILED" not in text and "failed" not in text, text[-3000:]
        assert time.time() < deadline, "job did not finish"
        time.sleep(3)
    _check_mlflow(uri, trials=2, submission_id=job_id)
