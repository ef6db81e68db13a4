"""``python -m sweeps run|plan|submit|resume|extend|pause|promote|report|show``.

    python -m sweeps run sweeps/bands.yaml [--profile smoke] [tune.num_samples=4 ...] [--address A]
                                           [--reuse]
    python -m sweeps plan sweeps/bands.yaml --profile paper [--json] [--time [--device cuda]]
    python -m sweeps submit sweeps/bands.yaml --address http://HEAD:8265 [--profile paper]
    python -m sweeps resume runs/sweeps/bands-20261123-101500
    python -m sweeps extend runs/sweeps/bands-20261123-101500 tune.num_samples=+8
    python -m sweeps pause runs/sweeps/bands-20261123-101500  (running trials end their epoch)
    python -m sweeps promote sepcore-bands --version 3      (or --run RUN_ID)
    python -m sweeps report bands-20261123-101500           (a sweep run name or parent run id)
    python -m sweeps show 3f9c0a1b2c3d4e5f                  (a trial signature: config, runs)

Errors of the sweep or library layers print one line naming the file and key (exit code 2; a bug
says so, exit 1); ``--debug`` or ``SEPCORE_DEBUG=1`` adds the traceback
(:mod:`sepcore.cli_errors`, shared with ``sep`` and ``python -m services``).
"""

from __future__ import annotations

import argparse
import logging
import sys

from sepcore.cli_errors import OneLineParser, add_debug_flag, run_command


def _print_outcome(outcome) -> None:
    from services.redact import redact
    from sweeps.tracking import is_local_store

    print()
    print(outcome.report)
    print()
    for pushed in outcome.pushed:
        print(f"pushed {pushed['trial_id']}: {redact(pushed['uri'])} "
              f"(sha256 {pushed['sha256'][:12]}…)")
    if outcome.orphaned:
        print(f"{len(outcome.orphaned)} run(s) of trials Tune had not saved before the driver "
              f"died were closed as KILLED (tag sepcore.orphaned): {', '.join(outcome.orphaned)}")
    from pathlib import Path

    local = Path(outcome.experiment_path) / "report.html"
    if "://" not in outcome.experiment_path and local.is_file():
        print(f"report: {local} (and the parent run's report/report.html)")
    if outcome.registered:
        reg = outcome.registered
        print(f"registered {reg['name']} version {reg['version']} with alias '{reg['alias']}'")
    uri = redact(outcome.tracking_uri)
    if is_local_store(outcome.tracking_uri):
        print(f"MLflow parent run {outcome.parent_run_id}; open the UI with:")
        print(f"  mlflow ui --backend-store-uri {uri}")
    else:
        print(f"MLflow parent run {outcome.parent_run_id} on {uri}")
    if outcome.paused:
        print(f"continue it with: python -m sweeps resume {redact(outcome.experiment_path)}")
        return
    print(f"resume if interrupted: python -m sweeps resume {redact(outcome.experiment_path)}")
    print(f"add trials:            python -m sweeps extend {redact(outcome.experiment_path)} "
          f"tune.num_samples=+N")


def _cmd_run(args) -> int:
    from sweeps.runner import run_sweep
    from sweeps.spec import load_sweep

    sweep = load_sweep(args.file, profile=args.profile, overrides=args.overrides)
    _print_outcome(run_sweep(sweep, address=args.address, overrides=args.overrides,
                             reuse=args.reuse))
    return 0


def _cmd_plan(args) -> int:
    import json

    from sweeps.plan import format_plan, plan_sweep
    from sweeps.spec import load_sweep

    sweep = load_sweep(args.file, profile=args.profile, overrides=args.overrides)
    plan = plan_sweep(sweep, timed=args.time, device=args.device)
    print(json.dumps(plan, indent=2, default=str) if args.json else format_plan(plan))
    return 0


def _cmd_demo(args) -> int:
    from pathlib import Path

    from sepcore.data.synth import write_synthetic_musdb
    from services.redact import redact
    from sweeps.runner import run_sweep
    from sweeps.spec import load_sweep

    root = Path("data/synth-demo")
    if not (root / "train").is_dir():
        print(f"writing a synthetic MUSDB tree to {root} (10 songs of 16 s)")
        write_synthetic_musdb(root, tracks=10, seconds=16.0, seed=0, progress=True)
    sweep = load_sweep(args.file, profile=args.profile, overrides=args.overrides)
    print(f"running sweep {sweep.file}: {sweep.tune.num_samples} trials on local Ray, "
          f"MLflow at {redact(sweep.tracking.uri or 'sqlite:///mlruns.db')}")
    _print_outcome(run_sweep(sweep, overrides=args.overrides, reuse=args.reuse))
    return 0


def _cmd_resume(args) -> int:
    from sweeps.runner import resume_sweep

    _print_outcome(resume_sweep(args.experiment, address=args.address, sweep_file=args.file,
                                profile=args.profile, overrides=args.overrides or None))
    return 0


def _cmd_extend(args) -> int:
    from sweeps.runner import extend_sweep, parse_increment

    increment = parse_increment(args.overrides or [])  # before Ray or MLflow start
    _print_outcome(extend_sweep(args.experiment, increment, address=args.address,
                                sweep_file=args.file, profile=args.profile))
    return 0


def _cmd_pause(args) -> int:
    from services.redact import redact
    from sweeps.pause import POLL_S, request_pause

    marker = request_pause(args.experiment)
    print(f"wrote {redact(marker)}: the sweep's driver sees it within {POLL_S:.0f} s, starts no "
          f"new trial, lets the running ones finish their epoch and checkpoint, then exits")
    print(f"continue it with: python -m sweeps resume {redact(args.experiment)}")
    return 0


def _cmd_submit(args) -> int:
    from services.redact import redact
    from sweeps.errors import SweepError
    from sweeps.spec import load_sweep
    from sweeps.submit import submit

    load_sweep(args.file, profile=args.profile, overrides=args.overrides)  # fail before submitting
    env_vars = {}
    for number, item in enumerate(args.env or [], 1):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            # the item is not echoed: it may hold a secret (a token pasted without its KEY=)
            raise SweepError(f"--env number {number} is not of the form KEY=VALUE (its text is "
                             f"not shown: it may hold a secret)", key="--env")
        env_vars[key] = value
    job_id = submit(args.file, address=args.address, profile=args.profile,
                    overrides=args.overrides, working_dir=args.working_dir, env_vars=env_vars,
                    allow_secrets=args.allow_secrets)
    address = redact(args.address)
    print(f"submitted job {job_id}")
    print(f"follow its logs: ray job logs --address {address} --follow {job_id}")
    print(f"status:          ray job status --address {address} {job_id}")
    return 0


def _cmd_promote(args) -> int:
    from mlflow import MlflowClient

    from services.registry import check_run_id, promote
    from sweeps.tracking import resolve_tracking_uri

    if args.run is not None:
        check_run_id(args.run)  # before the registry is opened
    client = MlflowClient(resolve_tracking_uri(args.tracking_uri))
    version = promote(client, args.name, version=args.version, run_id=args.run,
                      alias=args.alias)
    print(f"{args.name} version {version} now has alias '{args.alias}'")
    return 0


def _cmd_report(args) -> int:
    from pathlib import Path

    from mlflow import MlflowClient

    from sweeps.report import sweep_report
    from sweeps.tracking import find_sweep_run, resolve_tracking_uri

    client = MlflowClient(resolve_tracking_uri(args.tracking_uri))
    run = find_sweep_run(client, args.sweep)
    tags = run.data.tags
    metric = args.metric or tags.get("sepcore.metric", "valid_sisdr")
    mode = args.mode or tags.get("sepcore.mode", "max")
    out = Path(args.out or Path("runs/reports") / (tags.get("mlflow.runName") or run.info.run_id))
    print(sweep_report(client, run.info.experiment_id, run.info.run_id, metric, mode, out))
    print(f"\nwrote {out}/comparison.csv, comparison.png, report.html and importance.csv "
          f"(also logged to run {run.info.run_id})")
    return 0


def _cmd_show(args) -> int:
    from mlflow import MlflowClient

    from sweeps.lineage import describe_signature
    from sweeps.tracking import resolve_tracking_uri

    client = MlflowClient(resolve_tracking_uri(args.tracking_uri))
    print(describe_signature(client, args.signature))
    return 0


REUSE_HELP = ("replay, instead of training, each trial whose signature has a finished run "
              "with its checkpoint")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m sweeps", description=__doc__.split("\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run a sweep file on local Ray or a cluster")
    p.add_argument("file")
    p.add_argument("--profile")
    p.add_argument("--address", help="Ray cluster address (default: local Ray / $RAY_ADDRESS)")
    p.add_argument("--reuse", action="store_true", help=REUSE_HELP)
    p.add_argument("overrides", nargs="*", help="dotlist overrides, e.g. tune.num_samples=4")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("plan", help="what a sweep will run (trials, sizes, scheduler), not run")
    p.add_argument("file")
    p.add_argument("--profile")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.add_argument("--time", action="store_true",
                   help="time one forward/backward per trial; estimate the hours")
    p.add_argument("--device", default="cpu",
                   help="where --time measures: cpu (default) or cuda[:N]")
    p.add_argument("overrides", nargs="*", help="dotlist overrides, e.g. tune.seeds=[1,2]")
    p.set_defaults(func=_cmd_plan)

    p = sub.add_parser("demo", help="synthetic data + the demo sweep on local Ray (make demo)")
    p.add_argument("--file", default="sweeps/demo.yaml")
    p.add_argument("--reuse", action="store_true", help=REUSE_HELP)
    p.add_argument("--profile")
    p.add_argument("overrides", nargs="*")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("submit", help="submit `sweeps run` to a cluster with Ray Jobs")
    p.add_argument("file")
    p.add_argument("--address", required=True, help="Ray dashboard address, http://HEAD:8265")
    p.add_argument("--profile")
    p.add_argument("--working-dir", default=".")
    p.add_argument("--allow-secrets", action="store_true",
                   help="upload the working directory even if it holds files named like secrets "
                        "(.env, *.pem, *.key, id_rsa*, .stack/ ...) that no .gitignore/.rayignore "
                        "excludes")
    p.add_argument("--env", action="append", metavar="KEY=VALUE",
                   help="environment variable for the job (repeatable)")
    p.add_argument("overrides", nargs="*")
    p.set_defaults(func=_cmd_submit)

    p = sub.add_parser("resume", help="continue an interrupted sweep (Tuner.restore)")
    p.add_argument("experiment", help="the Tune experiment folder printed by `run`")
    p.add_argument("--file", help="the sweep file (default: the one recorded in the folder)")
    p.add_argument("--profile")
    p.add_argument("--address")
    p.add_argument("overrides", nargs="*")
    p.set_defaults(func=_cmd_resume)

    p = sub.add_parser("extend", help="add trials to a finished sweep under its parent run "
                       "(the searcher's state kept)")
    p.add_argument("experiment", help="the Tune experiment folder printed by `run`")
    p.add_argument("--file", help="the sweep file (default: the one recorded in the folder)")
    p.add_argument("--profile")
    p.add_argument("--address")
    p.add_argument("overrides", nargs="*", help="tune.num_samples=+N: how many trials to add")
    p.set_defaults(func=_cmd_extend)

    p = sub.add_parser("pause", help="stop a running sweep after its running trials' epoch "
                       "(continue with `resume`)")
    p.add_argument("experiment", help="the Tune experiment folder printed by `run`")
    p.set_defaults(func=_cmd_pause)

    p = sub.add_parser("promote", help="move a registry alias by hand")
    p.add_argument("name", help="registered model name")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--version")
    group.add_argument("--run", help="the MLflow run id of the version to promote")
    p.add_argument("--alias", default="champion")
    p.add_argument("--tracking-uri")
    p.set_defaults(func=_cmd_promote)

    p = sub.add_parser("report", help="comparison table, CSV, PNG, HTML report and parameter "
                       "importance of a finished sweep")
    p.add_argument("sweep", help="the sweep's run name (as printed by `run`) or parent run id")
    p.add_argument("--metric")
    p.add_argument("--mode", choices=["max", "min"])
    p.add_argument("--out")
    p.add_argument("--tracking-uri")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("show", help="the config, runs and checkpoints of a trial signature")
    p.add_argument("signature", help="a trial run's sepcore.config_hash tag (16 hex digits)")
    p.add_argument("--tracking-uri")
    p.set_defaults(func=_cmd_show)
    add_debug_flag(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # dotlist overrides may come before or after options (`run F --profile smoke a.b=1`)
    args, extra = parser.parse_known_args(argv)
    unknown = [e for e in extra if e.startswith("-") or "=" not in e]
    if unknown or (extra and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(unknown or extra)}")
    if extra:
        args.overrides = list(args.overrides or []) + extra
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("sweeps").setLevel(logging.INFO)
    return run_command(args.func, args, prog="python -m sweeps")


if __name__ == "__main__":
    sys.exit(main())
