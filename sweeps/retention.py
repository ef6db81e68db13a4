"""Checkpoint retention done by the trial: the best ``num_to_keep`` checkpoints by the sweep
metric, and the latest, stay in Tune's storage; the trial deletes the others itself.

Why not Tune's ``CheckpointConfig(num_to_keep=N)``: with it, Tune's driver writes and uploads a
snapshot of the whole experiment state (every trial's record: O(trials)) each time any trial has
saved N checkpoints since the last snapshot, and waits for the previous upload first
(``_ExperimentCheckpointManager.on_trial_checkpoint`` in ``ray.tune.execution.experiment_state``;
no setting turns that off, ``TUNE_GLOBAL_CHECKPOINT_S`` only spaces the other snapshots). Trials
that checkpoint every epoch then cost the driver O(trials) per report, O(trials²) per sweep. So
Tune keeps every checkpoint in its records (``num_to_keep=None``: snapshots come on Tune's own
period) and each trial deletes, after each report, what the rule above drops.

Tune's records then name deleted checkpoints: the best one is chosen by :func:`best_checkpoint`
(ranked as here, the first that still exists), the latest is always kept, and a trial
restored from a snapshot older than its last reports, whose recorded latest checkpoint is gone,
resumes from the newest one it kept (:meth:`Retention.resume_from`). What a trial kept is
recorded in ``sepcore-checkpoints.json`` beside its checkpoints, written after each report (when
Tune has registered the checkpoint, so a partly written checkpoint is never in it).
"""

from __future__ import annotations

import json
import logging
import math
import posixpath
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

RECORD = "sepcore-checkpoints.json"


@dataclass(frozen=True)
class KeepPolicy:
    """Which checkpoints a trial keeps: the best ``num_to_keep`` by ``metric`` (``mode``) and
    the latest."""

    metric: str
    mode: str
    num_to_keep: int


def _rank(value: Any, mode: str, order: int) -> tuple:
    """Sort key (larger is better), as Tune's checkpoint manager ranks: a missing or NaN value
    below every number, then the value (negated for ``min``), ties to the later checkpoint."""
    number = float(value) if isinstance(value, int | float) and not isinstance(value, bool) \
        else math.nan
    if math.isnan(number):
        return (False, 0.0, order)
    return (True, number if mode == "max" else -number, order)


def best_checkpoint(result, metric: str, mode: str):
    """The best checkpoint a trial (Tune ``Result``) kept by ``metric``, or None when none has a
    value of it. The candidates are those of the trial's record and Tune's (a Tune state restored
    from an older snapshot lacks the trial's later ones; the record can lack the last report's
    if the trial ended before writing it), ranked as the trial ranks them; the first that still
    exists in storage is taken. (Tune's ``Result.get_best_checkpoint`` takes the first of equal
    values and can take a NaN one: one the trial may have deleted.)"""
    from pyarrow.fs import FileType
    from ray import tune

    fs = result.filesystem
    record = _read_record(fs, result.path)
    known = {posixpath.join(result.path, e["name"]): e for e in record}
    after = max((e["order"] for e in record), default=-1) + 1
    for order, (checkpoint, metrics) in enumerate(result.best_checkpoints or []):
        # Tune lists its own in report order among equal values; those not in the record are
        # the newest (reported after the record was last written)
        known.setdefault(checkpoint.path.rstrip("/"), {"value": metrics.get(metric),
                                                       "order": after + order})
    ranked = sorted(((_rank(e["value"], mode, e["order"]), path) for path, e in known.items()),
                    reverse=True)
    for key, path in ranked:
        if key[0] and fs.get_file_info(path).type != FileType.NotFound:
            return tune.Checkpoint(path=path, filesystem=fs)
    return None


def _read_record(fs, folder: str) -> list[dict[str, Any]]:
    try:
        with fs.open_input_stream(posixpath.join(folder, RECORD)) as src:
            return json.loads(src.read())
    except FileNotFoundError:
        return []
    except OSError as exc:  # storage unreachable: Tune's records alone (retention goes on)
        log.warning("%s not read: %s", RECORD, exc)
        return []


@dataclass
class Retention:
    """One trial's retention: the checkpoints it has in storage (``entries``: name, score, order
    of report) and what it deletes after each report."""

    policy: KeepPolicy | None
    entries: list[dict[str, Any]] = field(default_factory=list)

    def report(self, metrics: dict[str, Any], folder) -> None:
        """``tune.report(metrics)`` with the checkpoint in ``folder``, then :meth:`commit`. Tune
        can stop the trial inside its report (the thread then exits): the checkpoint is
        registered by then, so the older ones are still deleted."""
        from ray import tune

        try:
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))
        except SystemExit:
            if self.policy is not None:
                self.commit(tune.get_checkpoint(), metrics)
            raise
        if self.policy is not None:
            self.commit(tune.get_checkpoint(), metrics)  # the persisted one, in storage

    def commit(self, checkpoint, metrics: dict[str, Any]) -> None:
        """Record ``checkpoint`` (just reported, in storage) and delete what the policy drops.
        A storage error is a warning: what could not be deleted is tried again next time."""
        if self.policy is None or checkpoint is None:
            return
        fs = checkpoint.filesystem
        folder, name = posixpath.split(checkpoint.path.rstrip("/"))
        order = max((e["order"] for e in self.entries), default=-1) + 1
        # a name Tune reuses (its counter restored from an older snapshot) holds the new one
        self.entries = [e for e in self.entries if e["name"] != name]
        self.entries.append({"name": name, "value": metrics.get(self.policy.metric),
                             "order": order})
        for entry in self._dropped():
            try:
                fs.delete_dir(posixpath.join(folder, entry["name"]))
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("checkpoint %s not deleted (tried again after the next report): %s",
                            entry["name"], exc)
                continue
            self.entries.remove(entry)
        try:
            with fs.open_output_stream(posixpath.join(folder, RECORD)) as out:
                out.write(json.dumps(self.entries).encode())
        except OSError as exc:
            log.warning("%s not written: %s", RECORD, exc)

    def _dropped(self) -> list[dict[str, Any]]:
        ranked = sorted(self.entries, key=self._key)
        latest = max(self.entries, key=lambda e: e["order"])
        kept = ranked[-self.policy.num_to_keep:] + [latest]
        return [e for e in self.entries if e not in kept]

    def _key(self, entry: dict[str, Any]) -> tuple:
        return _rank(entry["value"], self.policy.mode, entry["order"])

    def resume_from(self, checkpoint):
        """The checkpoint a trial restarted with Tune's ``checkpoint`` resumes from: that one,
        or when the trial deleted it after Tune's state was last saved, the newest it kept
        (None: start over). Loads the trial's record, so retention goes on where it stopped."""
        if checkpoint is None:
            return None
        from pyarrow.fs import FileType
        from ray import tune

        fs = checkpoint.filesystem
        folder = posixpath.dirname(checkpoint.path.rstrip("/"))
        self.entries = _read_record(fs, folder)
        if fs.get_file_info(checkpoint.path).type != FileType.NotFound:
            return checkpoint
        for entry in sorted(self.entries, key=lambda e: e["order"], reverse=True):
            path = posixpath.join(folder, entry["name"])
            if fs.get_file_info(path).type != FileType.NotFound:
                log.warning("the trial's checkpoint %s is gone (deleted after Tune's state was "
                            "saved); it resumes from %s, the newest it kept",
                            posixpath.basename(checkpoint.path), entry["name"])
                return tune.Checkpoint(path=path, filesystem=fs)
        log.warning("the trial's checkpoint %s and every one it kept are gone: it starts over",
                    checkpoint.path)
        return None
