"""``make stack``: the platform as processes on one machine (``python -m services stack …``).

``up`` starts, each in its own process group, recorded in the state folder (``.stack/``):

* ``postgres``: PostgreSQL on 127.0.0.1 with its own data folder, MLflow's backend store
  (database ``mlflow``) and user store (``mlflow_auth``); run as the ``postgres`` user under root.
* ``s3``: moto's S3 server (standing in for S3/MinIO) with the bucket ``sepcore``.
* ``mlflow``: ``mlflow server --app-name basic-auth`` on PostgreSQL, artifacts proxied to
  ``s3://sepcore/mlartifacts`` (``--serve-artifacts``); credentials reach it as environment
  variables and a private auth config file, never as arguments.
* ``ray-head``: ``ray start --head`` with token authentication and no CPUs (trials go to workers).
* ``worker-1`` … : ``ray start`` joined to the head, each in its own network namespace (a veth
  pair into the stack's bridge), mount namespace (a private tmpfs ``/tmp`` as working directory)
  and host name, so it behaves like another host (:mod:`services.netns`). Where namespaces cannot
  be used (not root, no ``ip netns``/``unshare``, or ``--no-namespaces``) workers are plain
  processes, each on its own loopback address (``127.213.0.2`` …).

The servers the workers reach listen on the bridge address (``10.213.N.1``) or, without
namespaces, on ``127.213.0.1`` (Ray binds some node-internal ports on every interface; token
authentication guards them). Secrets are generated once, kept in files of mode 0600 and never
printed: ``stack.env`` holds what a client needs (``source`` it).
``up`` is idempotent (a healthy stack is left alone; missing parts are restarted with the same
ports and secrets); ``down`` stops exactly the process groups ``up`` recorded (and what is left
in the worker namespaces, or of the Ray temp folders it chose), then deletes the namespaces and
the bridge; secrets and PostgreSQL's data stay for the next ``up`` unless ``--purge``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import json
import logging
import os
import pwd
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sepcore.errors import SepcoreError
from services import netns
from services.processes import (
    free_port,
    group_alive,
    kill,
    pids_mentioning,
    port_in_use,
    spawn,
    stop_group,
    wait_gone,
)

log = logging.getLogger(__name__)

DEFAULT_DIR = ".stack"
BUCKET = "sepcore"
MLFLOW_USER = "admin"
REGION = "us-east-1"
OBJECT_STORE_BYTES = 300 * 1024**2  # per Ray node (Ray's minimum is 75 MB)
BIN = Path(sys.executable).parent
REPO_ROOT = Path(__file__).resolve().parents[1]  # the checkout every node runs (shared storage)
COMPONENTS = ("postgres", "s3", "mlflow", "ray-head")  # then worker-1 … worker-N
# environment variables of the launching shell that must not reach the stack's processes
_NOT_INHERITED = ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE",
                  "MLFLOW_RUN_ID", "MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME",
                  "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")


class StackError(SepcoreError):
    """The stack cannot be brought up/down as asked; ``exit_code`` 2 for bad input or missing
    prerequisites, 1 for a component that failed."""

    def __init__(self, message: str, exit_code: int = 1):
        self.exit_code = exit_code
        super().__init__(message)


# --- files of the state folder ---------------------------------------------------------------


@dataclass(frozen=True)
class Paths:
    root: Path

    @property
    def state(self) -> Path:
        return self.root / "stack.json"

    @property
    def secrets(self) -> Path:
        return self.root / "secrets.json"

    @property
    def env(self) -> Path:
        return self.root / "stack.env"

    @property
    def ray_token(self) -> Path:
        return self.root / "ray_auth_token"

    @property
    def auth_ini(self) -> Path:
        return self.root / "mlflow_auth.ini"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def pg_data(self) -> Path:
        return self.root / "postgres" / "data"

    @property
    def pg_run(self) -> Path:
        return self.root / "postgres" / "run"


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` with mode 0600 (set before any byte is written), atomically."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)


def load_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise StackError(f"{path}: unreadable ({exc}); remove it or run "
                         f"`python -m services stack down --purge`", exit_code=2) from exc


def ensure_secrets(paths: Paths) -> dict[str, str]:
    """The stack's secrets, generated on the first ``up`` and kept (mode 0600) afterwards."""
    found = load_json(paths.secrets)
    if found is not None:
        return found
    if paths.pg_data.exists():
        raise StackError(f"{paths.secrets} is missing but {paths.pg_data} exists (its passwords "
                         f"are lost): run `python -m services stack down --purge`", exit_code=2)
    paths.root.mkdir(mode=0o700, parents=True, exist_ok=True)
    made = {"postgres_password": secrets.token_urlsafe(24),
            "mlflow_password": secrets.token_urlsafe(24),
            "flask_secret_key": secrets.token_hex(32),
            "ray_token": secrets.token_hex(32),
            "aws_access_key_id": "SEP" + secrets.token_hex(8).upper(),
            "aws_secret_access_key": secrets.token_urlsafe(30)}
    write_private(paths.secrets, json.dumps(made, indent=2))
    return made


def redact(text: str, secret_values) -> str:
    """``text`` with every secret value replaced by ``***``."""
    for value in secret_values:
        if value:
            text = text.replace(value, "***")
    return text


def read_env_file(path: Path) -> dict[str, str]:
    """The variables of a ``stack.env`` (``export KEY=VALUE`` lines, shell-quoted)."""
    env = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        env[key] = shlex.split(value)[0] if value else ""
    return env


def _http(url: str, headers: dict[str, str] | None = None, timeout: float = 15.0) -> int:
    """HTTP status of a GET (0 when nothing answers)."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code
    except (OSError, urllib.error.URLError):
        return 0


def _http_json(url: str, headers: dict[str, str], timeout: float = 10.0) -> Any:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())
    except (OSError, ValueError, urllib.error.URLError):
        return None


def _wait(check, timeout: float, what: str, record: dict[str, Any] | None = None,
          hide=()) -> None:
    """Poll ``check()`` (-> (ok, detail)) until ok; fail with the log's tail (``hide``'s values
    redacted) when the process ends or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    detail = ""
    while time.monotonic() < deadline:
        ok, detail = check()
        if ok:
            return
        if record is not None and not group_alive(record):
            break
        time.sleep(0.5)
    tail = ""
    if record is not None:
        with contextlib.suppress(OSError):
            tail = "; last lines of " + record["log"] + ":\n" + "\n".join(
                Path(record["log"]).read_text(errors="replace").splitlines()[-15:])
    raise StackError(redact(f"{what} did not come up within {timeout:.0f} s ({detail}){tail}",
                            hide))


# --- the stack ------------------------------------------------------------------------------


def _pg_binary(name: str) -> str:
    """A PostgreSQL server binary: Debian's /usr/lib/postgresql/<newest>/bin, else PATH."""
    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(p) for p in path.parts[-3].split(".") if p.isdigit())

    found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), key=version)
    if found:
        return str(found[-1])
    on_path = shutil.which(name)
    if on_path:
        return on_path
    raise StackError(f"PostgreSQL's `{name}` not found (no /usr/lib/postgresql/*/bin/{name}, "
                     f"none on PATH): run `make postgresql` or `apt-get install postgresql`",
                     exit_code=2)


def _loopback(host: int) -> str:
    """A loopback address of the stack without namespaces: ``127.213.0.<host>`` (Ray takes
    127.0.0.1 itself for "this machine only" and then advertises the host's network address)."""
    return f"127.213.0.{host}"


def _node_resource(worker: str) -> str:
    """The custom resource (one unit) that names a worker node, e.g. ``sepcore-worker-1``; a
    task can be pinned to a node with it."""
    return f"sepcore-{worker}"


def _kind(name: str) -> str:
    """The kind of component ``name`` (``worker-2`` -> ``worker``, ``ray-head`` -> ``head``)."""
    return {"ray-head": "head"}.get(name, name.split("-")[0])


class Stack:
    """One stack: its state folder, layout (addresses, ports), secrets and recorded processes."""

    def __init__(self, root: str | Path = DEFAULT_DIR):
        self.paths = Paths(Path(root).resolve())
        self.state: dict[str, Any] = load_json(self.paths.state) or {}
        self._secrets: dict[str, str] | None = None
        self.started: list[str] = []  # what the last `up` (re)started

    # -- layout ----------------------------------------------------------------------------

    @property
    def secrets(self) -> dict[str, str]:
        if self._secrets is None:
            self._secrets = ensure_secrets(self.paths)
        return self._secrets

    @property
    def host(self) -> str:
        return self.state["host"]

    @property
    def ports(self) -> dict[str, int]:
        return self.state["ports"]

    @property
    def components(self) -> dict[str, dict[str, Any]]:
        return self.state.setdefault("components", {})

    @property
    def workers(self) -> list[dict[str, Any]]:
        return self.state["workers"]

    def names(self) -> list[str]:
        return [*COMPONENTS, *(w["name"] for w in self.state.get("workers", []))]

    def urls(self) -> dict[str, str]:
        return {"mlflow": f"http://{self.host}:{self.ports['mlflow']}",
                "s3": f"http://{self.host}:{self.ports['s3']}",
                "dashboard": f"http://{self.host}:{self.ports['dashboard']}",
                "gcs": f"{self.host}:{self.ports['gcs']}"}

    def save(self) -> None:
        self.paths.root.mkdir(parents=True, exist_ok=True)
        write_private(self.paths.state, json.dumps(self.state, indent=2, sort_keys=True))

    def layout(self, workers: int, worker_cpus: int, namespaces: bool) -> None:
        """Choose mode, addresses, ports and folders for a stack with nothing running."""
        previous = self.state
        for worker in previous.get("workers", []):  # left over from a stack that died
            if worker.get("netns"):
                netns.delete_node(worker["netns"], worker["host_if"])
        if previous.get("bridge"):
            netns.delete_bridge(previous["bridge"])
        reason = "--no-namespaces" if not namespaces else netns.unavailable()
        self.state = {"version": 1, "components": {}, "worker_cpus": worker_cpus,
                      "ray_temp": previous.get("ray_temp")
                      or f"/tmp/sepcore-stack-{secrets.token_hex(4)}"}
        if reason is None:
            index = netns.pick_subnet(lambda n: f"sep{n}br")
            self.state.update(mode="namespaces", subnet=index, bridge=f"sep{index}br",
                              host=netns.address(index, 1))
            self.state["workers"] = [
                {"name": f"worker-{i}", "netns": f"sep{index}w{i}", "host_if": f"sep{index}h{i}",
                 "node_if": f"sep{index}n{i}", "ip": netns.address(index, 1 + i),
                 "hostname": f"sepcore-worker-{i}"} for i in range(1, workers + 1)]
            netns.create_bridge(self.state["bridge"], self.host)
        else:
            log.warning("worker namespaces unavailable (%s): the worker nodes run as plain "
                        "processes on loopback addresses", reason)
            self.state.update(mode="loopback", host=_loopback(1))
            self.state["workers"] = [
                {"name": f"worker-{i}", "ip": _loopback(1 + i), "hostname": socket.gethostname(),
                 "temp_dir": f"{self.state['ray_temp']}-w{i}"} for i in range(1, workers + 1)]
        self.state["ports"] = {"postgres": free_port("127.0.0.1"),
                               **{name: free_port(self.host)
                                  for name in ("s3", "mlflow", "gcs", "dashboard", "client")}}
        self.save()

    # -- environments ----------------------------------------------------------------------

    def _base_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _NOT_INHERITED}
        env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
        return env

    def s3_env(self) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": self.secrets["aws_access_key_id"],
                "AWS_SECRET_ACCESS_KEY": self.secrets["aws_secret_access_key"],
                "AWS_DEFAULT_REGION": REGION, "AWS_ENDPOINT_URL": self.urls()["s3"],
                "MLFLOW_S3_ENDPOINT_URL": self.urls()["s3"]}

    def client_env(self) -> dict[str, str]:
        """What a client of the stack needs (written to ``stack.env``)."""
        return {"MLFLOW_TRACKING_URI": self.urls()["mlflow"],
                "MLFLOW_TRACKING_USERNAME": MLFLOW_USER,
                "MLFLOW_TRACKING_PASSWORD": self.secrets["mlflow_password"],
                "RAY_ADDRESS": self.urls()["dashboard"],
                "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(self.paths.ray_token),
                **self.s3_env()}

    def node_env(self) -> dict[str, str]:
        """Environment of every Ray node: token auth, and the credentials trials and the job's
        driver use (the nodes hold them, as a cluster's nodes would; jobs do not carry them)."""
        env = {**self._base_env(), **self.client_env(), "SEPCORE_CLUSTER": "1",
               "RAY_USAGE_STATS_ENABLED": "0"}
        env.pop("RAY_ADDRESS")
        return env

    def write_client_files(self) -> None:
        write_private(self.paths.ray_token, self.secrets["ray_token"])
        lines = ["# The stack's addresses and credentials (python -m services stack up).",
                 "# Keep private; load it with:  source " + shlex.quote(str(self.paths.env))]
        lines += [f"export {k}={shlex.quote(v)}" for k, v in self.client_env().items()]
        write_private(self.paths.env, "\n".join(lines) + "\n")

    def submit_line(self, sweep: str = "sweeps/bands.yaml", profile: str = "smoke",
                    data_root: str = "$PWD/data/synth-demo") -> str:
        """The ``ray job submit`` line for a sweep on this stack (after ``source stack.env``)."""
        return (f"ray job submit --working-dir . -- python -m sweeps run {sweep} --profile "
                f"{profile} base.data.root={data_root} tune.storage_path=s3://{BUCKET}/ray "
                f"artifacts.uri=s3://{BUCKET}/checkpoints")

    # -- health ----------------------------------------------------------------------------

    def _pg_connect(self, superuser: bool = False, dbname: str = "postgres", timeout: int = 3):
        import psycopg2

        if superuser:  # the local socket (trust; the folder is private to the server's user)
            return psycopg2.connect(host=str(self.paths.pg_run), port=self.ports["postgres"],
                                    user="postgres", dbname=dbname, connect_timeout=timeout)
        return psycopg2.connect(host="127.0.0.1", port=self.ports["postgres"], user="mlflow",
                                password=self.secrets["postgres_password"], dbname="mlflow",
                                connect_timeout=timeout)

    def health(self, name: str) -> tuple[bool, str]:
        """Whether component ``name`` answers (and how), without changing anything."""
        record = self.components.get(name)
        if record is None:
            return False, "not started"
        if not group_alive(record):
            return False, "not running"
        try:
            return getattr(self, "_health_" + _kind(name))(name)
        except Exception as exc:  # a health probe reports, it never raises
            return False, redact(f"{type(exc).__name__}: {exc}", self.secrets.values())

    def _health_postgres(self, name: str) -> tuple[bool, str]:
        import psycopg2

        try:
            with contextlib.closing(self._pg_connect()) as conn, conn.cursor() as cur:
                cur.execute("SELECT 1")
        except psycopg2.OperationalError as exc:
            return False, str(exc).strip().splitlines()[0]
        return True, f"postgresql://127.0.0.1:{self.ports['postgres']}/mlflow"

    def _health_s3(self, name: str) -> tuple[bool, str]:
        import boto3
        import botocore.exceptions

        client = boto3.client("s3", endpoint_url=self.urls()["s3"], region_name=REGION,
                              aws_access_key_id=self.secrets["aws_access_key_id"],
                              aws_secret_access_key=self.secrets["aws_secret_access_key"])
        try:
            client.head_bucket(Bucket=BUCKET)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            return False, str(exc)
        return True, f"{self.urls()['s3']} (bucket {BUCKET})"

    def _health_mlflow(self, name: str) -> tuple[bool, str]:
        url = self.urls()["mlflow"]
        if _http(f"{url}/health") != 200:
            return False, f"{url}/health does not answer 200"
        auth = base64.b64encode(f"{MLFLOW_USER}:{self.secrets['mlflow_password']}".encode())
        code = _http(f"{url}/api/2.0/mlflow/experiments/search?max_results=1",
                     {"Authorization": "Basic " + auth.decode()})
        if code != 200:
            return False, f"an authenticated request got HTTP {code}"
        return True, f"{url} (basic auth)"

    def _ray_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.secrets['ray_token']}"}

    def _health_head(self, name: str) -> tuple[bool, str]:
        url = self.urls()["dashboard"]
        code = _http(f"{url}/api/jobs/", self._ray_headers())
        if code != 200:
            return False, f"the Jobs API answered HTTP {code}"
        return True, f"{url} (dashboard, Jobs API; token auth), GCS {self.urls()['gcs']}"

    def alive_nodes(self) -> list[dict[str, Any]]:
        """The cluster's live nodes as the head sees them (state API)."""
        data = _http_json(f"{self.urls()['dashboard']}/api/v0/nodes?limit=100&detail=true",
                          self._ray_headers())
        rows = (((data or {}).get("data") or {}).get("result") or {}).get("result") or []
        return [row for row in rows if row.get("state") == "ALIVE"]

    def _health_worker(self, name: str) -> tuple[bool, str]:
        worker = next(w for w in self.workers if w["name"] == name)
        resource = _node_resource(name)
        mine = [n for n in self.alive_nodes() if resource in (n.get("resources_total") or {})]
        if not mine:
            return False, "not a live node of the cluster"
        where = f"netns {worker['netns']}" if "netns" in worker else "loopback"
        return True, f"{worker['ip']} ({where}, {self.state['worker_cpus']} CPU)"

    # -- starting --------------------------------------------------------------------------

    def _wait(self, check, timeout: float, what: str, record: dict[str, Any]) -> None:
        _wait(check, timeout, what, record, hide=self.secrets.values())

    def _log(self, name: str) -> Path:
        return self.paths.logs / f"{name}.log"

    def _record(self, name: str, record: dict[str, Any], **extra) -> dict[str, Any]:
        record.update(extra)
        self.components[name] = record
        self.save()
        return record

    def start(self, name: str) -> None:
        getattr(self, "_start_" + _kind(name))(name)

    def _start_postgres(self, name: str) -> None:
        user = "postgres" if os.geteuid() == 0 else None
        data, run = self.paths.pg_data, self.paths.pg_run
        for folder in (data, run):
            folder.mkdir(parents=True, exist_ok=True)
            os.chmod(folder, 0o700)
            if user:
                entry = pwd.getpwnam(user)
                os.chown(folder, entry.pw_uid, entry.pw_gid)
        if user:
            os.chmod(self.paths.root, 0o711)  # the server's user passes through, lists nothing
            os.chmod(data.parent, 0o711)
            probe = subprocess.run(["test", "-w", str(data)], user=user, check=False)
            if probe.returncode != 0:
                raise StackError(f"the postgres user cannot reach {data} (a parent folder does "
                                 f"not let it through): choose --state-dir elsewhere", exit_code=2)
        if not (data / "PG_VERSION").exists():
            done = subprocess.run(
                [_pg_binary("initdb"), "-D", str(data), "-U", "postgres", "-E", "UTF8",
                 "--auth-local=trust", "--auth-host=scram-sha-256", "--no-instructions"],
                user=user, capture_output=True, text=True, check=False, cwd="/",
                env={**self._base_env(), "LC_ALL": "C.UTF-8"})
            if done.returncode != 0:
                raise StackError(f"initdb {data} failed: {done.stderr.strip()[-500:]}")
        record = self._record(name, spawn(
            [_pg_binary("postgres"), "-D", str(data), "-p", str(self.ports["postgres"]),
             "-k", str(run), "-c", "listen_addresses=127.0.0.1",
             "-c", "unix_socket_permissions=0700"],
            {**self._base_env(), "LC_ALL": "C.UTF-8"}, self._log(name), cwd=Path("/"),
            user=user), stop_signal=int(signal.SIGINT))  # SIGINT: PostgreSQL's fast shutdown

        def superuser_ready():
            import psycopg2

            try:
                self._pg_connect(superuser=True).close()
            except psycopg2.OperationalError as exc:
                return False, str(exc).strip().splitlines()[0]
            return True, ""

        self._wait(superuser_ready, 60, "PostgreSQL", record)
        self._bootstrap_postgres()
        self._wait(lambda: self._health_postgres(name), 30, "PostgreSQL (role mlflow)", record)

    def _bootstrap_postgres(self) -> None:
        """Role ``mlflow`` (its password set to the stack's) owning ``mlflow`` and
        ``mlflow_auth``."""
        from psycopg2 import sql

        with contextlib.closing(self._pg_connect(superuser=True)) as conn:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_roles WHERE rolname = 'mlflow'")
                verb = "ALTER" if cur.fetchone() else "CREATE"
                cur.execute(sql.SQL(verb + " ROLE mlflow LOGIN PASSWORD {}").format(
                    sql.Literal(self.secrets["postgres_password"])))
                for db in ("mlflow", "mlflow_auth"):
                    cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db,))
                    if not cur.fetchone():
                        cur.execute(sql.SQL("CREATE DATABASE {} OWNER mlflow").format(
                            sql.Identifier(db)))

    def _start_s3(self, name: str) -> None:
        record = self._record(name, spawn(
            [sys.executable, "-m", "services.s3_server", "-H", self.host, "-p",
             str(self.ports["s3"])],
            self._base_env(), self._log(name), cwd=self.paths.root))

        def bucket():
            import boto3

            if _http(self.urls()["s3"] + "/moto-api/") == 0:
                return False, f"{self.urls()['s3']} does not answer"
            ok, detail = self._health_s3(name)
            if not ok:
                boto3.client("s3", endpoint_url=self.urls()["s3"], region_name=REGION,
                             aws_access_key_id=self.secrets["aws_access_key_id"],
                             aws_secret_access_key=self.secrets["aws_secret_access_key"],
                             ).create_bucket(Bucket=BUCKET)
                return self._health_s3(name)
            return ok, detail

        self._wait(bucket, 60, "the S3 server (moto)", record)

    def _start_mlflow(self, name: str) -> None:
        pg = (f"postgresql+psycopg2://mlflow:{self.secrets['postgres_password']}@127.0.0.1:"
              f"{self.ports['postgres']}")
        write_private(self.paths.auth_ini, "\n".join([
            "[mlflow]", "default_permission = READ", f"database_uri = {pg}/mlflow_auth",
            f"admin_username = {MLFLOW_USER}",
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth",
            # a checked password is trusted for a minute instead of hashing it on every request
            "auth_cache_ttl_seconds = 60", ""]))
        env = {**self._base_env(), **self.s3_env(),
               "MLFLOW_BACKEND_STORE_URI": f"{pg}/mlflow",
               "MLFLOW_AUTH_CONFIG_PATH": str(self.paths.auth_ini),
               "MLFLOW_AUTH_ADMIN_USERNAME": MLFLOW_USER,
               "MLFLOW_AUTH_ADMIN_PASSWORD": self.secrets["mlflow_password"],
               "MLFLOW_FLASK_SERVER_SECRET_KEY": self.secrets["flask_secret_key"],
               # no GenAI job runner (its 7 processes): sweeps never submit server-side jobs
               "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        record = self._record(name, spawn(
            [sys.executable, "-m", "mlflow", "server", "--app-name", "basic-auth",
             "--host", self.host, "--port", str(self.ports["mlflow"]), "--workers", "2",
             # the Host headers it answers (DNS-rebinding guard): the stack's address only
             "--allowed-hosts", ",".join(f"{host}:{self.ports['mlflow']}" for host in (
                 self.host, "127.0.0.1", "localhost")),
             "--artifacts-destination", f"s3://{BUCKET}/mlartifacts", "--serve-artifacts"],
            env, self._log(name), cwd=self.paths.root))
        self._wait(lambda: self._health_mlflow(name), 180, "the MLflow server", record)

    def _start_head(self, name: str) -> None:
        temp = Path(self.state["ray_temp"])
        temp.mkdir(parents=True, exist_ok=True)
        record = self._record(name, spawn(
            [str(BIN / "ray"), "start", "--head", "--block", "--temp-dir", str(temp),
             "--node-ip-address", self.host, "--port", str(self.ports["gcs"]),
             "--dashboard-host", self.host, "--dashboard-port", str(self.ports["dashboard"]),
             "--dashboard-agent-listen-port", "0",
             "--ray-client-server-port", str(self.ports["client"]), "--num-cpus", "0",
             "--object-store-memory", str(OBJECT_STORE_BYTES), "--disable-usage-stats"],
            self.node_env(), self._log(name), cwd=temp), marker=str(temp))
        self._wait(lambda: self._health_head(name), 240, "the Ray head", record)

    def _worker_command(self, worker: dict[str, Any]) -> tuple[list[str], Path | None, str]:
        """(command, working directory, marker) of a worker node."""
        cmd = [str(BIN / "ray"), "start", "--block", "--address", self.urls()["gcs"],
               "--node-ip-address", worker["ip"], "--num-cpus", str(self.state["worker_cpus"]),
               "--resources", json.dumps({_node_resource(worker["name"]): 1}),
               "--object-store-memory", str(OBJECT_STORE_BYTES),
               "--dashboard-agent-listen-port", "0", "--disable-usage-stats"]
        if self.state["mode"] == "namespaces":
            shared = [REPO_ROOT, sys.prefix, self.paths.root]
            return (netns.node_command(worker["netns"], worker["hostname"],
                                       [*cmd, "--temp-dir", "/tmp/ray"], shared=shared),
                    None, worker["netns"])
        temp = Path(worker["temp_dir"])
        return [*cmd, "--temp-dir", str(temp)], temp, str(temp)

    def _start_worker(self, name: str) -> None:
        self.start_workers([name])

    def start_workers(self, names: list[str]) -> None:
        """Start these worker nodes together, then wait until the head sees each of them."""
        records = {}
        for worker in (w for w in self.workers if w["name"] in names):
            if self.state["mode"] == "namespaces":
                netns.create_bridge(self.state["bridge"], self.host)
                netns.create_node(worker["netns"], worker["host_if"], worker["node_if"],
                                  self.state["bridge"], worker["ip"])
            cmd, cwd, marker = self._worker_command(worker)
            if cwd is not None:
                cwd.mkdir(parents=True, exist_ok=True)
            records[worker["name"]] = self._record(
                worker["name"], spawn(cmd, self.node_env(), self._log(worker["name"]), cwd=cwd),
                marker=marker, netns=worker.get("netns"))
        for name, record in records.items():
            self._wait(lambda name=name: self._health_worker(name), 240, f"Ray node {name}", record)

    # -- stopping --------------------------------------------------------------------------

    def stop(self, name: str, abrupt: bool = False) -> None:
        """Stop component ``name``: its recorded group, then what is left of it (processes in
        its namespace or mentioning its Ray temp folder); a worker's namespace is deleted.
        ``abrupt``: SIGKILL at once, as a lost host or the OOM killer would."""
        record = self.components.pop(name, None)
        worker = next((w for w in self.state.get("workers", []) if w["name"] == name), None)
        if record is not None:
            first = signal.SIGKILL if abrupt else record.get("stop_signal", signal.SIGTERM)
            stop_group(record, signal.Signals(first))
            marker = record.get("marker")
            if worker and worker.get("netns"):
                kill(netns.netns_pids(worker["netns"]), signal.SIGKILL)
                wait_gone(lambda: netns.netns_pids(worker["netns"]), 10)
            elif marker:
                left = wait_gone(lambda: pids_mentioning(marker), 5)
                kill(left, signal.SIGKILL)
                wait_gone(lambda: pids_mentioning(marker), 10)
        if worker and worker.get("netns"):
            netns.delete_node(worker["netns"], worker["host_if"])
        self.save()
        if record is not None:
            log.info("stopped %s", name)


# --- commands -------------------------------------------------------------------------------


@contextlib.contextmanager
def _locked(paths: Paths):
    """One ``up``/``down`` at a time per state folder."""
    paths.root.mkdir(mode=0o700, parents=True, exist_ok=True)
    with open(paths.root / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _running(stack: Stack) -> list[str]:
    return [n for n, r in stack.components.items() if group_alive(r)]


def up(root: str | Path = DEFAULT_DIR, workers: int = 2, worker_cpus: int | None = None,
       namespaces: bool = True) -> Stack:
    """Bring the stack up (idempotent: what answers is kept, what does not is restarted)."""
    if workers < 1:
        raise StackError(f"--workers must be at least 1 (got {workers})", exit_code=2)
    worker_cpus = worker_cpus or max(1, (os.cpu_count() or 2) // workers)
    stack = Stack(root)
    with _locked(stack.paths):
        stack = Stack(root)  # read again under the lock
        running = _running(stack)
        if running:
            asked = (workers, worker_cpus, "namespaces" if namespaces else "loopback")
            have = (len(stack.workers), stack.state["worker_cpus"], stack.state["mode"])
            if asked[:2] != have[:2] or (not namespaces and have[2] == "namespaces"):
                raise StackError(f"the stack in {stack.paths.root} runs with {have[0]} workers "
                                 f"of {have[1]} CPU ({have[2]}): run `python -m services stack "
                                 f"down` before changing it", exit_code=2)
        else:
            stack.components.clear()
            stack.layout(workers, worker_cpus, namespaces)
        stack.secrets  # noqa: B018 (generated on the first up)
        stack.write_client_files()
        restarted_head = False
        for name in COMPONENTS:
            ok, _ = stack.health(name)
            if ok:
                continue
            _check_ports(stack, name)
            stack.stop(name)
            log.info("starting %s", name)
            stack.start(name)
            stack.started.append(name)
            restarted_head |= name == "ray-head"
        missing = [w["name"] for w in stack.workers
                   if restarted_head or not stack.health(w["name"])[0]]
        for name in missing:
            stack.stop(name)
        if missing:
            log.info("starting %s", ", ".join(missing))
            stack.start_workers(missing)
            stack.started += missing
    return stack


def _check_ports(stack: Stack, name: str) -> None:
    ports = {"postgres": [("127.0.0.1", "postgres")], "s3": [(stack.host, "s3")],
             "mlflow": [(stack.host, "mlflow")],
             "ray-head": [(stack.host, "gcs"), (stack.host, "dashboard")]}[name]
    for host, key in ports:
        if group_alive(stack.components.get(name) or {"pgid": -1, "start": None}):
            continue  # ours, about to be restarted
        if port_in_use(host, stack.ports[key]):
            raise StackError(f"port {stack.ports[key]} ({name}) on {host} is taken by another "
                             f"process: run `python -m services stack down`, then `up`")


def down(root: str | Path = DEFAULT_DIR, only: list[str] | None = None,
         purge: bool = False) -> list[str]:
    """Stop the stack (or only the named components); returns the names stopped."""
    stack = Stack(root)
    if not stack.paths.state.exists():
        if purge and stack.paths.root.exists():
            shutil.rmtree(stack.paths.root)
        return []
    with _locked(stack.paths):
        stack = Stack(root)
        names = stack.names()
        unknown = sorted(set(only or []) - set(names))
        if unknown:
            raise StackError(f"--only {unknown[0]!r}: no such component (the stack has "
                             f"{', '.join(names)})", exit_code=2)
        chosen = [n for n in reversed(names) if not only or n in only]
        stopped = [n for n in chosen if n in stack.components]
        for name in chosen:
            stack.stop(name)
        if not only:
            if stack.state.get("bridge"):
                netns.delete_bridge(stack.state["bridge"])
            for folder in [stack.state.get("ray_temp")] + [
                    w.get("temp_dir") for w in stack.state.get("workers", [])]:
                if folder:
                    shutil.rmtree(folder, ignore_errors=True)
    if purge and not only:
        shutil.rmtree(stack.paths.root)
    return stopped


def status(root: str | Path = DEFAULT_DIR) -> dict[str, dict[str, Any]]:
    """Each component's pid (process group), health and address."""
    stack = Stack(root)
    if not stack.state.get("ports"):
        return {}
    report = {}
    for name in stack.names():
        ok, detail = stack.health(name)
        record = stack.components.get(name) or {}
        report[name] = {"pid": record.get("pgid"), "healthy": ok, "detail": detail}
    return report


def describe(stack: Stack) -> str:
    """What ``up`` prints: components, addresses, the env file and the ``ray job submit`` line."""
    mode = ("worker nodes in their own network and mount namespaces"
            if stack.state["mode"] == "namespaces" else "worker nodes as loopback processes")
    rows = [f"  {name:<10} pid {str(info['pid'] or '-'):<8} {info['detail']}"
            for name, info in status(stack.paths.root).items()]
    env = shlex.quote(str(stack.paths.env))
    return "\n".join([
        f"stack in {stack.paths.root} ({mode}):", *rows, "",
        f"addresses and credentials for clients: source {env}",
        "submit a sweep (from the repository root):",
        *([f"  source {shlex.quote(str(BIN / 'activate'))}"] if (BIN / "activate").exists()
          else []),
        f"  source {env}",
        f"  {stack.submit_line()}",
        f"logs: {stack.paths.logs}/   stop: python -m services stack down "
        f"--state-dir {shlex.quote(str(stack.paths.root))}"])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--state-dir", default=os.environ.get("SEPCORE_STACK_DIR", DEFAULT_DIR),
                        help="where pids, ports, secrets and logs live (default: .stack)")
    p = sub.add_parser("up", parents=[common], help="start the stack (idempotent)")
    p.add_argument("--workers", type=int, default=2, help="Ray worker nodes (default 2)")
    p.add_argument("--worker-cpus", type=int, help="CPUs per worker (default: cores / workers)")
    p.add_argument("--no-namespaces", action="store_true",
                   help="workers as plain loopback processes (no network/mount namespaces)")
    p = sub.add_parser("down", parents=[common], help="stop what `up` started")
    p.add_argument("--only", action="append", metavar="NAME",
                   help="stop only this component (repeatable), e.g. worker-1 or mlflow")
    p.add_argument("--purge", action="store_true",
                   help="also delete the state folder (secrets, PostgreSQL data, logs)")
    sub.add_parser("status", parents=[common], help="each component with pid, URL and health")


def run(args: argparse.Namespace) -> int:
    if args.action == "up":
        stack = up(args.state_dir, workers=args.workers, worker_cpus=args.worker_cpus,
                   namespaces=not args.no_namespaces)
        if not stack.started:
            print("the stack was already up")
        print(describe(stack))
        return 0
    if args.action == "down":
        stopped = down(args.state_dir, only=args.only, purge=args.purge)
        print(f"stopped {', '.join(stopped)}" if stopped else "nothing of the stack was running")
        return 0
    report = status(args.state_dir)
    if not report:
        print(f"no stack in {Path(args.state_dir).resolve()} (python -m services stack up)")
        return 1
    for name, info in report.items():
        state = "up" if info["healthy"] else "DOWN"
        print(f"{name:<10} {state:<5} pid {str(info['pid'] or '-'):<8} {info['detail']}")
    return 0 if all(info["healthy"] for info in report.values()) else 1
