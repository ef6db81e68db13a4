"""The call contract shared by every separation model.

Every model maps a mixture ``(B, C, T)`` to source estimates ``(B, S, C, T)`` at the same length
and declares what long-audio inference and the trainer need to know about it:

- ``sample_rate``: the rate the model works at (Hz);
- ``sources``: the names of the estimated sources, in output order;
- ``audio_channels``: the number of input/output audio channels;
- ``valid_length(n)``: the smallest input length >= ``n`` the model handles without padding;
- ``frame_hop``: the hop of the model's analysis frames in samples (1 for sample-level models);
  chunked inference aligns chunk starts to it so frames fall where one pass would put them;
- ``receptive_field``: samples of context one output sample depends on (``None`` = unbounded, e.g.
  because of a global normalisation); ``sepcore.separate`` uses it to make chunked inference exact.

Models with intermediate outputs (deep supervision, e.g. HTMD-Net's masking-network estimate) keep
``forward`` as above and declare ``has_intermediate = True`` plus a method
``separate(mixture) -> Separation`` whose ``intermediate`` maps a name to a ``(B, S, C, T)``
estimate. The trainer then adds ``train.aux_weight`` × ``train.aux_loss`` of every intermediate
estimate to ``train.loss_weight`` × ``train.loss`` of the final one (HTMD-Net's β·L_a + α·L_d,
Garoufis et al., EUSIPCO 2021), with no case per model. Such a model may also define
``auxiliary_losses(separation, mixture, targets) -> dict[str, Tensor]``: model-specific terms
(already weighted, e.g. Meta-TasNet's similarity/dissimilarity/reconstruction losses or the
losses of its lower-rate stages) that the trainer adds to the training loss.

A model never reads a file: pre-trained weights come from the trainer (``train.init_from``). A
model that keeps state derived from its weights (the multi-band model's ``band_split: sorted``
channel order) stores it in a buffer, so a checkpoint restores it with the weights, and may define
``after_transfer(changed: set[str]) -> None``: the trainer calls it in a fresh run after
``train.init_from``/``train.reinit`` changed the state-dict entries named in ``changed``, so that
the derived state follows the new weights. It is never called on resume or ``load_state_dict``.

Mixed precision (``train.amp``): the numerically delicate steps (masks and their eps, STFT/iSTFT,
norms, linalg) are functions or methods decorated with :func:`float32`, so they compute in float32
whatever autocast does around them; every model uses that one helper.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import torch
from torch import nn


@dataclass
class Separation:
    """The side channel of models with intermediate outputs (see the module docstring)."""

    estimate: torch.Tensor  # (B, S, C, T), what forward() returns
    intermediate: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> (B, S, C, T)


class SeparationModel(nn.Module):
    """Base class: holds ``cfg`` and implements the default contract attributes from it.

    Subclasses set ``self.cfg`` (their typed dataclass config) and implement ``forward``.
    The config is expected to have ``sample_rate``, ``sources`` and ``audio_channels`` fields.
    """

    cfg: object

    @property
    def sample_rate(self) -> int:
        return int(self.cfg.sample_rate)

    @property
    def sources(self) -> list[str]:
        return list(self.cfg.sources)

    @property
    def audio_channels(self) -> int:
        return int(self.cfg.audio_channels)

    @property
    def frame_hop(self) -> int:
        return 1

    @property
    def receptive_field(self) -> int | None:
        return None

    def valid_length(self, length: int) -> int:
        return length

    def forward(self, mixture: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__} must implement forward")


F = TypeVar("F", bound=Callable)


def _up(value):
    """A half/bfloat16 tensor as float32 (complex32 as complex64); anything else unchanged."""
    if isinstance(value, torch.Tensor) and value.dtype in (torch.float16, torch.bfloat16):
        return value.float()
    if isinstance(value, torch.Tensor) and value.dtype == torch.complex32:
        return value.to(torch.complex64)
    return value


def float32(fn: F) -> F:
    """Decorator: ``fn`` runs with autocast off and its half-precision tensor arguments cast to
    float32, so it returns float32 under ``torch.autocast`` (bf16 or fp16) as without it.

    For the steps half precision breaks: masks with an eps (``1e-8`` is 0 in fp16, so a soft
    mask of vanishing scores is 0/0), STFT/iSTFT, normalisations and ``torch.linalg``.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
        device_type = tensors[0].device.type if tensors else "cpu"
        with torch.autocast(device_type=device_type, enabled=False):
            return fn(*map(_up, args), **{k: _up(v) for k, v in kwargs.items()})

    return wrapper  # type: ignore[return-value]


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (all, or only those with ``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
