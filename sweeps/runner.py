"""Run a sweep: a validated sweep file becomes a Ray Tune run, then artifacts, registry, report.

``run_sweep`` starts (or joins) Ray, opens the sweep's MLflow parent run, builds a ``tune.Tuner``
(OptunaSearch with TPE or Tune's grid/random generator, ASHA or FIFO, a ConcurrencyLimiter,
resources per trial, FailureConfig, CheckpointConfig by the sweep metric, RunConfig with a local
or ``s3://`` storage path), runs it, then pushes the top-k checkpoints to the artifact store,
registers the best one (alias ``champion`` only when it beats the current champion) and prints the
comparison table. ``resume_sweep`` continues an interrupted experiment with ``Tuner.restore``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from services.redact import redact, redact_data
from sweeps import pause
from sweeps.cluster import check_cluster, check_registry_source
from sweeps.errors import SweepError
from sweeps.fetch import stage_checkpoints
from sweeps.pause import PauseCallback, PauseGate
from sweeps.report import PUBLISHED_ARTIFACT
from sweeps.retention import KeepPolicy, best_checkpoint
from sweeps.spec import ROW, Sweep, load_sweep, row_dependency, split_stages, with_row_checkpoints

log = logging.getLogger(__name__)

SWEEP_STATE = "sepcore_sweep.json"  # how resume finds the sweep file, profile and overrides


@dataclass
class SweepOutcome:
    experiment_path: str
    parent_run_id: str
    tracking_uri: str
    trials: list[dict[str, Any]] = field(default_factory=list)
    pushed: list[dict[str, Any]] = field(default_factory=list)
    registered: dict[str, Any] | None = None
    report: str = ""
    orphaned: list[str] = field(default_factory=list)  # run ids closed by _close_orphans
    replayed: int = 0  # MLflow calls trials left unsent, sent by the driver after the sweep
    paused: bool = False  # stopped by `sweeps pause`: resume continues it


@dataclass
class Extension:
    """``sweeps extend``: a new Tune experiment beside ``previous`` under the same parent run."""

    previous: str  # the experiment whose searcher state it continues (the parent's latest)
    name: str  # its own Tune experiment name, ``<root>-x<number>``
    parent_run_id: str


# --- helpers --------------------------------------------------------------------------------------


def _absolute_paths(base: dict[str, Any]) -> dict[str, Any]:
    """Trials run in their own working directories: make the base's relative paths absolute."""
    base = json.loads(json.dumps(base))
    data = base.setdefault("data", {})
    if data.get("root") and "://" not in str(data["root"]):
        data["root"] = str(Path(data["root"]).resolve())
    data["cache_dir"] = str(Path(data.get("cache_dir") or ".cache/sepcore").resolve())
    return base


def _check_local_data(sweep: Sweep) -> None:
    """On the embedded local Ray the data root must exist before any trial starts."""
    root = sweep.base.get("data", {}).get("root")
    if root and "://" not in str(root) and not Path(root).is_dir():
        hint = (f"; write a synthetic tree there with `sep synth --out {root} --tracks 10 "
                f"--seconds 16` (or run `make demo`)" if "synth" in str(root) else "")
        raise SweepError(f"data root {root!r} does not exist{hint}", key="base.data.root",
                         file=sweep.file)


def _storage_path(path: str) -> str:
    return path if "://" in path else str(Path(path).resolve())


def _ray_job_ids() -> dict[str, str]:
    import ray

    ids = {"sepcore.ray_job_id": ray.get_runtime_context().get_job_id()}
    raw = os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR")
    if raw:
        try:
            submission = json.loads(raw).get("metadata", {}).get("job_submission_id")
        except ValueError:
            submission = None
        if submission:
            ids["sepcore.ray_submission_id"] = submission
    return ids


def _init_ray(address: str | None) -> None:
    import ray

    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, log_to_driver=True)
    elif os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=True)  # inside `ray job submit`: join the job's cluster
    else:
        ray.init(include_dashboard=False, log_to_driver=False)


def optuna_storage_url(url: str) -> str:
    """``tune.optuna_storage`` with a relative sqlite path made absolute (as tracking URIs)."""
    from sweeps.tracking import resolve_tracking_uri

    return resolve_tracking_uri(url) if url.startswith("sqlite:///") else url


def _search_and_space(sweep: Sweep, study_name: str | None = None, warm_from: str | None = None,
                      stream: int = 0):
    """The searcher (or the variant generator's space). ``warm_from``: an experiment folder whose
    saved Optuna searcher (its study: every finished trial, and the sampler) the new one continues
    (``Searcher.restore_from_dir``); ``stream``: see :func:`sweeps.space.basic_space`."""
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    from sweeps.space import basic_space, optuna_space

    t = sweep.tune
    if t.search_alg == "optuna":
        import optuna

        storage = (optuna.storages.RDBStorage(optuna_storage_url(t.optuna_storage))
                   if t.optuna_storage else None)
        searcher = OptunaSearch(space=optuna_space(sweep), metric=t.metric, mode=t.mode,
                                sampler=optuna.samplers.TPESampler(seed=t.seed),
                                points_to_evaluate=list(t.points_to_evaluate) or None,
                                storage=storage, study_name=study_name if storage else None)
        if warm_from:
            _restore_searcher(searcher, warm_from)
        return ConcurrencyLimiter(PauseGate(searcher), max_concurrent=t.max_concurrent), None
    return None, basic_space(sweep, stream)


def _restore_searcher(searcher, experiment_path: str) -> None:
    """Load the newest searcher state Tune saved in ``experiment_path`` (local or remote)."""
    import pyarrow.fs

    from sweeps.pause import _fs

    fs, path = _fs(experiment_path)
    states = [i for i in fs.get_file_info(pyarrow.fs.FileSelector(path, allow_not_found=True))
              if i.base_name.startswith("searcher-state-") and i.base_name.endswith(".pkl")]
    if not states:
        raise SweepError(f"{experiment_path} holds no saved searcher state "
                         f"(searcher-state-*.pkl)", key="experiment")
    # the newest session's file by the start time in its name (searcher-state-<YYYY-mm-dd_HH-MM-
    # SS>.pkl), not by mtime: Tune copies the whole folder, old sessions' files included, at every
    # sync, so a resumed sweep's stale first-session state can carry the newest mtime
    newest = max(states, key=lambda i: (i.base_name, i.mtime_ns or 0))
    with tempfile.TemporaryDirectory(prefix="sepcore-searcher-") as folder:
        pyarrow.fs.copy_files(newest.path, f"{folder}/{newest.base_name}",
                              source_filesystem=fs,
                              destination_filesystem=pyarrow.fs.LocalFileSystem())
        searcher.restore_from_dir(folder)


def _scheduler(sweep: Sweep, base_epochs: int):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    s = sweep.tune.scheduler
    if s.type == "fifo":
        return FIFOScheduler()
    return ASHAScheduler(time_attr="epoch", max_t=s.max_t or base_epochs,
                         grace_period=s.grace_period, reduction_factor=s.reduction_factor)


# --- the run --------------------------------------------------------------------------------------


def run_sweep(sweep: Sweep, address: str | None = None, overrides: list[str] | None = None,
              experiment_path: str | None = None, trainable=None,
              reuse: bool = False, extension: Extension | None = None,
              parent_run_id: str | None = None) -> SweepOutcome:
    """Run ``sweep`` (new, or continued when ``experiment_path`` holds an interrupted run).

    ``trainable`` replaces :func:`sweeps.trainable.train_trial` (same ``(config, context)``
    signature); the scale benchmark passes a trivial one to measure the machinery alone.
    ``reuse``: trials whose signature has a finished run with its checkpoint replay it instead
    of training (:mod:`sweeps.reuse`). ``extension``: a new Tune run that adds trials under an
    existing parent run (:func:`extend_sweep`); ``parent_run_id``: the parent of a resumed
    extension (its experiment folder is not the one the parent was created for).
    """
    from mlflow import MlflowClient
    from ray import tune

    from sweeps import lineage, tracking
    from sweeps.trainable import TrialContext, train_trial

    t = sweep.tune
    resume = experiment_path is not None
    if not address and not os.environ.get("RAY_ADDRESS"):
        _check_local_data(sweep)
    storage = _storage_path(t.storage_path)
    if resume:
        experiment_path = experiment_path.rstrip("/")
        name = experiment_path.rsplit("/", 1)[-1]
    elif extension is not None:
        name = extension.name
        experiment_path = f"{extension.previous.rstrip('/').rsplit('/', 1)[0]}/{name}"
        parent_run_id = extension.parent_run_id
    else:
        name = f"{sweep.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        experiment_path = f"{storage}/{name}"

    uri = tracking.resolve_tracking_uri(sweep.tracking.uri)  # without user:password@
    check_registry_source(sweep, uri)
    _init_ray(address)
    # on a cluster, nothing a trial writes or reads may be a path of this machine
    check_cluster(sweep, uri, _absolute_paths(sweep.base), address=address)
    client = MlflowClient(uri)
    # the checkpoints trials start from go to the artifact store (registry aliases pinned)
    sweep, staged = stage_checkpoints(sweep, client)
    base = _absolute_paths(sweep.base)
    experiment_id = tracking.ensure_experiment(client, sweep.experiment)
    lineage.mark_experiment_kind(client, experiment_id)
    commit, dirty = lineage.code_version()
    source = {**lineage.source_tags(sweep.file, commit, dirty), **_ray_job_ids()}
    tags = {"sepcore.sweep_file": sweep.file, "sepcore.sweep_digest": sweep.digest,
            "sepcore.profile": sweep.profile or "", "sepcore.git_commit": commit,
            "sepcore.sweep_name": sweep.name, "sepcore.metric": t.metric,
            "sepcore.mode": t.mode, **source}
    if t.optuna_storage:  # where optuna-dashboard finds the study
        tags.update({"sepcore.optuna_storage": optuna_storage_url(t.optuna_storage),
                     "sepcore.optuna_study": name})
    parent = tracking.start_parent_run(client, experiment_id, experiment_path, name,
                                       {k: redact(v) for k, v in tags.items()}, resume=resume,
                                       run_id=parent_run_id)
    if extension is not None:  # where the next `extend` finds the searcher state
        client.set_tag(parent, tracking.LAST_EXPERIMENT_TAG, redact(experiment_path))
    if resume:
        client.set_tag(parent, pause.PAUSED_TAG, "false")
        if pause.clear_pause(experiment_path):
            log.info("removed the pause marker of %s", redact(experiment_path))
    if not resume and extension is None:
        client.log_text(parent, json.dumps(redact_data(sweep.raw), indent=2, default=str),
                        "sweep.json")
        if dirty:  # the uncommitted changes the sweep ran with
            client.log_text(parent, lineage.dirty_diff(),
                            f"{lineage.DIFF_ARTIFACT}/git_diff.patch")
        if sweep.published:  # the paper's numbers per row, for `sweeps report`
            client.log_text(parent, json.dumps(sweep.published, indent=2), PUBLISHED_ARTIFACT)
    log.info("sweep %s: MLflow parent run %s in %s; pause it with `python -m sweeps pause %s`",
             name, parent, redact(uri), redact(experiment_path))

    base_cfg = sweep.config_for({})
    context = TrialContext(base=base, file=sweep.file, tracking_uri=uri,
                           experiment_id=experiment_id, parent_run_id=parent,
                           gpus_per_trial=t.resources.gpu, test_eval=t.test_eval,
                           test_max_tracks=t.test_max_tracks,
                           max_t=t.scheduler.max_t if t.scheduler.type == "asha" else None,
                           tags={"sepcore.sweep_name": sweep.name,
                                 tracking.EXPERIMENT_TAG: name, **source},
                           credentials=tracking.credentials(), reuse=reuse,
                           artifacts_uri=sweep.artifacts.uri, checkpoints=staged,
                           keep=KeepPolicy(t.metric, t.mode, t.num_to_keep))
    function = trainable or train_trial

    def trainable_with(context: TrialContext):
        return tune.with_resources(tune.with_parameters(function, context=context),
                                   {"cpu": t.resources.cpu, "gpu": t.resources.gpu})

    trainable = trainable_with(context)
    if not resume:
        _write_state(experiment_path, sweep, overrides, extension)
    first, second = split_stages(sweep)
    study = name if extension is None else client.get_run(parent).info.run_name
    tuner = _tuner(first, trainable, name, storage, experiment_path, resume, base_cfg,
                   study=study, warm_from=extension.previous if extension else None,
                   stream=int(name.rsplit("-x", 1)[1]) if extension else 0)
    results = _fit(tuner, experiment_path)
    if pause.fired():
        return _paused(client, experiment_id, parent, experiment_path, uri, name, results)
    if second is not None:
        # rows that start from another row's checkpoint (train.init_from: row:<id>) run after it
        checkpoints = _row_checkpoints(first, results, second, experiment_path)
        second = with_row_checkpoints(second, {row: c.uri for row, c in checkpoints.items()})
        path = f"{experiment_path}{STAGE2_SUFFIX}"
        trainable = trainable_with(replace(context, checkpoints={
            **staged, **{c.uri: c.sha256 for c in checkpoints.values()}}))
        tuner = _tuner(second, trainable, f"{name}{STAGE2_SUFFIX}", storage, path,
                       resume and _restorable(path), base_cfg, study=f"{study}{STAGE2_SUFFIX}",
                       pause_path=experiment_path)  # `pause` names the sweep's folder
        results += _fit(tuner, experiment_path)
        if pause.fired():
            return _paused(client, experiment_id, parent, experiment_path, uri, name, results)
    return finish_sweep(sweep, results, client, experiment_id, parent, experiment_path, uri)


STAGE2_SUFFIX = "-stage2"  # the Tune experiment of the rows that wait for another row


def _fit(tuner, pause_path: str) -> list:
    # (not TUNE_ONLY_STORE_CHECKPOINT_SCORE_ATTRIBUTE, which would shrink Tune's experiment
    # state but break ExperimentAnalysis.get_last_checkpoint: it ranks by training_iteration)
    pause.reset(pause_path)
    with _tune_env(TUNE_DISABLE_AUTO_CALLBACK_LOGGERS="1"), _no_result_file_warning():
        return list(tuner.fit())


def _restorable(path: str) -> bool:
    from ray import tune

    return tune.Tuner.can_restore(path)


def _tuner(sweep: Sweep, trainable, name: str, storage: str, experiment_path: str,
           resume: bool, base_cfg, study: str | None = None, warm_from: str | None = None,
           stream: int = 0, pause_path: str | None = None):
    """A new ``tune.Tuner`` for ``sweep`` (or the interrupted one at ``experiment_path``);
    ``study``, ``warm_from``, ``stream``: see :func:`_search_and_space`; ``pause_path``: the
    folder whose pause marker stops it (default ``experiment_path``)."""
    from ray import tune

    t = sweep.tune
    if resume:
        if not tune.Tuner.can_restore(experiment_path):
            raise SweepError(f"no restorable Tune experiment at {experiment_path}",
                             key="experiment")
        return tune.Tuner.restore(experiment_path, trainable=trainable, resume_errored=True)
    searcher, space = _search_and_space(sweep, study, warm_from=warm_from, stream=stream)
    return tune.Tuner(
        trainable,
        param_space=space or {},
        tune_config=tune.TuneConfig(
            metric=t.metric, mode=t.mode, num_samples=t.num_samples, search_alg=searcher,
            scheduler=_scheduler(sweep, base_cfg.train.epochs),
            max_concurrent_trials=None if searcher is not None else t.max_concurrent,
            # a new trial runs in a finished trial's worker process (same resources): no
            # process start and imports per trial (tests/bench/scale.py: ~2x faster)
            reuse_actors=True),
        run_config=tune.RunConfig(
            name=name, storage_path=storage, verbose=1,
            # none of Tune's per-trial result logs (CSV, JSON, TensorBoard): MLflow holds
            # every metric, and those files sit in the folder Tune uploads whole to its
            # storage at every experiment snapshot, a snapshot per checkpoint with
            # num_to_keep=1, so on S3 each report would cost O(trials) uploads
            # (tests/bench/scale.py on the stack: 2.8 s per report at 30 trials)
            callbacks=[PauseCallback(pause_path or experiment_path)],
            failure_config=tune.FailureConfig(max_failures=t.max_failures),
            # Tune keeps every checkpoint (num_to_keep=None: a num_to_keep forces a snapshot
            # of the whole experiment state every num_to_keep reports of a trial); each trial
            # deletes those beyond its best t.num_to_keep and latest itself (sweeps.retention)
            checkpoint_config=tune.CheckpointConfig(
                num_to_keep=None, checkpoint_score_attribute=t.metric,
                checkpoint_score_order=t.mode)))


def _row_checkpoints(first: Sweep, results: list, second: Sweep,
                     experiment_path: str) -> dict[str, Any]:
    """Row id -> the best checkpoint of that row's stage-1 trials in the artifact store (a
    ``StoredArtifact``: pushed and verified here; each stage-2 trial fetches and verifies it on
    its own node)."""
    from sepcore.train import LAST
    from services.store import open_store
    from sweeps.space import trial_params

    t = first.tune
    needed = {row_dependency(v) for p in second.params if p.path == ROW for v in p.values}
    best: dict[str, tuple[float, Any]] = {}
    for result in results:
        row = trial_params(result.config or {}).get(ROW)
        if not row or row["id"] not in needed or result.error:
            continue
        value = _best_value(result, t.metric, t.mode)
        if math.isnan(value):
            continue
        if row["id"] not in best or (value > best[row["id"]][0]) == (t.mode == "max"):
            best[row["id"]] = (value, result)
    store = open_store(first.artifacts.uri)
    paths = {}
    for row_id in sorted(needed):
        checkpoint = best_checkpoint(best[row_id][1], t.metric, t.mode) \
            if row_id in best else None
        if checkpoint is None:
            waiting = sorted(v["id"] for p in second.params if p.path == ROW for v in p.values
                             if row_dependency(v) == row_id)
            raise SweepError(f"row {row_id} finished without a checkpoint, so the rows that start "
                             f"from it ({', '.join(waiting)}) cannot run",
                             key=f"search.{ROW}.{row_id}", file=first.file)
        with checkpoint.as_directory() as local:
            key = f"{first.name}/{Path(experiment_path).name}/rows/{row_id}.safetensors"
            stored = store.put(Path(local) / LAST, key)
        paths[row_id] = stored
        log.info("rows starting from %s use %s (%s = %.4f, sha256 %s)", row_id,
                 redact(stored.uri), t.metric, best[row_id][0], stored.sha256[:12])
    return paths


@contextlib.contextmanager
def _tune_env(**defaults: str):
    """Environment defaults for Tune's driver while a sweep runs (a user's own values win)."""
    added = {k: v for k, v in defaults.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


class _ResultFileFilter(logging.Filter):
    """Drops Tune's "Failed to fetch metrics" warning: its ResultGrid looks for per-trial
    result files, which a sweep does not write (see the callbacks in :func:`run_sweep`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Failed to fetch metrics for")


@contextlib.contextmanager
def _no_result_file_warning():
    logger = logging.getLogger("ray.tune.analysis.experiment_analysis")
    flt = _ResultFileFilter()
    logger.addFilter(flt)
    try:
        yield
    finally:
        logger.removeFilter(flt)


def _paused(client, experiment_id: str, parent: str, experiment_path: str, uri: str, name: str,
            results) -> SweepOutcome:
    """After a pause: the parent and the runs of unfinished trials wait as SCHEDULED (resume
    reopens them), the parent is tagged ``sepcore.paused``; nothing is pushed or registered."""
    from sweeps import tracking

    unfinished = 0
    for run in tracking.child_runs(client, experiment_id, parent):
        if (run.data.tags.get(tracking.EXPERIMENT_TAG, name) == name
                and run.info.status == "RUNNING"):
            client.update_run(run.info.run_id, status="SCHEDULED")
            unfinished += 1
    client.set_tag(parent, pause.PAUSED_TAG, "true")
    client.update_run(parent, status="SCHEDULED")
    report = (f"sweep {name} paused: {len(results)} trial(s) started, {unfinished} to continue "
              f"from their last checkpoint; the experiment is saved and restorable")
    return SweepOutcome(experiment_path=experiment_path, parent_run_id=parent, tracking_uri=uri,
                        report=report, paused=True)


def _write_state(experiment_path: str, sweep: Sweep, overrides: list[str] | None,
                 extension: Extension | None = None) -> None:
    if "://" in experiment_path:
        return  # remote storage: resume takes the sweep file again on the command line
    folder = Path(experiment_path)
    folder.mkdir(parents=True, exist_ok=True)
    state = {"file": str(Path(sweep.file).resolve()), "profile": sweep.profile,
             "overrides": list(overrides or [])}
    if extension is not None:  # its parent run was created for another folder
        state.update(parent_run_id=extension.parent_run_id, extends=extension.previous)
    (folder / SWEEP_STATE).write_text(json.dumps(state, indent=2))


def resume_sweep(experiment: str, address: str | None = None, sweep_file: str | None = None,
                 profile: str | None = None, overrides: list[str] | None = None) -> SweepOutcome:
    """Continue an interrupted sweep (``experiment`` = the Tune experiment folder)."""
    folder = Path(experiment)
    state_file = folder / SWEEP_STATE
    if sweep_file is None:
        if not state_file.is_file():
            raise SweepError(f"not found (is {experiment} a folder printed by `sweeps run`?); "
                             f"pass the sweep file with --file", key="experiment",
                             file=str(state_file))
        state = json.loads(state_file.read_text())
        sweep_file, profile = state["file"], state["profile"]
        overrides = state["overrides"]
    else:
        state = json.loads(state_file.read_text()) if state_file.is_file() else {}
    sweep = load_sweep(sweep_file, profile=profile, overrides=overrides)
    return run_sweep(sweep, address=address, overrides=overrides,
                     experiment_path=str(folder.resolve()) if "://" not in experiment
                     else experiment, parent_run_id=state.get("parent_run_id"))


def parse_increment(items: list[str]) -> int:
    """``extend``'s arguments: exactly one ``tune.num_samples=+N`` with N >= 1."""
    import re

    key = "tune.num_samples"
    found = [i for i in items if i.split("=", 1)[0].strip() == key]
    others = [i for i in items if i not in found]
    if others:
        raise SweepError(f"extend takes only {key}=+N, not {others[0]!r} (an extension runs "
                         f"with the sweep's own file, profile and overrides)",
                         key=others[0].split("=", 1)[0].strip())
    if len(found) != 1:
        raise SweepError(f"extend needs exactly one {key}=+N (how many trials to add), got "
                         f"{len(found)}", key=key)
    value = found[0].split("=", 1)[1].strip()
    match = re.fullmatch(r"\+(\d+)", value)
    if not match:
        raise SweepError(f"{key} must be +N, the number of trials to add (N an integer >= 1), "
                         f"got {value!r}", key=key)
    if int(match.group(1)) < 1:
        raise SweepError(f"{key}={value} adds no trial: give +N with N >= 1", key=key)
    return int(match.group(1))


def extend_sweep(experiment: str, increment: int, address: str | None = None,
                 sweep_file: str | None = None, profile: str | None = None) -> SweepOutcome:
    """Add ``increment`` trials to a finished sweep, under its parent run.

    Tune cannot raise ``num_samples`` on ``Tuner.restore`` (the restored search algorithm keeps
    its total), so the trials run as a new Tune experiment beside the sweep's,
    ``<name>-x<k>``, whose Optuna searcher is the parent's latest experiment's saved searcher
    (``Searcher.restore_from_dir``: the study with every finished trial, the sampler's state);
    its trial runs are created under the same parent run (new Tune trial ids: none doubles).
    """
    import re

    import pyarrow.fs
    from mlflow import MlflowClient
    from ray import tune

    from sweeps import tracking
    from sweeps.pause import _fs

    path = experiment.rstrip("/")
    path = path if "://" in path else str(Path(path).resolve())
    if not tune.Tuner.can_restore(path):
        raise SweepError(f"{experiment!r} is not a Tune experiment folder (pass the folder "
                         f"printed by `sweeps run`)", key="experiment")
    state_file = Path(path) / SWEEP_STATE
    state = {}
    if "://" not in path and state_file.is_file():
        state = json.loads(state_file.read_text())
    if sweep_file is None:
        if not state:
            raise SweepError(f"not found (is {experiment} a folder printed by `sweeps run`?); "
                             f"pass the sweep file with --file", key="experiment",
                             file=str(state_file))
        sweep_file, profile = state["file"], state["profile"]
    overrides = [o for o in state.get("overrides", [])
                 if o.split("=", 1)[0].strip() != "tune.num_samples"]
    overrides.append(f"tune.num_samples={increment}")
    sweep = load_sweep(sweep_file, profile=profile, overrides=overrides)
    client = MlflowClient(tracking.resolve_tracking_uri(sweep.tracking.uri))
    found = client.get_experiment_by_name(sweep.experiment)
    parent_id = state.get("parent_run_id") or (found and tracking.find_parent_run(
        client, found.experiment_id, path))
    if not parent_id:
        raise SweepError(f"no MLflow parent run of {path} in experiment {sweep.experiment!r} "
                         f"of the tracking store", key="experiment")
    parent = client.get_run(parent_id)
    if parent.info.status in ("RUNNING", "SCHEDULED"):
        raise SweepError(f"the sweep's parent run {parent_id} is {parent.info.status} (running, "
                         f"paused or interrupted): resume it first (`python -m sweeps resume "
                         f"{path}`), then extend", key="experiment")
    root = parent.info.run_name
    storage = path.rsplit("/", 1)[0]
    fs, fs_storage = _fs(storage)
    taken = [int(m.group(1)) for i in fs.get_file_info(pyarrow.fs.FileSelector(fs_storage))
             if (m := re.fullmatch(re.escape(root) + r"-x(\d+)", i.base_name))]
    number = max(taken, default=0) + 1
    previous = parent.data.tags.get(tracking.LAST_EXPERIMENT_TAG) or path
    log.info("extending sweep %s by %d trial(s) as %s-x%d (searcher state of %s)", root,
             increment, root, number, redact(previous))
    return run_sweep(sweep, address=address, overrides=overrides,
                     extension=Extension(previous=previous, name=f"{root}-x{number}",
                                         parent_run_id=parent_id))


# --- after the trials -------------------------------------------------------------------------


def _best_value(result, metric: str, mode: str) -> float:
    """The trial's best ``metric`` over its epochs. Every report carries a checkpoint and Tune
    records every one with its metrics, so the best value is among them (no per-trial result
    file is read: none is written)."""
    values = [m.get(metric) for _, m in (result.best_checkpoints or [])]
    values.append((result.metrics or {}).get(metric))
    values = [float(v) for v in values
              if isinstance(v, int | float) and not isinstance(v, bool) and not math.isnan(v)]
    if not values:
        return math.nan
    return max(values) if mode == "max" else min(values)


def _replay_unsent(client, results) -> int:
    """Send what trials could not send to the tracking server before their last report (an
    outage longer than their closing wait): it is in their latest checkpoint, on the shared
    storage; only that small folder is fetched, for the trials whose report counted any."""
    import pyarrow.fs

    from sweeps import tracking

    sent = 0
    for result in results:
        checkpoint = result.checkpoint
        if not (result.metrics or {}).get(tracking.UNSENT_METRIC) or checkpoint is None:
            continue
        with tempfile.TemporaryDirectory(prefix="sepcore-unsent-") as folder:
            pyarrow.fs.copy_files(f"{checkpoint.path}/{tracking.UNSENT_DIR}",
                                  f"{folder}/{tracking.UNSENT_DIR}",
                                  source_filesystem=checkpoint.filesystem,
                                  destination_filesystem=pyarrow.fs.LocalFileSystem())
            sent += tracking.replay_unsent(client, folder)
    return sent


def _close_orphans(client, children: dict[str, Any], known: set[str]) -> list[str]:
    """Close the runs of trials Tune does not know (any more): a driver killed right after a trial
    started, before Tune saved its experiment state, leaves a run that `resume` cannot continue
    (the restored searcher starts a new trial instead). Such a run is tagged
    ``sepcore.orphaned``, closed as KILLED and left out of the report and the ranking; its metrics
    stay in MLflow."""
    from mlflow.entities import RunTag

    from sweeps import tracking

    orphaned = []
    for trial_id, run in children.items():
        if trial_id in known or run.data.tags.get(tracking.ORPHAN_TAG) == "true":
            continue
        client.log_batch(run.info.run_id, tags=[RunTag(tracking.ORPHAN_TAG, "true")])
        if run.info.status == "RUNNING":
            client.set_terminated(run.info.run_id, status="KILLED")
        log.warning("trial %s (run %s) is not in Tune's restored state: it started just before "
                    "the driver died; its run is closed as KILLED and tagged %s", trial_id,
                    run.info.run_id, tracking.ORPHAN_TAG)
        orphaned.append(run.info.run_id)
    return orphaned


def finish_sweep(sweep: Sweep, results, client, experiment_id: str, parent: str,
                 experiment_path: str, uri: str) -> SweepOutcome:
    from mlflow.entities import Metric, RunTag

    from services.registry import register_checkpoint
    from services.store import open_store
    from sweeps import tracking
    from sweeps.report import sweep_report
    from sweeps.reuse import TUNE_CHECKPOINT_TAG
    from sweeps.scoring import ScoreJob, Scoring, score_trials

    t = sweep.tune
    outcome = SweepOutcome(experiment_path=experiment_path, parent_run_id=parent,
                           tracking_uri=uri)
    outcome.replayed = _replay_unsent(client, results)
    # an extended sweep's parent also holds the runs of its other Tune experiments (untagged
    # runs are the first experiment's: the parent's own name)
    name = experiment_path.rstrip("/").rsplit("/", 1)[-1]
    root = client.get_run(parent).info.run_name
    children = {r.data.tags.get(tracking.TRIAL_TAG): r
                for r in tracking.child_runs(client, experiment_id, parent, orphans=True)
                if r.data.tags.get(tracking.EXPERIMENT_TAG, root) == name}
    max_epochs = t.scheduler.max_t or sweep.config_for({}).train.epochs
    rows = []
    now = int(time.time() * 1000)
    for result in results:
        trial_id = _trial_id(result)
        run = children.get(trial_id)
        value = _best_value(result, t.metric, t.mode)
        status = "FAILED" if result.error else "FINISHED"
        if run is not None:
            # one request per trial (hundreds of trials: per-call round trips dominate); the
            # status comes from the search above, so only runs still open are closed
            stopped = not result.error and result.metrics.get("epoch", 0) < max_epochs
            # where the trial's last checkpoint stays (what `run --reuse` fetches)
            kept = ([RunTag(TUNE_CHECKPOINT_TAG, result.checkpoint.path)]
                    if result.checkpoint is not None and not result.error else [])
            client.log_batch(run.info.run_id, metrics=[Metric(f"best_{t.metric}", value, now, 0)],
                             tags=[RunTag("sepcore.stopped_early", str(bool(stopped))), *kept])
            if run.info.status in ("RUNNING", "SCHEDULED"):
                client.set_terminated(run.info.run_id, status=status)
        rows.append({"trial_id": trial_id, "value": value, "result": result,
                     "run_id": run.info.run_id if run else None, "error": result.error})
    outcome.trials = [{k: v for k, v in r.items() if k != "result"} for r in rows]
    outcome.orphaned = _close_orphans(client, children, {r["trial_id"] for r in rows})
    ranked = sorted((r for r in rows if not math.isnan(r["value"]) and not r["error"]),
                    key=lambda r: r["value"], reverse=t.mode == "max")
    store = open_store(sweep.artifacts.uri)
    scoring: list[ScoreJob] = []
    for row in ranked[: sweep.artifacts.top_k]:
        checkpoint = best_checkpoint(row["result"], t.metric, t.mode)
        if checkpoint is None:
            continue
        with checkpoint.as_directory() as folder:
            from sepcore.train import LAST

            local = Path(folder) / LAST
            key = f"{sweep.name}/{Path(experiment_path).name}/{row['trial_id']}/model.safetensors"
            stored = store.put(local, key)
            # the best trial, scored by its trial on test_max_tracks songs only (the fast
            # evaluation), is scored again on the whole test set
            full = row is ranked[0] and t.test_max_tracks is not None
            if t.test_eval and row["run_id"] and (full or not any(
                    k.startswith("test_") for k in client.get_run(row["run_id"]).data.metrics)):
                # (or: stopped by the scheduler before its own test evaluation: score it too),
                # in a Ray task with a trial's resources, from the store (sweeps.scoring)
                scoring.append(ScoreJob(row["trial_id"], row["run_id"], stored.uri,
                                        stored.sha256, None if full else t.test_max_tracks,
                                        step=int(row["result"].metrics["epoch"])))
        pushed = {"trial_id": row["trial_id"], "uri": stored.uri, "sha256": stored.sha256,
                  "value": row["value"], "run_id": row["run_id"]}
        outcome.pushed.append(pushed)
        if row["run_id"]:
            client.set_tag(row["run_id"], "sepcore.checkpoint_uri", stored.uri)
            client.set_tag(row["run_id"], "sepcore.checkpoint_sha256", stored.sha256)
        log.info("pushed %s (%s = %.4f) to %s", row["trial_id"], t.metric, row["value"],
                 stored.uri)
    if scoring:
        score_trials(Scoring(uri, sweep.artifacts.uri, sweep.config_for({}).data.cache_dir,
                             tracking.credentials()), scoring,
                     cpu=t.resources.cpu, gpu=t.resources.gpu)
    if outcome.pushed and sweep.registry.register and outcome.pushed[0]["run_id"]:
        best = outcome.pushed[0]
        reg = register_checkpoint(
            client, sweep.model_name, best["uri"], best["run_id"], t.metric, best["value"],
            t.mode, tags={"sepcore.trial_id": best["trial_id"],
                          "sepcore.checkpoint_sha256": best["sha256"],
                          "sepcore.sweep_name": sweep.name, "sepcore.parent_run": parent,
                          **_lineage_tags(client, best["run_id"], parent)},
            promote=sweep.registry.promote)
        outcome.registered = {"name": sweep.model_name, "version": reg.version,
                              "alias": reg.alias, "previous_champion": reg.previous_champion}
        client.set_tag(parent, "sepcore.registered_version", reg.version)
    outcome.report = sweep_report(client, experiment_id, parent, metric=t.metric, mode=t.mode,
                                  out_dir=Path(experiment_path) if "://" not in experiment_path
                                  else Path("runs/reports") / Path(experiment_path).name)
    tracking.terminate(client, parent, "FINISHED")
    return outcome


def _lineage_tags(client, run_id: str, parent: str) -> dict[str, str]:
    """What a registered version was made from: the code version, the data fingerprint and
    config signature of its trial, and the sweep (its parent run's name)."""
    from sweeps import lineage

    run_tags = client.get_run(run_id).data.tags
    names = {lineage.MLFLOW_GIT_COMMIT: "sepcore.git_commit", lineage.DIRTY_TAG: None,
             lineage.IMAGE_TAG: None, lineage.DATA_TAG: None, lineage.SIGNATURE_TAG: None}
    tags = {(name or key): run_tags[key] for key, name in names.items() if key in run_tags}
    tags["sepcore.sweep"] = client.get_run(parent).info.run_name
    return tags


def _trial_id(result) -> str:
    metrics = result.metrics or {}
    if metrics.get("trial_id"):
        return str(metrics["trial_id"])
    return str(result.config.get("__trial_id__", Path(result.path).name))
