"""Scale-invariant SDR (SI-SDR) and its improvement over the mixture (SI-SDRi).

SI-SDR projects the (zero-mean) estimate onto the (zero-mean) reference and compares the energy of
that projection with the energy of the rest; scaling the estimate leaves it unchanged.

References:
    Le Roux, Wisdom, Erdogan, Hershey, "SDR - half-baked or well done?", ICASSP 2019, eqs. (5)-(6).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["si_sdr", "si_sdr_improvement"]


def _si_sdr_torch(estimate: Tensor, reference: Tensor, eps: float) -> Tensor:
    estimate = estimate - estimate.mean(dim=-1, keepdim=True)
    reference = reference - reference.mean(dim=-1, keepdim=True)
    # optimal scale of the reference: alpha = <s_hat, s> / ||s||^2
    dot = (estimate * reference).sum(dim=-1, keepdim=True)
    ref_energy = reference.pow(2).sum(dim=-1, keepdim=True)
    projection = dot / (ref_energy + eps) * reference
    noise = estimate - projection
    ratio = (projection.pow(2).sum(dim=-1) + eps) / (noise.pow(2).sum(dim=-1) + eps)
    return 10 * torch.log10(ratio)


def si_sdr(
    estimate: Tensor | np.ndarray, reference: Tensor | np.ndarray, eps: float = 1e-8
) -> Tensor | np.ndarray:
    """SI-SDR in dB over the last axis, both signals made zero-mean first.

    Args:
        estimate: (..., T) estimated signal; leading axes broadcast against ``reference``
            (e.g. a mixture (B, 1, C, T) against references (B, S, C, T)).
        reference: (..., T) true signal.
        eps: added to both energies, so silent references and perfect estimates stay finite
            (a perfect estimate scores about ``10 * log10(||s||^2 / eps)``).

    Returns:
        (...) SI-SDR in dB. A torch tensor for torch inputs (differentiable), a float64 numpy array
        when both inputs are numpy arrays.
    """
    if isinstance(estimate, np.ndarray) and isinstance(reference, np.ndarray):
        out = _si_sdr_torch(
            torch.from_numpy(np.asarray(estimate, dtype=np.float64)),
            torch.from_numpy(np.asarray(reference, dtype=np.float64)),
            eps,
        )
        return out.numpy()
    return _si_sdr_torch(torch.as_tensor(estimate), torch.as_tensor(reference), eps)


def si_sdr_improvement(
    estimate: Tensor | np.ndarray,
    reference: Tensor | np.ndarray,
    mixture: Tensor | np.ndarray,
    eps: float = 1e-8,
) -> Tensor | np.ndarray:
    """SI-SDRi: ``si_sdr(estimate, reference) - si_sdr(mixture, reference)`` in dB.

    Args:
        estimate: (..., T) estimated source.
        reference: (..., T) true source.
        mixture: (..., T) the input mixture; broadcast against ``reference``, so for
            references (B, S, C, T) pass the mixture as (B, 1, C, T).
        eps: as in :func:`si_sdr`.

    Returns:
        (...) improvement in dB.
    """
    return si_sdr(estimate, reference, eps) - si_sdr(mixture, reference, eps)
