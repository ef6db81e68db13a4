"""One versioned checkpoint format: a single safetensors file, never pickle.

Layout of ``<name>.safetensors``:

- tensors ``model.<param>`` — the model's ``state_dict``;
- tensors ``optim.<index>.<key>`` — the optimizer's per-parameter state (Adam moments, step);
- tensors ``rng.torch`` (and ``rng.cuda.<i>``) — the RNG states needed for an exact resume;
- header metadata ``sepcore`` — a JSON object: ``format_version``, ``model`` (registry name),
  ``config`` (see below), ``train_state`` (epoch, global step, best score, counters, optimizer
  param groups, LR scheduler state, numpy/python RNG states), ``metrics``, ``versions``.

``config`` is the experiment config (:func:`checkpoint_config`) whose ``model`` section is the
model's *full* config, ``sample_rate``, ``audio_channels`` and ``sources`` included, and which
has no ``audio`` block (the model section is its one statement). The model is rebuilt from that
section alone (:func:`model_from_config`); ``data``/``train``/``eval`` are optional (a bare model,
e.g. ``{"model": model_section(name, model.cfg)}``, loads too) and only feed
:func:`experiment_config`.

Files are written atomically (temporary file in the same folder, then ``os.replace``) so a crash
never leaves a half checkpoint under the final name.

Format versions: 2 (written now); 1 (read and upgraded on load: its ``data`` section repeated
the model's rate, channels and sources, and its model config held ``encoder.pretrained``/
``encoder.frozen``, which became ``train.init_from``/``init_keys`` and ``train.frozen``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import platform
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import safetensors
import torch
from safetensors.torch import load_file, save_file

from sepcore.errors import CheckpointError, SepcoreError

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
_META_KEY = "sepcore"


@dataclass
class Checkpoint:
    """What a checkpoint file holds, in memory (``config``: see the module docstring)."""

    config: dict[str, Any]
    model_state: dict[str, torch.Tensor]
    train_state: dict[str, Any] = field(default_factory=dict)
    optimizer_state: dict[str, torch.Tensor] = field(default_factory=dict)
    rng_state: dict[str, torch.Tensor] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def model_name(self) -> str:
        return self.config["model"]["name"]


def _versions() -> dict[str, str]:
    import sepcore

    return {
        "sepcore": sepcore.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "safetensors": safetensors.__version__,
        "python": platform.python_version(),
    }


def save_checkpoint(path: str | Path, ckpt: Checkpoint) -> Path:
    """Write ``ckpt`` atomically to ``path`` and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    for prefix, group in (("model.", ckpt.model_state), ("optim.", ckpt.optimizer_state),
                          ("rng.", ckpt.rng_state)):
        for key, value in group.items():
            tensors[prefix + key] = value.detach().to("cpu").contiguous()
    meta = {
        "format_version": FORMAT_VERSION,
        "model": ckpt.model_name,
        "config": ckpt.config,
        "train_state": ckpt.train_state,
        "metrics": ckpt.metrics,
        "versions": _versions(),
    }
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={_META_KEY: json.dumps(meta)})
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def load_checkpoint(path: str | Path, map_location: str = "cpu") -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`, checking its format version."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with safetensors.safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
        tensors = load_file(str(path), device=map_location)
    except Exception as exc:  # safetensors raises several error types for damaged files
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from None
    if _META_KEY not in header:
        raise CheckpointError(f"{path} is not a sepcore checkpoint (no '{_META_KEY}' metadata)")
    try:
        meta = json.loads(header[_META_KEY])
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: its '{_META_KEY}' metadata is not JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: its '{_META_KEY}' metadata is not a JSON object")
    version = meta.get("format_version")
    if version not in READABLE_VERSIONS:
        raise CheckpointError(
            f"{path}: checkpoint format_version {version} is not supported "
            f"(this sepcore reads versions {', '.join(map(str, READABLE_VERSIONS))})"
        )
    config = meta.get("config")
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        raise CheckpointError(f"{path}: its '{_META_KEY}' metadata has no 'config' object with a "
                              "'model' section")
    if version == 1:
        meta["config"] = _upgrade_v1_config(meta["config"])
    groups: dict[str, dict[str, torch.Tensor]] = {"model.": {}, "optim.": {}, "rng.": {}}
    for key, value in tensors.items():
        for prefix, group in groups.items():
            if key.startswith(prefix):
                group[key[len(prefix):]] = value
                break
    return Checkpoint(
        config=meta["config"],
        model_state=groups["model."],
        train_state=meta.get("train_state", {}),
        optimizer_state=groups["optim."],
        rng_state=groups["rng."],
        metrics=meta.get("metrics", {}),
    )


def _upgrade_v1_config(config: dict[str, Any]) -> dict[str, Any]:
    """Version 1 → 2: the data section's copies of the model's rate, channels and sources go
    (they equalled the model's), ``model.encoder.pretrained``/``frozen`` become train keys."""
    config = json.loads(json.dumps(config))  # a deep copy
    data = config.get("data")
    if isinstance(data, dict):
        for key in ("sample_rate", "channels", "targets"):
            data.pop(key, None)
    encoder = (config.get("model") or {}).get("encoder")
    if isinstance(encoder, dict):
        pretrained = encoder.pop("pretrained", None)
        frozen = encoder.pop("frozen", False)
        train = config.setdefault("train", {})
        parts = ["encoder.*", "decoder.*"]
        if pretrained and not train.get("init_from"):
            train["init_from"], train["init_keys"] = pretrained, parts
        if frozen and not train.get("frozen"):
            train["frozen"] = parts
    return config


# --- optimizer state <-> flat tensors + JSON -------------------------------------------------


def flatten_optimizer_state(state_dict: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict]:
    """Split ``optimizer.state_dict()`` into flat tensors and a JSON-able remainder."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, per_param in state_dict["state"].items():
        for key, value in per_param.items():
            if torch.is_tensor(value):
                tensors[f"{index}.{key}"] = value
            else:
                scalars.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def unflatten_optimizer_state(tensors: dict[str, torch.Tensor], rest: dict) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    for index, values in rest.get("scalars", {}).items():
        state.setdefault(int(index), {}).update(values)
    return {"state": state, "param_groups": rest["param_groups"]}


# --- RNG states ---------------------------------------------------------------------------------


def capture_rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Torch (CPU and CUDA) RNG states as tensors; numpy and python states as JSON."""
    import random

    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = state
    np_state = np.random.get_state()
    py_state = random.getstate()
    json_state = {
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }
    return tensors, json_state


def restore_rng_state(tensors: dict[str, torch.Tensor], json_state: dict[str, Any]) -> None:
    import random

    if "torch" in tensors:
        torch.set_rng_state(tensors["torch"].to(torch.uint8))
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.to(torch.uint8) for s in cuda][: torch.cuda.device_count()])
    if "numpy" in json_state:
        s = json_state["numpy"]
        np.random.set_state((s[0], np.asarray(s[1], dtype=np.uint32), *s[2:]))
    if "python" in json_state:
        s = json_state["python"]
        random.setstate((s[0], tuple(s[1]), s[2]))


def model_section(name: str, model_cfg: Any) -> dict[str, Any]:
    """A checkpoint's ``model`` section: the registry name and the model's full config."""
    return {"name": name, **dataclasses.asdict(model_cfg)}


def save_model(path: str | Path, name: str, model: torch.nn.Module) -> Path:
    """Save a bare model (registry ``name``, its ``cfg`` and weights) as a checkpoint."""
    return save_checkpoint(path, Checkpoint(config={"model": model_section(name, model.cfg)},
                                            model_state=model.state_dict()))


def checkpoint_config(cfg) -> dict[str, Any]:
    """The config a checkpoint stores for ``cfg`` (an ExperimentConfig): its file form with the
    model section complete and no ``audio`` block (see the module docstring)."""
    config = cfg.to_dict()
    del config["audio"]
    config["model"] = model_section(cfg.model_name, cfg.model)
    return config


def model_from_config(config: dict[str, Any], file: str | None = None):
    """``(name, typed model config)`` from a checkpoint config's ``model`` section alone (a config
    in file form, whose ``audio`` block holds rate, channels and sources, is accepted too)."""
    from sepcore.config import AUDIO_FIELDS
    from sepcore.errors import ConfigError
    from sepcore.models import make_config

    section = dict(config.get("model") or {})
    audio = config.get("audio") or {}
    for audio_key, (model_key, _) in AUDIO_FIELDS.items():
        if model_key not in section and audio_key in audio:
            section[model_key] = audio[audio_key]
    name = section.pop("name", None)
    if name is None:
        raise CheckpointError(f"{file or 'checkpoint'}: its config has no model.name")
    try:
        return name, make_config(name, section)
    except ConfigError as exc:
        raise CheckpointError(f"{file or 'checkpoint'}: the stored model config does not "
                              f"build: {exc}") from None


# what a command running a trained model may override; its model and audio are the checkpoint's
RUN_SECTIONS = ("data", "eval", "train")


def experiment_config(config: dict[str, Any], file: str | None = None,
                      overrides: list[str] | tuple[str, ...] = ()):
    """The typed ExperimentConfig of a checkpoint config: its ``audio`` block is the model
    section's rate, channels and sources; absent data/train/eval sections take defaults.

    ``overrides`` (``eval.segment=5``, ``data.root=…``) change the data, eval and train sections;
    the model and its audio are fixed by the weights, so overriding them is an error.
    """
    from omegaconf import OmegaConf

    from sepcore.config import AUDIO_FIELDS, apply_overrides, audio_from_model, config_from_dict
    from sepcore.errors import ConfigError

    with _stored_config_errors(file):
        config = json.loads(json.dumps(config))  # a deep copy
        model = config.get("model") or {}
        config["audio"] = {**(config.get("audio") or {}), **audio_from_model(model)}
        for model_key, _ in AUDIO_FIELDS.values():
            model.pop(model_key, None)
        node = OmegaConf.create(config)
    for item in overrides:
        key = item.split("=", 1)[0]
        if key.split(".")[0] in ("model", "audio"):
            raise ConfigError(f"override {item!r}: the model and its audio block are fixed by "
                              f"the trained weights (override {', '.join(RUN_SECTIONS)} keys)",
                              key=key, file=file)
    if overrides:
        node = apply_overrides(node, overrides, file=file, sections=RUN_SECTIONS)
    with _stored_config_errors(file):
        return config_from_dict(node, file=file)


@contextlib.contextmanager
def _stored_config_errors(file):
    """A stored config omegaconf or the config layer cannot take (a list for a section, a type
    clash) is a CheckpointError naming the file; sepcore's own errors pass through."""
    from omegaconf.errors import OmegaConfBaseException

    try:
        yield
    except SepcoreError:
        raise
    except (AttributeError, TypeError, ValueError, OmegaConfBaseException) as exc:
        raise CheckpointError(f"{file}: the stored config is not an experiment config "
                              f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
                              ) from None


def load_model(path: str | Path, device: str | torch.device = "cpu",
               overrides: list[str] | tuple[str, ...] = ()):
    """Build the model stored in a checkpoint and load its weights (eval mode).

    The model is built from the checkpoint's model section alone. Returns ``(model, config)``
    where ``config`` is the checkpoint's typed ExperimentConfig with ``overrides`` applied (see
    :func:`experiment_config`).
    """
    from sepcore.models import build_model

    ckpt = load_checkpoint(path)
    config = experiment_config(ckpt.config, str(path), overrides)  # bad overrides fail first
    name, model_cfg = model_from_config(ckpt.config, str(path))
    _check_weights(path, name, model_cfg, ckpt.model_state)
    model = build_model(name, model_cfg)
    try:
        model.load_state_dict(ckpt.model_state)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not match the stored config: {exc}") from None
    return model.to(device).eval(), config


def _check_weights(path: str | Path, name: str, model_cfg: Any,
                   weights: dict[str, torch.Tensor]) -> None:
    """The stored weights against the stored config, before the model is built for real: the
    model is first built on the ``meta`` device (no memory), so a config whose sizes disagree
    with the weights (say ``N: 1000000000``) is an error naming the tensor, not an allocation of
    the config's size. A NaN/inf weight is an error too (it would give NaN stems). Models whose
    constructor cannot run on ``meta`` are checked by ``load_state_dict`` alone."""
    from sepcore.models import build_model

    for key, value in weights.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise CheckpointError(f"{path}: weight {key!r} holds NaN or infinite values")
    try:
        with torch.device("meta"):
            expected = build_model(name, model_cfg).state_dict()
    except (RuntimeError, NotImplementedError):  # data-dependent constructors (item, nonzero)
        return
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    if missing or unexpected:
        what = (f"missing {missing[0]!r}" if missing else "") + (", " if missing and unexpected
                                                                 else "") + \
            (f"unexpected {unexpected[0]!r}" if unexpected else "")
        raise CheckpointError(f"{path}: weights do not match the stored config "
                              f"({len(missing)} missing, {len(unexpected)} unexpected; {what})")
    for key, tensor in expected.items():
        if tuple(tensor.shape) != tuple(weights[key].shape):
            raise CheckpointError(f"{path}: weights do not match the stored config: "
                                  f"{key!r} is {tuple(weights[key].shape)} in the file, "
                                  f"{tuple(tensor.shape)} by the config")
