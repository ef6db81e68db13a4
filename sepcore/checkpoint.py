"""One versioned checkpoint format: a single safetensors file, never pickle.

Layout of ``<name>.safetensors``:

- tensors ``model.<param>`` — the model's ``state_dict``;
- tensors ``optim.<index>.<key>`` — the optimizer's per-parameter state (Adam moments, step);
- tensors ``rng.torch`` (and ``rng.cuda.<i>``) — the RNG states needed for an exact resume;
- header metadata ``sepcore`` — a JSON object: ``format_version``, ``model`` (registry name),
  ``config`` (the full experiment config), ``train_state`` (epoch, global step, best score,
  counters, optimizer param groups, LR scheduler state, numpy/python RNG states), ``metrics``,
  ``versions``.

Files are written atomically (temporary file in the same folder, then ``os.replace``) so a crash
never leaves a half checkpoint under the final name.

Format versions: 2 (written now); 1 (read and upgraded on load: its model config still held
``encoder.pretrained``/``encoder.frozen``, which became ``train.init_from``/``init_keys`` and
``train.frozen``).
"""

from __future__ import annotations

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

from sepcore.errors import CheckpointError

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
_META_KEY = "sepcore"


@dataclass
class Checkpoint:
    """What a checkpoint file holds, in memory."""

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
    meta = json.loads(header[_META_KEY])
    version = meta.get("format_version")
    if version not in READABLE_VERSIONS:
        raise CheckpointError(
            f"{path}: checkpoint format_version {version} is not supported "
            f"(this sepcore reads versions {', '.join(map(str, READABLE_VERSIONS))})"
        )
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
    """Version 1 → 2: ``model.encoder.pretrained``/``frozen`` become train keys."""
    config = json.loads(json.dumps(config))  # a deep copy
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


def load_model(path: str | Path, device: str | torch.device = "cpu"):
    """Build the model stored in a checkpoint and load its weights (eval mode).

    Returns ``(model, config)`` where ``config`` is the checkpoint's typed ExperimentConfig.
    """
    from sepcore.config import config_from_dict
    from sepcore.models import build_model

    ckpt = load_checkpoint(path)
    cfg = config_from_dict(ckpt.config, file=str(path))
    model = build_model(cfg.model_name, cfg.model)
    try:
        model.load_state_dict(ckpt.model_state)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not match the stored config: {exc}") from None
    return model.to(device).eval(), cfg
