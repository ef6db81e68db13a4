"""The one training loop for every sepcore model.

``fit(cfg, hooks)`` trains the model described by an :class:`~sepcore.config.ExperimentConfig`:
Adam with weight decay, LR × ``lr_factor`` after ``lr_patience`` epochs without improvement of the
validation loss, gradient-norm clipping, early stopping, an epoch and/or step budget, device
auto-selection (CUDA when present, :func:`select_device`), mixed precision (``train.amp``:
:func:`autocast_dtype`), TF32 and cuDNN autotuning on CUDA for the duration of ``fit`` only
(:func:`cuda_speedups`), seeded RNGs, a checkpoint every epoch (``last.safetensors``,
``best.safetensors``) and exact resume from one.

The trainer knows nothing about Ray or MLflow: it calls hooks. A hook is any object with some of
these methods:

- ``on_epoch_end(metrics: dict) -> None`` — after validation and checkpointing of each epoch;
  ``metrics`` holds exactly :func:`epoch_metric_names` (the fields of :class:`EpochReport`, the
  one definition that sweeps also validate ``tune.metric`` against);
- ``on_checkpoint(path: Path) -> None`` — after ``last.safetensors`` is written;
- ``should_stop() -> bool`` — asked after each epoch (e.g. by a scheduler that prunes the trial).

Transfer set-ups (thesis ch. 6: tl / retrain / finetune; the multi-band masking paper's M5/M6, a
pre-trained encoder/decoder, frozen) come from ``train.init_from`` (a sepcore checkpoint;
``models:/`` registry URIs are resolved by the sweeps layer before ``fit``),
``train.init_keys``/``init_strict``, ``train.reinit``, ``train.trainable`` and ``train.frozen``
(fnmatch patterns over parameter names; the optimizer gets only the trainable parameters): see
:func:`apply_transfer`.

A NaN/inf loss (training or validation) raises :class:`~sepcore.errors.TrainingDiverged` naming
the epoch and step. The step loop does not wait for the device at every step: the loss sum and
the first non-finite step are kept on the device and read every ``train.log_every`` steps and at
the end of the epoch (so the error comes up to ``log_every`` steps late, naming the exact step).
With ``train.amp: fp16`` the gradient scaler skips a step whose loss or gradients are not finite
(and lowers its scale): such steps are counted (metric ``skipped_steps``), and
``train.max_skipped_steps`` consecutive ones raise TrainingDiverged (torch's GradScaler itself
reads its inf flag once per step: fp16 keeps that one sync, bf16 and float32 have none).
"""

from __future__ import annotations

import contextlib
import fnmatch
import logging
import math
import os
import random
import shutil
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from sepcore.checkpoint import (
    Checkpoint,
    capture_rng_state,
    checkpoint_config,
    flatten_optimizer_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
    unflatten_optimizer_state,
)
from sepcore.config import ExperimentConfig
from sepcore.errors import CheckpointError, ConfigError, TrainingDiverged
from sepcore.losses import build_loss
from sepcore.metrics.sisdr import si_sdr
from sepcore.models import build_model
from sepcore.models.base import count_parameters
from sepcore.models.oracles import with_references

log = logging.getLogger(__name__)

LAST = "last.safetensors"
BEST = "best.safetensors"


@dataclass
class EpochReport:
    """What :func:`fit` reports after every epoch: hooks' ``on_epoch_end``, ``FitResult.history``
    and the checkpoint's ``metrics`` all get :meth:`as_metrics` (flat names, see
    :data:`EPOCH_METRICS` and :func:`epoch_metric_names`)."""

    epoch: int
    step: int  # optimizer steps so far (global, over all epochs)
    train_loss: float  # mean training loss of the epoch
    valid_loss: float
    valid_sisdr: float  # dB, mean over sources
    best_valid_loss: float
    lr: float
    epoch_time: float  # seconds for training + validation of the epoch
    skipped_steps: int = 0  # fp16: steps the gradient scaler skipped (non-finite loss/gradients)
    valid_sisdr_per_source: dict[str, float] = field(default_factory=dict)  # source -> dB

    def as_metrics(self) -> dict[str, float]:
        metrics: dict[str, float] = {name: getattr(self, name) for name in EPOCH_METRICS}
        for source, value in self.valid_sisdr_per_source.items():
            metrics[SOURCE_METRIC.format(source=source)] = value
        return metrics


# the metric names of every epoch; per source also SOURCE_METRIC (valid_sisdr_<source>)
EPOCH_METRICS: tuple[str, ...] = tuple(f.name for f in fields(EpochReport)
                                       if f.name != "valid_sisdr_per_source")
SOURCE_METRIC = "valid_sisdr_{source}"


def epoch_metric_names(sources: list[str]) -> tuple[str, ...]:
    """Every metric name :func:`fit` reports each epoch for a model with these sources."""
    return (*EPOCH_METRICS, *(SOURCE_METRIC.format(source=s) for s in sources))


@dataclass
class FitResult:
    """What :func:`fit` returns."""

    out_dir: Path
    best_checkpoint: Path | None
    last_checkpoint: Path | None
    best_valid_loss: float
    epochs_run: int
    global_step: int
    stopped_early: bool
    history: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class TrainState:
    """The counters of a run that a checkpoint stores for an exact resume.

    In a checkpoint they are the first keys of the ``train_state`` JSON (sepcore.checkpoint), next
    to the optimizer, LR scheduler and RNG states that :func:`_save` adds.
    """

    epoch: int = 0  # the last finished epoch
    global_step: int = 0  # optimizer steps taken
    best_valid_loss: float = math.inf
    bad_epochs: int = 0  # epochs since the validation loss last improved
    history: list[dict[str, Any]] = field(default_factory=list)  # each epoch's metrics

    def end_epoch(self, epoch: int, valid_loss: float) -> bool:
        """Record that ``epoch`` finished with ``valid_loss``; True when it is a new best."""
        improved = valid_loss < self.best_valid_loss
        if improved:
            self.best_valid_loss = valid_loss
            self.bad_epochs = 0
        else:
            self.bad_epochs += 1
        self.epoch = epoch
        return improved

    def as_checkpoint_dict(self) -> dict[str, Any]:
        """The fields as the JSON-able dict a checkpoint's ``train_state`` starts with."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_checkpoint_dict(cls, train_state: dict[str, Any], path: str | Path) -> TrainState:
        """The state stored in the ``train_state`` of checkpoint ``path``."""
        names = [f.name for f in fields(cls)]
        missing = [name for name in names if name not in train_state]
        if missing:
            raise CheckpointError(f"{path}: train_state lacks {missing}; it was not written by "
                                  "the sepcore trainer and cannot be resumed from")
        return cls(**{name: train_state[name] for name in names})


def select_device(name: str = "auto", key: str = "train.device") -> torch.device:
    """``auto`` → CUDA when present, else CPU; otherwise ``torch.device(name)``.

    The one place where a device name becomes a device (training, ``sep evaluate``, ``sep
    separate``, trials). A name torch does not know, CUDA on a machine without it (saying whether
    torch is a CPU build or a CUDA build that sees no GPU), or a CUDA index past the last GPU is
    a one-line :class:`~sepcore.errors.ConfigError` naming ``key``.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ConfigError(f"{key}={name!r} is not a device (use auto, cpu, cuda or cuda:N)",
                          key=key) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        if torch.version.cuda is None:
            why = (f"torch {torch.__version__} was built without CUDA (torch.version.cuda is "
                   "None); install a CUDA build of torch")
        else:
            why = (f"torch {torch.__version__} is a CUDA {torch.version.cuda} build but sees no "
                   f"GPU (CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r})")
        raise ConfigError(f"{key}={name!r} but CUDA is not available: {why}; or use {key}=auto",
                          key=key)
    if device.type == "cuda" and device.index is not None and \
            device.index >= torch.cuda.device_count():
        raise ConfigError(f"{key}={name!r} but this machine has "
                          f"{torch.cuda.device_count()} CUDA device(s)", key=key)
    return device


def autocast_dtype(mode: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``train.amp`` = ``mode`` on ``device``; None = full precision.

    ``auto``: bfloat16 on a GPU with native bfloat16 (Ampere and later), else off (CPU autocast
    is slower than float32 on most CPUs; ask for ``bf16`` to get it). ``bf16`` on a GPU without
    it is a ConfigError naming ``train.amp``.
    """
    cuda = device.type == "cuda"
    bf16_ok = cuda and torch.cuda.is_bf16_supported(including_emulation=False)
    if mode == "off" or (mode == "auto" and not bf16_ok):
        return None
    if mode == "bf16" and cuda and not bf16_ok:
        raise ConfigError(f"train.amp='bf16' but {torch.cuda.get_device_name(device)} has no "
                          "native bfloat16; use train.amp=fp16 or off", key="train.amp")
    return torch.float16 if mode == "fp16" else torch.bfloat16


@contextlib.contextmanager
def cuda_speedups(device: torch.device, deterministic: bool = False):
    """On CUDA: TF32 matmuls and convolutions, and cuDNN autotuning unless ``deterministic``,
    while the block runs; the previous settings come back after it (also on errors), so a
    process that trains and then evaluates (or runs tests) keeps its own. No-op elsewhere."""
    if device.type != "cuda":
        yield
        return
    flags = (torch.backends.cuda.matmul, "allow_tf32"), (torch.backends.cudnn, "allow_tf32"), \
        (torch.backends.cudnn, "benchmark")
    before = [getattr(owner, name) for owner, name in flags]
    for (owner, name), value in zip(flags, (True, True, not deterministic), strict=True):
        setattr(owner, name, value)
    try:
        yield
    finally:
        for (owner, name), value in zip(flags, before, strict=True):
            setattr(owner, name, value)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _call_hooks(hooks, method: str, *args) -> list[Any]:
    return [getattr(h, method)(*args) for h in hooks if hasattr(h, method)]


def _bar(iterable, total: int, enabled: bool, desc: str):
    return tqdm(iterable, total=total, desc=desc, leave=False, unit="batch",
                disable=not (enabled and sys.stderr.isatty()))


def fit(cfg: ExperimentConfig, hooks: list[Any] | None = None) -> FitResult:
    """Train ``cfg``'s model on ``cfg``'s data; see the module docstring."""
    device = select_device(cfg.train.device)
    with cuda_speedups(device, cfg.train.deterministic):
        return _fit(cfg, list(hooks or []), device)


def _fit(cfg: ExperimentConfig, hooks: list[Any], device: torch.device) -> FitResult:
    from sepcore.data import build_datasets
    from sepcore.data.loader import train_loader

    tc = cfg.train
    out_dir = Path(tc.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    amp_dtype = autocast_dtype(tc.amp, device)
    seed_everything(tc.seed)
    if tc.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)

    model = build_model(cfg.model_name, cfg.model).to(device)
    resume = _resolve_resume(tc.resume, out_dir)
    # on resume the checkpoint restores the weights: init_from/reinit only apply to fresh runs
    apply_transfer(model, tc, fresh=resume is None)
    loss_fn = build_loss(tc.loss, tc.source_weights)
    aux_fn = build_loss(tc.aux_loss or tc.loss, tc.source_weights)
    params = (model.parameters() if tc.trainable is None and not tc.frozen
              else [p for p in model.parameters() if p.requires_grad])
    optimizer = torch.optim.Adam(params, lr=tc.lr, weight_decay=tc.weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=tc.lr_factor, patience=tc.lr_patience)
    # fp16 needs loss scaling (its range ends at 65504); bfloat16 has float32's range
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)

    train_set, valid_set = build_datasets(cfg.data, seed=tc.seed)
    loader = train_loader(cfg, train_set, device)  # built once: its workers persist
    state = TrainState()

    if resume is not None:
        state = _restore(resume, model, optimizer, scheduler, device)
        log.info("resumed from %s at epoch %d (step %d)", resume, state.epoch, state.global_step)
    log.info("training %s (%s parameters) on %s", cfg.model_name,
             f"{count_parameters(model):,}", device)

    stopped_early = False
    start_epoch = state.epoch
    for epoch in range(start_epoch + 1, tc.epochs + 1):
        if tc.max_steps is not None and state.global_step >= tc.max_steps:
            break
        t0 = time.perf_counter()
        train_loss, skipped = _train_epoch(cfg, model, loader, optimizer, scaler,
                                           (loss_fn, aux_fn), device, epoch, state, amp_dtype)
        valid_loss, valid_sisdr, per_source = _validate(cfg, model, valid_set, loss_fn, device)
        if not math.isfinite(valid_loss):  # no epoch could ever be the best: stop, say why
            raise TrainingDiverged(
                f"validation loss is {valid_loss} after epoch {epoch} (step "
                f"{state.global_step}): the model's estimates of the validation songs are not "
                "finite; lower train.lr or enable train.grad_clip", epoch=epoch,
                step=state.global_step)
        scheduler.step(valid_loss)
        improved = state.end_epoch(epoch, valid_loss)
        metrics = EpochReport(
            epoch=epoch, step=state.global_step, train_loss=train_loss, valid_loss=valid_loss,
            valid_sisdr=valid_sisdr, best_valid_loss=state.best_valid_loss,
            lr=optimizer.param_groups[0]["lr"], epoch_time=time.perf_counter() - t0,
            skipped_steps=skipped, valid_sisdr_per_source=per_source).as_metrics()
        state.history.append(metrics)
        last = _save(out_dir / LAST, cfg, model, optimizer, scheduler, state, metrics)
        if improved:
            shutil.copyfile(last, out_dir / BEST)
        if tc.keep_every:
            shutil.copyfile(last, out_dir / f"epoch_{epoch:03d}.safetensors")
        log.info("epoch %d: train %.4f valid %.4f sisdr %.2f dB lr %.2e", epoch, train_loss,
                 valid_loss, valid_sisdr, metrics["lr"])
        _call_hooks(hooks, "on_checkpoint", last)
        _call_hooks(hooks, "on_epoch_end", metrics)
        if tc.early_stop and state.bad_epochs >= tc.early_stop:
            log.info("early stop: %d epochs without improvement", state.bad_epochs)
            stopped_early = True
            break
        if any(_call_hooks(hooks, "should_stop")):
            stopped_early = True
            break

    best = out_dir / BEST
    last = out_dir / LAST
    return FitResult(
        out_dir=out_dir,
        best_checkpoint=best if best.exists() else None,
        last_checkpoint=last if last.exists() else None,
        best_valid_loss=state.best_valid_loss,
        epochs_run=state.epoch,
        global_step=state.global_step,
        stopped_early=stopped_early,
        history=state.history,
    )


def _matches(name: str, pattern: str) -> bool:
    """fnmatch ``pattern`` against ``name`` or any suffix of it after a dot."""
    parts = name.split(".")
    return any(fnmatch.fnmatchcase(".".join(parts[i:]), pattern) for i in range(len(parts)))


def _select(names: list[str], patterns: list[str], key: str) -> set[str]:
    """The names matched by any of ``patterns``; a pattern matching nothing is a ConfigError."""
    selected: set[str] = set()
    for pattern in patterns:
        hits = {n for n in names if _matches(n, pattern)}
        if not hits:
            raise ConfigError(f"{key}: pattern {pattern!r} matches no parameter of the model "
                              f"(names look like {names[:3]})", key=key)
        selected |= hits
    return selected


def trainable_parameters(model: torch.nn.Module, tc) -> set[str] | None:
    """Names of the parameters that train under ``train.trainable`` minus ``train.frozen``.

    ``None`` when neither is set (everything trains). A pattern that matches no parameter is a
    ConfigError naming the key, so this also validates the patterns against a model.
    """
    if tc.trainable is None and not tc.frozen:
        return None
    names = [n for n, _ in model.named_parameters()]
    chosen = set(names) if tc.trainable is None else _select(names, tc.trainable,
                                                             "train.trainable")
    if tc.frozen:
        chosen -= _select(names, tc.frozen, "train.frozen")
    return chosen


def apply_transfer(model: torch.nn.Module, tc, fresh: bool = True) -> None:
    """Transfer set-ups from ``train.*``: thesis ch. 6 (tl / retrain / finetune), M5/M6.

    With ``fresh`` (not resuming): load ``init_from`` (a sepcore checkpoint; ``init_keys``
    selects tensors, ``init_strict`` demands matching names and shapes), then re-initialise the
    parameters matching ``reinit`` (their module's ``reset_parameters``), then call the model's
    optional ``after_transfer(changed)`` with the state-dict names that changed (state derived
    from weights, e.g. the multi-band model's sorted band order, follows the loaded encoder).
    Always: parameters not matching ``trainable`` (default: all) or matching ``frozen`` get
    ``requires_grad = False``. Patterns: see :func:`_matches`. Note that freezing stops gradients
    only; norm layers of a frozen part still use batch statistics in training mode (as the
    reference Open-Unmix code).
    """
    if tc.init_from is not None and tc.init_from.startswith("models:/"):
        raise ConfigError(
            f"train.init_from={tc.init_from!r} is a model registry URI: sepcore reads checkpoint "
            "files only; run through `python -m sweeps` (which resolves models:/ URIs before "
            "fit) or download the checkpoint first and pass its path", key="train.init_from")
    names = [n for n, _ in model.named_parameters()]
    trainable = trainable_parameters(model, tc)
    reinit = set() if not tc.reinit else _select(names, tc.reinit, "train.reinit")
    changed: set[str] = set()
    if fresh and tc.init_from is not None:
        changed |= _load_init(model, tc.init_from, tc.init_keys, tc.init_strict)
    if fresh and reinit:
        _reinit(model, reinit)
        changed |= reinit
    if changed and hasattr(model, "after_transfer"):
        model.after_transfer(changed)
    if trainable is not None:
        for name, param in model.named_parameters():
            param.requires_grad_(name in trainable)
        log.info("train.trainable/frozen: %d of %d parameter tensors train (%s of %s values)",
                 len(trainable), len(names), f"{count_parameters(model, True):,}",
                 f"{count_parameters(model):,}")


def _load_init(model, path: str, keys: list[str] | None, strict: bool) -> set[str]:
    """Load ``path``'s (selected) tensors into ``model``; returns the names it loaded."""
    if not Path(path).is_file():
        raise ConfigError(f"train.init_from={path!r}: no such checkpoint file",
                          key="train.init_from")
    source = load_checkpoint(path).model_state
    target = model.state_dict()
    chosen = list(source) if keys is None else sorted(_select(list(source), keys,
                                                              "train.init_keys"))
    unexpected = [k for k in chosen if k not in target]
    mismatched = [f"{k} {tuple(source[k].shape)} vs {tuple(target[k].shape)}" for k in chosen
                  if k in target and source[k].shape != target[k].shape]
    missing = [k for k in target if k not in source] if keys is None else []
    problems = {"missing": missing, "unexpected": unexpected, "shape mismatch": mismatched}
    if strict and any(problems.values()):
        detail = "; ".join(f"{what}: {items[:3]}" for what, items in problems.items() if items)
        raise ConfigError(f"train.init_from={path!r} does not fit the model ({detail}); set "
                          "train.init_strict=false or select tensors with train.init_keys",
                          key="train.init_from")
    loaded = {k: source[k] for k in chosen if k in target and source[k].shape == target[k].shape}
    model.load_state_dict({**target, **loaded})
    log.info("train.init_from: loaded %d of %d tensors from %s", len(loaded), len(target), path)
    return set(loaded)


def _reinit(model: torch.nn.Module, chosen: set[str]) -> None:
    """``reset_parameters`` of the modules owning ``chosen``; their other parameters are kept."""
    for module_name, module in model.named_modules():
        own = {f"{module_name}.{n}" if module_name else n: p
               for n, p in module.named_parameters(recurse=False)}
        if not any(n in chosen for n in own):
            continue
        if not hasattr(module, "reset_parameters"):
            raise ConfigError(f"train.reinit: {type(module).__name__} {module_name!r} has no "
                              "reset_parameters()", key="train.reinit")
        keep = {n: p.detach().clone() for n, p in own.items() if n not in chosen}
        module.reset_parameters()
        with torch.no_grad():
            for n, value in keep.items():
                own[n].copy_(value)


def _training_loss(model, mixture, targets, loss_fn, aux_fn, tc) -> torch.Tensor:
    """α·loss(final) [+ β·aux_loss(each intermediate)]; oracles also get the true sources."""
    if getattr(model, "has_intermediate", False):
        separation = model.separate(mixture)
        loss = tc.loss_weight * loss_fn(separation.estimate.float(), targets)
        if tc.aux_weight:
            for estimate in separation.intermediate.values():
                loss = loss + tc.aux_weight * aux_fn(estimate.float(), targets)
        extra = getattr(model, "auxiliary_losses", None)
        if extra is not None:  # model-specific terms, already weighted (e.g. Meta-TasNet's)
            for term in extra(separation, mixture, targets).values():
                loss = loss + term
        return loss
    runner, inputs = with_references(model, mixture, targets)  # oracles (FB-IRM) see the sources
    return tc.loss_weight * loss_fn(runner(inputs).float(), targets)


class StepStats:
    """What the step loop accumulates on the device, read back only by :meth:`check`.

    Per step :meth:`add` records the loss, whether it was finite, and whether the gradient scaler
    skipped the step, with device ops only; :meth:`check` reads everything in one transfer,
    raises :class:`~sepcore.errors.TrainingDiverged` (a non-finite loss without a scaler, naming
    its exact step; ``max_skipped`` consecutive skipped steps with one) and returns the mean loss
    of the finite steps so far.
    """

    def __init__(self, device: torch.device, epoch: int, scaled: bool, max_skipped: int):
        self.epoch, self.scaled, self.max_skipped = epoch, scaled, max_skipped
        # loss sum, finite steps, first non-finite step, its loss, skipped, run, longest run
        self.values = torch.zeros(7, dtype=torch.float64, device=device)
        self.checked = 0  # the last step read back

    def add(self, loss: torch.Tensor, step: int, skipped: torch.Tensor | None) -> None:
        loss = loss.detach().double()
        finite = torch.isfinite(loss)
        v = self.values
        first = finite.logical_not() & (v[2] == 0)  # the first non-finite step of the epoch
        v[0] += torch.where(finite, loss, 0.0)
        v[1] += finite
        v[2] = torch.where(first, step, v[2])
        v[3] = torch.where(first, loss, v[3])
        if skipped is not None:
            v[4] += skipped
            v[5] = (v[5] + 1) * skipped  # consecutive skipped steps
            v[6] = torch.maximum(v[6], v[5])

    def check(self, step: int) -> float:
        total, finite, bad_step, bad_loss, skipped, _, longest = self.values.tolist()
        checked, self.checked = self.checked, step
        if bad_step and not self.scaled:
            raise TrainingDiverged(
                f"loss is {bad_loss} at epoch {self.epoch}, step {int(bad_step)} (found when "
                f"checking steps {checked + 1}-{step}); lower train.lr or enable "
                "train.grad_clip", epoch=self.epoch, step=int(bad_step))
        if longest >= self.max_skipped:
            raise TrainingDiverged(
                f"{int(longest)} consecutive steps skipped by the fp16 gradient scaler (non-"
                f"finite loss or gradients) at epoch {self.epoch}, steps {checked + 1}-{step} "
                f"(train.max_skipped_steps={self.max_skipped}); lower train.lr, enable "
                "train.grad_clip or use train.amp=bf16", epoch=self.epoch, step=step)
        return total / max(finite, 1)

    @property
    def skipped(self) -> int:
        return int(self.values[4])


def _train_epoch(cfg, model, loader, optimizer, scaler, loss_fns, device, epoch,
                 state: TrainState, amp_dtype) -> tuple[float, int]:
    """One epoch of steps; returns the mean loss of its finite steps and the number of steps
    the gradient scaler skipped. No host sync per step (see :class:`StepStats`)."""
    tc = cfg.train
    loss_fn, aux_fn = loss_fns
    model.train()
    loader.sampler.set_epoch(epoch)  # the epoch travels with each index to the workers
    steps = len(loader)
    if tc.steps_per_epoch is not None:
        steps = min(steps, tc.steps_per_epoch)
    if tc.max_steps is not None:
        steps = min(steps, tc.max_steps - state.global_step)
    stats = StepStats(device, epoch, scaler.is_enabled(), tc.max_skipped_steps)
    mean = 0.0
    bar = _bar(loader, steps, tc.progress, f"epoch {epoch}")
    for index, (mixture, targets) in enumerate(bar):
        if index >= steps:
            break
        mixture = mixture.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        with torch.autocast(device_type=device.type, dtype=amp_dtype,
                            enabled=amp_dtype is not None):
            loss = _training_loss(model, mixture, targets, loss_fn, aux_fn, tc)
        state.global_step += 1
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if tc.grad_clip:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
        # the scaler skips the step and lowers its scale when the gradients are not finite
        scale = scaler._scale.clone() if scaler.is_enabled() else None
        scaler.step(optimizer)
        scaler.update()
        stats.add(loss, state.global_step, None if scale is None else scaler._scale < scale)
        if state.global_step % tc.log_every == 0:
            mean = stats.check(state.global_step)
            bar.set_postfix(loss=f"{mean:.4f}")
    bar.close()
    if stats.checked < state.global_step:  # the epoch's last steps
        mean = stats.check(state.global_step)
    return mean, stats.skipped


@torch.no_grad()
def _validate(cfg, model, valid_set, loss_fn, device) -> tuple[float, float, dict[str, float]]:
    """Validation loss, mean SI-SDR and SI-SDR per source (chunked inference on long items);
    NaN everywhere when there is nothing to validate on.

    Consecutive items of one length (``data.valid_segment`` chunks) run as batches of
    ``train.batch_size``; everything stays on ``device`` up to one host sync at the end. The loss
    is averaged per item, so the numbers do not depend on the batching."""
    from sepcore.separate import apply_model

    model.eval()
    sources = list(cfg.audio.sources)
    losses, sdrs = [], []  # per item (0-d) and per batch (B, S), on the device
    for mixture, targets in _valid_batches(valid_set, cfg.train.batch_size, device):
        runner, inputs = with_references(model, mixture, targets)
        estimate = apply_model(runner, inputs, segment=cfg.eval.segment,
                               overlap=cfg.eval.overlap, device=device)  # (B, S, C, T)
        losses.extend(loss_fn(estimate[i:i + 1], targets[i:i + 1]) for i in range(len(estimate)))
        sdrs.append(si_sdr(estimate, targets).mean(dim=2))  # (B, S, C) -> (B, S)
    if not losses:
        return math.nan, math.nan, dict.fromkeys(sources, math.nan)
    per_source = torch.cat(sdrs).nanmean(dim=0)
    loss = torch.stack(losses).double().mean()
    values = torch.cat([loss[None], per_source.mean()[None].double(),
                        per_source.double()]).tolist()  # the one host sync
    return values[0], values[1], dict(zip(sources, values[2:], strict=True))


def _valid_batches(valid_set, batch_size: int, device):
    """``(mixture (B, C, T), targets (B, S, C, T))`` on ``device``: runs of consecutive items of
    one length, at most ``batch_size`` each (whole songs of different lengths: one by one)."""
    pending: list[tuple[torch.Tensor, torch.Tensor]] = []
    for index in range(len(valid_set) + 1):
        item = valid_set[index] if index < len(valid_set) else None
        if pending and (item is None or len(pending) == batch_size
                        or item[0].shape != pending[0][0].shape):
            mixtures, targets = zip(*pending, strict=True)
            yield torch.stack(mixtures).to(device), torch.stack(targets).to(device)
            pending = []
        if item is not None:
            pending.append(item)


def _resolve_resume(resume: str | None, out_dir: Path) -> Path | None:
    if resume is None:
        return None
    if resume == "auto":
        path = out_dir / LAST
        return path if path.exists() else None
    path = Path(resume)
    if not path.is_file():
        raise CheckpointError(f"train.resume={resume!r}: no such checkpoint file")
    return path


def _save(path, cfg, model, optimizer, scheduler, state: TrainState, metrics) -> Path:
    optim_tensors, optim_rest = flatten_optimizer_state(optimizer.state_dict())
    rng_tensors, rng_json = capture_rng_state()
    train_state = {
        **state.as_checkpoint_dict(),
        "optimizer": optim_rest,
        "scheduler": scheduler.state_dict(),
        "rng": rng_json,
    }
    ckpt = Checkpoint(config=checkpoint_config(cfg), model_state=model.state_dict(),
                      train_state=train_state, optimizer_state=optim_tensors,
                      rng_state=rng_tensors, metrics=metrics)
    return save_checkpoint(path, ckpt)


def _restore(path, model, optimizer, scheduler, device) -> TrainState:
    """Load weights, optimizer, scheduler and RNG states from ``path``; return its TrainState."""
    ckpt = load_checkpoint(path)
    ts = ckpt.train_state
    state = TrainState.from_checkpoint_dict(ts, path)
    model.load_state_dict(ckpt.model_state)
    optimizer.load_state_dict(unflatten_optimizer_state(
        {k: v.to(device) if v.dim() > 0 else v for k, v in ckpt.optimizer_state.items()},
        ts["optimizer"]))
    scheduler.load_state_dict(ts["scheduler"])
    restore_rng_state(ckpt.rng_state, ts.get("rng", {}))
    return state
