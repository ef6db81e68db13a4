"""Toy models whose output is known in closed form, for tests of inference and evaluation.

- ``pointwise``: source ``s`` is ``gains[s]`` × the mixture, sample by sample (output at t depends
  on the input at t only), so chunked inference must reproduce one pass over the whole song to
  float round-off whatever the chunking. ``blended=True`` declares an unbounded receptive field,
  which sends :func:`sepcore.separate.apply_model` to its cross-faded regime; ``False`` declares 0
  (the exact regime).
- ``true_sources``: an oracle returning ``(1 - leak)`` × the true source + ``leak`` × the mixture;
  ``leak=0`` is a perfect separator.

They are registered only for the duration of a test (:func:`register_toy_models`) so that tests
iterating over the model registry never see them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

import sepcore.models as registry
from sepcore.models.base import SeparationModel


@dataclass
class PointwiseConfig:
    sources: list[str] = field(default_factory=lambda: ["vocals", "accompaniment"])
    audio_channels: int = 1
    sample_rate: int = 8000
    gains: list[float] = field(default_factory=lambda: [0.25, -0.75])
    blended: bool = True  # declare receptive_field None (cross-faded chunks) instead of 0


class Pointwise(SeparationModel):
    def __init__(self, cfg: PointwiseConfig):
        super().__init__()
        self.cfg = cfg
        self.gains = torch.nn.Parameter(torch.tensor(cfg.gains, dtype=torch.float32))

    @property
    def receptive_field(self) -> int | None:
        return None if self.cfg.blended else 0

    def forward(self, mixture: torch.Tensor) -> torch.Tensor:
        return self.gains[None, :, None, None] * mixture[:, None]  # (B, C, T) -> (B, S, C, T)


@dataclass
class TrueSourcesConfig:
    sources: list[str] = field(default_factory=lambda: ["vocals", "accompaniment"])
    audio_channels: int = 1
    sample_rate: int = 8000
    leak: float = 0.0


class TrueSources(SeparationModel):
    needs_references = True

    def __init__(self, cfg: TrueSourcesConfig):
        super().__init__()
        self.cfg = cfg

    @property
    def receptive_field(self) -> int:
        return 0

    def forward(self, mixture: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
        if not self.cfg.leak:
            return references.clone()
        return (1 - self.cfg.leak) * references + self.cfg.leak * mixture[:, None]


TOY_MODELS = {"pointwise": (PointwiseConfig, Pointwise),
              "true_sources": (TrueSourcesConfig, TrueSources)}


def register_toy_models(monkeypatch) -> None:
    """Add the toy models to the registry until the end of the test."""
    registry.available_models()  # import the real families first
    for name, entry in TOY_MODELS.items():
        monkeypatch.setitem(registry._REGISTRY, name, entry)
