"""The test helpers that stop what a test started (tests/procs.py), on plain `sleep` processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from tests.procs import kill_strays, pids_in_group, pids_mentioning, run_group, stop_group


def test_run_group_ends_what_the_command_left_behind(tmp_path):
    marker = str(tmp_path / "left-behind")
    done = run_group(["bash", "-c", f"exec -a {marker} sleep 300 & echo $!"], timeout=30)
    assert done.returncode == 0
    orphan = int(done.stdout.split()[0])
    assert orphan not in pids_mentioning(marker)  # the group was ended when sh returned


def test_run_group_timeout_ends_the_group(tmp_path):
    marker = str(tmp_path / "slow")
    with pytest.raises(AssertionError, match="ran past 1"):
        run_group(["bash", "-c", f"(exec -a {marker} sleep 300) & sleep 300"], timeout=1)
    assert pids_mentioning(marker) == []


def test_stop_group_and_kill_strays(tmp_path):
    marker = str(tmp_path / "stray")
    # a leader that ignores SIGTERM and a child that left the group (a stray)
    leader = subprocess.Popen([sys.executable, "-c", (
        "import os, signal, subprocess, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "subprocess.Popen(['bash', '-c', 'exec -a \"$MARK\" sleep 300'], "
        "start_new_session=True); time.sleep(300)")], start_new_session=True,
        env={**os.environ, "MARK": marker})  # the marker is not in the leader's command line
    while not pids_mentioning(marker):
        assert leader.poll() is None
        time.sleep(0.05)
    stop_group(leader, grace=0.5)
    assert leader.returncode is not None and pids_in_group(leader.pid) == []
    assert len(kill_strays(marker, grace=0.5)) == 1  # found by its command line, killed
    assert pids_mentioning(marker) == []
