"""Hundreds of trials: what the sweep machinery itself costs per trial, at 30 and at 300 trials.

A trivial trainable (it sleeps ``--sleep`` seconds per epoch for ``--epochs`` epochs, reports a
made-up ``valid_sisdr`` with a checkpoint each epoch) goes through the real paths of a sweep:
Optuna (or random) search, Tune, one MLflow child run per trial opened by
:class:`sweeps.tracking.TrialRun` (params, tags, per-epoch metrics), then the sweep-level step
(:func:`sweeps.runner.finish_sweep`: tags and best metrics per trial, checkpoint push, registry,
comparison report). Each size runs in its own driver process, on its own Ray and tracking store.
For each it prints:

- wall time, the ideal time (``ceil(trials / concurrency) * epochs * sleep``) and the driver's
  overhead per trial, ``(wall - ideal) / trials``;
- the sweep-level step's time (report + registry);
- the driver's CPU time (user + system, all its threads: what the machinery costs the driver,
  less sensitive than wall time to other load on the machine) and peak RSS;
- the 1-minute load average at the end (a busy machine stretches every wall time);
- the size of Tune's experiment state (what each of its snapshots writes) and the checkpoint
  folders left in storage (each trial keeps its best ``num_to_keep`` and its latest);
- the rows written to the tracking store (runs, params, tags, metrics, latest_metrics), read from
  its database (sqlite by default; ``--backend-uri`` for a server's PostgreSQL).

Usage::

    python tests/bench/scale.py                       # 30 and 300 trials, local Ray + sqlite
    python tests/bench/scale.py --trials 30 --sleep 0.2 --concurrency 16
    MLFLOW_TRACKING_URI=http://… python tests/bench/scale.py --backend-uri postgresql://…

(the last form logs through a tracking server). On the stack of `make stack` (several nodes, so
the cluster checks apply: Tune's storage and the checkpoints in S3, a data root every node sees)::

    source .stack/stack.env   # then GCS=the address `python -m services stack status` prints
    python tests/bench/scale.py --address "$GCS" --concurrency 4 \
        --storage s3://sepcore/scale --artifacts s3://sepcore/scale --data-root data/synth-demo \
        --backend-uri postgresql://…
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from services.redact import redact

ROOT = Path(__file__).resolve().parents[2]
EPOCHS = 3
SLEEP = 0.5


def sleep_trial(config, context) -> None:
    """The trivial trainable (defined in ``__main__``, so Ray ships it by value)."""
    from ray import tune

    from sepcore.train import LAST
    from sweeps.retention import Retention
    from sweeps.space import trial_params
    from sweeps.tracking import TrialRun, flatten

    ctx = tune.get_context()
    params = trial_params(config)
    began = time.perf_counter()
    run = TrialRun.open(context.tracking_uri, context.experiment_id, context.parent_run_id,
                        ctx.get_trial_id(), run_name=ctx.get_trial_name(),
                        params={**flatten(context.base),
                                **{f"search.{k}": v for k, v in params.items()}},
                        tags=dict(context.tags))
    phases = {"phase.open_s": time.perf_counter() - began, "phase.log_s": 0.0,
              "phase.report_s": 0.0}  # where a trial's own time goes (read back by the driver)
    lr = float(params.get("train.lr", 1e-3))
    retention = Retention(context.keep)  # the trial-side checkpoint retention of a real trial
    for epoch in range(1, EPOCHS + 1):
        time.sleep(SLEEP)
        metrics = {"epoch": epoch, "valid_sisdr": -abs(math.log10(lr) + 3) + epoch,
                   "valid_loss": 1.0 / epoch, "train_loss": 1.0 / epoch}
        t0 = time.perf_counter()
        run.log_metrics(metrics, step=epoch)
        t1 = time.perf_counter()
        with tempfile.TemporaryDirectory() as folder:
            (Path(folder) / LAST).write_bytes(b"a checkpoint of %d bytes" % epoch)
            retention.report(metrics, folder)
        phases["phase.log_s"] += t1 - t0
        phases["phase.report_s"] += time.perf_counter() - t1
    run.log_metrics(phases)
    run.finish("FINISHED")


SWEEP = """
base: demo.yaml
search:
  train.lr: {{loguniform: [1.0e-4, 1.0e-2]}}
tune:
  metric: valid_sisdr
  mode: max
  num_samples: {trials}
  search_alg: {search_alg}
  seed: 0
  scheduler: {{type: fifo}}
  max_concurrent: {concurrency}
  resources: {{cpu: {cpus}, gpu: 0}}
  max_failures: 0
  num_to_keep: {num_to_keep}
  storage_path: {storage}
  test_eval: false
tracking: {{experiment: scale-{trials}}}
artifacts: {{uri: {artifacts}, top_k: 1}}
registry: {{model_name: sepcore-scale-{trials}}}
"""


def one_size(args) -> dict:
    """Run one sweep in this process (the driver) and return its figures."""
    import ray

    import sweeps.runner as runner
    from sweeps.spec import load_sweep

    global EPOCHS, SLEEP
    EPOCHS, SLEEP = args.epochs, args.sleep
    work = Path(args.work)
    data_root = Path(args.data_root or work / "data")
    data_root.mkdir(parents=True, exist_ok=True)  # the base's data root must exist (never read)
    path = work / "scale.yaml"
    stamp = f"{args.one}-{int(time.time())}"  # a fresh folder on shared storage for each run
    path.write_text(textwrap.dedent(SWEEP.format(
        trials=args.one, concurrency=args.concurrency, search_alg=args.search_alg,
        num_to_keep=args.num_to_keep, cpus=args.cpus_per_trial,
        storage=f"{args.storage}/{stamp}" if args.storage else f"{work}/ray-results",
        artifacts=f"{args.artifacts}/{stamp}" if args.artifacts else f"{work}/store")))
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{work}/mlruns.db")
    sweep = load_sweep(path, overrides=[f"base.data.root={data_root}"])
    finish_time = []
    real_finish = runner.finish_sweep

    def timed_finish(*a, **k):
        start = time.perf_counter()
        try:
            return real_finish(*a, **k)
        finally:
            finish_time.append(time.perf_counter() - start)

    runner.finish_sweep = timed_finish
    if args.address:
        ray.init(address=args.address, log_to_driver=False)
    else:
        ray.init(num_cpus=args.concurrency, include_dashboard=False, log_to_driver=False,
                 _temp_dir=str(work / "ray"))
    try:
        start = time.perf_counter()
        outcome = runner.run_sweep(sweep, trainable=sleep_trial)
        wall = time.perf_counter() - start
    finally:
        ray.shutdown()
    finished = sum(1 for t in outcome.trials if not t["error"])
    phases = trial_phases(outcome.parent_run_id)
    kept = storage_figures(outcome.experiment_path)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"trials": args.one, "finished": finished, "wall_s": wall,
            "finish_s": finish_time[0] if finish_time else float("nan"),
            "cpu_s": usage.ru_utime + usage.ru_stime, "load": os.getloadavg()[0],
            "peak_rss_mb": usage.ru_maxrss / 1024,
            "rows": count_rows(args.backend_uri or os.environ["MLFLOW_TRACKING_URI"]),
            "phases": phases, "storage": kept}


def storage_figures(experiment_path: str) -> dict[str, int]:
    """What the sweep left in Tune's storage: the experiment state's size (what each of Tune's
    snapshots writes and uploads) and the trials' checkpoint folders (all, and the most of one
    trial: the best ``num_to_keep`` and the latest stay)."""
    import pyarrow.fs

    uri = experiment_path if "://" in experiment_path else str(Path(experiment_path).resolve())
    fs, path = pyarrow.fs.FileSystem.from_uri(uri)
    infos = fs.get_file_info(pyarrow.fs.FileSelector(path, recursive=True))
    state = sum(i.size for i in infos if i.base_name.startswith("experiment_state")
                and i.type == pyarrow.fs.FileType.File)
    per_trial: dict[str, int] = {}
    for i in infos:
        if i.base_name.startswith("checkpoint_") and i.type == pyarrow.fs.FileType.Directory:
            trial = i.path.rsplit("/", 2)[-2]
            per_trial[trial] = per_trial.get(trial, 0) + 1
    return {"state_kb": state // 1024, "checkpoints": sum(per_trial.values()),
            "most_per_trial": max(per_trial.values(), default=0)}


def trial_phases(parent_run_id: str) -> dict[str, float]:
    """Mean seconds per trial in each phase, from the child runs: opening the MLflow run, the
    per-epoch MLflow calls, ``tune.report`` with its checkpoint, and the run's whole life."""
    from mlflow import MlflowClient

    client = MlflowClient()
    parent = client.get_run(parent_run_id)
    runs = client.search_runs([parent.info.experiment_id],
                              filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}'",
                              max_results=5000)
    out = {}
    for key in ("phase.open_s", "phase.log_s", "phase.report_s"):
        values = [r.data.metrics[key] for r in runs if key in r.data.metrics]
        out[key.split(".")[1]] = sum(values) / max(len(values), 1)
    lives = [(r.info.end_time - r.info.start_time) / 1000 for r in runs if r.info.end_time]
    out["run_life_s"] = sum(lives) / max(len(lives), 1)
    return out


def count_rows(uri: str) -> dict[str, int] | None:
    if not uri.startswith(("sqlite:", "postgresql", "mysql")):
        return None
    import sqlalchemy

    engine = sqlalchemy.create_engine(uri)
    with engine.connect() as conn:
        return {table: conn.execute(sqlalchemy.text(f"SELECT COUNT(*) FROM {table}")).scalar()
                for table in ("runs", "params", "tags", "metrics", "latest_metrics")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, nargs="+", default=[30, 300])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--sleep", type=float, default=0.5, help="seconds per epoch")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--cpus-per-trial", type=float, default=1.0,
                        help="tune.resources.cpu (the trainable sleeps: a fraction lets more "
                             "trials share a node)")
    parser.add_argument("--search-alg", default="optuna", choices=["optuna", "random"])
    parser.add_argument("--num-to-keep", type=int, default=2,
                        help="tune.num_to_keep, default 2 as in a sweep file (each trial "
                             "keeps its best N checkpoints and its latest: sweeps.retention)")
    parser.add_argument("--address", help="an existing Ray cluster (default: a local Ray)")
    parser.add_argument("--backend-uri", help="the tracking server's database, to count rows")
    parser.add_argument("--storage", help="Tune's storage (e.g. s3://sepcore/scale on a cluster; "
                                          "default: a local temporary folder)")
    parser.add_argument("--artifacts", help="the checkpoint store (e.g. s3://sepcore/scale)")
    parser.add_argument("--data-root", help="a data root every node sees (never read)")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print("RESULT " + json.dumps(one_size(args)), flush=True)
        return
    print(f"# {args.epochs} epochs of {args.sleep} s per trial, {args.concurrency} at a time, "
          f"{args.cpus_per_trial:g} CPU each, tune.num_to_keep {args.num_to_keep}, "
          f"{args.search_alg} search; Ray "
          f"{args.address or 'local'}, tracking "
          f"{redact(os.environ.get('MLFLOW_TRACKING_URI', 'sqlite (local)'))}, "
          f"storage {args.storage or 'local folder'}", flush=True)
    print(f"{'trials':>6} {'wall s':>8} {'ideal s':>8} {'overhead/trial s':>17} "
          f"{'report+registry s':>18} {'driver CPU s':>13} {'driver peak RSS MB':>19} "
          f"{'load':>5}  MLflow rows")
    for trials in args.trials:
        with tempfile.TemporaryDirectory(prefix="scale-") as work:
            cmd = [sys.executable, __file__, "--one", str(trials), "--work", work,
                   "--epochs", str(args.epochs), "--sleep", str(args.sleep),
                   "--concurrency", str(args.concurrency), "--search-alg", args.search_alg,
                   "--num-to-keep", str(args.num_to_keep),
                   "--cpus-per-trial", str(args.cpus_per_trial)]
            for flag, value in (("--address", args.address), ("--backend-uri", args.backend_uri),
                                ("--storage", args.storage), ("--artifacts", args.artifacts),
                                ("--data-root", args.data_root)):
                if value:
                    cmd += [flag, value]
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                                  env={**os.environ, "PYTHONPATH": str(ROOT)})
            line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
            if line is None:
                sys.exit(f"the {trials}-trial sweep failed:\n{proc.stderr[-3000:]}")
            r = json.loads(line[len("RESULT "):])
        ideal = math.ceil(trials / args.concurrency) * args.epochs * args.sleep
        rows = r["rows"]
        rows_text = "n/a" if rows is None else ", ".join(f"{k} {v}" for k, v in rows.items())
        print(f"{trials:>6} {r['wall_s']:>8.1f} {ideal:>8.1f} "
              f"{(r['wall_s'] - ideal) / trials:>17.3f} {r['finish_s']:>18.1f} "
              f"{r['cpu_s']:>13.1f} {r['peak_rss_mb']:>19.0f} {r['load']:>5.1f}  {rows_text}"
              + ("" if r["finished"] == trials else f"  ({r['finished']} finished)"), flush=True)
        p = r["phases"]
        print(f"{'':>6} per trial: MLflow open {p['open_s']:.3f} s, MLflow per-epoch calls "
              f"{p['log_s']:.3f} s, tune.report+checkpoint {p['report_s']:.3f} s, sleeping "
              f"{args.epochs * args.sleep:.3f} s; run life {p['run_life_s']:.3f} s; slot time "
              f"{r['wall_s'] * args.concurrency / trials:.3f} s", flush=True)
        k = r["storage"]
        print(f"{'':>6} storage: experiment state {k['state_kb']} KB; checkpoints left "
              f"{k['checkpoints']}, at most {k['most_per_trial']} per trial", flush=True)


if __name__ == "__main__":
    main()
