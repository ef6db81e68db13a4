"""The ``sep`` command line: synth, train, evaluate, score, separate, info, analyze, oracle, demo.

Every sub-command is a thin wrapper over a library function; errors are printed as one clear
line by :func:`sepcore.cli_errors.run_command` (exit code 2 for bad input, 1 for a bug; ``--debug``
or ``SEPCORE_DEBUG=1`` adds the traceback).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

from sepcore.cli_errors import OneLineParser, add_debug_flag, run_command
from sepcore.errors import ConfigError

log = logging.getLogger("sepcore")


def _cmd_synth(args) -> int:
    from sepcore.data.synth import write_synthetic_musdb

    songs = write_synthetic_musdb(args.out, tracks=args.tracks, seconds=args.seconds,
                                  seed=args.seed, progress=True)
    print(f"wrote {len(songs)} synthetic songs to {args.out} (train/ and test/)")
    return 0


def _cmd_train(args) -> int:
    from sepcore.config import load_config
    from sepcore.train import fit

    cfg = load_config(args.config, args.overrides)
    result = fit(cfg)
    print(f"trained {result.epochs_run} epochs ({result.global_step} steps); "
          f"best valid loss {result.best_valid_loss:.4f}")
    print(f"best checkpoint: {result.best_checkpoint}")
    return 0


def _cmd_evaluate(args) -> int:
    from sepcore.evaluate import describe_protocol, evaluate_checkpoint

    result = evaluate_checkpoint(args.checkpoint, args.overrides)
    print(describe_protocol(result.protocol))
    print(result.table)
    print()
    print("segment-wise (all windows of all songs) and silent target segments (PES dB, VAD %):")
    print(result.extra_table)
    print(f"per-track museval JSON: {result.json_dir}")
    print(f"summary: {result.summary_path}")
    return 0


def _cmd_score(args) -> int:
    from sepcore.metrics.score import score_dirs

    backend = "museval" if args.reference == "museval" else "sepcore"
    result = score_dirs(args.references, args.estimates, args.out, backend=backend)
    print(result.table)
    for line in result.warnings:
        print(f"warning: {line}")
    print(f"per-track museval JSON: {Path(args.out) / 'test'} ({len(result.json_paths)} songs)")
    return 0


def _cmd_separate(args) -> int:
    from sepcore.separate import separate_files

    songs, overrides = split_overrides(args.inputs)
    if not songs:
        raise ConfigError("no song to separate (give audio files after the checkpoint)")
    written = separate_files(songs, args.checkpoint, args.out, overrides, force=args.force,
                             nan_policy=args.nan_policy)
    for path in written:
        print(path)
    return 0


def split_overrides(items: list[str]) -> tuple[list[str], list[str]]:
    """Songs and ``section.key=value`` overrides, given in any order after the checkpoint.

    An existing file is always a song; otherwise an item whose part before ``=`` is a dotted key
    of a config section (``eval.segment=5``) is an override.
    """
    songs, overrides = [], []
    for item in items:
        key = item.split("=", 1)[0]
        is_override = ("=" in item and not Path(item).exists()
                       and key.split(".")[0] in _SECTIONS and "." in key)
        (overrides if is_override else songs).append(item)
    return songs, overrides


_SECTIONS = ("model", "audio", "data", "train", "eval")


def _cmd_info(args) -> int:
    from sepcore.info import model_info

    info = model_info(args.config, args.overrides)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        rf = info["receptive_field_samples"]
        rf_text = "unbounded" if rf is None else (
            f"{rf} samples ({info['receptive_field_ms']:.1f} ms)")
        if rf is not None and info.get("global_context"):
            rf_text += " through the convolutions; gLN adds global context"
        print(f"model            {info['model']}")
        print(f"parameters       {info['params']:,} ({info['params'] / 1e6:.2f} M)")
        if info["trainable_params"] != info["params"]:
            print(f"trainable        {info['trainable_params']:,} (train.trainable/frozen)")
        print(f"sample rate      {info['sample_rate']} Hz, {info['audio_channels']} channel(s)")
        print(f"sources          {', '.join(info['sources'])}")
        print(f"receptive field  {rf_text}")
        print(f"latent frames    {info['latent_frame_rate']:.1f} per second "
              f"(hop {info['frame_hop']} samples)")
    return 0


def _cmd_analyze(args) -> int:
    from sepcore.analyze import analyze_checkpoint

    analysis, path = analyze_checkpoint(args.checkpoint, args.out)
    bands = sorted(set(analysis.band.tolist()))
    for b in bands:
        chosen = analysis.band == b
        print(f"band {b + 1}: {int(chosen.sum())} filters, median centre "
              f"{float(np.median(analysis.centre_hz[chosen])):.0f} Hz, median bandwidth "
              f"{float(np.median(analysis.bandwidth_hz[chosen])):.0f} Hz")
    print(f"wrote {path}")
    return 0


def _cmd_oracle(args) -> int:
    from sepcore.config import load_config
    from sepcore.oracle import oracle_from_config

    cfg = load_config(args.config, args.overrides)
    result = oracle_from_config(cfg)
    name = cfg.model_name
    what = name.upper() + (f" (alpha={cfg.model.alpha:g})" if name == "irm" else "")
    print(f"{what} oracle on {cfg.data.root} ({cfg.eval.subset}): SI-SDR over whole songs, "
          f"SDR = median over songs of the median over {cfg.eval.win:g} s chunks (dB)")
    print(result.table)
    return 0


def _cmd_demo(args) -> int:
    from sepcore.demo import run_demo

    print(run_demo(Path(args.workdir), overrides=args.overrides))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="sep", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="write a synthetic MUSDB18-HQ-layout tree")
    p.add_argument("--out", required=True, help="output root (train/ and test/ are created)")
    p.add_argument("--tracks", type=int, default=12)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_synth)

    p = sub.add_parser("train", help="train a model from a config file")
    p.add_argument("config", help="YAML config (a path, or one packaged e.g. paper/m2.yaml)")
    p.add_argument("overrides", nargs="*", help="dotlist overrides, e.g. train.epochs=3")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("evaluate", help="BSSEval v4/v3 (museval) on a MUSDB-layout subset",
                       description="Score a checkpoint with its own config; overrides change "
                                   "its data, eval and train sections.")
    p.add_argument("checkpoint", help="a sepcore checkpoint (.safetensors)")
    p.add_argument("overrides", nargs="*",
                   help="dotlist overrides, e.g. data.root=/data/musdb18hq eval.subset=test "
                        "eval.max_tracks=5 eval.out_dir=eval/ eval.device=cpu "
                        "eval.protocol=sisec|model eval.bsseval=v4|v3")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("score", help="BSSEval v4 of estimate folders against reference folders")
    p.add_argument("--references", required=True, help="one folder of <target>.wav per song")
    p.add_argument("--estimates", required=True, help="one folder of <target>.wav per song")
    p.add_argument("--out", required=True, help="folder for per-track museval JSON (test/)")
    p.add_argument("--reference", choices=["museval"], default=None,
                   help="score with museval itself instead of sepcore's implementation")
    p.set_defaults(func=_cmd_score)

    p = sub.add_parser("separate", help="separate songs of any length into one WAV per source")
    p.add_argument("checkpoint", help="a sepcore checkpoint (.safetensors)")
    p.add_argument("inputs", nargs="+", metavar="SONG|OVERRIDE",
                   help="audio files, and dotlist overrides of the checkpoint's config, e.g. "
                        "eval.segment=5 eval.overlap=0.5 eval.device=cpu")
    p.add_argument("--out", required=True, help="folder; one <song>/<source>.wav per song")
    p.add_argument("--force", action="store_true", help="overwrite stems that exist")
    p.add_argument("--nan-policy", choices=["error", "zero"], default="error",
                   help="a NaN/inf sample in a song: stop with an error naming it (default) "
                        "or replace such samples by 0")
    p.set_defaults(func=_cmd_separate)

    p = sub.add_parser("info", help="parameter count, receptive field, latent frame rate")
    p.add_argument("config")
    p.add_argument("overrides", nargs="*")
    p.add_argument("--json", action="store_true", help="print a JSON object")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("analyze", help="analyse a trained model (filters: encoder filter plot)")
    p.add_argument("what", choices=["filters"])
    p.add_argument("checkpoint")
    p.add_argument("--out", required=True, help="PNG to write")
    p.set_defaults(func=_cmd_analyze)

    p = sub.add_parser("oracle", help="IRM/IBM oracle score per class: how separable is each",
                       description="model.name irm|ibm; classes = audio.sources; songs = "
                                   "eval.subset of data.root; BSSEval chunks of eval.win s.")
    p.add_argument("config", help="YAML config with model.name irm or ibm (packaged: oracle.yaml)")
    p.add_argument("overrides", nargs="*",
                   help="dotlist overrides, e.g. data.root=/data/musdb18hq model.name=ibm "
                        "'audio.sources=[vocals,accompaniment]' eval.max_tracks=5")
    p.set_defaults(func=_cmd_oracle)

    p = sub.add_parser("demo", help="synth data, train a small multi-band model, evaluate")
    p.add_argument("--workdir", default=".", help="where data/ and runs/ are written")
    p.add_argument("overrides", nargs="*",
                   help="dotlist overrides of configs/demo.yaml, e.g. train.epochs=1")
    p.set_defaults(func=_cmd_demo)
    add_debug_flag(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # songs and overrides may also follow the options (`sep separate CKPT a.wav --out o x.y=1`)
    args, extra = parser.parse_known_args(argv)
    if extra:
        if any(e.startswith("-") for e in extra) or not hasattr(args, "inputs"):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.inputs = list(args.inputs) + extra
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    return run_command(args.func, args, prog="sep")


if __name__ == "__main__":
    sys.exit(main())
