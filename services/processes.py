"""Process groups of the stack's servers: start one per component, tell whether it still runs,
stop exactly it (and its descendants that left the group), never a process it did not start.

A component is recorded as its process group id plus the kernel start time of the group's leader,
so that a reused pid is never taken for the component.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any


def start_time(pid: int) -> int | None:
    """The kernel's start time of ``pid`` (clock ticks since boot; tells a reused pid apart)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] == "Z" else int(fields[19])


def _live_stats():
    """``(pid, fields of /proc/<pid>/stat after the command name)`` of every live (non-zombie)
    process: ``fields[0]`` state, ``[1]`` parent, ``[2]`` process group, ``[19]`` start time."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z":
            yield int(entry), fields


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group ``pgid``."""
    return [pid for pid, fields in _live_stats() if int(fields[2]) == pgid]


def pids_mentioning(text: str) -> list[int]:
    """Live processes whose command line contains ``text`` (one of the stack's own folders)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if text.encode() in cmdline and start_time(int(entry)) is not None:
            found.append(int(entry))
    return found


def group_alive(record: dict[str, Any]) -> bool:
    """Whether the recorded process group still has processes of ours."""
    members = group_members(record["pgid"])
    if record["pgid"] in members and start_time(record["pgid"]) != record["start"]:
        return False  # the pid now leads someone else's group
    return bool(members)


def kill(pids, sig) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def wait_gone(pids_of, timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while (left := pids_of()) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def descendants(pid: int) -> dict[int, int]:
    """Live descendants of ``pid`` -> their start times (children that left its group, e.g.
    PostgreSQL's backends, which start sessions of their own)."""
    parents = {}
    for child, fields in _live_stats():
        parents.setdefault(int(fields[1]), []).append((child, int(fields[19])))
    found, todo = {}, [pid]
    while todo:
        for child, started in parents.get(todo.pop(), []):
            if child not in found:
                found[child] = started
                todo.append(child)
    return found


def stop_group(record: dict[str, Any], first_signal: int = signal.SIGTERM,
               grace: float = 20.0) -> None:
    """``first_signal`` to the group's leader, after ``grace`` s SIGTERM to the group, then
    SIGKILL to what is left (and to the leader's descendants outside its group); SIGKILL as
    ``first_signal`` goes to all of them at once. Only when the group is still the one recorded."""
    if not group_alive(record):
        return
    pgid = record["pgid"]
    tree = descendants(pgid)

    def left() -> list[int]:
        return group_members(pgid) + [p for p, t in tree.items() if start_time(p) == t]

    steps = [(signal.SIGKILL, 10.0)]
    if first_signal != signal.SIGKILL:
        if pgid in group_members(pgid):
            kill([pgid], first_signal)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, first_signal)
        if not wait_gone(left, grace):
            return
        steps.insert(0, (signal.SIGTERM, 5.0))
    for sig, wait in steps:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, sig)
        kill([p for p, t in tree.items() if start_time(p) == t], sig)
        if not wait_gone(left, wait):
            return


def spawn(cmd: list[str], env: dict[str, str], log_path: Path, cwd: Path | None = None,
          user: str | None = None) -> dict[str, Any]:
    """Start ``cmd`` in a new session (its own process group) with output to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    extra = {"user": user, "group": pwd.getpwnam(user).pw_gid, "extra_groups": []} if user else {}
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True,
                                **extra)
    return {"pgid": proc.pid, "start": start_time(proc.pid), "log": str(log_path)}


def free_port(host: str) -> int:
    """A port free on ``host`` a moment ago (the server started on it is checked afterwards)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_in_use(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False
