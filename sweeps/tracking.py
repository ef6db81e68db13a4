"""MLflow bookkeeping: one parent run per sweep, one child run per trial, never a duplicate.

Ray's ``setup_mlflow`` starts a new run on every trial restart and does not nest, so this is a
small helper instead: the driver creates (or, on resume, finds) the sweep's
parent run; a trial finds its own child run by the ``sepcore.trial_id`` tag and continues it, or
creates it under the parent the first time and logs its params once. Everything goes through an
explicit :class:`~mlflow.MlflowClient` and run ids (no fluent active-run state, no
``MLFLOW_RUN_ID`` in the environment).
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunStatus
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

log = logging.getLogger(__name__)

TRIAL_TAG = "sepcore.trial_id"
SWEEP_TAG = "sepcore.sweep"  # the sweep's experiment path (storage_path/name): resume finds it
KIND_TAG = "sepcore.kind"  # "sweep" (parent) | "trial" (child)
DEFAULT_URI = "sqlite:///mlruns.db"


def resolve_tracking_uri(uri: str | None) -> str:
    """Config value, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///mlruns.db``; local sqlite
    files and plain folder paths are made absolute so that trials (which Tune runs in their own
    working directories) write the same store. Server URIs (``http://…``) are left as they are."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        uri = prefix + str(Path(uri[len(prefix):]).resolve())
    elif ":" not in uri and uri != "databricks":  # a folder (MLflow's file store): ``mlruns``
        uri = str(Path(uri).resolve())
    return uri


def is_local_store(uri: str) -> bool:
    """True for tracking stores that live in this machine's files (``sqlite:``, ``file:``, a
    folder); False for a tracking server (``http(s)://…``, ``databricks``…)."""
    return uri.startswith(("sqlite:", "file:")) or (":" not in uri and uri != "databricks")


def ensure_experiment(client: MlflowClient, name: str, artifact_root: str | None = None) -> str:
    """Experiment id of ``name``, created when missing.

    With a local store (sqlite/file) the artifacts go to ``artifact_root`` (default
    ``./mlartifacts``). With a tracking server the experiment takes the server's default artifact
    root (``mlflow-artifacts:/…`` when it serves artifacts, else its ``--default-artifact-root``):
    every node then uploads through the server, and no artifact is written to one node's disk.
    """
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    if not is_local_store(client.tracking_uri) and artifact_root is None:
        return client.create_experiment(name)
    location = Path(artifact_root or "mlartifacts").resolve().as_uri()
    return client.create_experiment(name, artifact_location=location)


def git_commit(cwd: str | Path | None = None) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True,
                             timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def find_parent_run(client: MlflowClient, experiment_id: str, sweep_key: str) -> str | None:
    runs = client.search_runs([experiment_id], filter_string=(
        f"tags.`{SWEEP_TAG}` = {_literal(sweep_key)} and tags.`{KIND_TAG}` = 'sweep'"),
        max_results=1, order_by=["attributes.start_time DESC"])
    return runs[0].info.run_id if runs else None


def start_parent_run(client: MlflowClient, experiment_id: str, sweep_key: str, name: str,
                     tags: dict[str, str], resume: bool = False) -> str:
    """The sweep's parent run: found again on resume, else created."""
    if resume:
        found = find_parent_run(client, experiment_id, sweep_key)
        if found:
            client.update_run(found, status="RUNNING")
            return found
    run = client.create_run(experiment_id, run_name=name, tags={
        **tags, SWEEP_TAG: sweep_key, KIND_TAG: "sweep"})
    return run.info.run_id


def child_runs(client: MlflowClient, experiment_id: str, parent_run_id: str) -> list[Any]:
    return client.search_runs([experiment_id], filter_string=(
        f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent_run_id}'"), max_results=5000)


def _literal(value: str) -> str:
    """``value`` as a string literal of MLflow's search syntax (which has no escapes: a value
    with a single quote is written in double quotes)."""
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    from sweeps.errors import SweepError

    raise SweepError(f"{value!r} holds both kinds of quotes: MLflow cannot search for it",
                     key="tracking")


def flatten(mapping: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config → flat dotted keys (``model.masker.X``)."""
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, path + "."))
        else:
            out[path] = value
    return out


@dataclass
class TrialRun:
    """A trial's child run (created once, continued on retry and resume)."""

    client: MlflowClient
    run_id: str
    created: bool

    @classmethod
    def open(cls, tracking_uri: str, experiment_id: str, parent_run_id: str, trial_id: str,
             run_name: str, params: dict[str, Any], tags: dict[str, str]) -> TrialRun:
        client = MlflowClient(tracking_uri)
        runs = client.search_runs([experiment_id], filter_string=(
            f"tags.`{TRIAL_TAG}` = {_literal(trial_id)} and "
            f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent_run_id}'"), max_results=2)
        if runs:
            client.update_run(runs[0].info.run_id, status="RUNNING")
            log.info("trial %s continues MLflow run %s", trial_id, runs[0].info.run_id)
            return cls(client, runs[0].info.run_id, created=False)
        run = client.create_run(experiment_id, run_name=run_name, tags={
            **tags, TRIAL_TAG: trial_id, MLFLOW_PARENT_RUN_ID: parent_run_id,
            MLFLOW_RUN_NAME: run_name, KIND_TAG: "trial"})
        self = cls(client, run.info.run_id, created=True)
        self.log_params(params)
        return self

    def log_params(self, params: dict[str, Any]) -> None:
        items = [Param(k, str(v)[:6000]) for k, v in sorted(params.items())]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i:i + 100])

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step or 0) for k, v in metrics.items()
                 if isinstance(v, int | float) and not isinstance(v, bool)]
        for i in range(0, len(items), 500):
            self.client.log_batch(self.run_id, metrics=items[i:i + 500])

    def set_tags(self, tags: dict[str, Any]) -> None:
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, str(value))

    def log_artifact(self, path: str | Path, folder: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), folder)

    def finish(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status=status)


def terminate(client: MlflowClient, run_id: str, status: str = "FINISHED") -> None:
    """Close a run unless it already ended."""
    run = client.get_run(run_id)
    if run.info.status == RunStatus.to_string(RunStatus.RUNNING):
        client.set_terminated(run_id, status=status)


def find_sweep_run(client: MlflowClient, sweep: str):
    """A sweep's parent run by run id or by run name (any experiment; the newest of that name)."""
    from mlflow.exceptions import MlflowException

    from sweeps.errors import SweepError

    try:
        run = client.get_run(sweep)
    except MlflowException:
        pass
    else:
        if run.data.tags.get(KIND_TAG) != "sweep":
            raise SweepError(f"run {sweep} is not a sweep's parent run (its {KIND_TAG} tag is "
                             f"{run.data.tags.get(KIND_TAG)!r})", key="sweep")
        return run
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments, filter_string=(
        f"tags.`{KIND_TAG}` = 'sweep' and attributes.run_name = {_literal(sweep)}"),
        max_results=1, order_by=["attributes.start_time DESC"])
    if not runs:
        raise SweepError(f"no sweep run named {sweep!r} in the tracking store", key="sweep")
    return runs[0]
