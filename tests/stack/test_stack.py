"""The stack launcher without its servers: state and secret files, the environments it hands out,
redaction, process groups, the idempotence of ``up`` and the ``python -m services`` command line.

Components are replaced by stand-ins where a test is about the launcher's decisions; the real
servers are started by tests/e2e/test_stack.py.
"""

from __future__ import annotations

import ipaddress
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from services import netns, processes, stack
from services.stack import Stack, StackError

REPO = Path(__file__).resolve().parents[2]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _services(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "services", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


def _loopback_stack(root: Path, workers: int = 2) -> Stack:
    """A stack laid out (ports, secrets, client files) with nothing started."""
    s = Stack(root)
    s.layout(workers=workers, worker_cpus=1, namespaces=False)
    s.write_client_files()
    return s


# --- files and secrets -------------------------------------------------------------------------


def test_private_files_are_0600_even_under_a_permissive_umask(tmp_path):
    old = os.umask(0)
    try:
        stack.write_private(tmp_path / "f", "secret")
        assert _mode(tmp_path / "f") == 0o600
        (tmp_path / "f").chmod(0o644)
        stack.write_private(tmp_path / "f", "again")  # replaced, not written through
        assert _mode(tmp_path / "f") == 0o600
        assert (tmp_path / "f").read_text() == "again"
    finally:
        os.umask(old)


def test_secrets_are_generated_once_and_kept(tmp_path):
    paths = stack.Paths(tmp_path)
    first = stack.ensure_secrets(paths)
    assert _mode(paths.secrets) == 0o600
    assert len(set(first.values())) == len(first)  # all different
    assert all(len(value) >= 16 for value in first.values())
    assert stack.ensure_secrets(paths) == first
    # a second stack gets its own
    assert set(stack.ensure_secrets(stack.Paths(tmp_path / "other")).values()).isdisjoint(
        first.values())


def test_lost_secrets_next_to_postgres_data_are_an_error(tmp_path):
    paths = stack.Paths(tmp_path)
    paths.pg_data.mkdir(parents=True)
    with pytest.raises(StackError, match="down --purge") as err:
        stack.ensure_secrets(paths)
    assert err.value.exit_code == 2


def test_client_files_are_private_and_source_in_a_shell(tmp_path):
    s = _loopback_stack(tmp_path)
    assert _mode(s.paths.env) == 0o600 and _mode(s.paths.ray_token) == 0o600
    assert s.paths.ray_token.read_text() == s.secrets["ray_token"]
    env = stack.read_env_file(s.paths.env)
    assert env["MLFLOW_TRACKING_PASSWORD"] == s.secrets["mlflow_password"]
    assert env["MLFLOW_TRACKING_URI"] == f"http://127.213.0.1:{s.ports['mlflow']}"
    assert env["RAY_ADDRESS"] == f"http://127.213.0.1:{s.ports['dashboard']}"
    assert env["RAY_AUTH_MODE"] == "token" and env["RAY_AUTH_TOKEN_PATH"] == str(s.paths.ray_token)
    assert env["AWS_ENDPOINT_URL"] == f"http://127.213.0.1:{s.ports['s3']}"
    # what a shell sees after `source stack.env` is what the file says
    shell = subprocess.run(["bash", "-c", f"source {s.paths.env}; env"], capture_output=True,
                           text=True, check=True, env={})
    seen = dict(line.split("=", 1) for line in shell.stdout.splitlines() if "=" in line)
    assert {k: seen[k] for k in env} == env


def test_nothing_printed_or_recorded_holds_a_secret(tmp_path):
    s = _loopback_stack(tmp_path)
    s.save()
    printed = stack.describe(s)
    assert str(s.paths.env) in printed  # where to find them instead
    assert "ray job submit" in printed and "sweeps/bands.yaml --profile smoke" in printed
    for value in s.secrets.values():
        assert value not in printed
        assert value not in s.paths.state.read_text()
        assert value not in " ".join(s._worker_command(s.workers[0])[0])


def test_redaction_of_a_failing_components_log(tmp_path):
    s = _loopback_stack(tmp_path)
    password = s.secrets["postgres_password"]
    record = processes.spawn([sys.executable, "-c", f"print('connecting with {password}')"],
                             dict(os.environ), tmp_path / "logs" / "x.log")
    with pytest.raises(StackError) as err:
        s._wait(lambda: (False, "no answer"), 10, "the thing", record)
    assert "connecting with ***" in str(err.value)
    assert password not in str(err.value)


def test_node_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "http://elsewhere:8265")
    monkeypatch.setenv("MLFLOW_RUN_ID", "abc")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///x.db")
    s = _loopback_stack(tmp_path)
    env = s.node_env()
    assert "RAY_ADDRESS" not in env and "MLFLOW_RUN_ID" not in env
    assert env["MLFLOW_TRACKING_URI"] == s.urls()["mlflow"]
    assert env["RAY_AUTH_MODE"] == "token"
    assert env["RAY_AUTH_TOKEN_PATH"] == str(s.paths.ray_token)
    assert env["SEPCORE_CLUSTER"] == "1"
    assert env["PATH"].split(os.pathsep)[0] == str(stack.BIN)


def test_loopback_layout_gives_each_node_a_loopback_address(tmp_path):
    s = _loopback_stack(tmp_path, workers=3)
    # not 127.0.0.1: Ray would advertise the host's network address for it
    assert s.state["mode"] == "loopback" and s.host == "127.213.0.1"
    assert [w["name"] for w in s.workers] == ["worker-1", "worker-2", "worker-3"]
    assert [w["ip"] for w in s.workers] == ["127.213.0.2", "127.213.0.3", "127.213.0.4"]
    assert len(set(s.ports.values())) == len(s.ports)
    temps = {w["temp_dir"] for w in s.workers} | {s.state["ray_temp"]}
    assert len(temps) == 4 and all(t.startswith("/tmp/") for t in temps)
    cmd, _, marker = s._worker_command(s.workers[1])
    assert cmd[cmd.index("--node-ip-address") + 1] == "127.213.0.3"
    assert '{"sepcore-worker-2": 1}' in cmd and marker == s.workers[1]["temp_dir"]


def test_namespaced_worker_command_is_wrapped(tmp_path):
    cmd = netns.node_command("sep7w1", "sepcore-worker-1", ["ray", "start", "--block"])
    assert cmd[:4] == ["ip", "netns", "exec", "sep7w1"]
    assert "--mount" in cmd and "--uts" in cmd
    script = cmd[cmd.index("-c") + 1]
    assert "mount -t tmpfs" in script and "/tmp" in script and 'exec "$@"' in script
    assert cmd[-4:] == ["sepcore-worker-1", "ray", "start", "--block"]


def test_subnet_choice_avoids_networks_in_use(monkeypatch):
    monkeypatch.setattr(netns, "used_networks", lambda: [
        ipaddress.ip_network("10.213.1.0/24"), ipaddress.ip_network("10.213.2.0/23"),
        ipaddress.ip_network("192.0.2.0/24")])
    monkeypatch.setattr(netns, "link_exists", lambda name: name == "sep4br")
    assert netns.pick_subnet(lambda n: f"sep{n}br") == 5
    monkeypatch.setattr(netns, "used_networks", lambda: [ipaddress.ip_network("10.0.0.0/8")])
    with pytest.raises(netns.NamespaceError, match="no free /24"):
        netns.pick_subnet(lambda n: f"sep{n}br")


# --- process groups --------------------------------------------------------------------------


def _sleeper(tmp_path: Path, detached_child: bool = False) -> dict:
    """A process group: ``sleep 60``, or a shell with a sleeping child and a grandchild that
    starts a session of its own (as PostgreSQL's backends do)."""
    cmd = ["sleep", "60"]
    if detached_child:
        cmd = ["sh", "-c", f"sleep 60 & {sys.executable} -c 'import os, time; os.setsid(); "
               f"time.sleep(60)' & wait"]
    return processes.spawn(cmd, dict(os.environ), tmp_path / "sleeper.log")


def test_stop_group_ends_the_group_and_its_detached_descendants(tmp_path):
    record = _sleeper(tmp_path, detached_child=True)
    deadline = time.monotonic() + 10
    while len(processes.descendants(record["pgid"])) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    tree = processes.descendants(record["pgid"])
    assert len(tree) == 2
    assert processes.group_alive(record)
    processes.stop_group(record, grace=2)
    assert not processes.group_alive(record)
    assert all(processes.start_time(pid) != started for pid, started in tree.items())


def test_a_reused_pid_is_not_taken_for_the_component(tmp_path):
    record = _sleeper(tmp_path)
    try:
        impostor = {**record, "start": record["start"] - 1}  # same pid, another process
        assert not processes.group_alive(impostor)
        processes.stop_group(impostor, grace=1)
        assert processes.group_alive(record)  # untouched
    finally:
        processes.stop_group(record, grace=2)


def test_down_stops_only_what_up_recorded(tmp_path):
    s = _loopback_stack(tmp_path, workers=1)
    ours, theirs = _sleeper(tmp_path / "a"), _sleeper(tmp_path / "b")
    try:
        s.components["s3"] = ours
        s.save()
        assert stack.down(tmp_path) == ["s3"]
        assert not processes.group_alive(ours)
        assert processes.group_alive(theirs)
        assert Stack(tmp_path).components == {}
    finally:
        processes.stop_group(theirs, grace=2)


# --- idempotence of `up` ----------------------------------------------------------------------


class _FakeComponents:
    """Stand-ins for the servers: ``healthy`` says who answers, ``started`` what was started."""

    def __init__(self, monkeypatch, tmp_path):
        self.healthy: set[str] = set()
        self.started: list[str] = []
        self.records: list[dict] = []  # every process group started, stopped at teardown
        self.tmp_path = tmp_path
        fake = self

        def health(self, name):
            ok = name in fake.healthy and name in self.components
            return ok, "fake"

        def start(self, name):
            self.components[name] = _sleeper(fake.tmp_path / name)
            fake.records.append(self.components[name])
            self.save()
            fake.started.append(name)
            fake.healthy.add(name)

        def start_workers(self, names):
            for name in names:
                start(self, name)

        monkeypatch.setattr(Stack, "health", health)
        monkeypatch.setattr(Stack, "start", start)
        monkeypatch.setattr(Stack, "start_workers", start_workers)
        monkeypatch.setattr(stack, "_check_ports", lambda s, name: None)


@pytest.fixture
def fake(monkeypatch, tmp_path):
    components = _FakeComponents(monkeypatch, tmp_path)
    yield components
    for record in components.records:
        processes.stop_group(record, grace=2)


def test_up_is_idempotent_and_restarts_only_what_is_missing(fake, tmp_path):
    root = tmp_path / "state"
    first = stack.up(root, workers=2, worker_cpus=1, namespaces=False)
    everything = ["postgres", "s3", "mlflow", "ray-head", "worker-1", "worker-2"]
    assert first.started == everything and fake.started == everything
    ports, pids = first.ports, {n: r["pgid"] for n, r in first.components.items()}

    again = stack.up(root, workers=2, worker_cpus=1, namespaces=False)
    assert again.started == [] and fake.started == everything
    assert again.ports == ports and {n: r["pgid"] for n, r in again.components.items()} == pids

    fake.healthy.discard("mlflow")  # answers no more: restarted alone, same ports
    assert stack.up(root, workers=2, worker_cpus=1, namespaces=False).started == ["mlflow"]

    fake.healthy.discard("ray-head")  # a new head: every worker joins it again
    assert stack.up(root, workers=2, worker_cpus=1, namespaces=False).started == [
        "ray-head", "worker-1", "worker-2"]
    assert Stack(root).ports == ports


def test_up_refuses_to_reshape_a_running_stack(fake, tmp_path):
    root = tmp_path / "state"
    stack.up(root, workers=2, worker_cpus=1, namespaces=False)
    with pytest.raises(StackError, match="runs with 2 workers") as err:
        stack.up(root, workers=3, worker_cpus=1, namespaces=False)
    assert err.value.exit_code == 2


def test_up_after_down_keeps_the_secrets(fake, tmp_path):
    root = tmp_path / "state"
    secrets_before = stack.up(root, workers=1, worker_cpus=1, namespaces=False).secrets
    stack.down(root)
    assert not any(processes.group_alive(r) for r in Stack(root).components.values())
    assert stack.up(root, workers=1, worker_cpus=1, namespaces=False).secrets == secrets_before
    stack.down(root, purge=True)
    assert not root.exists()


# --- command line -----------------------------------------------------------------------------


def test_help_lists_the_stack_command():
    done = _services("--help")
    assert done.returncode == 0
    commands = done.stdout.split("{", 1)[1].split("}", 1)[0].split(",")
    assert "stack" in commands
    done = _services("stack", "--help")
    assert done.returncode == 0 and "{up,down,status}" in done.stdout


def test_cli_errors_are_one_line(tmp_path):
    _loopback_stack(tmp_path).save()
    done = _services("stack", "down", "--state-dir", str(tmp_path), "--only", "nope")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: --only 'nope': no such component (the stack has postgres, s3, mlflow, ray-head, "
        "worker-1, worker-2)"]
    done = _services("stack", "up", "--state-dir", str(tmp_path / "x"), "--workers", "0")
    assert done.returncode == 2 and "--workers must be at least 1" in done.stderr


def test_status_of_no_stack(tmp_path):
    done = _services("stack", "status", "--state-dir", str(tmp_path / "none"))
    assert done.returncode == 1
    assert "no stack in" in done.stdout


def test_status_names_each_component_down(tmp_path):
    _loopback_stack(tmp_path).save()
    done = _services("stack", "status", "--state-dir", str(tmp_path))
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    assert [line.split()[0] for line in lines] == [
        "postgres", "s3", "mlflow", "ray-head", "worker-1", "worker-2"]
    assert all(line.split()[1] == "DOWN" for line in lines)



def test_node_keeps_shared_folders_below_tmp_and_hides_the_rest(tmp_path):
    """A checkout or venv under /tmp (a clean clone there) must stay visible on a worker node,
    whose /tmp is otherwise a fresh tmpfs: the shared folders are bound back, nothing else."""
    why = netns.unavailable()
    if why:
        pytest.skip(f"namespaces unavailable: {why}")
    assert str(tmp_path).startswith("/tmp/"), tmp_path
    shared = tmp_path / "checkout with space"
    shared.mkdir()
    (shared / "code.py").write_text("x = 1\n")
    private = tmp_path / "other"
    private.mkdir()
    (private / "secret").write_text("host only\n")
    check = (f'test -f "{shared}/code.py" && ! test -e "{private}" && test "$(hostname)" = node-x '
             f'&& test "$(pwd)" = /tmp/node && echo ok')
    done = subprocess.run(["unshare", "--mount", "--uts", "--propagation", "private", "sh", "-c",
                           netns.node_script([shared, "/usr"]), "node-x", "sh", "-c", check],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stdout + done.stderr
    assert (private / "secret").read_text() == "host only\n"  # the host's /tmp is untouched
    assert netns.node_script(["/usr", "/var/tmp/x"]) == netns.node_script()  # nothing under /tmp
