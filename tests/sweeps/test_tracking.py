"""MLflow bookkeeping on a temporary sqlite store: tracking URIs, parent runs found again on
resume, a trial's child run continued (never duplicated) on retry, sweeps found by name or id."""

from __future__ import annotations

import shutil

import pytest
from mlflow import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from sweeps.errors import SweepError
from sweeps.tracking import (
    KIND_TAG,
    SWEEP_TAG,
    TRIAL_TAG,
    TrialRun,
    child_runs,
    ensure_experiment,
    find_parent_run,
    find_sweep_run,
    flatten,
    is_local_store,
    resolve_tracking_uri,
    start_parent_run,
)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> tuple[str, MlflowClient]:
    """One sqlite store for the module (creating its schema takes seconds)."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('tracking')}/mlruns.db"
    return uri, MlflowClient(uri)


@pytest.fixture
def experiment(store, request, tmp_path) -> str:
    """A fresh experiment per test (artifacts under tmp_path)."""
    return ensure_experiment(store[1], request.node.name, str(tmp_path / "artifacts"))


# --- tracking URIs --------------------------------------------------------------------------------


def test_tracking_uri_precedence_and_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    # nothing set: a sqlite file in the working directory, as an absolute path
    assert resolve_tracking_uri(None) == f"sqlite:///{tmp_path.resolve()}/mlruns.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert resolve_tracking_uri(None) == "http://127.0.0.1:5000"  # the environment
    assert resolve_tracking_uri("http://127.0.0.1:5001") == "http://127.0.0.1:5001"  # the file


@pytest.mark.parametrize("given,expected", [
    # relative local stores become absolute: trials run in other working directories
    ("sqlite:///mlruns.db", "sqlite:///{cwd}/mlruns.db"),
    ("sqlite:///sub/dir/x.db", "sqlite:///{cwd}/sub/dir/x.db"),
    ("mlruns", "{cwd}/mlruns"),
    ("runs/mlflow", "{cwd}/runs/mlflow"),
    # absolute stores and servers are left as they are
    ("sqlite:////var/lib/mlflow/x.db", "sqlite:////var/lib/mlflow/x.db"),
    ("/var/lib/mlruns", "/var/lib/mlruns"),
    ("file:///var/lib/mlruns", "file:///var/lib/mlruns"),
    ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
    ("https://mlflow.example.org/", "https://mlflow.example.org/"),
    ("databricks", "databricks"),
])
def test_tracking_uri_normalisation(given, expected, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_tracking_uri(given) == expected.format(cwd=tmp_path.resolve())


# --- parent runs ----------------------------------------------------------------------------------


def test_ensure_experiment_creates_once(store, tmp_path):
    client = store[1]
    first = ensure_experiment(client, "ensure-once", str(tmp_path / "a"))
    assert ensure_experiment(client, "ensure-once", str(tmp_path / "b")) == first
    assert client.get_experiment(first).artifact_location == (tmp_path / "a").resolve().as_uri()


def test_parent_run_is_found_again_on_resume(store, experiment):
    client = store[1]
    key_a, key_b = "/runs/sweeps/a-20260101-000000", "/home/o'neil/runs/b-20260101-000000"
    assert find_parent_run(client, experiment, key_a) is None
    a = start_parent_run(client, experiment, key_a, "a", {"sepcore.metric": "valid_sisdr"})
    b = start_parent_run(client, experiment, key_b, "b", {})
    run = client.get_run(a)
    assert run.data.tags[SWEEP_TAG] == key_a and run.data.tags[KIND_TAG] == "sweep"
    assert run.data.tags["sepcore.metric"] == "valid_sisdr"
    client.set_terminated(a, status="KILLED")

    assert find_parent_run(client, experiment, key_a) == a
    assert find_parent_run(client, experiment, key_b) == b  # a quote in the path
    assert start_parent_run(client, experiment, key_a, "a", {}, resume=True) == a
    assert client.get_run(a).info.status == "RUNNING"
    # resuming a sweep whose parent run is gone starts a new one; a new sweep always does
    c = start_parent_run(client, experiment, "/runs/sweeps/c", "c", {}, resume=True)
    assert c not in (a, b)
    d = start_parent_run(client, experiment, key_a, "a", {})
    assert d not in (a, b, c)
    assert len(client.search_runs([experiment], f"tags.`{KIND_TAG}` = 'sweep'")) == 4


# --- child runs -----------------------------------------------------------------------------------


def test_a_retried_trial_continues_its_child_run(store, experiment):
    uri, client = store
    parent = start_parent_run(client, experiment, "/runs/sweeps/retry", "retry", {})
    other_parent = start_parent_run(client, experiment, "/runs/sweeps/other", "other", {})

    def open_trial(trial_id: str, lr: float, under: str = parent) -> TrialRun:
        return TrialRun.open(uri, experiment, under, trial_id, run_name=f"train_{trial_id}",
                             params={"train.lr": lr, "model.N": 32}, tags={"k": "v"})

    first = open_trial("t0001", 0.001)
    assert first.created
    first.log_metrics({"valid_sisdr": 3.5, "epoch": 1, "note": "text", "flag": True}, step=1)
    first.finish("FAILED")  # the trial process died; Tune starts it again

    again = open_trial("t0001", 0.5)  # the retry: same trial id, same parent
    assert not again.created and again.run_id == first.run_id
    assert client.get_run(again.run_id).info.status == "RUNNING"
    again.log_metrics({"valid_sisdr": 4.0, "epoch": 2}, step=2)

    other = open_trial("t0002", 0.01)
    elsewhere = open_trial("t0001", 0.001, under=other_parent)  # same id in another sweep
    assert other.created and elsewhere.created
    assert len({first.run_id, other.run_id, elsewhere.run_id}) == 3

    children = child_runs(client, experiment, parent)
    assert sorted(c.data.tags[TRIAL_TAG] for c in children) == ["t0001", "t0002"]
    run = client.get_run(first.run_id)
    assert run.data.params["train.lr"] == "0.001"  # logged once, by the first attempt
    assert run.data.params["model.N"] == "32"
    assert run.data.tags[MLFLOW_PARENT_RUN_ID] == parent and run.data.tags[KIND_TAG] == "trial"
    assert run.data.tags["k"] == "v" and run.info.run_name == "train_t0001"
    history = client.get_metric_history(first.run_id, "valid_sisdr")
    assert sorted((m.step, m.value) for m in history) == [(1, 3.5), (2, 4.0)]
    assert set(run.data.metrics) == {"valid_sisdr", "epoch"}  # text and booleans not logged


def test_flatten_nested_config():
    assert flatten({"model": {"masker": {"X": 8}, "N": 256}, "seed": 1}) == {
        "model.masker.X": 8, "model.N": 256, "seed": 1}


# --- finding a sweep for `sweeps report` ----------------------------------------------------------


def test_find_sweep_run_by_name_or_id(store, experiment):
    uri, client = store
    old = start_parent_run(client, experiment, "/s/bands-1", "bands-20260101-000000", {})
    quoted = start_parent_run(client, experiment, "/s/q", "it's-a-sweep", {})
    child = TrialRun.open(uri, experiment, old, "t1", "train_t1", {}, {})

    assert find_sweep_run(client, "bands-20260101-000000").info.run_id == old
    assert find_sweep_run(client, old).info.run_id == old
    assert find_sweep_run(client, "it's-a-sweep").info.run_id == quoted
    # a run of the same name that is not a sweep's parent is not taken for one
    client.create_run(experiment, run_name="bands-20260101-000000")
    assert find_sweep_run(client, "bands-20260101-000000").info.run_id == old

    with pytest.raises(SweepError, match="no sweep run named 'bands-2099'") as err:
        find_sweep_run(client, "bands-2099")
    assert err.value.key == "sweep"
    with pytest.raises(SweepError, match=f"run {child.run_id} is not a sweep's parent run"):
        find_sweep_run(client, child.run_id)


def test_report_cli_names_a_missing_sweep(store, capsys):
    from sweeps.__main__ import main

    assert main(["report", "no-such-sweep", "--tracking-uri", store[0]]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: no sweep run named 'no-such-sweep' in the tracking store"


@pytest.mark.parametrize("uri, local", [
    ("sqlite:////tmp/x.db", True), ("file:///var/lib/mlruns", True), ("/var/lib/mlruns", True),
    ("http://127.0.0.1:5000", False), ("https://mlflow.example.org/", False),
    ("databricks", False),
])
def test_is_local_store(uri, local):
    assert is_local_store(uri) is local


def test_experiment_on_a_tracking_server_takes_the_server_artifact_root():
    """With a server, no file:// location of the driver's disk may be forced on the experiment."""

    class ServerClient:
        tracking_uri = "http://127.0.0.1:5000"
        created: list = []

        def get_experiment_by_name(self, name):
            return None

        def create_experiment(self, name, **kwargs):
            self.created.append((name, kwargs))
            return "7"

    client = ServerClient()
    assert ensure_experiment(client, "on-server") == "7"
    assert client.created == [("on-server", {})]


# --- outages: a trial's run buffers what the server did not take ---------------------------------

REFUSED = "API request to http://127.0.0.1:9/api/2.0/mlflow/runs/log-batch failed with exception " \
          "HTTPConnectionPool(host='127.0.0.1', port=9): Max retries exceeded (Connection refused)"


class Flaky:
    """An MlflowClient whose server can be down, or lose the answer to requests it processed."""

    CALLS = ("log_batch", "log_artifact", "set_terminated", "search_runs", "create_run",
             "update_run")

    def __init__(self, client: MlflowClient):
        self.client = client
        self.down = False
        self.lose_answers = 0  # the next N requests are processed, then answered by an error
        self.calls: list[str] = []

    def __getattr__(self, name):
        attr = getattr(self.client, name)
        if name not in self.CALLS:
            return attr

        def call(*args, **kwargs):
            from mlflow.exceptions import MlflowException

            self.calls.append(name)
            if self.down:
                raise MlflowException(REFUSED)
            out = attr(*args, **kwargs)
            if self.lose_answers:
                self.lose_answers -= 1
                raise MlflowException(REFUSED.replace("exception", "timeout exception"))
            return out

        return call


@pytest.fixture
def no_retry_pause(monkeypatch):
    import sweeps.tracking

    monkeypatch.setattr(sweeps.tracking, "RETRY_INTERVAL_S", 0.0)


def _steps(client, run_id, key):
    return [m.step for m in client.get_metric_history(run_id, key)]


def test_outage_buffers_in_order_and_sends_once(store, experiment, tmp_path, no_retry_pause):
    uri, client = store
    parent = start_parent_run(client, experiment, "/s/outage", "outage", {})
    opened = TrialRun.open(uri, experiment, parent, "t1", "train_t1", {"train.lr": 0.1}, {})
    flaky = Flaky(client)
    run = TrialRun(flaky, opened.run_id, created=True, spool_dir=tmp_path / "spool")
    run.log_metrics({"valid_sisdr": 1.0, "epoch": 1}, step=1)

    flaky.down = True
    run.log_metrics({"valid_sisdr": 2.0, "epoch": 2}, step=2)  # returns: nothing raised
    run.set_tags({"sepcore.note": "during the outage"})
    figure = tmp_path / "loss_curve.png"
    figure.write_bytes(b"png of epoch 2")
    run.log_artifact(figure)
    figure.unlink()  # the caller's temporary file is gone; the run kept a copy
    run.log_metrics({"valid_sisdr": 3.0, "epoch": 3}, step=3)
    assert run.pending == ["metrics valid_sisdr (steps 2), epoch (steps 2)",
                           "tags sepcore.note", "artifact loss_curve.png",
                           "metrics valid_sisdr (steps 3), epoch (steps 3)"]
    assert _steps(client, run.run_id, "valid_sisdr") == [1]

    flaky.down = False
    flaky.lose_answers = 1  # the first request after the outage is stored, its answer lost
    run.log_metrics({"valid_sisdr": 4.0, "epoch": 4}, step=4)  # retried at once on the next call
    assert run.pending
    run.log_metrics({"lr": 0.1}, step=4)
    assert run.pending == []
    run.finish("FINISHED")
    assert sorted(_steps(client, run.run_id, "valid_sisdr")) == [1, 2, 3, 4]  # each once
    assert [m.value for m in sorted(client.get_metric_history(run.run_id, "valid_sisdr"),
                                    key=lambda m: m.step)] == [1.0, 2.0, 3.0, 4.0]
    got = client.get_run(run.run_id)
    assert got.info.status == "FINISHED" and got.data.tags["sepcore.note"] == "during the outage"
    local = client.download_artifacts(run.run_id, "loss_curve.png", str(tmp_path))
    assert open(local, "rb").read() == b"png of epoch 2"


def test_refused_request_raises_at_once(store, experiment):
    from mlflow.exceptions import MlflowException

    uri, client = store
    parent = start_parent_run(client, experiment, "/s/refused", "refused", {})
    run = TrialRun.open(uri, experiment, parent, "t1", "train_t1", {"train.lr": 0.1}, {})
    with pytest.raises(MlflowException, match="Changing param values is not allowed"):
        run.log_params({"train.lr": 0.2})
    assert run.pending == []  # not kept to block what follows
    run.log_metrics({"epoch": 1}, step=1)
    assert _steps(client, run.run_id, "epoch") == [1]


def test_finish_spills_what_an_endless_outage_kept(store, experiment, tmp_path, caplog,
                                                  no_retry_pause):
    import json

    uri, client = store
    parent = start_parent_run(client, experiment, "/s/spill", "spill", {})
    opened = TrialRun.open(uri, experiment, parent, "t1", "train_t1", {}, {})
    flaky = Flaky(client)
    run = TrialRun(flaky, opened.run_id, created=True, spool_dir=tmp_path / "spool")
    flaky.down = True
    run.log_metrics({"valid_sisdr": 5.0}, step=7)
    figure = tmp_path / "encoder_filters.png"
    figure.write_bytes(b"filters")
    run.log_artifact(figure)
    with caplog.at_level("WARNING", logger="sweeps.tracking"):
        run.finish("FINISHED", wait_s=0.2)
    saved = json.loads((tmp_path / "spool" / "unsent.json").read_text())
    assert saved["run_id"] == run.run_id
    assert [c["kind"] for c in saved["calls"]] == ["metrics", "artifact", "terminate"]
    assert saved["calls"][0]["items"][0]["step"] == 7
    assert open(saved["calls"][1]["items"][0], "rb").read() == b"filters"  # the kept copy
    warning = [r.getMessage() for r in caplog.records if "did not take" in r.getMessage()]
    assert warning and "valid_sisdr (steps 7)" in warning[0] and "status FINISHED" in warning[0]
    assert str(tmp_path / "spool" / "unsent.json") in warning[0]
    assert client.get_run(run.run_id).info.status == "RUNNING"


def test_open_waits_for_an_unreachable_server(store, experiment, monkeypatch, no_retry_pause):
    import sweeps.tracking

    uri, client = store
    parent = start_parent_run(client, experiment, "/s/open", "open", {})
    flaky = Flaky(client)
    flaky.down = True
    monkeypatch.setattr(sweeps.tracking, "MlflowClient", lambda _uri: flaky)
    with pytest.raises(Exception, match="API request to"):
        TrialRun.open(uri, experiment, parent, "t1", "train_t1", {}, {}, wait_s=0.05)
    # the server comes back after 3 refused attempts; a create whose answer was lost is not
    # repeated (the next attempt finds the run)
    attempts = []

    def sleep(seconds):
        attempts.append(seconds)
        if len(attempts) == 3:
            flaky.down = False
            flaky.lose_answers = 1

    monkeypatch.setattr(sweeps.tracking.time, "sleep", sleep)
    run = TrialRun.open(uri, experiment, parent, "t1", "train_t1", {"a": 1}, {}, wait_s=60)
    assert len(child_runs(client, experiment, parent)) == 1
    assert client.get_run(run.run_id).data.params == {"a": "1"}


@pytest.mark.parametrize("exc, transient", [
    ("refused", True), ("timeout", True), ("http503", True), ("http404", False),
    ("rest_invalid", False), ("rest_unavailable", True), ("oserror", False),
])
def test_transient_errors(exc, transient):
    import requests
    from mlflow.exceptions import MlflowException, RestException

    from sweeps.tracking import is_transient

    def http(status):
        response = requests.Response()
        response.status_code = status
        return requests.exceptions.HTTPError(response=response)

    errors = {
        "refused": MlflowException(REFUSED),
        "timeout": requests.exceptions.ConnectTimeout("slow"),
        "http503": http(503), "http404": http(404),
        "rest_invalid": RestException({"error_code": "INVALID_PARAMETER_VALUE", "message": "x"}),
        "rest_unavailable": RestException({"error_code": "TEMPORARILY_UNAVAILABLE",
                                           "message": "x"}),
        "oserror": FileNotFoundError("loss_curve.png"),
    }
    assert is_transient(errors[exc]) is transient


def test_fail_fast_http_keeps_values_already_set():
    from sweeps.tracking import FAIL_FAST_HTTP, fail_fast_http

    environ = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "300"}
    fail_fast_http(environ)
    assert environ == {**FAIL_FAST_HTTP, "MLFLOW_HTTP_REQUEST_TIMEOUT": "300"}


# --- credentials never stored -------------------------------------------------------------------

SECRET = "s3cr3t-Pw-77"


def test_params_and_tags_are_redacted(store, experiment):
    uri, client = store
    parent = start_parent_run(client, experiment, "/s/redact", "redact", {})
    run = TrialRun.open(uri, experiment, parent, "t1", "train_t1", params={
        "data.root": f"https://h/musdb?token={SECRET}", "store.password": SECRET,
        "model.num_tokens": 8}, tags={"note": f"http://u:{SECRET}@h:5000"})
    run.set_tags({"sepcore.client_secret": SECRET, "other": f"s3://b/k?X-Amz-Signature={SECRET}"})
    got = client.get_run(run.run_id).data
    assert got.params == {"data.root": "https://h/musdb?token=***", "store.password": "***",
                          "model.num_tokens": "8"}
    assert got.tags["note"] == "http://***@h:5000"
    assert got.tags["sepcore.client_secret"] == "***"
    assert got.tags["other"] == "s3://b/k?X-Amz-Signature=***"
    assert SECRET not in repr(got)


def test_tracking_uri_credentials_move_to_the_environment(monkeypatch):
    from sweeps.tracking import CREDENTIAL_VARS, credentials

    for name in CREDENTIAL_VARS:  # recorded, so that the test restores them afterwards
        monkeypatch.setenv(name, "before")
        monkeypatch.delenv(name)
    assert credentials() is None
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://sepcore:{SECRET}@127.0.0.1:5000")
    assert resolve_tracking_uri(None) == "http://127.0.0.1:5000"
    assert credentials() == ("sepcore", SECRET)
    assert resolve_tracking_uri(f"https://bob:{SECRET}2@mlflow.example.org/") == \
        "https://mlflow.example.org/"
    assert credentials() == ("bob", SECRET + "2")


def test_runs_of_trials_tune_lost_are_closed_and_left_out(store, experiment):
    """A trial that started just before the driver died but never reached Tune's saved state
    cannot be continued by resume: finish_sweep closes its run (KILLED, tagged) and the sweep's
    trial list and report leave it out; a finished trial known to Tune is untouched."""
    from sweeps.report import collect_rows
    from sweeps.runner import _close_orphans
    from sweeps.tracking import ORPHAN_TAG

    uri, client = store
    parent = start_parent_run(client, experiment, "/runs/sweeps/orphans", "orphans", {})
    runs = {t: TrialRun.open(uri, experiment, parent, t, f"train_{t}", {"search.lr": i}, {})
            for i, t in enumerate(("kept", "lost"))}
    for run in runs.values():
        run.log_metrics({"best_valid_sisdr": 1.0}, step=1)
    client.set_terminated(runs["kept"].run_id, status="FINISHED")

    children = {r.data.tags[TRIAL_TAG]: r for r in child_runs(client, experiment, parent)}
    assert _close_orphans(client, children, {"kept"}) == [runs["lost"].run_id]
    lost = client.get_run(runs["lost"].run_id)
    assert lost.info.status == "KILLED" and lost.data.tags[ORPHAN_TAG] == "true"
    kept = client.get_run(runs["kept"].run_id)
    assert kept.info.status == "FINISHED" and ORPHAN_TAG not in kept.data.tags
    assert [r.data.tags[TRIAL_TAG] for r in child_runs(client, experiment, parent)] == ["kept"]
    assert len(child_runs(client, experiment, parent, orphans=True)) == 2
    rows, _ = collect_rows(client, experiment, parent, "valid_sisdr")
    assert sum(row["runs"] for row in rows) == 1
    # a second finish (resume of a resume) does not touch it again
    again = {r.data.tags[TRIAL_TAG]: r
             for r in child_runs(client, experiment, parent, orphans=True)}
    assert _close_orphans(client, again, {"kept"}) == []


def test_unsent_calls_travel_with_the_checkpoint_and_are_sent_once(store, experiment, tmp_path,
                                                                  monkeypatch, no_retry_pause):
    """An outage longer than a trial's closing wait: what it could not send goes into the
    checkpoint of its report (the shared storage), with a count in the reported metrics; a retry
    of the trial takes it first, the driver sends it after the sweep; sending twice stores each
    metric once."""
    import sweeps.trainable as trainable
    from sweeps.tracking import UNSENT_DIR, UNSENT_METRIC, replay_unsent
    from sweeps.trainable import TuneHook

    uri, client = store
    parent = start_parent_run(client, experiment, "/s/unsent", "unsent", {})
    opened = TrialRun.open(uri, experiment, parent, "t1", "train_t1", {}, {})
    flaky = Flaky(client)
    run = TrialRun(flaky, opened.run_id, created=True, spool_dir=tmp_path / "spool")
    kept = tmp_path / "checkpoint"
    reports = []

    def report(metrics, checkpoint=None):  # Tune uploads the folder: keep a copy of it
        reports.append(dict(metrics))
        shutil.copytree(checkpoint.path, kept, dirs_exist_ok=True)

    monkeypatch.setattr(trainable.tune, "report", report)
    out_dir = tmp_path / "train"
    out_dir.mkdir()
    hook = TuneHook(run, out_dir, "t1", last_epoch=3, finalize=lambda epoch: None)
    hook.on_epoch_end({"epoch": 1, "valid_sisdr": 1.0, "train_loss": 1.0, "valid_loss": 1.0})
    assert UNSENT_METRIC not in reports[-1] and not (kept / UNSENT_DIR).exists()
    flaky.down = True
    hook.on_epoch_end({"epoch": 2, "valid_sisdr": 2.0, "train_loss": 0.5, "valid_loss": 0.5})
    assert reports[-1][UNSENT_METRIC] == 2  # the epoch's metrics and its loss curve
    assert (kept / UNSENT_DIR / "unsent.json").exists()

    # a retry of the trial (another node, a new process) takes them first
    retry = TrialRun(client, opened.run_id, created=False, spool_dir=tmp_path / "spool2")
    assert retry.take_unsent(kept) == 2 and retry.pending == []
    assert _steps(client, opened.run_id, "valid_sisdr") == [1, 2]
    # the driver after the sweep sends the same again (fetched from the trial's latest
    # checkpoint because its last result counts unsent calls): nothing is stored twice
    from types import SimpleNamespace

    from ray import tune

    from sweeps.runner import _replay_unsent

    latest = tune.Checkpoint.from_directory(kept)
    results = [SimpleNamespace(metrics=reports[-1], checkpoint=latest),
               SimpleNamespace(metrics=reports[0], checkpoint=None)]
    assert _replay_unsent(client, results) == 2
    assert sorted(_steps(client, opened.run_id, "valid_sisdr")) == [1, 2]
    names = [a.path for a in client.list_artifacts(opened.run_id)]
    assert "loss_curve.png" in names
    # nothing unsent: replaying an empty folder sends nothing
    assert replay_unsent(client, tmp_path / "nowhere") == 0
