"""``python -m sweeps run … --reuse``: a trial whose signature already has a finished run with its
checkpoint is not trained again.

The trial's signature (:func:`sweeps.lineage.config_signature`: resolved config, data fingerprint,
code version) is looked up among the finished runs of the experiment that carry a Tune checkpoint
(``sepcore.tune_checkpoint``, tagged on every trial run when its sweep ends). When one is found,
the trial replays that run instead of training: it reports the run's per-epoch metrics to Tune
(the last epoch with the stored checkpoint, so the sweep's ranking, push and registration work as
for a trained trial), and its own child run gets the same metrics, its test scores and a
``sepcore.reused_from`` tag naming the run. A reused run is taken as it ended: a trial the
scheduler stopped early stays stopped at that epoch.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

REUSED_TAG = "sepcore.reused_from"
TUNE_CHECKPOINT_TAG = "sepcore.tune_checkpoint"
# what a replay does not send back to Tune as epoch metrics (sweep-level and closing values)
_NOT_EPOCH = ("test_", "best_", "wall_time_s", "gpu_hours", "epochs_run", "params")


def find_reusable(client, experiment_id: str, signature: str, parent_run_id: str):
    """The newest finished run of ``signature`` in the experiment (not under this sweep's parent)
    whose Tune checkpoint still exists; None when there is none."""
    from sweeps.lineage import SIGNATURE_TAG

    runs = client.search_runs([experiment_id], filter_string=(
        f"tags.`{SIGNATURE_TAG}` = '{signature}' and attributes.status = 'FINISHED'"),
        max_results=50, order_by=["attributes.start_time DESC"])
    for run in runs:
        tags = run.data.tags
        if tags.get("mlflow.parentRunId") == parent_run_id or TUNE_CHECKPOINT_TAG not in tags:
            continue
        if _checkpoint_exists(tags[TUNE_CHECKPOINT_TAG]):
            return run
    return None


def _checkpoint_exists(path: str) -> bool:
    if "://" not in path:
        return Path(path).is_dir()
    import pyarrow.fs

    filesystem, inner = pyarrow.fs.FileSystem.from_uri(path)
    return filesystem.get_file_info(inner).type == pyarrow.fs.FileType.Directory


def epoch_history(client, run) -> list[dict[str, float]]:
    """The run's per-epoch metrics, one dict per epoch (step), in order."""
    rows: dict[int, dict[str, float]] = {}
    for key in run.data.metrics:
        if key.startswith(_NOT_EPOCH):
            continue
        for metric in client.get_metric_history(run.info.run_id, key):
            if metric.step >= 1:
                rows.setdefault(metric.step, {})[key] = metric.value
    return [rows[step] for step in sorted(rows)]


def fetch_checkpoint(path: str, out_dir: Path, names: tuple[str, ...]) -> None:
    """Copy the checkpoint files ``names`` of a Tune checkpoint folder (local or remote)."""
    from ray import tune

    with tune.Checkpoint(path).as_directory() as folder:
        for name in names:
            if (Path(folder) / name).exists():
                shutil.copyfile(Path(folder) / name, out_dir / name)


def replay(client, previous, run, out_dir: Path, names: tuple[str, ...]) -> list[dict[str, Any]]:
    """Log ``previous``'s metrics and test results to the trial's ``run`` and fetch its checkpoint
    into ``out_dir``; returns the per-epoch metrics to report to Tune (none, and nothing done,
    when the run has no epoch)."""
    history = epoch_history(client, previous)
    if not history:
        return []
    fetch_checkpoint(previous.data.tags[TUNE_CHECKPOINT_TAG], out_dir, names)
    for row in history:
        run.log_metrics(row, step=int(row.get("epoch", 0)))
    closing = {k: v for k, v in previous.data.metrics.items()
               if k.startswith("test_") or k in ("epochs_run", "params")}
    run.log_metrics(closing, step=int(history[-1].get("epoch", 0)) if history else 0)
    tags = {REUSED_TAG: previous.info.run_id}
    if "sepcore.eval_protocol" in previous.data.tags:
        tags["sepcore.eval_protocol"] = previous.data.tags["sepcore.eval_protocol"]
    run.set_tags(tags)
    log.info("trial reuses run %s (%d epochs); nothing is trained", previous.info.run_id,
             len(history))
    return history


def reused_runs(runs: list[Any]) -> list[Any]:
    return [r for r in runs if REUSED_TAG in r.data.tags]
