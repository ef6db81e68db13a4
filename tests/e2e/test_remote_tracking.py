"""A sweep against a remote MLflow tracking server whose artifacts live in S3.

A moto S3 server and a real ``mlflow server --artifacts-destination s3://… --serve-artifacts``
run as processes on loopback (the server alone holds the S3 credentials); a tiny sweep on local
Ray logs to it through ``MLFLOW_TRACKING_URI=http://…``. Every artifact of every run must be
listed by the server and be an object in the bucket, and nothing may land in the driver's
``./mlartifacts``.
"""

from __future__ import annotations

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
    """(mlflow server, boto3 S3 client, S3 endpoint); both processes stopped by their group."""
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
            yield server, s3, moto.url
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


def test_trial_artifacts_reach_the_bucket_through_the_server(tracking_server, tiny_sweep,
                                                            local_ray, monkeypatch, tmp_path):
    server, s3, endpoint = tracking_server
    for var in AWS_VARS:  # the trials hold no S3 credentials: MLflow must go through the server
        monkeypatch.delenv(var, raising=False)
    if any(local_ray.worker_env(list(AWS_VARS)).values()):
        local_ray.stop()
        local_ray.start()
    # the driver pushes the best checkpoint to the store with boto3 (the server registers only
    # remote sources); its Ray workers were started before and do not see these
    for key, value in {**S3_ENV, "AWS_ENDPOINT_URL": endpoint}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
    # one epoch: ASHA stops each trial at its first (and last) report, so the loss curve and
    # the closing figures only exist if the trial logs them before that report
    sweep = load_sweep(tiny_sweep(), overrides=[
        "tune.num_samples=2", "base.train.epochs=1", f"artifacts.uri=s3://{BUCKET}/checkpoints"])
    outcome = run_sweep(sweep)

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
    version = client.get_model_version_by_alias("sepcore-tiny", "champion")
    assert version.source == outcome.pushed[0]["uri"]
    assert version.source.startswith(f"s3://{BUCKET}/checkpoints/")
    # nothing written on the driver's side, by the driver or by a trial (Tune's trial folders
    # are under tmp_path too)
    assert not list(tmp_path.rglob("mlartifacts")), list(tmp_path.rglob("mlartifacts"))
