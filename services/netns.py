"""Worker "hosts" on one machine: Linux network and mount namespaces for the stack's Ray workers.

One bridge per stack (``sep<N>br``, address ``10.213.N.1/24``, the address the stack's servers
listen on) and, per worker, a network namespace (``sep<N>w<i>``) joined to the bridge by a veth
pair and given ``10.213.N.(1+i)``. The namespaces get no default route: a worker reaches the
stack's subnet and nothing else. :func:`node_command` wraps a command so that it runs in that
namespace *and* in its own mount and UTS namespaces, with a fresh tmpfs on ``/tmp`` as its working
directory and its own host name: a file one node writes there is invisible to the other nodes and
to the head, as on separate hosts. Needs root (``ip netns``, ``unshare``); :func:`unavailable`
says why not when they cannot be used.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import shutil
import subprocess
import time
from pathlib import Path

log = logging.getLogger(__name__)

SUPERNET = ipaddress.ip_network("10.213.0.0/16")

# The worker's wrapper: $0 is its host name, "$@" the command. `ip netns exec` and `unshare`
# exec their command (no extra process), so the command keeps the process group of the caller.
# Folders the node must still see although they lie under /tmp (a checkout or venv there: the
# code every node runs, as a cluster mounts it) are bound back from the host's /tmp, reached
# for a moment through /mnt (in this private mount namespace only).
_NODE_SCRIPT = ('set -e; {keep}mount -t tmpfs -o mode=1777 tmpfs /tmp; {rebind}hostname "$0"; '
                'mkdir /tmp/node; cd /tmp/node; exec "$@"')


def _under_tmp(paths) -> list[str]:
    """The distinct folders of ``paths`` below ``/tmp`` (outermost only)."""
    found: list[str] = []
    for path in sorted({os.path.realpath(p) for p in paths}):
        if path.startswith("/tmp/") and not any(path.startswith(f + "/") for f in found):
            found.append(path)
    return found


def node_script(shared=()) -> str:
    """The wrapper script; ``shared`` folders below ``/tmp`` stay visible on the node."""
    import shlex

    kept = _under_tmp(shared)
    if not kept:
        return _NODE_SCRIPT.format(keep="", rebind="")
    rebind = "".join(f"mkdir -p {shlex.quote(path)}; "
                     f"mount --bind {shlex.quote('/mnt' + path[len('/tmp'):])} "
                     f"{shlex.quote(path)}; " for path in kept)
    return _NODE_SCRIPT.format(keep="mount --bind /tmp /mnt; ",
                               rebind=rebind + "umount -l /mnt; ")


class NamespaceError(RuntimeError):
    """An ``ip``/``unshare`` command failed (its stderr is in the message)."""


def _ip(*args: str, netns: str | None = None) -> str:
    cmd = ["ip", *(["netns", "exec", netns, "ip"] if netns else []), *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        raise NamespaceError(f"`{' '.join(cmd)}` failed: {done.stderr.strip()}")
    return done.stdout


def unavailable() -> str | None:
    """Why worker namespaces cannot be used here (``None`` when they can)."""
    if os.geteuid() != 0:
        return "not root (ip netns and unshare need it)"
    for tool in ("ip", "unshare", "mount", "hostname"):
        if shutil.which(tool) is None:
            return f"`{tool}` not found"
    probe = f"sepprobe{os.getpid()}"
    try:
        _ip("netns", "add", probe)
        _ip("netns", "del", probe)
        done = subprocess.run(["unshare", "--mount", "--uts", "--propagation", "private", "sh",
                               "-c", "mount -t tmpfs tmpfs /tmp"], capture_output=True,
                              text=True, timeout=30, check=False)
    except (NamespaceError, OSError, subprocess.SubprocessError) as exc:
        return str(exc)
    if done.returncode != 0:
        return f"unshare --mount failed: {done.stderr.strip()}"
    return None


_ROUTE_TYPES = {"unicast", "local", "broadcast", "multicast", "unreachable", "blackhole",
                "prohibit", "throw", "nat", "anycast"}


def used_networks() -> list[ipaddress.IPv4Network]:
    """IPv4 networks of this machine's addresses and routes (the default route excluded)."""
    found = []
    for line in _ip("-4", "-o", "addr", "show").splitlines():
        parts = line.split()
        if "inet" in parts:
            found.append(ipaddress.ip_interface(parts[parts.index("inet") + 1]).network)
    for line in _ip("-4", "route", "show", "table", "all").splitlines():
        parts = [p for p in line.split() if p not in _ROUTE_TYPES]
        if not parts or parts[0] == "default":
            continue
        try:
            found.append(ipaddress.ip_network(parts[0], strict=False))
        except ValueError:
            continue
    return found


def pick_subnet(bridge_name) -> int:
    """The first ``N`` in 1..254 such that nothing here uses ``10.213.N.0/24`` nor the bridge
    name ``bridge_name(N)``."""
    used = used_networks()
    for index in range(1, 255):
        net = ipaddress.ip_network(f"10.213.{index}.0/24")
        if any(net.overlaps(other) for other in used) or link_exists(bridge_name(index)):
            continue
        return index
    raise NamespaceError(f"no free /24 left in {SUPERNET} for the stack's bridge")


def address(index: int, host: int) -> str:
    """``10.213.<index>.<host>`` (host 1 is the bridge, 2.. the workers)."""
    return f"10.213.{index}.{host}"


def link_exists(name: str) -> bool:
    return Path(f"/sys/class/net/{name}").exists()


def netns_exists(name: str) -> bool:
    return Path(f"/var/run/netns/{name}").exists() or Path(f"/run/netns/{name}").exists()


def create_bridge(bridge: str, ip: str) -> None:
    if link_exists(bridge):
        return
    _ip("link", "add", bridge, "type", "bridge")
    _ip("addr", "add", f"{ip}/24", "dev", bridge)
    _ip("link", "set", bridge, "up")
    log.info("bridge %s with %s/24", bridge, ip)


def create_node(netns: str, host_if: str, node_if: str, bridge: str, ip: str) -> None:
    """Network namespace ``netns`` with ``ip`` on a veth pair whose other end is on ``bridge``."""
    if not netns_exists(netns):
        _ip("netns", "add", netns)
    if not link_exists(host_if):
        _ip("link", "add", host_if, "type", "veth", "peer", "name", node_if)
        _ip("link", "set", node_if, "netns", netns)
        _ip("link", "set", host_if, "master", bridge, "up")
        _ip("addr", "add", f"{ip}/24", "dev", node_if, netns=netns)
        _ip("link", "set", node_if, "up", netns=netns)
        _ip("link", "set", "lo", "up", netns=netns)
    log.info("network namespace %s with %s", netns, ip)


def netns_pids(netns: str) -> list[int]:
    """Processes living in network namespace ``netns``."""
    if not netns_exists(netns):
        return []
    done = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True,
                          timeout=30, check=False)
    return [int(p) for p in done.stdout.split() if p.isdigit()]


def delete_node(netns: str, host_if: str) -> None:
    """Delete the namespace (its veth pair goes with it) and what is left of the host end."""
    if netns_exists(netns):
        _ip("netns", "del", netns)
    for _ in range(50):  # the host end goes with the namespace, a moment later
        if not link_exists(host_if):
            return
        time.sleep(0.1)
    with contextlib.suppress(NamespaceError):  # gone in between
        _ip("link", "del", host_if)


def delete_bridge(bridge: str) -> None:
    if link_exists(bridge):
        _ip("link", "del", bridge)


def node_command(netns: str, hostname: str, cmd: list[str], shared=()) -> list[str]:
    """``cmd`` run in ``netns``, in its own mount and UTS namespaces: tmpfs on ``/tmp``, working
    directory ``/tmp/node``, host name ``hostname``; the ``shared`` folders (the checkout, the
    venv, the stack's state) stay visible even when they lie below ``/tmp``."""
    return ["ip", "netns", "exec", netns, "unshare", "--mount", "--uts", "--propagation",
            "private", "sh", "-c", node_script(shared), hostname, *cmd]
