"""``sep info``: what a config builds — parameter count, receptive field, latent frame rate."""

from __future__ import annotations

from typing import Any

from sepcore.config import ExperimentConfig, load_config
from sepcore.errors import ConfigError
from sepcore.models import build_model
from sepcore.models.base import count_parameters


def model_info(config: str, overrides: list[str] | None = None) -> dict[str, Any]:
    """Build the model of ``config`` (a YAML path) and describe it.

    ``trainable_params`` counts what ``train.trainable``/``train.frozen`` leave to train; no
    checkpoint is read (``train.init_from`` only matters to training).
    """
    cfg = load_config(config, overrides)
    try:
        return config_info(cfg)
    except ConfigError as exc:  # the model's own limits (e.g. MaD estimates vocals only)
        raise ConfigError(str(exc), key=exc.key, file=str(config)) from None


def config_info(cfg: ExperimentConfig) -> dict[str, Any]:
    """:func:`model_info` of a typed config (builds the model on the CPU, reads no checkpoint)."""
    from sepcore.train import trainable_parameters

    model = build_model(cfg.model_name, cfg.model)
    trainable = trainable_parameters(model, cfg.train)
    if trainable is not None:
        for name, param in model.named_parameters():
            param.requires_grad_(name in trainable)
    rate = model.sample_rate
    rf = getattr(model, "conv_receptive_field", None) or model.receptive_field
    return {
        "model": cfg.model_name,
        "params": count_parameters(model),
        "trainable_params": count_parameters(model, trainable_only=True),
        "sample_rate": rate,
        "audio_channels": model.audio_channels,
        "sources": model.sources,
        "receptive_field_samples": rf,
        "receptive_field_ms": None if rf is None else 1000.0 * rf / rate,
        # a global norm (gLN) makes every output depend on the whole input on top of the convs
        "global_context": model.receptive_field is None,
        "frame_hop": model.frame_hop,
        "latent_frame_rate": rate / model.frame_hop,
    }
