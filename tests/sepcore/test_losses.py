"""sepcore.losses against brute-force numpy references; registry, weights, errors, gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sepcore.errors import ConfigError
from sepcore.losses import LOSSES, build_loss, gkl, l1, mse, neg_sisdr, per_source_losses

B, S, C, T = 2, 4, 2, 1000


@pytest.fixture()
def pair() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    target = torch.randn(B, S, C, T, generator=gen, dtype=torch.float64)
    estimate = target + 0.5 * torch.randn(B, S, C, T, generator=gen, dtype=torch.float64)
    return estimate, target


def _np_sisdr(est: np.ndarray, ref: np.ndarray) -> float:
    """Textbook SI-SDR on one 1-D signal, in plain loops."""
    est = est - est.mean()
    ref = ref - ref.mean()
    alpha = float(np.dot(est, ref)) / float(np.dot(ref, ref))
    target = alpha * ref
    noise = est - target
    return 10 * np.log10(np.sum(target**2) / np.sum(noise**2))


def _np_reference(name: str, est: np.ndarray, tgt: np.ndarray, weights=None) -> float:
    per_source = []
    for s in range(est.shape[1]):
        if name == "l1":
            per_source.append(np.mean(np.abs(est[:, s] - tgt[:, s])))
        elif name == "mse":
            per_source.append(np.mean((est[:, s] - tgt[:, s]) ** 2))
        else:
            values = [
                -_np_sisdr(est[b, s, c], tgt[b, s, c])
                for b in range(est.shape[0])
                for c in range(est.shape[2])
            ]
            per_source.append(np.mean(values))
    w = np.ones(est.shape[1]) if weights is None else np.asarray(weights, dtype=np.float64)
    return float(np.sum(w * np.array(per_source)) / np.sum(w))


@pytest.mark.parametrize("name", sorted(set(LOSSES) - {"gkl"}))  # gkl: tests/…/test_mad.py
@pytest.mark.parametrize("weights", [None, [1.0, 2.0, 0.5, 3.0]])
def test_loss_matches_numpy_reference(pair, name, weights):
    estimate, target = pair
    got = build_loss(name, weights)(estimate, target)
    want = _np_reference(name, estimate.numpy(), target.numpy(), weights)
    assert got.shape == ()
    assert got.item() == pytest.approx(want, rel=1e-6, abs=1e-9)


def test_public_functions_are_the_registry(pair):
    estimate, target = pair
    assert LOSSES == {"l1": l1, "mse": mse, "sisdr": neg_sisdr, "gkl": gkl}
    for name, fn in LOSSES.items():
        assert torch.equal(fn(estimate, target), build_loss(name)(estimate, target))


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_equal_weights_equal_plain_mean(pair, name):
    estimate, target = pair
    plain = build_loss(name)(estimate, target)
    weighted = build_loss(name, [3.0] * S)(estimate, target)
    assert weighted.item() == pytest.approx(plain.item(), rel=1e-12)
    assert plain.item() == pytest.approx(per_source_losses(estimate, target, name).mean().item())


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_zero_weight_ignores_source(pair, name):
    estimate, target = pair
    weights = [1.0, 0.0, 1.0, 1.0]
    loss = build_loss(name, weights)
    before = loss(estimate, target)
    spoiled = estimate.clone()
    spoiled[:, 1] = 100 * torch.randn_like(spoiled[:, 1])
    assert loss(spoiled, target).item() == pytest.approx(before.item(), rel=1e-12)
    # only source 0 counts: equals the loss of that source alone
    only_first = build_loss(name, [1.0, 0.0, 0.0, 0.0])(estimate, target)
    assert only_first.item() == pytest.approx(
        per_source_losses(estimate, target, name)[0].item(), rel=1e-12
    )
    # and the unweighted loss does see the spoiled source
    assert build_loss(name)(spoiled, target).item() > build_loss(name)(estimate, target).item()


def test_unknown_loss_lists_known_names():
    with pytest.raises(ConfigError) as info:
        build_loss("l3")
    message = str(info.value)
    assert info.value.key == "train.loss"
    assert "'l3'" in message
    for name in LOSSES:
        assert name in message


def test_wrong_weight_count_names_key(pair):
    estimate, target = pair
    loss = build_loss("l1", [1.0, 1.0])
    with pytest.raises(ConfigError) as info:
        loss(estimate, target)
    assert info.value.key == "train.source_weights"
    assert "train.source_weights" in str(info.value)


@pytest.mark.parametrize("weights", [[1.0, -1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]])
def test_invalid_weights_rejected_at_build(weights):
    with pytest.raises(ConfigError) as info:
        build_loss("mse", weights)
    assert info.value.key == "train.source_weights"


def test_shape_mismatch_raises(pair):
    estimate, target = pair
    with pytest.raises(ValueError, match="same shape"):
        l1(estimate[:, :2], target)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_gradients_flow(pair, name):
    estimate, target = pair
    estimate = estimate.float().requires_grad_(True)
    loss = build_loss(name, [1.0, 0.0, 2.0, 1.0])(estimate, target.float())
    loss.backward()
    grad = estimate.grad
    assert grad is not None and torch.isfinite(grad).all()
    assert grad[:, 0].abs().sum() > 0
    assert grad[:, 1].abs().sum() == 0  # weight 0: no gradient to that source


def test_sisdr_loss_finite_on_silence():
    silent = torch.zeros(1, 2, 1, 100, requires_grad=True)
    loss = neg_sisdr(silent, torch.zeros(1, 2, 1, 100))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(silent.grad).all()
