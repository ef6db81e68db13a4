"""The platform as processes (``python -m services stack up``): PostgreSQL, moto's S3 server, the
MLflow server with basic auth, a Ray head with token auth and two worker nodes in their own
network and mount namespaces. The demo sweep goes through ``ray job submit`` as a user would;
then authentication, isolation of the nodes, idempotence of ``up``, and one sweep through three
faults (a worker node killed, the tracking server down for 20 s, S3 refusing the checkpoint push
for 20 s). One stack for the module, stopped (and checked gone) at the end.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import boto3
import psycopg2
import pytest
from mlflow import MlflowClient

from services import netns, processes, stack
from sweeps.tracking import child_runs
from tests.procs import BIN, FaultProxy, run_group

REPO = Path(__file__).resolve().parents[2]


def _postgres_missing() -> bool:
    try:
        stack._pg_binary("postgres")
    except stack.StackError:
        return True
    return False


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(_postgres_missing(), reason="PostgreSQL's server is not installed "
                                                   "(make postgresql installs it)"),
]


@dataclass
class Running:
    state: Path
    data: Path  # a synthetic MUSDB tree every node can read
    env: dict[str, str]  # the test's environment plus stack.env

    @property
    def stack(self) -> stack.Stack:
        return stack.Stack(self.state)

    def mlflow(self) -> MlflowClient:
        return MlflowClient(self.env["MLFLOW_TRACKING_URI"])

    def s3(self):
        return boto3.client("s3", endpoint_url=self.env["AWS_ENDPOINT_URL"],
                            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"],
                            region_name=self.env["AWS_DEFAULT_REGION"])


def _services(*args: str, timeout: float = 420):
    return run_group([sys.executable, "-m", "services", "stack", *args], timeout=timeout,
                     cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})


def _leftovers(state: dict) -> list[str]:
    """Processes, namespaces and links of the stack that are still there."""
    found = []
    for marker in [state.get("ray_temp")] + [w.get("temp_dir") for w in state["workers"]]:
        if marker:
            found += [f"pid {p} mentions {marker}" for p in processes.pids_mentioning(marker)]
    for record in state.get("components", {}).values():
        if processes.group_alive(record):
            found.append(f"process group {record['pgid']}")
    for worker in state["workers"]:
        if worker.get("netns") and netns.netns_exists(worker["netns"]):
            found.append(f"netns {worker['netns']}")
    if state.get("bridge") and netns.link_exists(state["bridge"]):
        found.append(f"link {state['bridge']}")
    return found


@pytest.fixture(scope="module")
def running():
    """The stack in a state folder outside /tmp (each worker node mounts a /tmp of its own), with
    a synthetic MUSDB tree next to it; stopped at the end, and nothing of it may be left."""
    import ray

    from sepcore.data.synth import write_synthetic_musdb

    if ray.is_initialized():
        ray.shutdown()
    base = Path(tempfile.mkdtemp(prefix="sepcore-e2e-stack-", dir="/var/tmp"))
    base.chmod(0o711)  # PostgreSQL's user passes through to its data folder
    state = base / "stack"
    try:
        write_synthetic_musdb(base / "synth", tracks=6, seconds=10.0, seed=7)
        t0 = time.monotonic()
        done = _services("up", "--state-dir", str(state), "--workers", "2", "--worker-cpus", "1")
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        print(f"stack up in {time.monotonic() - t0:.0f} s")
        env = {**os.environ, **stack.read_env_file(state / "stack.env"),
               "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
        with pytest.MonkeyPatch.context() as patch:  # this process's MLflow clients log in too
            for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
                patch.setenv(key, env[key])
            yield Running(state, base / "synth", env)
    finally:
        recorded = json.loads((state / "stack.json").read_text()) \
            if (state / "stack.json").exists() else None
        done = _services("down", "--state-dir", str(state))
        shutil.rmtree(base, ignore_errors=True)
        if recorded:
            assert done.returncode == 0, done.stderr[-3000:]
            assert _leftovers(recorded) == []


def _submit(running: Running, sweep: str, submission_id: str, *overrides: str,
            wait: bool = True, timeout: float = 420, env_vars: dict[str, str] | None = None):
    runtime_env = ["--runtime-env-json", json.dumps({"env_vars": env_vars})] if env_vars else []
    cmd = [str(BIN / "ray"), "job", "submit", "--working-dir", ".", "--submission-id",
           submission_id, *runtime_env, *([] if wait else ["--no-wait"]), "--", "python", "-m",
           "sweeps",
           "run", sweep, "--profile", "smoke", f"base.data.root={running.data}",
           f"tune.storage_path=s3://{stack.BUCKET}/ray", f"artifacts.uri=s3://{stack.BUCKET}/"
           f"checkpoints", "tune.test_max_tracks=1", *overrides]
    return run_group(cmd, timeout=timeout, cwd=REPO, env=running.env)


def _sweep_runs(running: Running, experiment: str, submission_id: str):
    client = running.mlflow()
    exp = client.get_experiment_by_name(experiment)
    parents = client.search_runs([exp.experiment_id], (
        f"tags.`sepcore.kind` = 'sweep' and tags.`sepcore.ray_submission_id` = "
        f"'{submission_id}'"))
    assert len(parents) == 1
    return client, exp, parents[0], child_runs(client, exp.experiment_id, parents[0].info.run_id)


def _nodes(run) -> list[str]:
    """The Ray node ids a trial's run says its attempts ran on, in order."""
    return [n for n in run.data.tags.get("sepcore.nodes", "").split(",") if n]


# --- the demo sweep as a user submits it ---------------------------------------------------------


def _init_checkpoint(folder: Path) -> Path:
    """A checkpoint of the demo's model (smoke profile) for its trials to start from."""
    import torch

    from sepcore.checkpoint import save_model
    from sepcore.models import build_model
    from sweeps.spec import load_sweep

    cfg = load_sweep(REPO / "sweeps" / "demo.yaml", profile="smoke").config_for({})
    torch.manual_seed(0)
    return save_model(folder / "start.safetensors", cfg.model_name,
                      build_model(cfg.model_name, cfg.model))


def test_demo_sweep_through_ray_job_submit(running):
    t0 = time.monotonic()
    submission = f"sepcore-stack-demo-{uuid.uuid4().hex[:8]}"
    # the trials start from a file in the driver's /tmp (the driver runs on the head, beside
    # this process), which the worker nodes cannot see: they fetch it from the artifact store
    folder = Path(tempfile.mkdtemp(prefix="sepcore-init-", dir="/tmp"))
    try:
        start = _init_checkpoint(folder)
        done = _submit(running, "sweeps/demo.yaml", submission, f"base.train.init_from={start}",
                       "base.train.init_strict=false")  # the searched sizes load what fits
        digest = hashlib.sha256(start.read_bytes()).hexdigest()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-3000:]
    assert "succeeded" in done.stdout + done.stderr
    print(f"demo sweep job in {time.monotonic() - t0:.0f} s")
    _check_demo_sweep(running, submission, digest)


def _check_demo_sweep(running: Running, submission_id: str, init_sha256: str) -> None:
    client, exp, parent, children = _sweep_runs(running, "sepcore-demo", submission_id)
    assert parent.info.status == "FINISHED" and len(children) == 2

    # every trial started from the driver's checkpoint, uploaded once to S3 and fetched (and
    # verified) on its own node
    key = f"checkpoints/demo/inputs/{init_sha256}.safetensors"
    stored = running.s3().get_object(Bucket=stack.BUCKET, Key=key)["Body"].read()
    assert hashlib.sha256(stored).hexdigest() == init_sha256
    for child in children:
        assert child.data.tags["sepcore.init_sha256"] == init_sha256
        assert child.data.params["train.init_from"] == f"s3://{stack.BUCKET}/{key}"

    # the runs are rows of PostgreSQL (the server's backend store), one per trial and the parent
    secrets = json.loads((running.state / "secrets.json").read_text())
    with psycopg2.connect(host="127.0.0.1", port=running.stack.ports["postgres"], user="mlflow",
                          password=secrets["postgres_password"], dbname="mlflow") as conn, \
            conn.cursor() as cur:
        cur.execute("SELECT t.value, count(*) FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
                    "WHERE r.experiment_id = %s AND t.key = 'sepcore.kind' GROUP BY t.value",
                    (int(exp.experiment_id),))
        assert dict(cur.fetchall()) == {"sweep": 1, "trial": 2}
    conn.close()

    # artifacts went through the server to the bucket: listed by the server and found in S3
    assert exp.artifact_location.startswith("mlflow-artifacts:/")
    s3 = running.s3()
    for child in children:
        listed = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert "config.yaml" in listed, listed
        prefix = f"mlartifacts/{exp.experiment_id}/{child.info.run_id}/artifacts/"
        keys = {o["Key"].removeprefix(prefix).split("/")[0] for o in s3.list_objects_v2(
            Bucket=stack.BUCKET, Prefix=prefix).get("Contents", [])}
        assert keys == listed

    # trials ran on both worker nodes
    assert {c.data.tags["sepcore.node"] for c in children} == set(_worker_of_node(running))
    if running.stack.state["mode"] == "namespaces":
        assert {c.data.tags["sepcore.host"] for c in children} == {
            "sepcore-worker-1", "sepcore-worker-2"}
        assert {c.data.tags["sepcore.node_ip"] for c in children} == {
            w["ip"] for w in running.stack.workers}

    # the best checkpoint is in S3 with its SHA-256, and it is the registered champion
    champion = client.get_model_version_by_alias("sepcore-demo", "champion")
    assert champion.source.startswith(f"s3://{stack.BUCKET}/checkpoints/")
    key = champion.source.removeprefix(f"s3://{stack.BUCKET}/")
    body = s3.get_object(Bucket=stack.BUCKET, Key=key)["Body"].read()
    assert hashlib.sha256(body).hexdigest() == champion.tags["sepcore.checkpoint_sha256"]
    assert champion.run_id in {c.info.run_id for c in children}


# --- authentication and isolation ---------------------------------------------------------------


def _status(url: str, headers: dict[str, str] | None = None) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}),
                                    timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


def test_servers_refuse_clients_without_credentials(running):
    import base64

    mlflow = running.env["MLFLOW_TRACKING_URI"] + "/api/2.0/mlflow/experiments/search?max_results=1"
    wrong = base64.b64encode(b"admin:not-the-password").decode()
    right = base64.b64encode(
        f"admin:{running.env['MLFLOW_TRACKING_PASSWORD']}".encode()).decode()
    assert _status(mlflow) == 401
    assert _status(mlflow, {"Authorization": f"Basic {wrong}"}) == 401
    assert _status(mlflow, {"Authorization": f"Basic {right}"}) == 200

    jobs = running.env["RAY_ADDRESS"] + "/api/jobs/"
    token = Path(running.env["RAY_AUTH_TOKEN_PATH"]).read_text().strip()
    assert _status(jobs) == 401
    assert _status(jobs, {"Authorization": "Bearer " + "0" * len(token)}) in (401, 403)
    assert _status(jobs, {"Authorization": f"Bearer {token}"}) == 200


def test_no_secret_in_any_log(running):
    secrets = json.loads((running.state / "secrets.json").read_text())
    folders = [running.state / "logs", Path(running.stack.state["ray_temp"])]
    texts = [p for folder in folders for p in folder.rglob("*") if p.is_file()]
    assert texts
    for path in texts:
        text = path.read_bytes()
        leaked = [name for name, value in secrets.items() if value.encode() in text]
        assert not leaked, f"{path} holds {leaked}"


_PROBE = """
import os, socket, sys, ray
ray.init()
name = sys.argv[1]
def on(worker):
    return ray.remote(num_cpus=0, resources={f"sepcore-{worker}": 0.01})
@on("worker-1")
def write():
    open(f"/tmp/{name}", "w").write("x")
    return socket.gethostname(), os.path.exists(f"/tmp/{name}")
@on("worker-2")
def look():
    return socket.gethostname(), os.path.exists(f"/tmp/{name}")
print("PROBE", ray.get(write.remote()), ray.get(look.remote()), os.path.exists(f"/tmp/{name}"))
"""


def test_worker_nodes_have_private_tmp_folders(running, tmp_path):
    if running.stack.state["mode"] != "namespaces":
        pytest.skip("the stack runs without namespaces here (loopback workers share /tmp)")
    name = f"sepcore-probe-{uuid.uuid4().hex}"
    job = tmp_path / "job"
    job.mkdir()
    (job / "probe.py").write_text(_PROBE)
    try:
        done = run_group([str(BIN / "ray"), "job", "submit", "--working-dir", str(job), "--",
                          "python", "probe.py", name], timeout=180, env=running.env)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        line = next(x for x in done.stdout.splitlines() if x.startswith("PROBE"))
        # written and seen on worker-1; not on worker-2, the driver (on the head) nor here
        assert line == ("PROBE ('sepcore-worker-1', True) ('sepcore-worker-2', False) False")
        assert not Path("/tmp", name).exists()
    finally:
        Path("/tmp", name).unlink(missing_ok=True)


def test_up_again_changes_nothing(running):
    before = {n: r["pgid"] for n, r in running.stack.components.items()}
    done = _services("up", "--state-dir", str(running.state), "--workers", "2",
                     "--worker-cpus", "1", timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("the stack was already up")
    assert {n: r["pgid"] for n, r in running.stack.components.items()} == before
    status = _services("status", "--state-dir", str(running.state), timeout=60)
    assert status.returncode == 0 and status.stdout.count(" up ") == 6, status.stdout


# --- faults ---------------------------------------------------------------------------------------


def _worker_of_node(running: Running) -> dict[str, str]:
    """Ray node id -> worker name, from the head's view of the cluster."""
    found = {}
    for node in running.stack.alive_nodes():
        for worker in running.stack.workers:
            if f"sepcore-{worker['name']}" in (node.get("resources_total") or {}):
                found[node["node_id"]] = worker["name"]
    return found


def _job(running: Running, submission_id: str) -> dict:
    """The Jobs API's record of a job (status, message), with the token."""
    token = Path(running.env["RAY_AUTH_TOKEN_PATH"]).read_text().strip()
    request = urllib.request.Request(f"{running.env['RAY_ADDRESS']}/api/jobs/{submission_id}",
                                     headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def _trials(client: MlflowClient, submission: str) -> list:
    experiment = client.get_experiment_by_name("sepcore-faults")
    parents = client.search_runs([experiment.experiment_id], (
        f"tags.`sepcore.kind` = 'sweep' and tags.`sepcore.ray_submission_id` = "
        f"'{submission}'")) if experiment else []
    return child_runs(client, experiment.experiment_id, parents[0].info.run_id) if parents else []


def test_faults_mid_sweep(running):
    """One sweep (2 trials of 6 epochs, one per worker node) through three faults, with nothing
    lost or doubled:

    * worker-1 is killed (SIGKILL, every process of the node) while its trial trains: the trial
      is retried on worker-2 from its last checkpoint and keeps its one child run;
    * right after, the tracking server is stopped for 20 s, then restarted: the trials keep
      training, and the metrics logged meanwhile reach the server afterwards;
    * S3 refuses every write of the best checkpoint's push for 20 s (a proxy in front of the
      S3 server, which the job is pointed at): the push is retried and leaves one whole object.

    Afterwards ``up`` brings worker-1 back and leaves the rest alone.
    """
    epochs = 6
    node_names = _worker_of_node(running)
    submission = f"sepcore-stack-faults-{uuid.uuid4().hex[:8]}"
    client = running.mlflow()
    with FaultProxy(running.env["AWS_ENDPOINT_URL"], host=running.stack.host) as proxy:
        proxy.refuse(20.0, methods=("PUT", "POST"), path_prefix=f"/{stack.BUCKET}/checkpoints/")
        t0 = time.monotonic()
        done = _submit(running, "sweeps/demo.yaml", submission, "tune.scheduler.type=fifo",
                       f"base.train.epochs={epochs}", "tracking.experiment=sepcore-faults",
                       "registry.model_name=sepcore-faults", wait=False, timeout=120,
                       env_vars={"AWS_ENDPOINT_URL": proxy.url})
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

        victim = None  # the trial on worker-1, once it has logged epoch 2 and not its last
        deadline = time.monotonic() + 300
        while victim is None:
            assert time.monotonic() < deadline, "no trial reached epoch 2 on worker-1"
            job = _job(running, submission)
            assert job["status"] in ("PENDING", "RUNNING"), job
            for run in _trials(client, submission):
                on = [node_names.get(n) for n in _nodes(run)]
                if on == ["worker-1"] and 2 <= run.data.metrics.get("epoch", 0) < epochs - 1:
                    victim = run
            time.sleep(0.5)
        running.stack.stop("worker-1", abrupt=True)
        killed_at = time.monotonic() - t0

        outage = [time.time()]  # the tracking server is down from here ...
        running.stack.stop("mlflow")
        time.sleep(20)
        outage.append(time.time())  # ... to here (then it starts again)
        running.stack.start("mlflow")
        back_at = time.monotonic() - t0

        while (job := _job(running, submission))["status"] in ("PENDING", "RUNNING"):
            assert time.monotonic() < deadline + 400, "the sweep did not finish"
            time.sleep(2)
        assert job["status"] == "SUCCEEDED", job
        refused = list(proxy.refused)
    print(f"faults sweep: worker-1 killed at {killed_at:.0f} s, tracking server back at "
          f"{back_at:.0f} s, done at {time.monotonic() - t0:.0f} s; {len(refused)} S3 writes "
          f"refused")

    client, _, parent, children = _sweep_runs(running, "sepcore-faults", submission)
    assert len(children) == 2  # one child run per trial, the retried one included
    assert all(c.info.status == "FINISHED" for c in children)
    retried = next(c for c in children if c.info.run_id == victim.info.run_id)
    assert [node_names.get(n) for n in _nodes(retried)] == ["worker-1", "worker-2"]
    during_outage = 0
    for child in children:
        history = client.get_metric_history(child.info.run_id, "epoch")
        steps = [m.step for m in history]
        # every epoch is there; epoch 1 once (the retried trial resumed from its checkpoint, not
        # from scratch); only an epoch the kill interrupted may have been logged twice
        assert set(steps) == set(range(1, epochs + 1)), steps
        assert steps.count(1) == 1 and len(steps) <= epochs + (child is retried), steps
        during_outage += sum(outage[0] * 1000 <= m.timestamp <= outage[1] * 1000
                             for m in history)
    assert during_outage > 0, "no epoch was logged while the tracking server was down"

    # the push met refused writes, was retried, and left exactly one whole object
    assert refused and all(m in ("PUT", "POST") for m, _ in refused)
    champion = client.get_model_version_by_alias("sepcore-faults", "champion")
    key = champion.source.removeprefix(f"s3://{stack.BUCKET}/")
    s3 = running.s3()
    body = s3.get_object(Bucket=stack.BUCKET, Key=key)["Body"].read()
    assert hashlib.sha256(body).hexdigest() == champion.tags["sepcore.checkpoint_sha256"]
    folder = key.rsplit("/", 2)[0] + "/"
    stored = [o["Key"] for o in s3.list_objects_v2(Bucket=stack.BUCKET, Prefix=folder)
              .get("Contents", [])]
    assert stored == [key]
    assert not s3.list_multipart_uploads(Bucket=stack.BUCKET).get("Uploads")

    # the killed node comes back with `up` (the rest is left alone)
    before = {n: r["pgid"] for n, r in running.stack.components.items()}
    done = _services("up", "--state-dir", str(running.state), "--workers", "2",
                     "--worker-cpus", "1", timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    after = {n: r["pgid"] for n, r in running.stack.components.items()}
    assert "worker-1" in after and {n: p for n, p in after.items() if n != "worker-1"} == before
    assert running.stack.health("worker-1")[0]


def test_down_of_one_node_leaves_the_rest(running):
    done = _services("down", "--state-dir", str(running.state), "--only", "worker-2",
                     timeout=120)
    assert done.returncode == 0 and "stopped worker-2" in done.stdout
    report = stack.status(running.state)
    assert not report["worker-2"]["healthy"]
    assert all(info["healthy"] for name, info in report.items() if name != "worker-2")
