"""``sep demo`` (what ``make demo`` runs until the sweep runner lands).

Writes a small synthetic MUSDB tree, trains the small multi-band model of ``configs/demo.yaml`` on
the CPU for a fixed step budget (about two minutes on two cores), evaluates it with BSSEval v4 on
the synthetic test songs and returns the results table.
"""

from __future__ import annotations

import logging
from pathlib import Path

from sepcore.config import load_config
from sepcore.data.synth import write_synthetic_musdb
from sepcore.evaluate import describe_protocol, evaluate_checkpoint
from sepcore.train import fit

log = logging.getLogger(__name__)


def run_demo(workdir: Path, config: str = "demo.yaml", overrides: list[str] | None = None) -> str:
    """Run the demo in ``workdir``; returns a printable report ending with the results table."""
    root = workdir / "data" / "synth-demo"
    out = workdir / "runs" / "demo"
    if not (root / "train").is_dir():
        log.info("writing synthetic MUSDB to %s", root)
        write_synthetic_musdb(root, tracks=10, seconds=16.0, seed=0, progress=True)
    cfg = load_config(config, [f"data.root={root}", f"train.out_dir={out}",
                               f"data.cache_dir={workdir / '.cache' / 'sepcore'}",
                               *(overrides or [])])
    result = fit(cfg)
    checkpoint = result.best_checkpoint or result.last_checkpoint
    evaluation = evaluate_checkpoint(checkpoint, out_dir=out / "eval")
    lines = [
        f"demo: {cfg.model_name} trained {result.epochs_run} epochs ({result.global_step} steps), "
        f"best valid loss {result.best_valid_loss:.4f}",
        f"checkpoint: {checkpoint}",
        "",
        "BSSEval on the synthetic test songs (median over windows, median over songs, dB):",
        describe_protocol(evaluation.protocol),
        evaluation.table,
        "",
        "mean SI-SDR per song (dB): " + ", ".join(
            f"{song}: " + " / ".join(f"{t} {v:.2f}" for t, v in values.items())
            for song, values in evaluation.sisdr.items()),
    ]
    return "\n".join(lines)
