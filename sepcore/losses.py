"""Training losses over separated sources, chosen by name.

Every loss takes estimates and targets shaped (B, S, C, T), reduces each source to one number
(averaged over batch, channels and, for sample-wise losses, time), then combines the sources as a
weighted mean ``sum_s w_s * L_s / sum_s w_s`` (demucs' ``solver.py`` convention), so equal weights
give the plain mean and a weight of 0 ignores that source.

- ``l1``: mean absolute error on waveforms (Conv-TasNet for music, Défossez et al. 2019; demucs).
- ``mse``: mean squared error (Open-Unmix, Wave-U-Net).
- ``sisdr``: negative SI-SDR per (B, S, C) over T (Luo & Mesgarani, Conv-TasNet, TASLP 2019, §III).
- ``gkl``: generalised Kullback-Leibler divergence between STFT *magnitudes* (Mimilakis et al.,
  MaD, ICASSP 2018, "Objective"): ``Σ_f y log(y / ŷ) − y + ŷ`` summed over frequency, averaged over
  (B, C, frames). The trainer hands every loss waveforms, so :func:`gkl` computes the magnitudes
  itself with MaD's analysis (:data:`GKL_STFT`: 2049-sample Hamming window, 4096-point FFT, hop 384,
  centred, zero padded); :func:`generalized_kl` is the divergence on magnitudes.

The trainer gets its loss with ``build_loss(cfg.train.loss, cfg.train.source_weights)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache, partial

import torch
from torch import Tensor

from sepcore.errors import ConfigError
from sepcore.metrics.sisdr import si_sdr

__all__ = [
    "LOSSES",
    "build_loss",
    "generalized_kl",
    "gkl",
    "l1",
    "mse",
    "neg_sisdr",
    "per_source_losses",
]

Weights = Sequence[float] | Tensor | None
LossFn = Callable[[Tensor, Tensor], Tensor]


def _check_shapes(estimate: Tensor, target: Tensor) -> None:
    if estimate.shape != target.shape or estimate.dim() != 4:
        raise ValueError(
            "losses expect estimate and target of the same shape (B, S, C, T); got "
            f"estimate {tuple(estimate.shape)} and target {tuple(target.shape)}"
        )


def _l1_per_source(estimate: Tensor, target: Tensor) -> Tensor:
    return (estimate - target).abs().mean(dim=(0, 2, 3))  # (S,)


def _mse_per_source(estimate: Tensor, target: Tensor) -> Tensor:
    return (estimate - target).pow(2).mean(dim=(0, 2, 3))  # (S,)


def _neg_sisdr_per_source(estimate: Tensor, target: Tensor) -> Tensor:
    return -si_sdr(estimate, target).mean(dim=(0, 2))  # (B, S, C) -> (S,)


# MaD's analysis (Mimilakis et al., ICASSP 2018; authors' mss_pytorch: wsz 2049, N 4096, hop 384)
GKL_STFT: dict[str, int] = {"n_fft": 4096, "win_length": 2049, "hop": 384}
GKL_EPS = 1e-6  # added inside both logarithms (the authors' ``kullback_leibler``)


def generalized_kl(estimate: Tensor, target: Tensor, eps: float = GKL_EPS) -> Tensor:
    """Generalised KL divergence ``y (log(y + eps) − log(ŷ + eps)) − y + ŷ``, elementwise.

    Non-negative for non-negative inputs and exactly zero where ``ŷ = y``; sum it over frequency
    for the per-frame divergence ``D(y ‖ ŷ)`` of Mimilakis et al. (MaD, "Objective").

    Args:
        estimate: ŷ, non-negative magnitudes of any shape.
        target: y, non-negative magnitudes of the same shape.
        eps: added inside both logarithms so silent bins stay finite.

    Returns:
        The elementwise divergence, shaped like the inputs.
    """
    return target * (torch.log(target + eps) - torch.log(estimate + eps)) - target + estimate


def _stft_magnitude(audio: Tensor) -> Tensor:
    """(..., T) waveforms -> (..., n_fft/2 + 1, frames) magnitudes with :data:`GKL_STFT`."""
    n_fft, win, hop = GKL_STFT["n_fft"], GKL_STFT["win_length"], GKL_STFT["hop"]
    window = torch.hamming_window(win, periodic=False, dtype=audio.dtype, device=audio.device)
    flat = audio.reshape(-1, audio.shape[-1])  # (B·S·C, T)
    spec = torch.stft(flat, n_fft, hop, win, window=window, center=True, pad_mode="constant",
                      return_complex=True)  # (B·S·C, F, K)
    return spec.abs().reshape(*audio.shape[:-1], *spec.shape[-2:])  # (..., F, K)


def _gkl_per_source(estimate: Tensor, target: Tensor) -> Tensor:
    est, tgt = _stft_magnitude(estimate), _stft_magnitude(target)  # (B, S, C, F, K)
    return generalized_kl(est, tgt).sum(dim=3).mean(dim=(0, 2, 3))  # (S,)


_PER_SOURCE: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "l1": _l1_per_source,
    "mse": _mse_per_source,
    "sisdr": _neg_sisdr_per_source,
    "gkl": _gkl_per_source,
}


def _check_weights(values: list[float]) -> None:
    if any(w < 0 for w in values) or not sum(values) > 0:
        raise ConfigError(
            f"train.source_weights must be >= 0 with a positive sum, got {values}",
            key="train.source_weights",
        )


@lru_cache(maxsize=64)
def _weights_on(values: tuple[float, ...], device: torch.device, dtype: torch.dtype) -> Tensor:
    """(S,) weights on ``device``: copied host → device once, not at every loss call."""
    return torch.tensor(values, dtype=dtype, device=device)


def _weights_tensor(weights: Weights, num_sources: int, like: Tensor) -> Tensor | None:
    """Validates per-source weights against S; ``None`` means equal weights.

    Sequences (what :func:`build_loss` binds) are checked on the host and their device copy is
    cached, so a training step neither copies them nor waits for the device; tensor weights are
    read back once per call to be checked.
    """
    if weights is None:
        return None
    values = [float(w) for w in torch.as_tensor(weights).flatten().tolist()] \
        if isinstance(weights, Tensor) else [float(w) for w in weights]
    if len(values) != num_sources:
        raise ConfigError(
            f"train.source_weights has {len(values)} values {values} but the model separates "
            f"{num_sources} sources",
            key="train.source_weights",
        )
    _check_weights(values)
    return _weights_on(tuple(values), like.device, like.dtype)


def _weighted_mean(per_source: Tensor, weights: Weights) -> Tensor:
    w = _weights_tensor(weights, per_source.shape[0], per_source)
    if w is None:
        return per_source.mean()
    return (per_source * w).sum() / w.sum()


def per_source_losses(estimate: Tensor, target: Tensor, name: str) -> Tensor:
    """Unweighted loss ``name`` for each source, e.g. for logging.

    Args:
        estimate: (B, S, C, T) estimated sources.
        target: (B, S, C, T) true sources.
        name: a key of :data:`LOSSES`.

    Returns:
        (S,) loss per source.
    """
    _check_shapes(estimate, target)
    return _per_source_fn(name)(estimate, target)


def l1(estimate: Tensor, target: Tensor, weights: Weights = None) -> Tensor:
    """Mean absolute error, weighted over sources.

    Args:
        estimate: (B, S, C, T) estimated sources.
        target: (B, S, C, T) true sources.
        weights: S non-negative per-source weights; None = equal.

    Returns:
        () scalar loss.
    """
    _check_shapes(estimate, target)
    return _weighted_mean(_l1_per_source(estimate, target), weights)


def mse(estimate: Tensor, target: Tensor, weights: Weights = None) -> Tensor:
    """Mean squared error, weighted over sources.

    Args:
        estimate: (B, S, C, T) estimated sources.
        target: (B, S, C, T) true sources.
        weights: S non-negative per-source weights; None = equal.

    Returns:
        () scalar loss.
    """
    _check_shapes(estimate, target)
    return _weighted_mean(_mse_per_source(estimate, target), weights)


def neg_sisdr(estimate: Tensor, target: Tensor, weights: Weights = None) -> Tensor:
    """Negative SI-SDR (dB), computed per (B, S, C) over T, zero-mean and eps-safe.

    Args:
        estimate: (B, S, C, T) estimated sources.
        target: (B, S, C, T) true sources.
        weights: S non-negative per-source weights; None = equal.

    Returns:
        () scalar loss (lower is better).
    """
    _check_shapes(estimate, target)
    return _weighted_mean(_neg_sisdr_per_source(estimate, target), weights)


def gkl(estimate: Tensor, target: Tensor, weights: Weights = None) -> Tensor:
    """Generalised KL divergence of STFT magnitudes (MaD, Mimilakis et al., ICASSP 2018).

    Magnitudes come from :data:`GKL_STFT` (MaD's 2049-sample Hamming window, 4096-point FFT, hop
    384, centred with zero padding); the divergence is summed over frequency and averaged over
    batch, channels and frames per source (the authors' ``kullback_leibler``), then weighted.

    Args:
        estimate: (B, S, C, T) estimated sources (waveforms).
        target: (B, S, C, T) true sources (waveforms).
        weights: S non-negative per-source weights; None = equal.

    Returns:
        () scalar loss (0 when the magnitudes agree).
    """
    _check_shapes(estimate, target)
    return _weighted_mean(_gkl_per_source(estimate, target), weights)


LOSSES: dict[str, Callable[..., Tensor]] = {
    "l1": l1,
    "mse": mse,
    "sisdr": neg_sisdr,
    "gkl": gkl,
}


def _check_name(name: str) -> None:
    if name not in LOSSES:
        raise ConfigError(
            f"unknown loss {name!r}; known losses: {', '.join(sorted(LOSSES))}", key="train.loss"
        )


def _per_source_fn(name: str) -> Callable[[Tensor, Tensor], Tensor]:
    _check_name(name)
    return _PER_SOURCE[name]


def build_loss(name: str, weights: Sequence[float] | None = None) -> LossFn:
    """The loss registered as ``name``, with per-source ``weights`` bound.

    Args:
        name: a key of :data:`LOSSES` (``"l1"``, ``"mse"``, ``"sisdr"``, ``"gkl"``).
        weights: S non-negative per-source weights, or None for equal weights. Their count is
            checked against S on the first call.

    Returns:
        ``loss(estimate, target) -> scalar`` over (B, S, C, T) tensors.

    Raises:
        ConfigError: unknown ``name`` (key ``train.loss``), or negative / all-zero weights (key
            ``train.source_weights``); a wrong count raises the same error when called.
    """
    _check_name(name)
    if weights is not None:
        weights = tuple(float(w) for w in weights)
        _check_weights(list(weights))
    return partial(LOSSES[name], weights=weights)
