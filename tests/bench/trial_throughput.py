"""Trial throughput of the demo sweep: the same trials on the CPU and, when CUDA is there, on half
a GPU each (two trials share one device), measured side by side in one run.

Each configuration runs ``--trials`` trials of ``sweeps/demo.yaml`` (its ``smoke`` profile unless
``--full``) on a local Ray, with the demo's synthetic data written once to a temporary folder,
MLflow in a temporary sqlite file and no test-set evaluation, and prints wall time, trials per
hour and the GPU/CPU ratio. Without CUDA only the CPU line is printed.

Usage: ``python tests/bench/trial_throughput.py [--trials 4] [--full]``
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

DEMO = Path(__file__).resolve().parents[2] / "sweeps" / "demo.yaml"


def run(trials: int, gpu: float, device: str, work: Path, data: Path, profile: str | None) -> float:
    from sweeps.runner import run_sweep
    from sweeps.spec import load_sweep

    folder = work / f"{device}-{gpu}"
    folder.mkdir()
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{folder}/mlruns.db"
    sweep = load_sweep(DEMO, profile=profile, overrides=[
        f"tune.num_samples={trials}", f"tune.max_concurrent={trials}",
        f"tune.resources.gpu={gpu}", f"base.train.device={device}", "tune.test_eval=false",
        "tune.scheduler.type=fifo", f"base.data.root={data}",
        f"base.data.cache_dir={work / 'cache'}", f"tune.storage_path={folder / 'ray'}",
        f"artifacts.uri={folder / 'store'}"])
    start = time.perf_counter()
    run_sweep(sweep)
    return time.perf_counter() - start


def main() -> None:
    import ray
    import torch

    from sepcore.data.synth import write_synthetic_musdb

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--full", action="store_true", help="the demo sweep's full trial length")
    args = parser.parse_args()
    profile = None if args.full else "smoke"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = work / "synth"
        write_synthetic_musdb(data, tracks=10, seconds=16.0, seed=0)
        ray.init(include_dashboard=False, log_to_driver=False, _temp_dir=str(work / "ray-tmp"))
        try:
            cpu = run(args.trials, 0.0, "cpu", work, data, profile)
            print(f"cpu        {args.trials} trials  {cpu:8.1f} s  "
                  f"{args.trials / cpu * 3600:8.0f} trials/h")
            if torch.cuda.is_available():
                gpu = run(args.trials, 0.5, "cuda", work, data, profile)
                print(f"cuda x0.5  {args.trials} trials  {gpu:8.1f} s  "
                      f"{args.trials / gpu * 3600:8.0f} trials/h  "
                      f"({cpu / gpu:.2f}x the CPU, {torch.cuda.get_device_name()})")
            else:
                print("cuda       not available: no GPU line")
        finally:
            ray.shutdown()


if __name__ == "__main__":
    main()
