"""``python -m sweeps plan``: what a sweep will run, without running it.

For every trial of a resolved sweep file (profile and overrides merged): its searched overrides,
its seeds, the parameter count and receptive field of the model it builds (on the CPU, no
checkpoint read), the stage it runs in (rows that start from another row's checkpoint run after
it), the paper's published numbers when the sweep file carries them; and the scheduler. Grid
parameters are enumerated (and ``choice`` ones under Optuna, which searches them as categories;
Tune's grid/random generator samples a choice per trial); sampled ones (``uniform``,
``loguniform``...) are shown as their space with ``num_samples``. With ``timed=True`` one
forward/backward pass per trial is timed on this machine (``device``: the CPU by default, or a
CUDA device) and scaled to an upper bound of the sweep's compute, labelled with the device it was
measured on (CPU-measured hours overstate what a GPU needs by far).
"""

from __future__ import annotations

import itertools
import math
import time
from pathlib import Path
from typing import Any

from sweeps.errors import SweepError
from sweeps.spec import ROW, Sweep, _prune, row_dependency

MUSDB_TRAIN_TRACKS = 86  # MUSDB18 train split without musdb's 14 validation tracks
TIMED_SECONDS = 1.0  # audio per timed pass; the step time is scaled to data.segment


def _enumerated(sweep: Sweep) -> tuple[str, ...]:
    # Optuna searches grid and choice parameters alike (categorical); Tune's grid/random
    # generator runs every grid point and samples a choice per trial
    return ("grid", "choice") if sweep.tune.search_alg == "optuna" else ("grid",)


def discrete_points(sweep: Sweep) -> list[dict[str, Any]]:
    """Every combination of the enumerated parameters (conditions pruned, no duplicates)."""
    discrete = [p for p in sweep.params if p.kind in _enumerated(sweep)]
    points, seen = [], set()
    for combo in itertools.product(*[p.values for p in discrete]):
        point = _prune(dict(zip([p.path for p in discrete], combo, strict=True)), discrete)
        marker = repr(sorted(point.items(), key=lambda kv: kv[0]))
        if marker not in seen:
            seen.add(marker)
            points.append(point)
    return points


def _sampled(sweep: Sweep) -> dict[str, Any]:
    return {p.path: {p.kind: p.values, **({"when": p.when} if p.when else {})}
            for p in sweep.params if p.kind not in _enumerated(sweep)}


def _scheduler(sweep: Sweep) -> tuple[str, dict[str, Any]]:
    s = sweep.tune.scheduler
    if s.type == "fifo":
        return "FIFO", {}
    return "ASHA", {"grace_period": s.grace_period, "reduction_factor": s.reduction_factor,
                    "max_t": s.max_t or sweep.config_for({}).train.epochs}


def _train_tracks(cfg) -> tuple[int, str]:
    root = Path(cfg.data.root) / "train"
    if root.is_dir():
        return sum(1 for p in root.iterdir() if p.is_dir()), f"{root}"
    return MUSDB_TRAIN_TRACKS, "assumed: MUSDB18 train split"


def _step_seconds(model, cfg, device: str) -> float:
    """Seconds of one training step (forward + backward) on ``device``, scaled to data.segment."""
    import torch

    seconds = min(cfg.data.segment, TIMED_SECONDS)
    samples = model.valid_length(int(seconds * cfg.audio.sample_rate))
    model.to(device)
    mixture = torch.randn(cfg.train.batch_size, cfg.audio.channels, samples, device=device)
    runner, inputs = model, mixture
    if getattr(model, "needs_references", False):  # oracles (FB-IRM) also read the sources
        from sepcore.models.oracles import with_references

        targets = torch.randn(mixture.shape[0], len(cfg.audio.sources), *mixture.shape[1:],
                              device=device)
        runner, inputs = with_references(model, mixture, targets)
    model.train()
    best = math.inf
    cuda = torch.device(device).type == "cuda"
    for _ in range(2):  # the first pass pays allocations; keep the faster
        if cuda:
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        estimate = runner(inputs)
        estimate.abs().mean().backward()
        if cuda:
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
        model.zero_grad(set_to_none=True)
    return best * cfg.data.segment / seconds


def _label(overrides: dict[str, Any]) -> str:
    if ROW in overrides:
        rest = {k: v for k, v in overrides.items() if k != ROW}
        return " ".join([f"row={overrides[ROW]['id']}", *(f"{k}={v}" for k, v in rest.items())])
    return " ".join(f"{k}={v}" for k, v in overrides.items()) or "(base)"


def plan_sweep(sweep: Sweep, timed: bool = False, device: str = "cpu") -> dict[str, Any]:
    """The sweep's trials as a JSON-ready mapping (see the module docstring)."""
    import torch

    if timed and torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise SweepError(f"--device {device}: no CUDA device on this machine (time on the CPU "
                         f"with --device cpu)", key="--device")

    from sepcore.info import config_info
    from sepcore.models import build_model

    t = sweep.tune
    scheduler, scheduler_args = _scheduler(sweep)
    seeds = list(t.seeds) or [sweep.config_for({}).train.seed]
    sampled = _sampled(sweep)
    trials = []
    for point in discrete_points(sweep):
        cfg = sweep.config_for(point)
        info = config_info(cfg)
        trial: dict[str, Any] = {
            "label": _label(point), "overrides": point, "params": info["params"],
            "trainable_params": info["trainable_params"],
            "receptive_field_samples": info["receptive_field_samples"],
            "receptive_field_ms": info["receptive_field_ms"],
            "global_context": info["global_context"], "seeds": seeds,
            "repeats": t.num_samples if t.search_alg != "optuna" else None,
            "epochs": cfg.train.epochs, "stage": 1}
        if ROW in point:
            trial["row"] = point[ROW]["id"]
            after = row_dependency(point[ROW])
            if after is not None:
                trial["stage"], trial["after"] = 2, after
            if point[ROW]["id"] in sweep.published:
                trial["published"] = sweep.published[point[ROW]["id"]]
        if timed:
            torch.manual_seed(0)
            with torch.device("cpu"):
                model = build_model(cfg.model_name, cfg.model)
            step = _step_seconds(model, cfg, device)
            del model
            tracks, where = _train_tracks(cfg)
            steps = cfg.train.steps_per_epoch or max(
                1, tracks * cfg.data.samples_per_track // cfg.train.batch_size)
            runs = len(seeds) * (t.num_samples if t.search_alg != "optuna" else 1)
            trial["timing"] = {
                "measured_on": torch.device(device).type, "step_seconds": step,
                "steps_per_epoch": steps,
                "train_tracks": tracks, "tracks_from": where,
                # an upper bound: every epoch run, early stopping and a GPU both make it shorter
                "hours": step * steps * cfg.train.epochs * runs / 3600.0}
        trials.append(trial)
    plan: dict[str, Any] = {
        "sweep": sweep.name, "file": sweep.file, "profile": sweep.profile,
        "scheduler": scheduler, "scheduler_args": scheduler_args, "search_alg": t.search_alg,
        "num_samples": t.num_samples, "trials": trials}
    if sampled:
        plan["sampled"] = sampled
    if t.search_alg == "optuna":
        plan["note"] = (f"Optuna draws {t.num_samples} trial(s) from these "
                        f"{len(trials)} discrete point(s) and the sampled space")
    if timed:
        plan["hours"] = sum(tr["timing"]["hours"] for tr in trials)
        plan["measured_on"] = torch.device(device).type
    return plan


def _count(params: int) -> str:
    return f"{params / 1e6:.2f}M" if params >= 100_000 else f"{params:,}"


def format_plan(plan: dict[str, Any]) -> str:
    """The plan as a table (``--json`` prints the mapping itself)."""
    args = ", ".join(f"{k}={v}" for k, v in plan["scheduler_args"].items())
    lines = [f"sweep {plan['sweep']} ({plan['file']}, profile {plan['profile'] or '-'})",
             f"scheduler {plan['scheduler']}{f' ({args})' if args else ''}; search "
             f"{plan['search_alg']}, num_samples {plan['num_samples']}"]
    for path, space in (plan.get("sampled") or {}).items():
        lines.append(f"sampled {path}: {space}")
    if plan.get("note"):
        lines.append(plan["note"])
    timed = any("timing" in t for t in plan["trials"])
    header = ["trial", "params", "published", "receptive field", "seeds", "stage"]
    if timed:
        header.append(f"{plan['measured_on'].upper().replace('CUDA', 'GPU')}-measured h")
    body = []
    for trial in plan["trials"]:
        rf = trial["receptive_field_samples"]
        rf_text = "unbounded" if rf is None else f"{rf} ({trial['receptive_field_ms']:.0f} ms)"
        if rf is not None and trial["global_context"]:
            rf_text += " + gLN"
        published = trial.get("published") or {}
        pub = published.get("params")
        paper = (f"{pub / 1e6:.2f}M ({100 * (trial['params'] - pub) / pub:+.1f}%)" if pub
                 else published.get("source", "yes") if published else "-")
        cells = [trial["label"], _count(trial["params"]), paper, rf_text,
                 ",".join(str(s) for s in trial["seeds"]),
                 str(trial["stage"]) + (f" after {trial['after']}" if "after" in trial else "")]
        if timed:
            cells.append(f"{trial['timing']['hours']:.3g}")
        body.append(cells)
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h)
              for i, h in enumerate(header)]
    lines.append("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(b, widths, strict=True)) for b in body]
    if timed:
        first = next(t["timing"] for t in plan["trials"])
        where = "this CPU" if plan["measured_on"] == "cpu" else "this GPU"
        bound = "an upper bound, far above a GPU's" if plan["measured_on"] == "cpu" else \
            "an upper bound (early stopping ends trials sooner)"
        lines.append(f"compute: {plan['hours']:.3g} h measured on {where} (one timed "
                     f"forward/backward per trial, every epoch run, {first['train_tracks']} "
                     f"training tracks, {first['tracks_from']}); {bound}")
    return "\n".join(lines)

