"""SI-SDR: closed forms, invariances, batching, numpy input, SI-SDRi."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sepcore.metrics import si_sdr, si_sdr_improvement


def _orthogonal_pair(n: int = 8000, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    ref = torch.randn(n, generator=gen, dtype=torch.float64)
    noise = torch.randn(n, generator=gen, dtype=torch.float64)
    ref = ref - ref.mean()
    noise = noise - noise.mean()
    noise = noise - (noise @ ref) / (ref @ ref) * ref  # orthogonal to ref, still zero-mean
    return ref, noise


@pytest.mark.parametrize("ratio_db", [-5.0, 0.0, 12.0, 30.0])
def test_closed_form_orthogonal_noise(ratio_db):
    ref, noise = _orthogonal_pair()
    # scale the noise so that ||ref||^2 / ||noise||^2 = 10^(ratio_db / 10)
    noise = noise * torch.sqrt(ref.pow(2).sum() / noise.pow(2).sum() / 10 ** (ratio_db / 10))
    got = si_sdr(ref + noise, ref).item()
    assert got == pytest.approx(ratio_db, abs=1e-6)


def test_scale_invariance():
    ref, noise = _orthogonal_pair(seed=1)
    est = ref + 0.3 * noise
    base = si_sdr(est, ref).item()
    assert si_sdr(3 * est, ref).item() == pytest.approx(base, abs=1e-9)
    assert si_sdr(est, 0.1 * ref).item() == pytest.approx(base, abs=1e-6)
    # and offset invariance (zero-mean)
    assert si_sdr(est + 2.0, ref).item() == pytest.approx(base, abs=1e-9)


def test_perfect_estimate_is_large():
    ref, _ = _orthogonal_pair()
    assert si_sdr(ref, ref).item() > 100
    assert math.isfinite(si_sdr(ref, ref).item())


def test_silence_is_finite():
    zeros = torch.zeros(2, 100)
    assert torch.isfinite(si_sdr(zeros, zeros)).all()
    assert torch.isfinite(si_sdr(torch.randn(2, 100), zeros)).all()


def test_batched_equals_loop():
    gen = torch.Generator().manual_seed(3)
    ref = torch.randn(2, 4, 2, 500, generator=gen, dtype=torch.float64)
    est = ref + torch.randn(2, 4, 2, 500, generator=gen, dtype=torch.float64)
    batched = si_sdr(est, ref)
    assert batched.shape == (2, 4, 2)
    for b in range(2):
        for s in range(4):
            for c in range(2):
                assert batched[b, s, c].item() == pytest.approx(
                    si_sdr(est[b, s, c], ref[b, s, c]).item(), abs=1e-10
                )


def test_numpy_input_returns_numpy():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((3, 400))
    est = ref + 0.1 * rng.standard_normal((3, 400))
    got = si_sdr(est, ref)
    assert isinstance(got, np.ndarray) and got.shape == (3,)
    np.testing.assert_allclose(got, si_sdr(torch.from_numpy(est), torch.from_numpy(ref)).numpy())


def test_improvement_broadcasts_mixture():
    gen = torch.Generator().manual_seed(4)
    sources = torch.randn(2, 3, 1, 800, generator=gen, dtype=torch.float64)  # (B, S, C, T)
    mixture = sources.sum(dim=1, keepdim=True)  # (B, 1, C, T)
    est = sources + 0.05 * torch.randn(2, 3, 1, 800, generator=gen, dtype=torch.float64)
    improvement = si_sdr_improvement(est, sources, mixture)
    assert improvement.shape == (2, 3, 1)
    want = si_sdr(est, sources) - si_sdr(mixture.expand_as(sources), sources)
    torch.testing.assert_close(improvement, want)
    assert (improvement > 0).all()
    # the mixture as estimate improves nothing
    assert torch.allclose(
        si_sdr_improvement(mixture, sources, mixture), torch.zeros(2, 3, 1, dtype=torch.float64)
    )


def test_differentiable():
    ref = torch.randn(1, 300)
    est = (ref + torch.randn(1, 300)).requires_grad_(True)
    si_sdr(est, ref).sum().backward()
    assert est.grad is not None and torch.isfinite(est.grad).all()
