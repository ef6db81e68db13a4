"""The ``sep`` command line: synth, train, evaluate, score, separate, info, analyze, oracle, demo.

Every sub-command is a thin wrapper over a library function; errors of sepcore's own types are
printed as one clear line (exit code 2) instead of a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

from sepcore.errors import SepcoreError

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
    from sepcore.evaluate import evaluate_checkpoint

    result = evaluate_checkpoint(args.checkpoint, root=args.root, subset=args.subset,
                                 out_dir=args.out, max_tracks=args.max_tracks,
                                 device=args.device)
    print(result.table)
    print()
    print("segment-wise (all windows of all songs) and silent target segments (PES dB, VAD %):")
    print(result.extra_table)
    print(f"per-track museval JSON: {result.json_dir}")
    return 0


def _cmd_score(args) -> int:
    from sepcore.metrics.score import score_dirs

    backend = "museval" if args.reference == "museval" else "sepcore"
    result = score_dirs(args.references, args.estimates, args.out, backend=backend)
    print(result.table)
    print(f"per-track museval JSON: {Path(args.out) / 'test'} ({len(result.json_paths)} songs)")
    return 0


def _cmd_separate(args) -> int:
    from sepcore.separate import separate_files

    written = separate_files(args.songs, args.checkpoint, args.out, segment=args.segment,
                             overlap=args.overlap, device=args.device)
    for path in written:
        print(path)
    return 0


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
    from sepcore.oracle import oracle_scores

    result = oracle_scores(args.root, args.classes, oracle=args.oracle, alpha=args.alpha,
                           subset=args.subset, sample_rate=args.rate, channels=args.channels,
                           mapping=args.mapping, missing=args.missing, n_fft=args.n_fft,
                           hop=args.hop, chunk=args.chunk, max_tracks=args.max_tracks)
    what = f"{args.oracle.upper()}" + (f" (alpha={args.alpha:g})" if args.oracle == "irm" else "")
    print(f"{what} oracle on {args.root} ({args.subset}): SI-SDR over whole songs, "
          f"SDR = median over songs of the median over {args.chunk:g} s chunks (dB)")
    print(result.table)
    return 0


def _cmd_demo(args) -> int:
    from sepcore.demo import run_demo

    print(run_demo(Path(args.workdir), overrides=args.overrides))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sep", description=__doc__.splitlines()[0])
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

    p = sub.add_parser("evaluate", help="BSSEval v4 (museval) on a MUSDB-layout subset")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--root", help="data root (default: the checkpoint's data.root)")
    p.add_argument("--subset", default="test")
    p.add_argument("--out", help="folder for per-track museval JSON")
    p.add_argument("--max-tracks", type=int)
    p.add_argument("--device", default="auto")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("score", help="BSSEval v4 of estimate folders against reference folders")
    p.add_argument("--references", required=True, help="one folder of <target>.wav per song")
    p.add_argument("--estimates", required=True, help="one folder of <target>.wav per song")
    p.add_argument("--out", required=True, help="folder for per-track museval JSON (test/)")
    p.add_argument("--reference", choices=["museval"], default=None,
                   help="score with museval itself instead of sepcore's implementation")
    p.set_defaults(func=_cmd_score)

    p = sub.add_parser("separate", help="separate songs of any length into one WAV per source")
    p.add_argument("songs", nargs="+")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--segment", type=float, default=10.0, help="chunk length in seconds")
    p.add_argument("--overlap", type=float, default=0.25)
    p.add_argument("--device", default="auto")
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

    p = sub.add_parser("oracle", help="IRM/IBM oracle score per class: how separable is each")
    p.add_argument("root", help="MUSDB-layout tree, or a folder dataset with --mapping")
    p.add_argument("--classes", nargs="+", required=True, help="classes to score")
    p.add_argument("--oracle", choices=["irm", "ibm"], default="irm")
    p.add_argument("--alpha", type=float, default=2.0, help="IRM exponent (2 Wiener-like)")
    p.add_argument("--subset", default="test")
    p.add_argument("--rate", type=int, default=44100, help="sample rate to score at")
    p.add_argument("--channels", type=int, default=2)
    p.add_argument("--mapping", help="stem -> class YAML of a folder dataset")
    p.add_argument("--missing", choices=["filter", "silence"],
                   help="songs lacking a class (default: the mapping's, else filter)")
    p.add_argument("--n-fft", type=int, default=4096)
    p.add_argument("--hop", type=int, default=1024)
    p.add_argument("--chunk", type=float, default=6.0, help="BSSEval chunk in seconds")
    p.add_argument("--max-tracks", type=int)
    p.set_defaults(func=_cmd_oracle)

    p = sub.add_parser("demo", help="synth data, train a small multi-band model, evaluate")
    p.add_argument("--workdir", default=".", help="where data/ and runs/ are written")
    p.add_argument("overrides", nargs="*",
                   help="dotlist overrides of configs/demo.yaml, e.g. train.epochs=1")
    p.set_defaults(func=_cmd_demo)
    return parser


def dispatch(args: argparse.Namespace) -> int:
    """Run a parsed sub-command; sepcore's own errors become one ``error: …`` line (exit 2).

    Shared by ``sep`` and ``python -m sweeps``.
    """
    try:
        return args.func(args)
    except SepcoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    return dispatch(args)


if __name__ == "__main__":
    sys.exit(main())
