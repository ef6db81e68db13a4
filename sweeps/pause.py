"""``python -m sweeps pause EXPERIMENT``: stop a running sweep at the next epoch boundary.

``pause`` writes a marker file into the Tune experiment folder (local or ``s3://``). The sweep's
driver polls it from a Tune callback (:class:`PauseCallback`, at most every ``POLL_S`` seconds):
once it is there, the searcher suggests no new trial (:class:`PauseGate`), each trial running at
that moment finishes its current epoch (every epoch reports with a checkpoint), and then the driver
interrupts Tune as Ctrl+C would (SIGUSR1: Tune saves its experiment state one last time and
returns). The experiment is left restorable; ``python -m sweeps resume EXPERIMENT`` removes the
marker and continues it with ``Tuner.restore`` (unfinished trials from their last checkpoint, the
searcher's state kept).
"""

from __future__ import annotations

import logging
import os
import signal
import time
from typing import Any

from ray.tune import Callback
from ray.tune.search import Searcher

from sweeps.errors import SweepError

log = logging.getLogger(__name__)

PAUSE_MARKER = "sepcore_pause"
PAUSED_TAG = "sepcore.paused"
POLL_S = 2.0  # a marker on S3 costs one request per poll

# the driver's pause state: one sweep runs per driver process; run_sweep resets it
_state: dict[str, Any] = {"paused": False, "fired": False, "path": None, "live": 0}
LIVE = ("PENDING", "RUNNING", "PAUSED")


def reset(experiment_path: str | None = None) -> None:
    """A new driver run: not paused; ``experiment_path`` is where its callback looks (a restored
    callback, unpickled from tuner.pkl, may carry the folder's former location)."""
    _state.update(paused=False, fired=False, path=experiment_path, live=0)


def fired() -> bool:
    """Whether this driver interrupted its Tune run for a pause."""
    return _state["fired"]


def _fs(experiment: str):
    import pyarrow.fs

    if "://" in experiment:
        return pyarrow.fs.FileSystem.from_uri(experiment)
    return pyarrow.fs.LocalFileSystem(), os.path.abspath(experiment)


def _marker(experiment: str):
    fs, path = _fs(experiment.rstrip("/"))
    return fs, f"{path}/{PAUSE_MARKER}"


def pause_requested(experiment: str) -> bool:
    import pyarrow.fs

    fs, marker = _marker(experiment)
    return fs.get_file_info(marker).type != pyarrow.fs.FileType.NotFound


def request_pause(experiment: str) -> str:
    """Write the marker into ``experiment`` (a Tune experiment folder); returns its path."""
    import pyarrow.fs

    fs, marker = _marker(experiment)
    folder = marker.rsplit("/", 1)[0]
    if fs.get_file_info(f"{folder}/tuner.pkl").type == pyarrow.fs.FileType.NotFound:
        raise SweepError(f"{experiment!r} is not a Tune experiment folder (no tuner.pkl there); "
                         f"pass the folder printed by `sweeps run`", key="experiment")
    with fs.open_output_stream(marker) as out:
        out.write(time.strftime("%Y-%m-%dT%H:%M:%SZ\n", time.gmtime()).encode())
    return marker


def clear_pause(experiment: str) -> bool:
    """Remove the marker (``resume`` does, before restoring); whether there was one."""
    if not pause_requested(experiment):
        return False
    fs, marker = _marker(experiment)
    fs.delete_file(marker)
    return True


class PauseGate(Searcher):
    """Wraps a searcher: while the driver is pausing, no new trial is suggested (``None`` means
    "not now" to Tune, not "finished", so the restored searcher continues after ``resume``).

    Except when no trial is live: Tune then waits (up to 10 min, deaf to the interrupt) for the
    searcher's next trial, so one is suggested; it stays PENDING in the saved state and starts
    on ``resume``."""

    def __init__(self, searcher: Searcher):
        super().__init__(metric=searcher.metric, mode=searcher.mode)
        self.searcher = searcher

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return self.searcher.set_search_properties(metric, mode, config, **spec)

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if _state["paused"] and _state["live"]:
            return None
        return self.searcher.suggest(trial_id)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self.searcher.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        self.searcher.on_trial_complete(trial_id, result=result, error=error)

    def get_state(self) -> dict:
        return {}

    def set_state(self, state: dict) -> None:
        pass


class PauseCallback(Callback):
    """Driver-side: polls the pause marker; when it appears, waits until each trial running then
    has reported once more (its epoch and checkpoint), then interrupts Tune's loop."""

    def __init__(self, experiment_path: str, poll_s: float | None = None):
        self.experiment_path = experiment_path
        self.poll_s = poll_s  # None: the module's POLL_S
        self._last_poll = 0.0
        self._waiting: set[str] | None = None

    @property
    def path(self) -> str:
        return _state["path"] or self.experiment_path

    def on_step_begin(self, iteration: int, trials: list, **info) -> None:
        _state["live"] = sum(1 for t in trials if t.status in LIVE)
        if _state["fired"]:
            return
        if self._waiting is None:
            now = time.monotonic()
            if now - self._last_poll < (POLL_S if self.poll_s is None else self.poll_s):
                return
            self._last_poll = now
            if not pause_requested(self.path):
                return
            _state["paused"] = True
            self._waiting = {t.trial_id for t in trials if t.status == "RUNNING"}
            log.warning("pause requested: no new trial starts; waiting for %d running trial(s) "
                        "to finish their epoch", len(self._waiting))
        if not self._waiting:
            self._interrupt()

    def _done(self, trial) -> None:
        if self._waiting is not None:
            self._waiting.discard(trial.trial_id)

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        self._done(trial)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._done(trial)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._done(trial)

    def _interrupt(self) -> None:
        _state["fired"] = True
        # Tune's handler for SIGUSR1 (installed by tune.run in the main thread) ends the run
        # after saving the experiment state; without it the signal would kill the driver
        if not callable(signal.getsignal(signal.SIGUSR1)):
            log.error("cannot pause: Tune installed no SIGUSR1 handler (not the main thread?)")
            return
        log.warning("pausing: the experiment state is saved; continue with "
                    "`python -m sweeps resume %s`", self.path)
        os.kill(os.getpid(), signal.SIGUSR1)

    def __getstate__(self):  # pickled in tuner.pkl: a restored driver starts afresh
        return {"experiment_path": self.experiment_path, "poll_s": self.poll_s}

    def __setstate__(self, state):
        self.__init__(state["experiment_path"], state["poll_s"])
