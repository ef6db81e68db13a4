"""`python -m sweeps extend` / `pause`: the CLI's answers to bad input, the pause machinery with
stand-in trials (no Ray). The tiny sweep that is paused, resumed and extended on local Ray is in
test_runner.py (it shares that module's Ray)."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from types import SimpleNamespace

import pytest

from sweeps import pause
from sweeps.__main__ import main
from sweeps.runner import parse_increment


@pytest.mark.parametrize("items, named", [
    (["tune.num_samples=+0"], "+0 adds no trial"),
    (["tune.num_samples=+two"], "'+two'"),
    (["tune.num_samples=8"], "'8'"),  # a total would be ambiguous: +N only
    (["tune.num_samples=+1.5"], "'+1.5'"),
    ([], "got 0"),
    (["tune.num_samples=+1", "tune.num_samples=+2"], "got 2"),
])
def test_extend_refuses_a_bad_increment_in_one_line(items, named, tmp_path, capsys):
    assert main(["extend", str(tmp_path), *items]) == 2
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert "tune.num_samples" in err and named in err and out == ""


def test_extend_takes_no_other_override(tmp_path, capsys):
    assert main(["extend", str(tmp_path), "tune.num_samples=+2", "train.lr=0.1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "train.lr" in err
    assert parse_increment([" tune.num_samples = +12 "]) == 12


@pytest.mark.parametrize("command", ["extend", "pause"])
def test_unknown_experiment_is_named(command, tmp_path, capsys):
    missing = tmp_path / "no-such-sweep"
    extra = ["tune.num_samples=+2"] if command == "extend" else []
    assert main([command, str(missing), *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "experiment" in err and "no-such-sweep" in err
    assert not missing.exists()  # nothing written for a wrong name


def test_pause_marker_is_written_and_cleared(tmp_path, capsys):
    (tmp_path / "tuner.pkl").write_bytes(b"")
    assert main(["pause", str(tmp_path)]) == 0
    assert pause.pause_requested(str(tmp_path)) and "resume" in capsys.readouterr().out
    assert pause.clear_pause(str(tmp_path)) and not pause.pause_requested(str(tmp_path))
    assert not pause.clear_pause(str(tmp_path))


def _trial(trial_id, status="RUNNING"):
    return SimpleNamespace(trial_id=trial_id, status=status)


class _Searcher:
    metric, mode = "valid_sisdr", "max"

    def suggest(self, trial_id):
        return {"train.lr": 1e-3}


def test_pause_waits_for_running_trials_then_interrupts_tune(tmp_path, monkeypatch):
    kills = []
    monkeypatch.setattr(pause.os, "kill", lambda pid, sig: kills.append((pid, sig)))
    monkeypatch.setattr(pause.signal, "getsignal", lambda sig: lambda *a: None)
    pause.reset(str(tmp_path))
    gate = pause.PauseGate(_Searcher())
    callback = pause.PauseCallback(str(tmp_path / "moved-away"), poll_s=0.0)
    trials = [_trial("a"), _trial("b"), _trial("c", "TERMINATED")]
    callback.on_step_begin(1, trials)
    assert gate.suggest("d") == {"train.lr": 1e-3} and not kills  # no marker: runs on
    (tmp_path / pause.PAUSE_MARKER).write_text("")  # in the run's folder, not the pickled one
    callback.on_step_begin(2, trials)
    assert gate.suggest("d") is None  # no new trial while pausing
    callback.on_trial_result(2, trials, trials[0], {"epoch": 1})
    callback.on_step_begin(3, trials)
    assert not kills  # "b" is still in its epoch
    callback.on_trial_error(3, trials, trials[1])
    callback.on_step_begin(4, trials)
    assert kills == [(os.getpid(), signal.SIGUSR1)] and pause.fired()
    assert gate.suggest("d") is None  # "a" still runs: Tune does not wait for a trial
    callback.on_step_begin(5, [_trial(t, "TERMINATED") for t in "abc"])
    # nothing live: Tune would block for the next trial, deaf to the interrupt; one is given
    # (it stays PENDING in the saved state)
    assert gate.suggest("d") == {"train.lr": 1e-3}
    callback.on_step_begin(6, trials)
    assert len(kills) == 1
    pause.reset()
    assert not pause.fired() and gate.suggest("e") is not None


def test_pause_never_signals_without_tunes_handler(tmp_path, monkeypatch):
    kills = []
    monkeypatch.setattr(pause.os, "kill", lambda pid, sig: kills.append(sig))
    monkeypatch.setattr(pause.signal, "getsignal", lambda sig: signal.SIG_DFL)
    pause.reset(str(tmp_path))
    (tmp_path / pause.PAUSE_MARKER).write_text("")
    pause.PauseCallback(str(tmp_path), poll_s=0.0).on_step_begin(1, [])
    assert kills == []  # SIGUSR1's default action would kill the driver
    pause.reset()


def test_the_extension_starts_from_the_newest_sessions_searcher_state(tmp_path):
    """A resumed sweep's folder holds one searcher state per Tune session, and Tune rewrites all
    of them at every sync: the stale first session's file can carry the newest mtime (seen in a
    clean-clone run: the extension's study then lacked the resumed trial). The newest session is
    the one whose name (its start time) sorts last."""
    from sweeps.runner import _restore_searcher

    old = tmp_path / "searcher-state-2026-12-02_08-48-37.pkl"
    new = tmp_path / "searcher-state-2026-12-02_08-48-42.pkl"
    for path in (old, new):
        path.write_bytes(path.name.encode())
    os.utime(new, ns=(1_000_000_000, 1_000_000_000))
    os.utime(old, ns=(2_000_000_000, 2_000_000_000))  # the stale file copied last

    class Recorder:
        def restore_from_dir(self, folder):
            self.names = sorted(os.listdir(folder))
            self.content = (Path(folder) / self.names[0]).read_bytes()

    searcher = Recorder()
    _restore_searcher(searcher, str(tmp_path))
    assert searcher.names == [new.name] and searcher.content == new.name.encode()
