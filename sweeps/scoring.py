"""Test scoring after a sweep, on the workers: each pushed checkpoint to score (the best trial on
the whole test set, trials stopped before their own test evaluation) is scored in a Ray task with
a trial's resources — fetched from the artifact store into that node's cache (SHA-256 verified),
run on the task's GPU when Ray gave it one (BSSEval there too), its metrics logged to the trial's
MLflow run. The driver (on a cluster: the head node, no GPU) only submits and waits.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass
class Scoring:
    """What every scoring task needs from the driver."""

    tracking_uri: str
    artifacts_uri: str
    cache_dir: str | None  # data.cache_dir: the node's checkpoint cache is beneath it
    # the tracking server's basic auth, as trials get it (never printed or logged)
    credentials: tuple[str, str] | None = field(default=None, repr=False)


@dataclass
class ScoreJob:
    """One checkpoint to score: a trial's pushed checkpoint and its run."""

    trial_id: str
    run_id: str
    uri: str
    sha256: str
    max_tracks: int | None  # None: the whole test set
    step: int


def score_stored(scoring: Scoring, job: ScoreJob) -> dict[str, object]:
    """Score ``job``'s checkpoint in this process (a Ray task: :func:`score_trials`) and log its
    test metrics to the trial's run. Returns where it ran (pid, device).

    Raises:
        RuntimeError: the tracking server did not take the metrics in time.
    """
    from mlflow import MlflowClient

    from services.store import open_store
    from sweeps.fetch import fetch_stored, node_cache
    from sweeps.tracking import FLUSH_WAIT_S, TrialRun, credentials, set_credentials
    from sweeps.trainable import log_test_metrics, trial_device

    if scoring.credentials and not credentials():
        set_credentials(scoring.credentials)
    path, _ = fetch_stored(open_store(scoring.artifacts_uri), job.uri,
                           node_cache(scoring.cache_dir), job.sha256)
    device = trial_device("auto")  # Ray's GPU when it gave one, else the CPU
    run = TrialRun(MlflowClient(scoring.tracking_uri), job.run_id, created=False)
    with tempfile.TemporaryDirectory(prefix="sepcore-score-") as folder:
        log_test_metrics(run, path, job.max_tracks, job.step, device=device,
                         out_dir=Path(folder))
        if not run.flush(FLUSH_WAIT_S):
            raise RuntimeError(f"the tracking server did not take the test metrics of run "
                               f"{job.run_id} within {FLUSH_WAIT_S:.0f} s")
    return {"trial_id": job.trial_id, "pid": os.getpid(), "device": device}


def score_trials(scoring: Scoring, jobs: list[ScoreJob], cpu: float,
                 gpu: float) -> dict[str, dict[str, object]]:
    """Run :func:`score_stored` for every job at once, each a Ray task with a trial's resources
    (``cpu``, ``gpu``), and wait for them all. A task that fails is a warning naming its trial:
    the sweep's outcome (pushed checkpoints, the registered version) stands without its scores.
    Returns, per scored trial, where it ran."""
    import ray

    task = ray.remote(num_cpus=cpu, num_gpus=gpu)(score_stored)
    pending = {task.remote(scoring, job): job for job in jobs}
    done: dict[str, dict[str, object]] = {}
    while pending:
        [ref], _ = ray.wait(list(pending), num_returns=1)
        job = pending.pop(ref)
        try:
            done[job.trial_id] = ray.get(ref)
        except Exception as exc:  # noqa: BLE001 - any task error: its trial goes unscored
            cause = getattr(exc, "cause", None) or exc  # a RayTaskError's original exception
            log.warning("trial %s: test scoring failed (%s: %s); its run has no test metrics "
                        "from it", job.trial_id, type(cause).__name__,
                        str(cause).splitlines()[0] if str(cause) else "")
            continue
        log.info("scored trial %s on %s (%d/%d, %s)", job.trial_id,
                 f"{job.max_tracks} test songs" if job.max_tracks else "the whole test set",
                 len(done), len(jobs), done[job.trial_id]["device"])
    return done
