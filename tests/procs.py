"""Processes and ports for the tests: servers on 127.0.0.1, each stopped by the pids it started.

One place for what the orchestration tests share:

* ``short_tmpdir``: a private temp folder short enough for Ray's unix sockets (~107 characters).
* ``LOOPBACK_RAY_ENV``: Ray's single-node mode. Ray replaces ``--node-ip-address 127.0.0.1`` by the
  host's network address; with this variable every Ray process binds 127.0.0.1.
* ``free_port``: only a *candidate* (another process may take it before the server binds it);
  callers start the server, check that it is serving and retry with new ports when it is not.
* ``start_ray_head``: ``ray start --head --block`` in its own process group and ``--temp-dir``,
  GCS and dashboard on port 0 (Ray picks, the test reads the dashboard's port back from its log),
  retried with fresh ports when the head does not come up.
* ``stop_group`` / ``run_group``: end a process group the test started; ``pids_mentioning`` /
  ``kill_strays``: find what is left of it by its temp folder.
* ``start_moto_server`` / ``start_mlflow_server``: an S3 endpoint and an MLflow tracking server
  (artifacts proxied to S3) as processes on loopback; ``Server.kill`` / ``restart`` take one down
  and bring it back on the same port (an outage).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

BIN = Path(sys.executable).parent
LOOPBACK_RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def short_tmpdir(prefix: str = "r") -> Path:
    """A fresh folder under /tmp with a short path (Ray's socket paths must fit 107 bytes)."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


def free_port() -> int:
    """A port that was free a moment ago on 127.0.0.1 (a candidate: retry if the bind fails)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def is_listening(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex((host, port)) == 0


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) != os.getpid()]


def pids_mentioning(text: str) -> list[int]:
    """Live processes whose command line contains ``text`` (e.g. a private temp folder)."""
    found = []
    for pid in _pids():
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if text.encode() in cmdline and state != "Z":
            found.append(pid)
    return found


def pids_in_group(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group ``pgid``."""
    found = []
    for pid in _pids():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            found.append(pid)
    return found


def _wait_gone(pids_of, timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while (left := pids_of()) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def stop_group(proc: subprocess.Popen, grace: float = 20.0) -> None:
    """End the process group led by ``proc`` (started with ``start_new_session``): SIGTERM to
    the leader (``ray start --block`` then stops its children in order), after ``grace`` seconds
    SIGTERM to the group, then SIGKILL to what is left of it; reaps ``proc``."""
    pgid = proc.pid
    steps = ((lambda sig: os.kill(pgid, sig), signal.SIGTERM, grace),
             (lambda sig: os.killpg(pgid, sig), signal.SIGTERM, min(grace, 5.0)),
             (lambda sig: os.killpg(pgid, sig), signal.SIGKILL, 10.0))
    if proc.poll() is not None:
        steps = steps[1:]  # the leader has ended: only its group is left
    for send, sig, wait in steps:
        if not pids_in_group(pgid):
            break
        try:
            send(sig)
        except ProcessLookupError:
            pass
        if not _wait_gone(lambda: pids_in_group(pgid), wait):
            break
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def kill_strays(text: str, grace: float = 10.0) -> list[int]:
    """Processes still mentioning ``text`` after ``grace`` seconds, SIGKILLed one by one by pid.

    Returns their pids: a test asserts the list is empty (its processes all ended cleanly).
    """
    left = _wait_gone(lambda: pids_mentioning(text), grace)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if left:  # SIGKILL is delivered asynchronously: wait until they are really gone
        _wait_gone(lambda: [pid for pid in pids_mentioning(text) if pid in left], 10.0)
    return left


def run_group(cmd: list[str], timeout: float, **kwargs) -> subprocess.CompletedProcess:
    """``subprocess.run`` in a new process group that is always ended afterwards (on success,
    on timeout, on failure): whatever the command started dies with it. Its output goes through
    files, so a child that keeps the output open cannot make the call wait."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, start_new_session=True,
                                **kwargs)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        finally:
            timed_out = proc.poll() is None
            if timed_out or pids_in_group(proc.pid):
                stop_group(proc, grace=5.0)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if timed_out:
        raise AssertionError(f"{cmd[:4]} ran past {timeout} s:\n{stdout[-3000:]}\n"
                             f"{stderr[-3000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


# --- a Ray head on loopback -----------------------------------------------------------------------


@dataclass
class RayHead:
    """A running ``ray start --head --block`` (its own process group and temp folder)."""

    proc: subprocess.Popen
    temp_dir: Path
    address: str  # the dashboard / Job Submission API, http://127.0.0.1:PORT
    env: dict[str, str]

    def stop(self) -> list[int]:
        """End the head's process group; returns the pids of strays (killed) that mention its
        temp folder: a clean stop returns []."""
        stop_group(self.proc)
        strays = kill_strays(str(self.temp_dir))
        shutil.rmtree(self.temp_dir, ignore_errors=True)
        return strays


_DASHBOARD_LINE = re.compile(r"Dashboard head http address: (\S+):(\d+)")


def _dashboard_port(temp_dir: Path) -> int | None:
    log = temp_dir / "session_latest" / "logs" / "dashboard.log"
    try:
        found = _DASHBOARD_LINE.findall(log.read_text(errors="replace"))
    except OSError:
        return None
    return int(found[-1][1]) if found else None


def _serving(address: str, ready_codes: tuple[int, ...]) -> bool:
    try:
        urllib.request.urlopen(f"{address}/api/jobs/", timeout=5)
        return 200 in ready_codes
    except urllib.error.HTTPError as err:
        return err.code in ready_codes
    except (OSError, urllib.error.URLError):
        return False


def start_ray_head(env: dict[str, str], num_cpus: int = 2, attempts: int = 3,
                   timeout: float = 240.0, ready_codes: tuple[int, ...] = (200,)) -> RayHead:
    """Start a Ray head on 127.0.0.1 and wait until its Job API answers with ``ready_codes``.

    GCS, dashboard and dashboard agent take port 0 (chosen by the process that binds it; the
    dashboard's is read back from its log); the Ray Client server cannot, so it gets a candidate
    port, and a head that dies or does not serve within ``timeout`` is stopped and started again
    with new ports and a new temp folder.
    """
    env = {**env, **LOOPBACK_RAY_ENV, "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}"}
    env.pop("RAY_ADDRESS", None)
    failures = []
    for _ in range(attempts):
        temp_dir = short_tmpdir()
        client_port = free_port()
        cmd = [str(BIN / "ray"), "start", "--head", "--block", "--temp-dir", str(temp_dir),
               "--node-ip-address", "127.0.0.1", "--port", "0", "--dashboard-host", "127.0.0.1",
               "--dashboard-port", "0", "--dashboard-agent-listen-port", "0",
               "--ray-client-server-port", str(client_port), "--num-cpus", str(num_cpus),
               "--disable-usage-stats"]
        with open(temp_dir / "ray-start.log", "w") as log:
            proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        head = RayHead(proc, temp_dir, "", env)
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            port = _dashboard_port(temp_dir)
            if port and is_listening(client_port):
                head.address = f"http://127.0.0.1:{port}"
                if _serving(head.address, ready_codes):
                    return head
            time.sleep(0.5)
        text = (temp_dir / "ray-start.log").read_text(errors="replace")[-2000:]
        failures.append(f"exit code {proc.poll()}, client port {client_port}:\n{text}")
        strays = head.stop()
        assert not strays, f"processes of a failed Ray head outlived it: {strays}"
    raise AssertionError("the Ray head did not come up:\n" + "\n---\n".join(failures))


# --- an HTTP proxy that can refuse requests for a while -------------------------------------------


class FaultProxy:
    """An HTTP/1.1 proxy on 127.0.0.1 (or ``host``) in front of one server (e.g. a moto S3
    server), in threads of this process; ``refuse`` makes it answer 503 (or drop the connection)
    to some methods (on some paths) for a time window, then it forwards again. Use it as a
    context manager, so it stops even when the test fails.

    Attributes:
        url: the proxy's address, ``http://HOST:PORT`` (the port is chosen by the bind).
        refused: ``(method, path)`` of each request refused so far.
        forwarded: how many requests went through to the server.
    """

    _HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "expect",
                   "te", "trailer", "upgrade"}

    def __init__(self, upstream: str, host: str = "127.0.0.1"):
        import http.server
        import threading
        import urllib.parse

        parsed = urllib.parse.urlparse(upstream)
        self.upstream = (parsed.hostname, parsed.port)
        self.refused: list[tuple[str, str]] = []
        self.forwarded = 0
        self._lock = threading.Lock()
        self._methods: frozenset[str] = frozenset()
        self._path_prefix = ""
        self._mode = "503"
        self._seconds = 0.0
        self._after = 0
        self._seen = 0
        self._until: float | None = None
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_args) -> None:  # quiet: tests read proxy.refused instead
                pass

            def _body(self) -> bytes:
                if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                    chunks = []
                    while (size := int(self.rfile.readline().split(b";")[0].strip(), 16)) > 0:
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _handle(self) -> None:
                body = self._body()
                mode = proxy._refusal(self.command, self.path)
                if mode == "drop":
                    proxy.refused.append((self.command, self.path))
                    self.close_connection = True
                    return
                if mode == "503":
                    proxy.refused.append((self.command, self.path))
                    payload = (b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>"
                               b"ServiceUnavailable</Code><Message>refused by the test proxy"
                               b"</Message></Error>")
                    self.send_response(503)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.send_header("Connection", "close")
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(payload)
                    self.close_connection = True
                    return
                self._forward(body)

            def _forward(self, body: bytes) -> None:
                import http.client

                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in proxy._HOP_BY_HOP}
                if body or self.command in ("PUT", "POST"):
                    headers["Content-Length"] = str(len(body))
                conn = http.client.HTTPConnection(*proxy.upstream, timeout=120)
                try:
                    conn.request(self.command, self.path, body=body or None, headers=headers)
                    response = conn.getresponse()
                    data = response.read()
                    out_headers = response.getheaders()
                    status = response.status
                finally:
                    conn.close()
                with proxy._lock:
                    proxy.forwarded += 1
                self.send_response(status)
                for k, v in out_headers:
                    if k.lower() in proxy._HOP_BY_HOP:
                        continue
                    if k.lower() == "content-length" and self.command != "HEAD":
                        continue
                    self.send_header(k, v)
                if self.command != "HEAD":
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _handle

        self._server = http.server.ThreadingHTTPServer((host, 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://{host}:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.1}, daemon=True)

    def refuse(self, seconds: float, methods: tuple[str, ...] = ("PUT", "POST"),
               mode: str = "503", after: int = 0, path_prefix: str = "") -> None:
        """Refuse ``methods`` (on paths starting with ``path_prefix``) for ``seconds``, starting
        at the ``after+1``-th such request from now (0: the next one). ``mode``: ``"503"``
        (Service Unavailable) or ``"drop"`` (close the connection without an answer)."""
        assert mode in ("503", "drop"), mode
        with self._lock:
            self._methods = frozenset(m.upper() for m in methods)
            self._path_prefix = path_prefix
            self._mode, self._seconds, self._after = mode, seconds, after
            self._seen, self._until = 0, None

    def _refusal(self, method: str, path: str) -> str | None:
        with self._lock:
            if method not in self._methods or not path.startswith(self._path_prefix):
                return None
            now = time.monotonic()
            if self._until is None:
                self._seen += 1
                if self._seen <= self._after:
                    return None
                self._until = now + self._seconds
            return self._mode if now < self._until else None

    def window_ended(self) -> float | None:
        """When (``time.monotonic()``) the refusal window ends; ``None`` before it opened."""
        with self._lock:
            return self._until

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


# --- an S3 endpoint and an MLflow tracking server on loopback ------------------------------------


@dataclass
class Server:
    """An HTTP server the test started (its own process group); ``restart`` brings it back on
    the same port with the same command (e.g. after ``kill``, to simulate an outage)."""

    proc: subprocess.Popen
    cmd: list[str]
    env: dict[str, str]
    port: int
    log: Path
    ready_path: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self, grace: float = 10.0) -> None:
        stop_group(self.proc, grace=grace)

    def kill(self) -> None:
        """SIGKILL to the whole group (a crashed or unplugged server): nothing is flushed."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        _wait_gone(lambda: pids_in_group(self.proc.pid), 10.0)
        self.proc.wait(timeout=10)

    def restart(self, timeout: float = 90.0) -> None:
        if self.proc.poll() is None:
            self.stop()
        deadline = time.monotonic() + timeout
        while True:  # the port can stay busy for a moment after the kill
            self.proc = _launch(self.cmd, self.env, self.log, append=True)
            if _wait_ready(self, deadline):
                return
            self.stop(grace=2.0)
            assert time.monotonic() < deadline, f"{self.cmd[:4]} did not come back on port " \
                f"{self.port}:\n{self.log.read_text(errors='replace')[-2000:]}"
            time.sleep(1.0)


def _launch(cmd: list[str], env: dict[str, str], log: Path, append: bool = False):
    with open(log, "a" if append else "w") as out:
        return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def _wait_ready(server: Server, deadline: float) -> bool:
    while server.proc.poll() is None and time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(server.url + server.ready_path, timeout=5) as response:
                if response.status == 200:
                    return True
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.3)
    return False


def start_server(make_cmd, env: dict[str, str], log: Path, ready_path: str = "/",
                 attempts: int = 3, timeout: float = 90.0) -> Server:
    """Start ``make_cmd(port)`` on a candidate port and wait until ``GET ready_path`` answers
    200; a server that dies or does not answer within ``timeout`` is stopped and started again
    on a new port."""
    failures = []
    for _ in range(attempts):
        port = free_port()
        cmd = make_cmd(port)
        server = Server(_launch(cmd, env, log), cmd, env, port, log, ready_path)
        if _wait_ready(server, time.monotonic() + timeout):
            return server
        failures.append(f"port {port}, exit code {server.proc.poll()}:\n"
                        f"{log.read_text(errors='replace')[-2000:]}")
        server.stop(grace=2.0)
    raise AssertionError(f"{make_cmd(0)[:4]} did not come up:\n" + "\n---\n".join(failures))


def start_moto_server(log: Path, env: dict[str, str] | None = None) -> Server:
    """moto's S3-compatible server as a separate process (``python -m moto.server``)."""
    return start_server(
        lambda port: [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        {**os.environ, **(env or {})}, log, ready_path="/moto-api/")


def start_mlflow_server(backend_uri: str, artifacts_destination: str, env: dict[str, str],
                        log: Path) -> Server:
    """``mlflow server`` serving artifacts (proxied to ``artifacts_destination``), one worker;
    ``env`` holds what the server needs to reach the store (MLFLOW_S3_ENDPOINT_URL, AWS_*)."""
    return start_server(
        lambda port: [str(BIN / "mlflow"), "server", "--backend-store-uri", backend_uri,
                      "--artifacts-destination", artifacts_destination, "--serve-artifacts",
                      "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        {**os.environ, **env, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"},
        log, ready_path="/health")
