"""Runtime of HTMD-Net, Conv-TasNet* and Wave-U-Net on one song (HTMD-Net paper, runtime table).

Builds the three models from their paper configs (``sepcore/configs/paper/{htmd,convtasnet_star,
waveunet}.yaml``, untrained weights), separates the same ``--seconds`` of mono 22.05 kHz noise with
:func:`sepcore.separate.apply_model` under ``torch.no_grad`` (one warm-up, median of ``--runs``),
and prints seconds and ratios to HTMD-Net beside the runtime table of the HTMD-Net paper (Garoufis,
Zlatintsi & Maragos, "HTMD-Net: A Hybrid Masking-Denoising Approach to Time-Domain Monaural Singing
Voice Separation", EUSIPCO 2021). The paper states neither the units nor the audio length of its
"CPU-time"/"GPU-time" columns; only the ratios compare.

Usage: ``python tests/bench/runtime.py [--device cuda] [--seconds 30] [--runs 3]``
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from sepcore.config import load_config
from sepcore.models import build_model
from sepcore.models.base import count_parameters
from sepcore.separate import apply_model

# the HTMD-Net paper, runtime table: (CPU-time, GPU-time, # params)
PAPER = {
    "HTMD-Net": ("htmd", 50.5, 0.14, "4.5M"),
    "Conv-TasNet*": ("convtasnet_star", 130.7, 0.65, "5.5M"),
    "Wave-U-Net": ("waveunet", 13.6, 0.07, "10.3M"),
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_model(paper: str, mixture: torch.Tensor, device: torch.device, runs: int,
               segment: float) -> tuple[int, float]:
    cfg = load_config(f"paper/{paper}.yaml")
    model = build_model(cfg.model_name, cfg.model).to(device).eval()
    times = []
    with torch.no_grad():
        for index in range(runs + 1):  # the first run is the warm-up
            _sync(device)
            start = time.perf_counter()
            apply_model(model, mixture, segment=segment, overlap=cfg.eval.overlap, device=device)
            _sync(device)
            if index:
                times.append(time.perf_counter() - start)
    return count_parameters(model), statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--segment", type=float, default=10.0, help="inference chunk (s)")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    mixture = 0.1 * torch.randn(1, int(args.seconds * 22050))  # (C=1, T) mono 22.05 kHz
    results = {name: time_model(paper, mixture, device, args.runs, args.segment)
               for name, (paper, *_) in PAPER.items()}
    column = 1 if device.type == "cpu" else 2
    ref_ours, ref_paper = results["HTMD-Net"][1], PAPER["HTMD-Net"][column]
    print(f"{args.seconds:g} s of mono 22.05 kHz audio on {device}, segment {args.segment:g} s, "
          f"median of {args.runs} (torch {torch.__version__}, {torch.get_num_threads()} threads)")
    paper_label = "paper " + ("CPU" if column == 1 else "GPU")
    header = (f"{'model':<14}{'params':>12}{'seconds':>10}{'ratio':>8}   "
              f"{paper_label:>9}{'paper ratio':>12}{'paper params':>13}")
    print(header)
    print("-" * len(header))
    for name, (params, seconds) in results.items():
        paper_time, paper_params = PAPER[name][column], PAPER[name][3]
        print(f"{name:<14}{params:>12,}{seconds:>10.2f}{seconds / ref_ours:>8.2f}   "
              f"{paper_time:>9g}{paper_time / ref_paper:>12.2f}{paper_params:>13}")


if __name__ == "__main__":
    main()
