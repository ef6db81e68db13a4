"""Cluster mode: refuse, before any trial starts, a sweep that would lose data on a Ray cluster.

On a cluster the trials run on other machines, so nothing they write or read may be a path of
the driver's machine. A sweep runs in cluster mode when ``SEPCORE_CLUSTER=1`` is set (the nodes
of ``docker/compose.yaml`` and ``infra/k8s`` set it), when the Ray cluster has more than one
alive node, when the driver reaches it through Ray Client (``ray://``), or when it joined an
existing cluster (``--address`` or ``RAY_ADDRESS``, as inside ``ray job submit``; an autoscaler
may add nodes later) unless ``SEPCORE_CLUSTER=0`` says that cluster is this one machine. Then:

* the tracking URI must be a tracking server (``http(s)://…``), not ``sqlite:``/``file:``/a
  folder (every node would write its own copy);
* ``tune.storage_path`` and ``artifacts.uri`` must be remote (``s3://…``) or a folder every node
  sees (NFS): the driver writes a marker file there and a task pinned to each node reads it;
* ``base.data.root`` must be a folder on every node (checked by the same pinned tasks).

Nodes that cannot hold a trial (fewer CPUs/GPUs than ``tune.resources``, e.g. a head started
with ``--num-cpus 0``) are not probed; nodes an autoscaler adds later cannot be.

With any tracking server (cluster or not), a registered model's source must be remote: the server
refuses a local path as a model version source, so ``registry.register`` with a local
``artifacts.uri`` is refused before the trials too (:func:`check_registry_source`).
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.redact import redact
from sweeps.errors import SweepError
from sweeps.spec import Sweep
from sweeps.tracking import is_local_store

log = logging.getLogger(__name__)

CLUSTER_ENV = "SEPCORE_CLUSTER"
MARKER_PREFIX = ".sepcore-probe-"
PROBE_TIMEOUT_S = 120.0


@dataclass
class Node:
    node_id: str
    ip: str
    resources: dict[str, float] = field(default_factory=dict)

    def fits(self, cpu: float, gpu: float) -> bool:
        return self.resources.get("CPU", 0) >= cpu and self.resources.get("GPU", 0) >= gpu

    def __str__(self) -> str:
        return f"{self.ip} (node {self.node_id[:12]})"


@dataclass
class Check:
    """One path every trial node must see: a folder, or a marker file with ``text``."""

    key: str
    path: str
    marker: str | None = None  # file name inside ``path`` the driver wrote
    text: str | None = None


# a probe gets the nodes and the checks and returns, per node id, {check key: problem or None}
Probe = Callable[[list[Node], list[Check]], dict[str, dict[str, str | None]]]


def alive_nodes() -> list[Node]:
    import ray

    return [Node(n["NodeID"], n.get("NodeManagerAddress", "?"), dict(n.get("Resources", {})))
            for n in ray.nodes() if n.get("Alive")]


def _ray_client() -> bool:
    import ray

    return bool(ray.util.client.ray.is_connected())


def cluster_reason(nodes: list[Node], address: str | None, client: bool = False,
                   environ: dict[str, str] | os._Environ = os.environ) -> str | None:
    """Why this sweep runs in cluster mode, in words; None when it does not."""
    flag = environ.get(CLUSTER_ENV, "").strip().lower()
    if flag in ("1", "true", "yes"):
        return f"{CLUSTER_ENV}={environ[CLUSTER_ENV]}"
    if len(nodes) > 1:
        return f"the Ray cluster has {len(nodes)} nodes"
    if client:
        return "the driver reaches the cluster through Ray Client"
    address = address or environ.get("RAY_ADDRESS")
    if address and flag not in ("0", "false", "no"):
        return (f"joined the Ray cluster at {redact(address)}; set {CLUSTER_ENV}=0 if that "
                f"cluster is this one machine")
    return None


def check_cluster(sweep: Sweep, tracking_uri: str, base: dict[str, Any],
                  address: str | None = None, nodes: list[Node] | None = None,
                  client: bool | None = None, probe: Probe | None = None,
                  environ: dict[str, str] | os._Environ = os.environ) -> str | None:
    """Raise :class:`SweepError` (one line naming the key and the file) when the sweep would
    lose data in cluster mode; returns the reason for cluster mode (None: not a cluster).

    ``base`` is the sweep's base config with absolute paths (what the trials get); ``nodes``,
    ``client`` and ``probe`` default to the connected Ray cluster's.
    """
    nodes = alive_nodes() if nodes is None else nodes
    client = _ray_client() if client is None else client
    reason = cluster_reason(nodes, address, client, environ)
    if reason is None:
        return None
    log.info("cluster mode: %s", reason)
    file = sweep.file
    if is_local_store(tracking_uri):
        key = ("tracking.uri" if sweep.tracking.uri else
               "MLFLOW_TRACKING_URI" if environ.get("MLFLOW_TRACKING_URI") else "tracking.uri")
        raise SweepError(f"'{key}' = {redact(tracking_uri)!r} is a store on one machine's disk, "
                         f"and this sweep runs in cluster mode ({reason}): every node would "
                         f"write its own copy; use a tracking server (http(s)://…)",
                         key=key, file=file)

    from services.store import DEFAULT_LOCAL_ROOT

    checks: list[Check] = []
    shared = [("tune.storage_path", sweep.tune.storage_path),
              ("artifacts.uri", sweep.artifacts.uri or str(DEFAULT_LOCAL_ROOT))]
    for key, value in shared:
        path = _local_path(value)
        if path is not None:
            checks.append(_marker(key, path, file))
    root = (base.get("data") or {}).get("root")
    if root and _local_path(str(root)) is not None:
        checks.append(Check("base.data.root", str(_local_path(str(root)))))
    if not checks:
        return reason

    fitting = [n for n in nodes if n.fits(sweep.tune.resources.cpu, sweep.tune.resources.gpu)]
    try:
        found = (probe or ray_probe)(fitting, checks) if fitting else {}
    finally:
        for check in checks:
            if check.marker:
                (Path(check.path) / check.marker).unlink(missing_ok=True)
    for check in checks:
        for node in fitting:
            problem = found.get(node.node_id, {}).get(check.key, "was not probed")
            if problem:
                raise SweepError(_message(check, node, problem, reason), key=check.key,
                                 file=file)
    return reason


def check_registry_source(sweep: Sweep, tracking_uri: str) -> None:
    """A tracking server registers only remote sources (``s3://…``), never a local path."""
    if is_local_store(tracking_uri) or not sweep.registry.register:
        return
    value = sweep.artifacts.uri
    if value is None or _local_path(value) is not None:
        shown = value if value is not None else "null (a local folder)"
        raise SweepError(f"'artifacts.uri' = {shown!r} is local, but the tracking server "
                         f"{redact(tracking_uri)} only registers models stored remotely; use "
                         f"s3://bucket/prefix, or registry.register=false",
                         key="artifacts.uri", file=sweep.file)


def _local_path(value: str) -> Path | None:
    """The folder of a local path or ``file://`` URI; None for remote URIs (``s3://``…)."""
    if value.startswith("file://"):
        return Path(value.removeprefix("file://")).resolve()
    if "://" in value:
        return None
    return Path(value).resolve()


def _marker(key: str, path: Path, file: str) -> Check:
    try:
        path.mkdir(parents=True, exist_ok=True)
        name = f"{MARKER_PREFIX}{secrets.token_hex(8)}"
        text = secrets.token_hex(16)
        (path / name).write_text(text)
    except OSError as exc:
        raise SweepError(f"'{key}' = {str(path)!r}: the driver cannot write there "
                         f"({exc.strerror or exc})", key=key, file=file) from None
    return Check(key, str(path), name, text)


def _message(check: Check, node: Node, problem: str, reason: str) -> str:
    if check.marker:
        what = ("is a local folder that node {node} does not share with the driver ({problem}), "
                "and this sweep runs in cluster mode ({reason}); use s3://bucket/prefix or a "
                "folder mounted on every node")
    else:
        what = ("is not a folder on node {node} ({problem}), and this sweep runs in cluster "
                "mode ({reason}); mount the data at the same path on every node")
    return f"'{check.key}' = {check.path!r} " + what.format(node=node, problem=problem,
                                                            reason=reason)


def look(checks: list[Check]) -> dict[str, str | None]:
    """On a node: each check's problem (None when the folder or marker is there)."""
    out: dict[str, str | None] = {}
    for check in checks:
        folder = Path(check.path)
        try:
            if not folder.is_dir():
                out[check.key] = "no such folder"
            elif check.marker and (folder / check.marker).read_text() != check.text:
                out[check.key] = "a different marker file"
            else:
                out[check.key] = None
        except FileNotFoundError:
            out[check.key] = "the driver's marker file is not there"
        except OSError as exc:
            out[check.key] = exc.strerror or str(exc)
    return out


def ray_probe(nodes: list[Node], checks: list[Check]) -> dict[str, dict[str, str | None]]:
    """Run :func:`look` in a zero-CPU task pinned to each node."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    remote = ray.remote(num_cpus=0, max_retries=0)(look)
    refs = {n.node_id: remote.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
        n.node_id, soft=False)).remote(checks) for n in nodes}
    try:
        values = ray.get(list(refs.values()), timeout=PROBE_TIMEOUT_S)
    except ray.exceptions.GetTimeoutError:
        raise SweepError(f"the path checks on the cluster's nodes did not answer within "
                         f"{PROBE_TIMEOUT_S:.0f} s", key="cluster") from None
    return dict(zip(refs, values, strict=True))
