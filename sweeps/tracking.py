"""MLflow bookkeeping: one parent run per sweep, one child run per trial, never a duplicate.

Ray's ``setup_mlflow`` starts a new run on every trial restart and does not nest, so this is a
small helper instead: the driver creates (or, on resume, finds) the sweep's
parent run; a trial finds its own child run by the ``sepcore.trial_id`` tag and continues it, or
creates it under the parent the first time and logs its params once. Everything goes through an
explicit :class:`~mlflow.MlflowClient` and run ids (no fluent active-run state, no
``MLFLOW_RUN_ID`` in the environment).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

from services.redact import MASK, is_secret_name, redact, split_credentials

log = logging.getLogger(__name__)

TRIAL_TAG = "sepcore.trial_id"
SWEEP_TAG = "sepcore.sweep"  # the sweep's experiment path (storage_path/name): resume finds it
KIND_TAG = "sepcore.kind"  # "sweep" (parent) | "trial" (child)
# a trial that started but never reached Tune's saved experiment state before the driver died:
# the resumed sweep cannot continue it, so its run is closed (KILLED) and left out of the sweep
ORPHAN_TAG = "sepcore.orphaned"
EXPERIMENT_TAG = "sepcore.tune_experiment"  # a trial run's Tune experiment (an extension's own)
LAST_EXPERIMENT_TAG = "sepcore.last_experiment"  # a parent's newest extension (`sweeps extend`)
DEFAULT_URI = "sqlite:///mlruns.db"


def resolve_tracking_uri(uri: str | None) -> str:
    """Config value, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///mlruns.db``; local sqlite
    files and plain folder paths are made absolute so that trials (which Tune runs in their own
    working directories) write the same store. Server URIs (``http://…``) are left as they are,
    except for a ``user:password@``: it moves to ``MLFLOW_TRACKING_USERNAME`` /
    ``MLFLOW_TRACKING_PASSWORD`` of this process (MLflow sends them as basic auth), so that the
    URI that is logged, tagged and printed never holds it."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI
    uri, credentials = split_credentials(uri)
    if credentials:
        set_credentials(credentials)
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        uri = prefix + str(Path(uri[len(prefix):]).resolve())
    elif ":" not in uri and uri != "databricks":  # a folder (MLflow's file store): ``mlruns``
        uri = str(Path(uri).resolve())
    return uri


CREDENTIAL_VARS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")


def set_credentials(credentials: tuple[str, str] | None) -> None:
    """The tracking server's basic-auth user and password, for MLflow clients of this process."""
    if credentials:
        for name, value in zip(CREDENTIAL_VARS, credentials, strict=True):
            os.environ[name] = value


def credentials() -> tuple[str, str] | None:
    """This process's tracking credentials (to hand to trials on other nodes), if any."""
    values = tuple(os.environ.get(name) for name in CREDENTIAL_VARS)
    return values if all(values) else None  # type: ignore[return-value]


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
                     tags: dict[str, str], resume: bool = False,
                     run_id: str | None = None) -> str:
    """The sweep's parent run: ``run_id`` (an extension's), found again on resume, else
    created."""
    if run_id:
        client.update_run(run_id, status="RUNNING")
        return run_id
    if resume:
        found = find_parent_run(client, experiment_id, sweep_key)
        if found:
            client.update_run(found, status="RUNNING")
            return found
    run = client.create_run(experiment_id, run_name=name, tags={
        **tags, SWEEP_TAG: sweep_key, KIND_TAG: "sweep"})
    return run.info.run_id


def child_runs(client: MlflowClient, experiment_id: str, parent_run_id: str,
               orphans: bool = False) -> list[Any]:
    """The sweep's trial runs; ``orphans=True`` includes the runs of trials a resumed sweep
    could not continue (tagged ``sepcore.orphaned``, see :func:`sweeps.runner.finish_sweep`)."""
    runs = client.search_runs([experiment_id], filter_string=(
        f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent_run_id}'"), max_results=5000)
    return runs if orphans else [r for r in runs if r.data.tags.get(ORPHAN_TAG) != "true"]


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


# --- a trial's child run, buffered through tracking-server outages ------------------------------

OPEN_WAIT_S = 300.0  # a trial waits this long for an unreachable server before it fails
FLUSH_WAIT_S = 60.0  # what a trial's closing flush waits for the server before it spills
RETRY_INTERVAL_S = 2.0  # during an outage, at most one attempt per interval
UNSENT_FILE = "unsent.json"
UNSENT_DIR = "mlflow-unsent"  # in a Tune checkpoint: what the trial had not sent at that report
UNSENT_METRIC = "mlflow_unsent"  # reported to Tune with that checkpoint: how many calls

# a trial's MLflow client gives up on an unreachable server within seconds (MLflow's defaults
# retry for minutes), and TrialRun buffers what was not sent
FAIL_FAST_HTTP = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
                  "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                  "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}
_TRANSIENT_CODES = {"INTERNAL_ERROR", "TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED",
                    "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED", "ABORTED"}


def fail_fast_http(environ: dict[str, str] = os.environ) -> None:
    """Short MLflow HTTP retries and timeout for this process (values already set are kept)."""
    for key, value in FAIL_FAST_HTTP.items():
        environ.setdefault(key, value)


def is_transient(exc: BaseException) -> bool:
    """True for failures that a later attempt can cure: the server unreachable, timing out,
    overloaded or answering 5xx; False for a refused request (bad value, unknown run, no
    permission), which no retry changes."""
    import requests
    from mlflow.exceptions import MlflowException, RestException

    if isinstance(exc, requests.exceptions.ConnectionError | requests.exceptions.Timeout):
        return True
    if isinstance(exc, requests.exceptions.HTTPError):
        status = exc.response.status_code if exc.response is not None else 500
        return status >= 500 or status == 429
    if isinstance(exc, RestException):
        return exc.error_code in _TRANSIENT_CODES
    if isinstance(exc, MlflowException):
        # raised by MLflow's HTTP layer for refused connections, timeouts, exhausted retries
        return str(exc.message).startswith("API request to ")
    try:
        from botocore.exceptions import ConnectionError as BotoConnectionError
    except ImportError:  # pragma: no cover
        return False
    return isinstance(exc, BotoConnectionError)  # artifacts written to S3 by the client


@dataclass
class _Op:
    """One logging call not yet acknowledged by the server."""

    kind: str  # params | metrics | tags | artifact | inputs | terminate
    items: list[Any]  # Param / Metric / RunTag; [path, folder]; DatasetInput; [status]

    def describe(self) -> str:
        if self.kind == "metrics":
            steps: dict[str, list[int]] = {}
            for m in self.items:
                steps.setdefault(m.key, []).append(m.step)
            return "metrics " + ", ".join(f"{k} (steps {','.join(map(str, v))})"
                                         for k, v in steps.items())
        if self.kind in ("params", "tags"):
            return f"{self.kind} " + ", ".join(i.key for i in self.items)
        if self.kind == "artifact":
            return f"artifact {Path(self.items[0]).name}"
        if self.kind == "inputs":
            return "dataset inputs " + ", ".join(i.dataset.name for i in self.items)
        return f"status {self.items[0]}"

    @classmethod
    def from_json(cls, data: dict[str, Any], base: Path) -> _Op:
        """The inverse of :meth:`to_json`; relative artifact paths are taken under ``base``."""
        kind, items = data["kind"], data["items"]
        if kind == "metrics":
            return cls(kind, [Metric(i["key"], float(i["value"]), int(i["timestamp"]),
                                     int(i["step"])) for i in items])
        if kind in ("params", "tags"):
            entity = Param if kind == "params" else RunTag
            return cls(kind, [entity(i["key"], i["value"]) for i in items])
        if kind == "artifact":
            return cls(kind, [base / items[0], items[1]])
        if kind == "inputs":
            from mlflow.entities import Dataset, DatasetInput, InputTag

            return cls(kind, [DatasetInput(
                Dataset(i["name"], i["digest"], i.get("source_type", "local"), i["source"],
                        profile=i["profile"]),
                tags=[InputTag(k, v) for k, v in i["tags"].items()]) for i in items])
        if kind == "terminate":
            return cls(kind, [items[0]])
        raise ValueError(f"unknown logging call {kind!r}")

    def to_json(self) -> dict[str, Any]:
        if self.kind == "metrics":
            items = [{"key": m.key, "value": m.value, "timestamp": m.timestamp, "step": m.step}
                     for m in self.items]
        elif self.kind in ("params", "tags"):
            items = [{"key": i.key, "value": i.value} for i in self.items]
        elif self.kind == "inputs":
            items = [{"name": i.dataset.name, "digest": i.dataset.digest,
                      "source_type": i.dataset.source_type,
                      "source": i.dataset.source, "profile": i.dataset.profile,
                      "tags": {t.key: t.value for t in i.tags}} for i in self.items]
        else:
            items = [str(i) if i is not None else None for i in self.items]
        return {"kind": self.kind, "items": items}


class TrialRun:
    """A trial's child run (created once, continued on retry and resume).

    Every logging call is queued and sent in order; while the tracking server is unreachable
    the queue keeps what was not acknowledged (metrics keep their step and timestamp, so a
    request that reached the server before its answer was lost is not stored twice) and the
    next call after the server is back sends it. Artifacts are copied aside when they cannot
    be sent at once (the caller may delete its file). :meth:`flush` waits a bounded time for the
    server; :meth:`spill` writes what is still unsent to a JSON file and names it in a warning.
    Refused requests (a bad value, no permission) raise at once.
    """

    def __init__(self, client: MlflowClient, run_id: str, created: bool,
                 tags: dict[str, str] | None = None, spool_dir: str | Path | None = None):
        self.client = client
        self.run_id = run_id
        self.created = created
        self.tags = dict(tags or {})  # the run's tags when it was opened
        self.spool_dir = Path(spool_dir) if spool_dir else None
        self._pending: list[_Op] = []
        self._down_since: float | None = None
        self._last_try = 0.0
        self._spooled = 0

    @classmethod
    def open(cls, tracking_uri: str, experiment_id: str, parent_run_id: str, trial_id: str,
             run_name: str, params: dict[str, Any], tags: dict[str, str],
             spool_dir: str | Path | None = None, wait_s: float = OPEN_WAIT_S) -> TrialRun:
        """Find the trial's run under ``parent_run_id`` and continue it, or create it and log
        ``params`` once; waits up to ``wait_s`` for an unreachable server."""
        client = MlflowClient(tracking_uri)

        def find_or_create() -> TrialRun:
            # searched again on every attempt: a create whose answer was lost is not repeated
            runs = client.search_runs([experiment_id], filter_string=(
                f"tags.`{TRIAL_TAG}` = {_literal(trial_id)} and "
                f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent_run_id}'"), max_results=2)
            if runs:
                client.update_run(runs[0].info.run_id, status="RUNNING")
                log.info("trial %s continues MLflow run %s", trial_id, runs[0].info.run_id)
                return cls(client, runs[0].info.run_id, created=False,
                           tags=runs[0].data.tags, spool_dir=spool_dir)
            run_tags = {**_redacted(tags), TRIAL_TAG: trial_id,
                        MLFLOW_PARENT_RUN_ID: parent_run_id, MLFLOW_RUN_NAME: run_name,
                        KIND_TAG: "trial"}
            run = client.create_run(experiment_id, run_name=run_name, tags=run_tags)
            return cls(client, run.info.run_id, created=True, tags=run_tags,
                       spool_dir=spool_dir)

        deadline = time.monotonic() + wait_s
        while True:
            try:
                self = find_or_create()
                break
            except Exception as exc:
                if not is_transient(exc) or time.monotonic() >= deadline:
                    raise
                log.warning("tracking server %s unreachable (%s); trial %s waits for it",
                            redact(tracking_uri), _reason(exc), trial_id)
                time.sleep(RETRY_INTERVAL_S)
        if self.created:
            self.log_params(params)
        return self

    # --- logging calls (queued, sent in order) ----------------------------------------------

    def log_params(self, params: dict[str, Any]) -> None:
        items = [Param(k, str(v)[:6000]) for k, v in sorted(_redacted(params).items())]
        for i in range(0, len(items), 100):
            self._submit(_Op("params", items[i:i + 100]))

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step or 0) for k, v in metrics.items()
                 if isinstance(v, int | float) and not isinstance(v, bool)]
        for i in range(0, len(items), 500):
            self._submit(_Op("metrics", items[i:i + 500]))

    def set_tags(self, tags: dict[str, Any]) -> None:
        items = [RunTag(k, str(v)) for k, v in _redacted(tags).items()]
        for i in range(0, len(items), 100):
            self._submit(_Op("tags", items[i:i + 100]))

    def log_artifact(self, path: str | Path, folder: str | None = None) -> None:
        op = _Op("artifact", [Path(path), folder])
        if not self._submit(op) and op in self._pending:
            op.items[0] = self._spool(Path(path))

    def log_inputs(self, datasets: list[Any]) -> None:
        """MLflow dataset inputs (:class:`~mlflow.entities.DatasetInput`) of the run."""
        if datasets:
            self._submit(_Op("inputs", list(datasets)))

    def finish(self, status: str = "FINISHED", wait_s: float = FLUSH_WAIT_S) -> None:
        """Close the run; waits up to ``wait_s`` for an unreachable server, then spills."""
        self._pending.append(_Op("terminate", [status]))
        if not self.flush(wait_s):
            self.spill()

    # --- the queue ---------------------------------------------------------------------------

    @property
    def pending(self) -> list[str]:
        """What is not sent yet, in words."""
        return [op.describe() for op in self._pending]

    def flush(self, wait_s: float = 0.0) -> bool:
        """Send what is queued; retry for up to ``wait_s`` seconds. True when all is sent."""
        deadline = time.monotonic() + wait_s
        while not self._drain(force=True):
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(RETRY_INTERVAL_S, left))
        return True

    def spill(self) -> Path | None:
        """Write what is still unsent to ``<spool_dir>/unsent.json`` and warn, naming it."""
        if not self._pending:
            return None
        path = self._spool_root() / UNSENT_FILE
        path.write_text(json.dumps({"run_id": self.run_id,
                                    "calls": [op.to_json() for op in self._pending]}, indent=1))
        log.warning("MLflow run %s: the tracking server did not take %s; kept in %s",
                    self.run_id, "; ".join(self.pending), path)
        return path

    def spill_into(self, folder: str | Path) -> int:
        """Write what is not sent yet into ``<folder>/mlflow-unsent/`` (the calls in
        ``unsent.json``, the artifacts beside it), so that it travels with ``folder`` (a Tune
        checkpoint: to the shared storage, whichever node the trial ran on). Returns the number
        of calls written (0: nothing pending, nothing written). Sending them again later is
        harmless: metrics keep their step and timestamp, params and tags their values."""
        if not self._pending:
            return 0
        root = Path(folder) / UNSENT_DIR
        root.mkdir(parents=True, exist_ok=True)
        calls = []
        for n, op in enumerate(self._pending):
            data = op.to_json()
            if op.kind == "artifact":
                name = f"{n:04d}/{Path(op.items[0]).name}"
                (root / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(op.items[0], root / name)
                data["items"] = [name, op.items[1]]
            calls.append(data)
        (root / UNSENT_FILE).write_text(json.dumps({"run_id": self.run_id, "calls": calls},
                                                   indent=1))
        return len(calls)

    def take_unsent(self, folder: str | Path) -> int:
        """Queue the calls a previous attempt left in ``<folder>/mlflow-unsent/`` (first, in
        their order; artifacts copied aside) and try to send them; returns how many."""
        root = Path(folder) / UNSENT_DIR
        path = root / UNSENT_FILE
        if not path.exists():
            return 0
        saved = json.loads(path.read_text())
        ops = [_Op.from_json(call, root) for call in saved["calls"]]
        for op in ops:
            if op.kind == "artifact":
                op.items[0] = self._spool(Path(op.items[0]))
        ops = [op for op in ops if op.kind != "terminate"]  # this attempt closes the run itself
        self._pending[:0] = ops
        log.warning("MLflow run %s: %d call(s) a previous attempt could not send are sent now",
                    self.run_id, len(ops))
        self._drain(force=True)
        return len(ops)

    def _submit(self, op: _Op) -> bool:
        self._pending.append(op)
        return self._drain()

    def _drain(self, force: bool = False) -> bool:
        now = time.monotonic()
        if self._down_since is not None and not force and now - self._last_try < RETRY_INTERVAL_S:
            return False
        self._last_try = now
        while self._pending:
            op = self._pending[0]
            try:
                self._send(op)
            except Exception as exc:
                if not is_transient(exc):
                    self._pending.pop(0)
                    raise
                if self._down_since is None:
                    self._down_since = now
                    log.warning("MLflow run %s: tracking server unreachable (%s); buffering",
                                self.run_id, _reason(exc))
                return False
            self._pending.pop(0)
        if self._down_since is not None:
            log.warning("MLflow run %s: tracking server back after %.0f s; buffered calls sent",
                        self.run_id, time.monotonic() - self._down_since)
            self._down_since = None
        return True

    def _send(self, op: _Op) -> None:
        if op.kind == "params":
            self.client.log_batch(self.run_id, params=op.items)
        elif op.kind == "metrics":
            self.client.log_batch(self.run_id, metrics=op.items)
        elif op.kind == "tags":
            self.client.log_batch(self.run_id, tags=op.items)
        elif op.kind == "artifact":
            self.client.log_artifact(self.run_id, str(op.items[0]), op.items[1])
        elif op.kind == "inputs":
            self.client.log_inputs(self.run_id, datasets=op.items)
        else:
            self.client.set_terminated(self.run_id, status=op.items[0])

    def _spool_root(self) -> Path:
        if self.spool_dir is None:
            self.spool_dir = Path(tempfile.mkdtemp(prefix="sepcore-mlflow-"))
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        return self.spool_dir

    def _spool(self, path: Path) -> Path:
        """A copy of an artifact that could not be sent (same file name, its own folder)."""
        self._spooled += 1
        target = self._spool_root() / f"{self._spooled:04d}" / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        return target


def _redacted(values: dict[str, Any]) -> dict[str, Any]:
    """Param/tag values without credentials (secret-named keys lose their value)."""
    return {k: (MASK if is_secret_name(k) and v not in (None, "") else
                (redact(v) if isinstance(v, str) else v)) for k, v in values.items()}


def _reason(exc: BaseException) -> str:
    return redact(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)[:300]


def replay_unsent(client: MlflowClient, folder: str | Path, wait_s: float = FLUSH_WAIT_S) -> int:
    """Send the calls a trial left in ``<folder>/mlflow-unsent/`` (see
    :meth:`TrialRun.spill_into`) to their run, waiting up to ``wait_s`` for the server. Returns
    how many were sent; what the server still refuses to take is named in a warning."""
    root = Path(folder) / UNSENT_DIR
    path = root / UNSENT_FILE
    if not path.exists():
        return 0
    saved = json.loads(path.read_text())
    run = TrialRun(client, saved["run_id"], created=False)
    run._pending = [_Op.from_json(call, root) for call in saved["calls"]]
    count = len(run._pending)
    if not run.flush(wait_s):
        log.warning("MLflow run %s: %s still not taken by the tracking server (kept in %s)",
                    run.run_id, "; ".join(run.pending), path)
        return count - len(run._pending)
    log.info("MLflow run %s: %d call(s) the trial could not send were sent", run.run_id, count)
    return count


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
