"""Training and inference speed of the paper configs, against the reference implementations.

For each paper config named by ``--configs`` (``sepcore/configs/paper/NAME.yaml``, default ``m1
umx``, untrained weights): training samples (chunks of ``--train-seconds``) per second, ``train
ex/s`` (a forward, a backward and an Adam step on ``--batch`` chunks, the config's loss), and the
inference real-time factor ``RTF`` (seconds of compute per second of audio: a forward under
``torch.inference_mode`` on ``--infer-seconds``).
Where the paper's model exists as a pip package it runs in the same process on the same inputs,
and the ratio sepcore / reference is printed (below 1: sepcore is faster):

- Conv-TasNet M1 (``paper/m1.yaml``) against Défossez et al.'s ``demucs.tasnet.ConvTasNet`` of
  ``demucs==2.0.3`` (same N/L/B/H/P/X/R, same parameter count);
- Open-Unmix (``paper/umx.yaml``, 4 targets) against ``openunmix.model.Separator`` of
  ``openunmix==1.3.0`` (inference: 4 target networks, 1 Wiener iteration on the whole chunk, as
  sepcore; training: openunmix's own step, MSE on the magnitudes of the 4 targets, beside
  sepcore's MSE on the waveforms after the iSTFT).

The two packages are installed by this script into a scratch folder (``pip install --no-deps
--target``, once, kept in ``--scratch``), never into the environment. Their unused imports are
stubbed: ``demucs.utils`` (only ``capture_init``, which records the constructor's arguments, is
used by ``tasnet``) and ``torchaudio`` (imported by ``openunmix.transforms``, unused by its torch
STFT). Times are medians of ``--runs`` after one warm-up, the two implementations alternating, so
that a busy machine slows both alike. Usage::

    python tests/bench/throughput.py [--configs m1 umx htmd ...] [--device cuda] [--threads 2]
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import subprocess
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path

import torch

from sepcore.config import load_config
from sepcore.losses import build_loss
from sepcore.models import build_model
from sepcore.models.base import count_parameters

REFERENCES = {"demucs": "demucs==2.0.3", "openunmix": "openunmix==1.3.0"}
DEFAULT_CONFIGS = ["m1", "umx"]  # the two with a reference package; any other by --configs


def install_references(scratch: Path) -> None:
    """pip-installs the reference packages into ``scratch`` (no dependencies), imports from it."""
    missing = [spec for name, spec in REFERENCES.items() if not (scratch / name).is_dir()]
    if missing:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                        str(scratch), *missing], check=True)
    sys.path.insert(0, str(scratch))
    utils = types.ModuleType("demucs.utils")  # demucs.utils imports diffq; tasnet needs only this
    utils.capture_init = lambda init: init
    sys.modules.setdefault("demucs.utils", utils)
    sys.modules.setdefault("torchaudio", types.ModuleType("torchaudio"))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_times(fns: dict[str, Callable[[], None]], runs: int,
                  device: torch.device) -> dict[str, float]:
    """Median seconds of each function, alternating between them run by run (one warm-up)."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for index in range(runs + 1):
        for name, fn in fns.items():
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            if index:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def _train_step(model: torch.nn.Module, loss: Callable, batch: torch.Tensor,
                target: torch.Tensor) -> Callable[[], None]:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss(model(batch), target).backward()
        optimizer.step()

    return step


def _infer(model: torch.nn.Module, audio: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        with torch.inference_mode():
            model(audio)

    return run


def reference_convtasnet(cfg) -> torch.nn.Module:
    """demucs 2.0.3's ``tasnet.ConvTasNet`` with the sizes of a sepcore Conv-TasNet config."""
    tasnet = importlib.import_module("demucs.tasnet")
    enc, mask = cfg.model.encoder, cfg.model.masker
    return tasnet.ConvTasNet(N=enc.N, L=enc.L, B=mask.B, H=mask.H, P=mask.P, X=mask.X, R=mask.R,
                             sources=list(cfg.audio.sources), audio_channels=cfg.audio.channels,
                             samplerate=cfg.audio.sample_rate, norm_type=mask.norm, causal=False,
                             mask_nonlinear=mask.mask_nonlinear)


def reference_openunmix(cfg, max_bin: int) -> tuple[torch.nn.Module, torch.nn.ModuleDict]:
    """``openunmix.model.Separator`` of 4 ``OpenUnmix`` targets sized as a sepcore UMX config
    (Wiener filter on the whole chunk, as sepcore's), and the target networks."""
    model = importlib.import_module("openunmix.model")
    m = cfg.model
    nb_bins = m.n_fft // 2 + 1
    targets = {source: model.OpenUnmix(nb_bins=nb_bins, nb_channels=cfg.audio.channels,
                                       hidden_size=m.hidden_size, nb_layers=m.nb_layers,
                                       unidirectional=m.unidirectional, max_bin=max_bin)
               for source in cfg.audio.sources}
    separator = model.Separator(targets, niter=m.wiener_iterations, softmask=m.softmask,
                                n_fft=m.n_fft, n_hop=m.hop, nb_channels=cfg.audio.channels,
                                sample_rate=cfg.audio.sample_rate, wiener_win_len=None)
    return separator, separator.target_models


def _umx_reference_step(separator: torch.nn.Module, targets: torch.nn.ModuleDict,
                        batch: torch.Tensor, target: torch.Tensor) -> Callable[[], None]:
    """openunmix/scripts/train.py's step for each of the 4 targets: MSE on magnitudes."""
    transforms = importlib.import_module("openunmix.transforms")
    encoder = torch.nn.Sequential(separator.stft, transforms.ComplexNorm(mono=False))
    optimizer = torch.optim.Adam(targets.parameters(), lr=1e-3)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        x = encoder(batch)  # (B, C, F, K)
        for index, net in enumerate(targets.values()):
            y = encoder(target[:, index])
            torch.nn.functional.mse_loss(net(x), y).backward()
        optimizer.step()

    return step


def measure(name: str, args: argparse.Namespace, device: torch.device) -> list[str]:
    cfg = load_config(f"paper/{name}.yaml")
    rate, channels = cfg.audio.sample_rate, cfg.audio.channels
    nsrc = len(cfg.audio.sources)
    torch.manual_seed(0)
    ours = build_model(cfg.model_name, cfg.model).to(device)
    train_len = int(args.train_seconds * rate)
    train_len = ours.valid_length(train_len) if hasattr(ours, "valid_length") else train_len
    batch = 0.1 * torch.randn(args.batch, channels, train_len, device=device)
    target = 0.05 * torch.randn(args.batch, nsrc, channels, train_len, device=device)
    audio = 0.1 * torch.randn(1, channels, int(args.infer_seconds * rate), device=device)
    loss = build_loss(cfg.train.loss)
    train = {"sepcore": _train_step(ours.train(), loss, batch, target)}
    reference = None
    if cfg.model_name == "convtasnet" and cfg.model.encoder.stride * 2 == cfg.model.encoder.L:
        reference = reference_convtasnet(cfg).to(device)
        train["reference"] = _train_step(reference.train(), loss, batch, target)
    elif cfg.model_name == "openunmix":
        reference, targets = reference_openunmix(cfg, ours.max_bin)
        reference = reference.to(device)
        train["reference"] = _umx_reference_step(reference, targets.train(), batch, target)
    train_s = _median_times(train, args.runs, device)
    ours.eval()
    infer = {"sepcore": _infer(ours, audio)}
    if reference is not None:
        infer["reference"] = _infer(reference.eval(), audio)
    infer_s = _median_times(infer, args.runs, device)
    lines = []
    for who in train:
        model = ours if who == "sepcore" else reference
        label = "sepcore" if who == "sepcore" else REFERENCES.get(
            "demucs" if cfg.model_name == "convtasnet" else "openunmix", who)
        lines.append(f"{name:<16}{label:<18}{count_parameters(model):>12,}"
                     f"{args.batch / train_s[who]:>12.3f}"
                     f"{infer_s[who] / args.infer_seconds:>10.3f}")
    if reference is not None:
        lines.append(f"{name:<16}{'ratio sepcore/ref':<18}{'':>12}"
                     f"{train_s['sepcore'] / train_s['reference']:>11.2f}x"
                     f"{infer_s['sepcore'] / infer_s['reference']:>9.2f}x")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS,
                        help="paper config names (sepcore/configs/paper/NAME.yaml)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--batch", type=int, default=1, help="training chunks per step")
    parser.add_argument("--train-seconds", type=float, default=1.0, help="training chunk length")
    parser.add_argument("--infer-seconds", type=float, default=4.0, help="inference audio length")
    parser.add_argument("--runs", type=int, default=3, help="timed runs (median) after a warm-up")
    parser.add_argument("--scratch", default="/tmp/sepcore-bench-references",
                        help="folder the reference packages are pip-installed into")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    install_references(Path(args.scratch))
    device = torch.device(args.device)
    print(f"{device}, torch {torch.__version__}, {torch.get_num_threads()} threads; training: "
          f"batch {args.batch} x {args.train_seconds:g} s, inference: {args.infer_seconds:g} s, "
          f"median of {args.runs}")
    header = f"{'config':<16}{'implementation':<18}{'params':>12}{'train ex/s':>12}{'RTF':>10}"
    print(header)
    print("-" * len(header))
    for name in args.configs:
        for line in measure(name, args, device):
            print(line, flush=True)


if __name__ == "__main__":
    main()
