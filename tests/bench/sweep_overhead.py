"""The platform's share of a trial's wall time: one trial of ``sweeps/demo.yaml`` through Ray Tune
and MLflow against the same config trained by ``sepcore.train.fit`` (what ``sep train`` runs) in
this process, at two trial lengths, extrapolated to longer trials.

One trial (``num_samples=1``, FIFO, no test-set evaluation) of the demo sweep on a local Ray
started once (its start is a per-sweep cost, printed apart), with MLflow in a temporary sqlite
file and the local artifact store; the trial's parameters (Optuna's first sample) are recorded by
the trainable and the same config is then trained by ``fit`` here (with as many torch threads
as the trial has CPUs), right after each sweep, after one untimed warm-up of each. Both
run at ``--epochs`` (two lengths) with ``--steps`` steps per epoch, and ``fit`` once more at three
times the steps, which
separates the costs in ``wall = fixed + epochs x (per_epoch + steps x per_step)``. The platform's
extra time ``sweep - fit = F + epochs x g`` gives its fixed cost ``F`` (Tune's trial start and
end, the MLflow child run, ``finish_sweep``: ranking, artifact push, registry) and its per-epoch
cost ``g`` (``tune.report``, the Tune checkpoint, MLflow metrics). Printed: the measured lines,
and the share ``(F + E g) / (fit + F + E g)`` at the demo's full trial (``sweeps/demo.yaml``
without a profile) and in the limit of long trials of the demo's epoch size (``g / (per-epoch
fit + g)``; paper profiles have heavier epochs, so a smaller share).

Then the paper's trial length (``--paper``, default Table 1's M1 of ``sweeps/bands.yaml``: 150
epochs of MUSDB18-HQ's 86 training songs x ``data.samples_per_track`` / ``train.batch_size``
steps). The one per-epoch platform cost that grows with the model is the trial's checkpoint
copies (``last`` and ``best`` into the report's folder, then into Tune's storage): measured here
on the paper model's real checkpoint (weights + Adam state) against the demo's, with a local
storage folder (an S3 upload is not measured). Printed: the platform's time for that trial and
the shortest training step at which it stays <= 5 % of the trial (a GPU's step time for M1 at
batch 4 x 8 s comes from ``tests/bench/gpu_smoke.sh``; a CPU cannot train it at that size).

Usage: ``python tests/bench/sweep_overhead.py [--epochs 1 3] [--steps 3] [--paper CONFIG]``
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "sweeps" / "demo.yaml"
PAPER = REPO / "sepcore" / "configs" / "paper" / "m1.yaml"
MUSDB_TRAIN_SONGS = 86  # MUSDB18-HQ's 100 training songs less musdb's 14 validation songs
TARGET = 0.05  # the platform's share of a paper trial


def _recording_trainable(record: Path):
    """``train_trial``, also writing the trial's parameters and its own wall time to ``record``."""

    def trainable(config, context):
        from sweeps.trainable import train_trial, trial_params

        start = time.perf_counter()
        try:
            train_trial(config, context)
        finally:
            record.write_text(json.dumps({"params": trial_params(config),
                                          "inside": time.perf_counter() - start}))

    return trainable


def _overrides(work: Path, data: Path, epochs: int, steps: int) -> list[str]:
    return [f"base.train.epochs={epochs}", f"base.train.steps_per_epoch={steps}",
            "tune.num_samples=1", "tune.max_concurrent=1", "tune.test_eval=false",
            "tune.scheduler.type=fifo", f"base.data.root={data}",
            f"base.data.cache_dir={work / 'cache'}", "base.train.early_stop=0"]


def sweep_trial(work: Path, data: Path, epochs: int, steps: int) -> tuple[float, float, dict]:
    """(wall of run_sweep, wall inside the trainable, the trial's parameters)."""
    from sweeps.runner import run_sweep
    from sweeps.spec import load_sweep

    folder = work / f"sweep-{epochs}x{steps}-{len(list(work.glob('sweep-*')))}"
    folder.mkdir()
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{folder}/mlruns.db"
    sweep = load_sweep(DEMO, overrides=_overrides(work, data, epochs, steps) + [
        f"tune.storage_path={folder / 'ray'}", f"artifacts.uri={folder / 'store'}"])
    record = folder / "trial.json"
    start = time.perf_counter()
    outcome = run_sweep(sweep, trainable=_recording_trainable(record))
    wall = time.perf_counter() - start
    if any(trial["error"] for trial in outcome.trials):
        raise SystemExit(f"the sweep's trial failed: {outcome.trials}")
    trial = json.loads(record.read_text())
    return wall, trial["inside"], trial["params"]


def fit_alone(work: Path, data: Path, params: dict, epochs: int, steps: int) -> float:
    """Wall of ``sepcore.train.fit`` on the trial's config, in this process."""
    import torch

    from sepcore.train import fit
    from sweeps.spec import load_sweep

    sweep = load_sweep(DEMO, overrides=_overrides(work, data, epochs, steps))
    # as many threads as the trial's worker gets (Ray sets OMP_NUM_THREADS to its CPUs)
    torch.set_num_threads(max(1, int(sweep.tune.resources.cpu)))
    cfg = sweep.config_for(params)
    cfg.train.out_dir = str(work / f"fit-{epochs}x{steps}-{len(list(work.glob('fit-*')))}")
    cfg.train.progress = False
    start = time.perf_counter()
    fit(cfg)
    return time.perf_counter() - start


def checkpoint_copy_s(cfg, work: Path, repeat: int = 3) -> tuple[int, float]:
    """(bytes of one checkpoint, seconds of one epoch's copies) for ``cfg``'s model: its real
    checkpoint file (weights and Adam's state after a step), copied as a trial's report copies
    it: ``last`` and ``best`` into a fresh folder, that folder into the storage. Median."""
    import shutil
    import statistics

    import torch

    from sepcore.checkpoint import (
        Checkpoint,
        checkpoint_config,
        flatten_optimizer_state,
        save_checkpoint,
    )
    from sepcore.models import build_model
    from sepcore.train import BEST, LAST

    model = build_model(cfg.model_name, cfg.model)
    optimizer = torch.optim.Adam(model.parameters())
    for param in model.parameters():
        param.grad = torch.zeros_like(param)
    optimizer.step()
    tensors, _ = flatten_optimizer_state(optimizer.state_dict())
    source = work / f"ckpt-{cfg.model_name}-{len(list(work.glob('ckpt-*')))}"
    source.mkdir()
    ckpt = Checkpoint(config=checkpoint_config(cfg), model_state=model.state_dict(),
                      optimizer_state=tensors)
    for name in (LAST, BEST):
        save_checkpoint(source / name, ckpt)
    times = []
    for attempt in range(repeat):
        start = time.perf_counter()
        report = source / f"report-{attempt}"
        report.mkdir()
        for name in (LAST, BEST):
            shutil.copyfile(source / name, report / name)
        shutil.copytree(report, source / f"storage-{attempt}")
        times.append(time.perf_counter() - start)
        shutil.rmtree(report)
        shutil.rmtree(source / f"storage-{attempt}")
    return (source / LAST).stat().st_size, statistics.median(times)


def paper_lines(paper: Path, work: Path, demo_cfg, fixed: float, g: float) -> list[str]:
    """The platform's time for one trial of ``paper`` and the step time for <= 5 %."""
    from sepcore.config import load_config

    cfg = load_config(paper)
    steps = MUSDB_TRAIN_SONGS * cfg.data.samples_per_track // cfg.train.batch_size
    if cfg.train.steps_per_epoch is not None:
        steps = min(steps, cfg.train.steps_per_epoch)
    epochs = cfg.train.epochs
    demo_bytes, demo_copy = checkpoint_copy_s(demo_cfg, work)
    paper_bytes, paper_copy = checkpoint_copy_s(cfg, work)
    per_epoch = max(g, 0.0) + paper_copy - demo_copy
    platform = max(fixed, 0.0) + epochs * per_epoch
    # share = platform / (training + platform) <= TARGET, training = epochs x steps x step
    training = platform * (1 - TARGET) / TARGET
    step = training / (epochs * steps)
    return [
        f"checkpoint copies per epoch: demo {demo_bytes / 1e6:.1f} MB in {demo_copy:.3f} s, "
        f"{paper.stem} {paper_bytes / 1e6:.1f} MB in {paper_copy:.3f} s",
        f"{paper.stem}'s trial ({epochs} epochs x {steps} steps): platform {platform:.0f} s "
        f"(fixed {max(fixed, 0.0):.1f} s + {epochs} x {per_epoch:.2f} s); <= {TARGET:.0%} of "
        f"the trial for any training step >= {step * 1e3:.1f} ms "
        f"(= {training / 3600:.2f} h of training)",
    ]


def main() -> None:
    import ray

    from sepcore.data.synth import write_synthetic_musdb
    from sweeps.spec import load_sweep

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, nargs=2, default=[1, 3], help="two trial lengths")
    parser.add_argument("--steps", type=int, default=3, help="steps per epoch")
    parser.add_argument("--paper", type=Path, default=PAPER,
                        help="a paper config for the paper-length line (default: %(default)s)")
    args = parser.parse_args()
    short, long = args.epochs
    if not 0 < short < long:
        raise SystemExit(f"--epochs: two increasing positive counts, got {args.epochs}")
    full = load_sweep(DEMO).config_for({}).train  # the demo's full trial length
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = work / "synth"
        write_synthetic_musdb(data, tracks=10, seconds=16.0, seed=0)
        start = time.perf_counter()
        for attempt in range(3):  # a busy machine can miss the raylet's 30 s start window
            try:
                ray.init(include_dashboard=False, log_to_driver=False,
                         _temp_dir=str(work / f"ray-tmp{attempt}"))
                break
            except Exception as error:  # ray raises a bare Exception on that time-out
                if attempt == 2 or "timed out during startup" not in str(error):
                    raise
                ray.shutdown()
        ray_start = time.perf_counter() - start
        try:  # sweep and fit alternate, so that a change of the machine's load hits both
            # a warm-up of each (not timed): the first run fills the decoded-audio cache and
            # pays the worker's and this process's first imports and allocations
            params = sweep_trial(work, data, short, 1)[2]
            fit_alone(work, data, params, short, 1)
            sweep_s, inside, fit_s = {}, {}, {}
            for epochs in (short, long):
                sweep_s[epochs], inside[epochs], params = sweep_trial(work, data, epochs,
                                                                      args.steps)
                fit_s[epochs] = fit_alone(work, data, params, epochs, args.steps)
            fit_steps = fit_alone(work, data, params, short, 3 * args.steps)
        finally:
            ray.shutdown()
        demo_cfg = load_sweep(DEMO, overrides=_overrides(work, data, long, args.steps)
                              ).config_for(params)
    print(f"trial parameters: {params}")
    print(f"ray.init (once per sweep): {ray_start:.1f} s")
    for epochs in (short, long):
        print(f"{epochs} epoch(s) x {args.steps} steps: sweep trial {sweep_s[epochs]:6.1f} s "
              f"(inside the trainable {inside[epochs]:5.1f} s), fit alone {fit_s[epochs]:6.1f} s, "
              f"platform {sweep_s[epochs] - fit_s[epochs]:5.1f} s "
              f"({(sweep_s[epochs] - fit_s[epochs]) / sweep_s[epochs]:.0%})")
    per_epoch_fit = (fit_s[long] - fit_s[short]) / (long - short)  # at --steps
    per_step = (fit_steps - fit_s[short]) / (short * 2 * args.steps)
    fixed_fit = fit_s[short] - short * per_epoch_fit
    extra = {e: sweep_s[e] - fit_s[e] for e in (short, long)}
    g = (extra[long] - extra[short]) / (long - short)
    fixed = extra[short] - short * g
    print(f"fit: fixed {fixed_fit:.1f} s, per epoch {per_epoch_fit:.2f} s at {args.steps} "
          f"steps, per step {per_step:.3f} s; platform: fixed {fixed:.1f} s, "
          f"per epoch {g:.2f} s")
    epoch_full = per_epoch_fit + (full.steps_per_epoch - args.steps) * per_step
    fit_full = fixed_fit + full.epochs * epoch_full
    platform_full = fixed + full.epochs * g
    print(f"demo's full trial ({full.epochs} epochs x {full.steps_per_epoch} steps), "
          f"extrapolated: fit {fit_full:.1f} s, platform {platform_full:.1f} s = "
          f"{platform_full / (fit_full + platform_full):.1%} of the trial")
    print(f"long trials of the demo's epochs: platform -> {g / (epoch_full + g):.1%} "
          f"(per-epoch cost only)")
    with tempfile.TemporaryDirectory() as tmp:
        for line in paper_lines(args.paper, Path(tmp), demo_cfg, fixed, g):
            print(line)
    if min(fixed, g, per_step, per_epoch_fit) < 0:
        print("a negative cost: the machine's load changed more than the costs measured; "
              "rerun on a quieter machine (or with longer --epochs)")


if __name__ == "__main__":
    main()
