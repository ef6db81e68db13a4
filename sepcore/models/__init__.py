"""Model registry: a name maps to (config dataclass, module class).

YAML files, checkpoints and MLflow params store the registry *name*, never an import path.
``build_model(name, params)`` validates ``params`` against the config dataclass through OmegaConf
(unknown keys and wrong types are errors naming the key) and builds the module.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from omegaconf import OmegaConf
from torch import nn

from sepcore.errors import ConfigError

_REGISTRY: dict[str, tuple[type, type[nn.Module]]] = {}


def register(name: str, config_cls: type, module_cls: type[nn.Module]) -> None:
    """Register a model family under ``name``."""
    if name in _REGISTRY and _REGISTRY[name] != (config_cls, module_cls):
        raise ValueError(f"model name {name!r} is already registered")
    _REGISTRY[name] = (config_cls, module_cls)


def available_models() -> list[str]:
    _import_families()
    return sorted(_REGISTRY)


def get_model_classes(name: str) -> tuple[type, type[nn.Module]]:
    _import_families()
    if name not in _REGISTRY:
        raise ConfigError(
            f"unknown model {name!r}; known models: {', '.join(sorted(_REGISTRY))}",
            key="model.name",
        )
    return _REGISTRY[name]


def make_config(name: str, params: Mapping[str, Any] | None = None, source: str = "model"):
    """Typed config object of model ``name`` from a plain mapping (nested dicts allowed)."""
    from sepcore.config import typed

    config_cls, _ = get_model_classes(name)
    return typed(config_cls, OmegaConf.create(dict(params or {})), source,
                 context=f"invalid model config for {name!r}: ")


# model fields that an experiment config fills from its audio block (sepcore.config.AUDIO_FIELDS)
_FROM_AUDIO = {"model.sample_rate": "audio.sample_rate", "model.audio_channels": "audio.channels",
               "model.sources": "audio.sources"}


def build_model(name: str, params: Mapping[str, Any] | None = None) -> nn.Module:
    """Build model ``name`` from ``params`` (a mapping or an instance of its config dataclass).

    A model that rejects its rate, channels or sources (e.g. MaD estimates vocals only) raises a
    ConfigError keyed ``audio.<x>``: that is where a config file states them.
    """
    config_cls, module_cls = get_model_classes(name)
    cfg = params if isinstance(params, config_cls) else make_config(name, params)
    try:
        return module_cls(cfg)
    except ConfigError as exc:
        if exc.key not in _FROM_AUDIO or exc.file is not None:
            raise
        raise ConfigError(f"{exc} (set by {_FROM_AUDIO[exc.key]})",
                          key=_FROM_AUDIO[exc.key]) from None


def config_to_dict(cfg) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def _import_families() -> None:
    # Importing a family module registers it.
    from sepcore.models import (  # noqa: F401
        convtasnet,
        fusionnet,
        htmd,
        mad,
        metatasnet,
        multiband,
        openunmix,
        oracles,
        unet,
        waveunet,
    )
