"""The Ray Tune trainable: a thin adapter around :func:`sepcore.train.fit`.

It builds the trial's sepcore config from the sweep base and the trial's parameters, restores from
the Tune checkpoint on a retry or resume, and passes ``fit`` one hook that reports every epoch to
Tune (with the checkpoint) and logs it to the trial's MLflow child run. No model code lives here.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from ray import tune

from sepcore.models import build_model
from sepcore.models.base import count_parameters
from sepcore.train import BEST, LAST, fit, select_device
from services.redact import redact_data
from sweeps.fetch import SHA256_TAG, fetch_init, node_cache
from sweeps.lineage import SIGNATURE_TAG
from sweeps.retention import KeepPolicy, Retention
from sweeps.space import trial_params
from sweeps.spec import ROW, build_trial_config
from sweeps.tracking import (
    FLUSH_WAIT_S,
    RETRY_INTERVAL_S,
    UNSENT_DIR,
    UNSENT_METRIC,
    TrialRun,
    credentials,
    fail_fast_http,
    flatten,
    set_credentials,
)

log = logging.getLogger(__name__)

# Fault injection for the fault-tolerance tests: kill the trial process (SIGKILL, as an OOM killer
# or a lost node would) once, at this epoch, the first time each trial reaches it.
FAULT_EPOCH_ENV = "SEPCORE_FAULT_KILL_AT_EPOCH"
FAULT_DIR_ENV = "SEPCORE_FAULT_MARKER_DIR"


@dataclass
class TrialContext:
    """What every trial needs from the driver (passed with ``tune.with_parameters``)."""

    base: dict[str, Any]
    file: str
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    gpus_per_trial: float = 0.0
    test_eval: bool = True
    test_max_tracks: int | None = None
    max_t: int | None = None  # the scheduler stops every trial after this epoch
    tags: dict[str, str] = field(default_factory=dict)
    # the tracking server's basic auth for nodes that hold none (never printed or logged)
    credentials: tuple[str, str] | None = field(default=None, repr=False)
    reuse: bool = False  # replay a finished run of the same signature instead of training
    artifacts_uri: str | None = None  # the sweep's artifact store (rows' checkpoints live there)
    # SHA-256 of the checkpoints the driver put in the store for the trials to start from
    checkpoints: dict[str, str] = field(default_factory=dict)
    keep: KeepPolicy | None = None  # the checkpoints a trial keeps (None: all; sweeps.retention)


SETUP_TAG = "sepcore.setup"  # "done" once a trial run's one-time setup is logged


class TuneHook:
    """fit() hook: report each epoch to Tune with the checkpoint, log it to MLflow.

    Tune can stop a trial at any report (ASHA; its scheduler's ``max_t`` as soon as the last
    epoch is reported): the trial's thread then ends inside ``tune.report``. So everything an
    epoch logs (metrics, the loss curve, on the last epoch the closing work: test metrics, wall
    time, figures, and a bounded wait for an unreachable tracking server) happens *before* its
    report.
    """

    def __init__(self, run: TrialRun, out_dir: Path, trial_id: str, last_epoch: int,
                 finalize, retention: Retention | None = None):
        self.run = run
        self.retention = retention or Retention(None)
        self.out_dir = out_dir
        self.trial_id = trial_id
        self.last_epoch = last_epoch
        self.finalize = finalize
        self.history: list[dict[str, Any]] = []

    def on_epoch_end(self, metrics: dict[str, Any]) -> None:
        epoch = int(metrics["epoch"])
        self.history.append(metrics)
        self.run.log_metrics(metrics, step=epoch)
        _maybe_inject_fault(self.trial_id, epoch)
        self._log_curve()
        if epoch >= self.last_epoch:
            self.finalize(epoch)
        with tempfile.TemporaryDirectory(prefix="sepcore-ckpt-") as folder:
            for name in (LAST, BEST):
                if (self.out_dir / name).exists():
                    shutil.copyfile(self.out_dir / name, Path(folder) / name)
            report = dict(metrics)
            # what a tracking-server outage left unsent travels with the checkpoint (to the
            # shared storage): a retry of this trial on any node, or the driver after the
            # sweep, sends it (tracking.replay_unsent), so a trial that ends here loses nothing
            unsent = self.run.spill_into(folder)
            if unsent:
                report[UNSENT_METRIC] = unsent
            self.retention.report(report, folder)

    def _log_curve(self) -> None:
        from sweeps.plots import loss_curve

        with tempfile.TemporaryDirectory() as folder:
            path = loss_curve(self.history, Path(folder) / "loss_curve.png")
            self.run.log_artifact(path)


def _maybe_inject_fault(trial_id: str, epoch: int) -> None:
    at = os.environ.get(FAULT_EPOCH_ENV)
    marker_dir = os.environ.get(FAULT_DIR_ENV)
    if not at or not marker_dir or epoch != int(at):
        return
    marker = Path(marker_dir) / f"killed-{trial_id}"
    if marker.exists():
        return
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(str(epoch))
    log.warning("fault injection: killing trial %s at epoch %d", trial_id, epoch)
    os.kill(os.getpid(), signal.SIGKILL)


def set_deterministic(flag: bool) -> None:
    """``torch.use_deterministic_algorithms(flag)`` unless the process is already there.

    Tune reuses a trial's worker process for the next trial (reuse_actors): process-wide torch
    state is set from this trial's config, never inherited from the previous trial. The call is
    skipped when nothing changes because torch imports its compiler stack (torch._inductor,
    torch._dynamo: about 1.4 s) on every call, which a fresh worker would pay for nothing.
    """
    if torch.are_deterministic_algorithms_enabled() != flag:
        torch.use_deterministic_algorithms(flag, warn_only=True)


def trial_device(requested: str) -> str:
    """The device of this trial: the one Ray assigned. With GPUs (``tune.resources.gpu`` > 0)
    ``cuda`` (Ray's visible device; ``cuda:N`` kept when N is among them) unless ``cpu`` is asked
    for; without, ``cpu`` even for ``auto`` (the node may have GPUs that other trials hold).

    Raises:
        ConfigError: ``cuda`` asked for in a trial Ray gave no GPU.
    """
    import ray

    from sepcore.errors import ConfigError

    gpus = ray.get_gpu_ids()
    if requested == "cpu":
        return "cpu"
    if gpus:
        index = requested.partition(":")[2]
        return requested if index.isdigit() and int(index) < len(gpus) else "cuda"
    if requested.startswith("cuda"):
        raise ConfigError(f"train.device={requested!r} but Ray gave this trial no GPU "
                          f"(tune.resources.gpu is 0)", key="train.device")
    return "cpu"


def trial_num_workers(value: int | str, device: str) -> int | str:
    """``data.num_workers: auto`` in a trial: the CPUs Ray assigned the trial (its share of the
    node, not the node's cores, which co-scheduled trials share) less one for the training loop,
    at least 0, on a CUDA trial; 0 on a CPU trial; any other value as is."""
    import ray

    if value != "auto":
        return value
    if not device.startswith("cuda"):
        return 0
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 0)
    return max(int(cpus) - 1, 0)


def search_params(params: dict[str, Any]) -> dict[str, Any]:
    """A trial's searched parameters as MLflow params; a paper-table row is logged by its id
    (its config is in the flattened config beside it)."""
    return {f"search.{k}": (v["id"] if k == ROW else v) for k, v in params.items()}


def train_trial(config: dict[str, Any], context: TrialContext) -> None:
    """Tune function trainable (Ray ≥ 2.7 API: tune.report / tune.get_checkpoint)."""
    params = trial_params(config)
    ctx = tune.get_context()
    trial_id = ctx.get_trial_id()
    trial_dir = Path(ctx.get_trial_dir())
    out_dir = trial_dir / "train"
    out_dir.mkdir(parents=True, exist_ok=True)

    cfg = build_trial_config(context.base, params, context.file)
    cfg.train.device = trial_device(cfg.train.device)
    cfg.data.num_workers = trial_num_workers(cfg.data.num_workers, cfg.train.device)
    if context.credentials and not credentials():
        set_credentials(context.credentials)
    # the checkpoint it starts from (staged by the driver: sweeps.fetch), fetched here, on
    # whichever node runs the trial, into the node's cache, and verified (SHA-256)
    start = fetch_init(cfg.train.init_from, node_cache(cfg.data.cache_dir),
                       store_uri=context.artifacts_uri, checkpoints=context.checkpoints,
                       registry_uri=context.tracking_uri) if cfg.train.init_from else None
    cfg.train.out_dir = str(out_dir)
    cfg.train.progress = False
    retention = Retention(context.keep)
    # Tune's latest checkpoint of the trial, or the newest it kept when that one is gone
    checkpoint = retention.resume_from(tune.get_checkpoint())
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            for name in (LAST, BEST):
                if (Path(folder) / name).exists():
                    shutil.copyfile(Path(folder) / name, out_dir / name)
            if (Path(folder) / UNSENT_DIR).is_dir():  # a previous attempt's unsent calls
                shutil.copytree(Path(folder) / UNSENT_DIR, out_dir / UNSENT_DIR,
                                dirs_exist_ok=True)
        cfg.train.resume = str(out_dir / LAST)
        log.info("trial %s resumes from its Tune checkpoint", trial_id)

    set_deterministic(cfg.train.deterministic)
    device = select_device(cfg.train.device)
    model = build_model(cfg.model_name, cfg.model)
    # an unreachable tracking server costs a trial seconds, not minutes: TrialRun buffers
    fail_fast_http()
    run = TrialRun.open(
        context.tracking_uri, context.experiment_id, context.parent_run_id, trial_id,
        run_name=ctx.get_trial_name(),
        params={**flatten(cfg.to_dict()), **search_params(params)},
        tags={**context.tags, "sepcore.model": cfg.model_name},
        spool_dir=trial_dir / "mlflow-unsent")
    if (out_dir / UNSENT_DIR).is_dir():
        run.take_unsent(out_dir)
        shutil.rmtree(out_dir / UNSENT_DIR)
    run.set_tags(node_tags(run.tags))
    signature = run.tags.get(SIGNATURE_TAG)
    # the run's one-time setup, done again by a retry whose first attempt died before its end
    # (the tag is its last write): lineage, sizes and the config artifact are idempotent
    if run.created or run.tags.get(SETUP_TAG) != "done":
        signature = log_lineage(run, cfg, context)
        run.set_tags({"sepcore.params": count_parameters(model), "sepcore.device": str(device),
                      **({SHA256_TAG: start.sha256} if start else {})})
        run.log_metrics({"params": count_parameters(model)}, step=0)
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "config.yaml"
            path.write_text(OmegaConf.to_yaml(redact_data(cfg.to_dict())))
            run.log_artifact(path)
        run.set_tags({SETUP_TAG: "done"})
    del model
    if start is not None:  # params, tags and signature name the URI; fit reads this node's copy
        cfg.train.init_from = str(start.path)

    if context.reuse and checkpoint is None and signature:
        from sweeps.reuse import find_reusable

        previous = find_reusable(run.client, context.experiment_id, signature,
                                 context.parent_run_id)
        if previous is not None and _replay(run, previous, out_dir, retention):
            return

    t0 = time.perf_counter()
    done: list[int] = []

    def finalize(epoch: int) -> None:
        if done:
            return
        done.append(epoch)
        wall = time.perf_counter() - t0
        run.log_metrics({"wall_time_s": wall, "gpu_hours": wall / 3600 * context.gpus_per_trial,
                         "epochs_run": epoch}, step=epoch)
        best = out_dir / BEST
        if best.exists():
            log_filter_figure(run, best)
        if context.test_eval and best.exists():
            log_test_metrics(run, best, context.test_max_tracks, epoch)
        if not run.flush(FLUSH_WAIT_S):  # the last report may end this thread
            run.spill()

    last_epoch = min(cfg.train.epochs, context.max_t or cfg.train.epochs)
    try:
        result = fit(cfg, hooks=[TuneHook(run, out_dir, trial_id, last_epoch, finalize,
                                          retention)])
    except SystemExit:
        # Tune stopped the trial inside tune.report (scheduler decision): what an outage left
        # unsent gets one more try, then goes to the trial's folder with a warning
        if not run.flush(RETRY_INTERVAL_S):
            run.spill()
        raise
    finalize(result.epochs_run)  # early stop or step budget: the loop ended before last_epoch
    run.finish("FINISHED")


def log_lineage(run: TrialRun, cfg, context: TrialContext) -> str:
    """The trial's datasets as MLflow dataset inputs (train, valid and the test songs it scores),
    their fingerprint and the trial's config signature as tags (:mod:`sweeps.lineage`); returns
    the signature."""
    from sweeps import lineage

    splits = lineage.data_splits(cfg.data, cfg.train.seed,
                                 eval_cfg=cfg.eval if context.test_eval else None,
                                 max_tracks=context.test_max_tracks)
    fingerprint = lineage.data_fingerprint(splits)
    commit = context.tags.get(lineage.MLFLOW_GIT_COMMIT, "unknown")
    signature = lineage.config_signature(cfg.to_dict(), fingerprint, commit)
    run.log_inputs([split.to_input() for split in splits])
    run.set_tags({lineage.DATA_TAG: fingerprint, lineage.SIGNATURE_TAG: signature})
    return signature


def _replay(run: TrialRun, previous, out_dir: Path, retention: Retention) -> bool:
    """Report a finished run of the same signature to Tune instead of training (--reuse);
    False when that run has no epoch to report."""
    from sweeps.reuse import replay

    history = replay(run.client, previous, run, out_dir, (LAST, BEST))
    if not history:
        return False
    try:
        for number, row in enumerate(history, 1):
            if number < len(history):
                tune.report(dict(row))
                continue
            with tempfile.TemporaryDirectory(prefix="sepcore-ckpt-") as folder:
                for name in (LAST, BEST):
                    if (out_dir / name).exists():
                        shutil.copyfile(out_dir / name, Path(folder) / name)
                run.flush(FLUSH_WAIT_S)  # the last report may end this thread
                retention.report(dict(row), folder)
    except SystemExit:
        if not run.flush(RETRY_INTERVAL_S):
            run.spill()
        raise
    run.finish("FINISHED")
    return True


def node_tags(previous: dict[str, str]) -> dict[str, str]:
    """Where this attempt of a trial runs: Ray node id and IP, host name, and every node the
    trial's attempts ran on (``sepcore.nodes``, in order, comma-separated)."""
    import ray

    node = ray.get_runtime_context().get_node_id()
    nodes = [n for n in previous.get("sepcore.nodes", "").split(",") if n]
    if not nodes or nodes[-1] != node:
        nodes.append(node)
    return {"sepcore.node": node, "sepcore.node_ip": ray.util.get_node_ip_address(),
            "sepcore.host": socket.gethostname(), "sepcore.nodes": ",".join(nodes)[-5000:]}


def log_filter_figure(run: TrialRun, checkpoint: Path) -> None:
    """`sep analyze filters` of the checkpoint as an MLflow artifact (linear encoders only)."""
    from sepcore.analyze import analyze_checkpoint
    from sepcore.errors import ConfigError

    with tempfile.TemporaryDirectory() as folder:
        try:
            _, path = analyze_checkpoint(checkpoint, Path(folder) / "encoder_filters.png")
        except ConfigError as exc:  # hybrid/deep encoders have no single filter per channel
            log.info("no filter figure: %s", exc)
            return
        run.log_artifact(path)


def log_test_metrics(run: TrialRun, checkpoint: Path, max_tracks: int | None, step: int, *,
                     device: str | None = None, out_dir: Path | None = None) -> None:
    """BSSEval of a checkpoint on the test subset, in the paper's form (test_<target>_SDR),
    under the checkpoint's ``eval.protocol`` (tag ``sepcore.eval_protocol`` names it).
    ``device``: where the model runs (default: the checkpoint's ``eval.device``), BSSEval
    following it (``eval.metrics_device: auto``); ``out_dir``: the scores' folder (default:
    ``eval`` beside the checkpoint)."""
    from sepcore.evaluate import describe_protocol, evaluate_checkpoint

    out_dir = Path(out_dir or Path(checkpoint).parent / "eval")
    evaluation = evaluate_checkpoint(
        checkpoint, ["eval.metrics_device=auto"] if device else [], max_tracks=max_tracks,
        out_dir=out_dir, device=device, progress=False)
    metrics = {f"test_{target}_{name}": value
               for target, values in evaluation.scores.items() for name, value in values.items()}
    metrics["test_tracks"] = len(evaluation.sisdr)  # songs scored (test_max_tracks or all)
    # the HTMD-Net paper's silent-segment and segment-wise numbers (PES dB, VAD %, mean/median SDR)
    metrics.update({f"test_{target}_{name}": value for target, row in evaluation.extra.items()
                    for name, value in row.items()
                    if name in ("PES", "VAD", "SDR_mean", "SDR_median", "NSDR", "GNSDR")})
    run.log_metrics(metrics, step=step)
    protocol = describe_protocol(evaluation.protocol)
    run.set_tags({"sepcore.eval_protocol": protocol})
    table = out_dir / "test_results.txt"
    table.write_text(protocol + "\n" + evaluation.table + "\n")
    run.log_artifact(table)
    if evaluation.summary_path is not None:
        run.log_artifact(evaluation.summary_path)
