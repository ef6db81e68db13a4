"""Cluster-mode guards: when a sweep runs on a cluster, local stores and paths the trials' nodes
cannot see are refused before any trial starts, in one line naming the key and the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from sweeps.cluster import (
    MARKER_PREFIX,
    Check,
    Node,
    check_cluster,
    check_registry_source,
    cluster_reason,
    look,
)
from sweeps.errors import SweepError
from sweeps.spec import load_sweep

SERVER = "http://127.0.0.1:5000"
A = Node("a" * 56, "10.0.0.1", {"CPU": 4.0})
B = Node("b" * 56, "10.0.0.2", {"CPU": 4.0, "GPU": 1.0})
HEAD = Node("c" * 56, "10.0.0.3", {"CPU": 0.0})  # head started with --num-cpus 0: no trials


@pytest.mark.parametrize("nodes, address, client, environ, expected", [
    ([A], None, False, {}, None),
    ([A], None, False, {"SEPCORE_CLUSTER": "1"}, "SEPCORE_CLUSTER=1"),
    ([A, B], None, False, {}, "the Ray cluster has 2 nodes"),
    ([A, B], None, False, {"SEPCORE_CLUSTER": "0"}, "the Ray cluster has 2 nodes"),
    ([A], None, True, {}, "the driver reaches the cluster through Ray Client"),
    ([A], "ray://head:10001", False, {}, "joined the Ray cluster at ray://head:10001"),
    ([A], None, False, {"RAY_ADDRESS": "127.0.0.1:6379"}, "joined the Ray cluster at 127."),
    ([A], None, False, {"RAY_ADDRESS": "127.0.0.1:6379", "SEPCORE_CLUSTER": "0"}, None),
])
def test_cluster_reason(nodes, address, client, environ, expected):
    reason = cluster_reason(nodes, address, client, environ)
    if expected is None:
        assert reason is None
    else:
        assert reason.startswith(expected)


class FakeProbe:
    """Nodes see the driver's files only under the folders listed for them (a shared mount)."""

    def __init__(self, visible: dict[str, list[Path]]):
        self.visible = visible
        self.probed: list[str] = []

    def __call__(self, nodes, checks):
        self.probed = [n.node_id for n in nodes]
        out = {}
        for node in nodes:
            roots = self.visible.get(node.node_id, [])
            seen = [c for c in checks if any(Path(c.path).is_relative_to(r) for r in roots)]
            out[node.node_id] = {**{c.key: "no such folder" for c in checks}, **look(seen)}
        return out


@pytest.fixture
def sweep_at(tiny_sweep, tmp_path):
    def make(*overrides: str):
        return load_sweep(tiny_sweep(), overrides=list(overrides))
    return make


CLUSTER = {"SEPCORE_CLUSTER": "1"}


def _base(sweep):
    return {"data": {"root": str(sweep.base["data"]["root"])}}


def test_a_local_tracking_store_is_refused(sweep_at, tmp_path):
    sweep = sweep_at()
    uri = f"sqlite:///{tmp_path}/mlruns.db"
    with pytest.raises(SweepError) as err:
        check_cluster(sweep, uri, _base(sweep), nodes=[A, B], client=False,
                      probe=FakeProbe({}), environ={"MLFLOW_TRACKING_URI": uri})
    assert err.value.key == "MLFLOW_TRACKING_URI"
    message = str(err.value)
    assert message.startswith(f"{sweep.file}: '") and "\n" not in message
    assert "the Ray cluster has 2 nodes" in message and "use a tracking server" in message
    sweep = sweep_at("tracking.uri=file:///srv/mlruns")
    with pytest.raises(SweepError, match="'tracking.uri' = 'file:///srv/mlruns'") as err:
        check_cluster(sweep, "file:///srv/mlruns", _base(sweep), nodes=[A], client=False,
                      probe=FakeProbe({}), environ=CLUSTER)
    assert err.value.key == "tracking.uri"


def test_remote_storage_and_shared_folders_pass(sweep_at, tmp_path, synth_root):
    sweep = sweep_at("tune.storage_path=s3://bucket/ray", "artifacts.uri=s3://bucket/ckpt")
    probe = FakeProbe({A.node_id: [synth_root], B.node_id: [synth_root]})
    assert check_cluster(sweep, SERVER, _base(sweep), nodes=[A, B, HEAD], client=False,
                         probe=probe, environ={}) == "the Ray cluster has 3 nodes"
    assert probe.probed == [A.node_id, B.node_id]  # the head takes no trial: not probed
    # local folders are fine when every node mounts them
    sweep = sweep_at()
    probe = FakeProbe({A.node_id: [tmp_path.parent, synth_root],
                       B.node_id: [tmp_path.parent, synth_root]})
    check_cluster(sweep, SERVER, _base(sweep), nodes=[A, B], client=False, probe=probe,
                  environ={})
    assert not list(tmp_path.rglob(f"{MARKER_PREFIX}*"))  # the markers are removed


def test_a_folder_one_node_does_not_share_is_refused(sweep_at, tmp_path, synth_root):
    sweep = sweep_at("artifacts.uri=s3://bucket/ckpt")
    probe = FakeProbe({A.node_id: [tmp_path, synth_root], B.node_id: [synth_root]})
    with pytest.raises(SweepError) as err:
        check_cluster(sweep, SERVER, _base(sweep), nodes=[A, B], client=False, probe=probe,
                      environ={})
    assert err.value.key == "tune.storage_path"
    message = str(err.value)
    assert f"'tune.storage_path' = '{tmp_path / 'ray'}'" in message
    assert "node 10.0.0.2 (node bbbbbbbbbbbb)" in message and "s3://bucket/prefix" in message
    assert not list(tmp_path.rglob(f"{MARKER_PREFIX}*"))
    # the artifact store, same rule
    sweep = sweep_at("tune.storage_path=s3://bucket/ray")
    with pytest.raises(SweepError, match="'artifacts.uri' = ") as err:
        check_cluster(sweep, SERVER, _base(sweep), nodes=[A, B], client=False, probe=probe,
                      environ={})
    assert err.value.key == "artifacts.uri"


def test_a_data_root_missing_on_a_node_is_refused(sweep_at, synth_root):
    sweep = sweep_at("tune.storage_path=s3://bucket/ray", "artifacts.uri=s3://bucket/ckpt")
    probe = FakeProbe({A.node_id: [synth_root]})
    with pytest.raises(SweepError) as err:
        check_cluster(sweep, SERVER, _base(sweep), nodes=[A, B], client=False, probe=probe,
                      environ={})
    assert err.value.key == "base.data.root"
    assert f"'base.data.root' = '{synth_root}' is not a folder on node 10.0.0.2" in str(err.value)


def test_not_a_cluster_checks_nothing(sweep_at, tmp_path):
    sweep = sweep_at()

    def probe(nodes, checks):
        raise AssertionError("probed outside cluster mode")

    assert check_cluster(sweep, f"sqlite:///{tmp_path}/x.db", _base(sweep), nodes=[A],
                         client=False, probe=probe, environ={}) is None


def test_look_reports_each_problem(tmp_path):
    (tmp_path / "m").write_text("right")
    (tmp_path / "wrong").write_text("other")
    found = look([Check("ok", str(tmp_path), "m", "right"), Check("folder", str(tmp_path)),
                  Check("missing", str(tmp_path / "nope")),
                  Check("nomarker", str(tmp_path), "absent", "x"),
                  Check("changed", str(tmp_path), "wrong", "right")])
    assert found == {"ok": None, "folder": None, "missing": "no such folder",
                     "nomarker": "the driver's marker file is not there",
                     "changed": "a different marker file"}


def test_registry_needs_a_remote_source_with_a_server(sweep_at):
    with pytest.raises(SweepError, match="only registers models stored remotely") as err:
        check_registry_source(sweep_at(), SERVER)
    assert err.value.key == "artifacts.uri"
    with pytest.raises(SweepError, match="'artifacts.uri' = 'null"):
        check_registry_source(sweep_at("artifacts.uri=null"), SERVER)
    check_registry_source(sweep_at("artifacts.uri=s3://b/p"), SERVER)
    check_registry_source(sweep_at("registry.register=false"), SERVER)
    check_registry_source(sweep_at(), "sqlite:////tmp/x.db")


# --- on a real (one-node) Ray ----------------------------------------------------------------


@pytest.mark.slow
def test_guards_on_local_ray(sweep_at, local_ray, tmp_path, monkeypatch, capsys):
    """The probes run as tasks pinned to the node; `sweeps run` refuses in one line (exit 2)
    before any MLflow run or trial exists."""
    from mlflow import MlflowClient

    from sweeps.__main__ import main
    from sweeps.cluster import alive_nodes

    sweep = sweep_at("artifacts.uri=s3://bucket/ckpt")
    nodes = alive_nodes()
    assert len(nodes) == 1
    reason = check_cluster(sweep, SERVER, _base(sweep), environ=CLUSTER)
    assert reason == "SEPCORE_CLUSTER=1"
    with pytest.raises(SweepError, match=f"is not a folder on node {nodes[0].ip}"):
        check_cluster(sweep, SERVER, {"data": {"root": str(tmp_path / "absent")}},
                      environ=CLUSTER)

    monkeypatch.setenv("SEPCORE_CLUSTER", "1")
    file = sweep_at().file
    assert main(["run", file]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {file}: 'MLFLOW_TRACKING_URI' = 'sqlite:///")
    assert "\n" not in err and "(SEPCORE_CLUSTER=1)" in err
    assert MlflowClient().get_experiment_by_name("tiny") is None  # nothing was started
