"""A sweep against a remote MLflow tracking server whose artifacts live in S3.

A moto S3 server and a real ``mlflow server --artifacts-destination s3://… --serve-artifacts``
run as processes on loopback (the server alone holds the S3 credentials); a tiny sweep on local
Ray logs to it through ``MLFLOW_TRACKING_URI=http://…``. Every artifact of every run must be
listed by the server and be an object in the bucket, and nothing may land in the driver's
``./mlartifacts``.
"""

from __future__ import annotations

import os

import boto3
import pytest
from mlflow import MlflowClient

from sweeps.runner import run_sweep
from sweeps.spec import load_sweep
from sweeps.tracking import child_runs
from tests.procs import start_mlflow_server, start_moto_server
from tests.sweeps import conftest as sweep_fixtures

pytestmark = pytest.mark.slow
local_ray, tiny_sweep = sweep_fixtures.local_ray, sweep_fixtures.tiny_sweep

BUCKET = "sepcore-mlflow"
S3_ENV = {"AWS_ACCESS_KEY_ID": "AKIDSEPCOREMLFLOW01", "AWS_SECRET_ACCESS_KEY": "moto-secret-1",
          "AWS_DEFAULT_REGION": "us-east-1"}
AWS_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
            "AWS_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT_URL")


@pytest.fixture(scope="module")
def tracking_server(tmp_path_factory):
    """(mlflow server, boto3 S3 client, S3 endpoint, the server's backend store file); both
    processes are stopped by their process group."""
    folder = tmp_path_factory.mktemp("tracking-server")
    moto = start_moto_server(folder / "moto.log")
    try:
        s3 = boto3.client("s3", endpoint_url=moto.url, aws_access_key_id=S3_ENV[
            "AWS_ACCESS_KEY_ID"], aws_secret_access_key=S3_ENV["AWS_SECRET_ACCESS_KEY"],
            region_name="us-east-1")
        s3.create_bucket(Bucket=BUCKET)
        server = start_mlflow_server(f"sqlite:///{folder}/mlflow.db",
                                     f"s3://{BUCKET}/mlartifacts",
                                     {**S3_ENV, "MLFLOW_S3_ENDPOINT_URL": moto.url},
                                     folder / "mlflow.log")
        try:
            yield server, s3, moto.url, folder / "mlflow.db"
        finally:
            server.stop()
    finally:
        moto.stop()


def bucket_keys(s3) -> set[str]:
    keys = set()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        keys.update(o["Key"] for o in page.get("Contents", []))
    return keys


def all_artifacts(client: MlflowClient, run_id: str, path: str | None = None) -> list[str]:
    out = []
    for item in client.list_artifacts(run_id, path):
        out.extend(all_artifacts(client, run_id, item.path) if item.is_dir else [item.path])
    return out


SECRET = "pw-Sepcore-4411"


def test_trial_artifacts_reach_the_bucket_through_the_server(tracking_server, tiny_sweep,
                                                            local_ray, monkeypatch, tmp_path,
                                                            capsys, caplog):
    """Also: the tracking URI carries a user and password; the client authenticates with them
    (MLFLOW_TRACKING_USERNAME/PASSWORD), and they are in no param, tag, artifact, stored file,
    log line or printed line."""
    from sweeps.__main__ import _print_outcome
    from sweeps.tracking import CREDENTIAL_VARS

    server, s3, endpoint, backend = tracking_server
    for var in AWS_VARS:  # the trials hold no S3 credentials: MLflow must go through the server
        monkeypatch.delenv(var, raising=False)
    if any(local_ray.worker_env(list(AWS_VARS)).values()):
        local_ray.stop()
        local_ray.start()
    # the driver pushes the best checkpoint to the store with boto3 (the server registers only
    # remote sources); its Ray workers were started before and do not see these
    for key, value in {**S3_ENV, "AWS_ENDPOINT_URL": endpoint}.items():
        monkeypatch.setenv(key, value)
    for name in CREDENTIAL_VARS:  # recorded, so that they are restored after the test
        monkeypatch.setenv(name, "before")
        monkeypatch.delenv(name)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///unused.db")  # the sweep file's wins
    uri = server.url.replace("http://", f"http://sepcore:{SECRET}@")
    # one epoch: ASHA stops each trial at its first (and last) report, so the loss curve and
    # the closing figures only exist if the trial logs them before that report
    sweep = load_sweep(tiny_sweep(), overrides=[
        "tune.num_samples=2", "base.train.epochs=1", f"artifacts.uri=s3://{BUCKET}/checkpoints",
        f"tracking.uri={uri}"])
    with caplog.at_level("INFO"):
        outcome = run_sweep(sweep)
        _print_outcome(outcome)
    assert outcome.tracking_uri == server.url
    assert (os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"]) == (
        "sepcore", SECRET)

    client = MlflowClient(server.url)
    experiment = client.get_experiment(client.get_run(outcome.parent_run_id).info.experiment_id)
    assert experiment.artifact_location == f"mlflow-artifacts:/{experiment.experiment_id}"
    keys = bucket_keys(s3)
    prefix = f"mlartifacts/{experiment.experiment_id}"
    children = child_runs(client, experiment.experiment_id, outcome.parent_run_id)
    assert len(children) == 2
    for run in [client.get_run(outcome.parent_run_id), *children]:
        listed = all_artifacts(client, run.info.run_id)
        expected = ({"sweep.json", "report/comparison.csv", "report/comparison.png"}
                    if run.info.run_id == outcome.parent_run_id else
                    {"config.yaml", "loss_curve.png", "encoder_filters.png", "test_results.txt"})
        assert expected <= set(listed), (run.info.run_name, listed)
        for path in listed:
            assert f"{prefix}/{run.info.run_id}/artifacts/{path}" in keys
        assert SECRET not in repr(run.data)  # params and tags
        if run.info.run_id != outcome.parent_run_id:  # where each trial ran
            assert run.data.tags["sepcore.nodes"] == run.data.tags["sepcore.node"] == \
                local_ray.node_id
            assert run.data.tags["sepcore.node_ip"] == "127.0.0.1"
    version = client.get_model_version_by_alias("sepcore-tiny", "champion")
    assert version.source == outcome.pushed[0]["uri"]
    assert version.source.startswith(f"s3://{BUCKET}/checkpoints/")
    # nothing written on the driver's side, by the driver or by a trial (Tune's trial folders
    # are under tmp_path too)
    assert not list(tmp_path.rglob("mlartifacts")), list(tmp_path.rglob("mlartifacts"))

    # the credentials: not stored anywhere (server's store, bucket, local files), not logged,
    # not printed; sweep.json keeps the URI without them
    sweep_json = s3.get_object(Bucket=BUCKET, Key=f"{prefix}/{outcome.parent_run_id}/artifacts/"
                                                  f"sweep.json")["Body"].read().decode()
    assert '"uri": "http://***@127.0.0.1:' in sweep_json
    assert SECRET.encode() not in backend.read_bytes()
    for key in keys:
        assert SECRET.encode() not in s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
    printed = capsys.readouterr()
    assert f"MLflow parent run {outcome.parent_run_id} on {server.url}" in printed.out
    assert SECRET not in printed.out + printed.err
    assert caplog.records and not [r for r in caplog.records if SECRET in r.getMessage()]


# the buffering does not depend on the outage's length; the stack's e2e test holds a 20 s one
OUTAGE_S = 8.0


def test_a_tracking_server_outage_loses_and_doubles_nothing(tracking_server, tiny_sweep,
                                                            local_ray, monkeypatch, tmp_path):
    """The server is killed (SIGKILL to its process group) as soon as the first epoch metric
    arrives and restarted on the same port and store OUTAGE_S later; the trials keep training,
    buffer what the server did not take and send it when it is back."""
    import threading
    import time

    server = tracking_server[0]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
    epochs = 12
    sweep = load_sweep(tiny_sweep(), overrides=[
        "tune.num_samples=2", f"base.train.epochs={epochs}", "tune.scheduler.type=fifo",
        "registry.register=false", "tracking.experiment=tiny-outage"])
    window: dict[str, float] = {}
    failures: list[BaseException] = []

    def outage():
        try:
            client = MlflowClient(server.url)
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                experiment = client.get_experiment_by_name("tiny-outage")
                if experiment and client.search_runs(
                        [experiment.experiment_id], "metrics.valid_sisdr > -1000"):
                    break
                time.sleep(0.5)
            window["down"] = time.time()
            server.kill()
            time.sleep(OUTAGE_S)
            server.restart()
            window["up"] = time.time()
        except BaseException as exc:  # reported by the test below
            failures.append(exc)

    thread = threading.Thread(target=outage, daemon=True)
    thread.start()
    try:
        outcome = run_sweep(sweep)
    finally:
        thread.join(timeout=400)
    assert not failures, failures
    assert {"down", "up"} <= set(window)

    client = MlflowClient(server.url)
    experiment_id = client.get_run(outcome.parent_run_id).info.experiment_id
    children = child_runs(client, experiment_id, outcome.parent_run_id)
    assert len(children) == 2
    during = 0
    for child in children:
        run_id = child.info.run_id
        assert child.info.status == "FINISHED"
        for key in ("valid_sisdr", "epoch", "train_loss"):
            steps = sorted(m.step for m in client.get_metric_history(run_id, key))
            assert steps == list(range(1, epochs + 1)), (key, steps)  # each epoch exactly once
        history = client.get_metric_history(run_id, "epoch")
        during += sum(window["down"] * 1000 <= m.timestamp <= window["up"] * 1000
                      for m in history)
        assert {"config.yaml", "loss_curve.png", "test_results.txt"} <= set(
            all_artifacts(client, run_id))
    assert during > 0, "no epoch ended while the server was down: the outage missed training"
    assert not list(tmp_path.rglob("unsent.json"))  # nothing had to be left behind
