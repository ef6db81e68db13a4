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

Usage: ``python tests/bench/sweep_overhead.py [--epochs 1 3] [--steps 3]``
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

DEMO = Path(__file__).resolve().parents[2] / "sweeps" / "demo.yaml"


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


def main() -> None:
    import ray

    from sepcore.data.synth import write_synthetic_musdb
    from sweeps.spec import load_sweep

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, nargs=2, default=[1, 3], help="two trial lengths")
    parser.add_argument("--steps", type=int, default=3, help="steps per epoch")
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
    if min(fixed, g, per_step, per_epoch_fit) < 0:
        print("a negative cost: the machine's load changed more than the costs measured; "
              "rerun on a quieter machine (or with longer --epochs)")


if __name__ == "__main__":
    main()
