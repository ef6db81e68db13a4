"""Open-Unmix (Stöter et al. 2019; thesis §3.2.1): sizes, contract, learning, Wiener filter."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

import sepcore
from sepcore.errors import ConfigError
from sepcore.losses import build_loss
from sepcore.models import available_models, build_model
from sepcore.models.base import count_parameters
from sepcore.models.openunmix import bandwidth_to_max_bin, wiener

UMX_YAML = Path(sepcore.__file__).parent / "configs" / "paper" / "umx.yaml"
RATE = 8000


def small(channels: int = 2, **overrides):
    """A shrunk Open-Unmix at 8 kHz: n_fft 256, hidden 16, 2 LSTM layers."""
    params = {"sources": ["vocals", "accompaniment"], "audio_channels": channels,
              "sample_rate": RATE, "n_fft": 256, "hop": 64, "bandwidth": 3000.0,
              "hidden_size": 16, "nb_layers": 2}
    params.update(overrides)
    return build_model("openunmix", params)


def test_registered():
    assert "openunmix" in available_models()


def test_published_parameter_counts_match_yaml_comment():
    text = UMX_YAML.read_text()
    per_target = int(re.search(r"([\d,]+) per target", text).group(1).replace(",", ""))
    total = int(re.search(r"([\d,]+) for the four targets", text).group(1).replace(",", ""))
    model = build_model("openunmix", {})  # defaults = the published UMX sizes
    assert model.max_bin == 1487 == bandwidth_to_max_bin(44100, 4096, 16000)
    assert count_parameters(model.unmix["vocals"]) == per_target
    assert count_parameters(model) == total == 4 * per_target
    assert abs(per_target - 8.9e6) < 0.05e6  # UMX-HQ: ~8.9 M parameters per target


@pytest.mark.parametrize("channels", [1, 2])
def test_forward_backward(channels):
    torch.manual_seed(0)
    model = small(channels).train()
    x = torch.randn(3, channels, 4000)
    y = model(x)
    assert y.shape == (3, 2, channels, 4000)
    y.square().mean().backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
    assert any(p.grad.abs().sum() > 0 for n, p in model.named_parameters() if "fc1" in n)


@pytest.mark.parametrize("length", [1, 1000, 3 * RATE + 17])
@pytest.mark.parametrize("training", [True, False])
def test_any_length_exactly_t_out(length, training):
    model = small().train(training)
    with torch.no_grad():
        y = model(torch.randn(1, 2, length))
    assert y.shape == (1, 2, 2, length)
    assert torch.isfinite(y).all()


def test_few_steps_reduce_loss():
    torch.manual_seed(0)
    length = RATE // 4
    t = torch.arange(length) / RATE
    voice = 0.3 * torch.sin(2 * torch.pi * 440 * t) * (torch.sin(2 * torch.pi * 4 * t) > 0)
    accomp = 0.1 * torch.randn(length)
    targets = torch.stack([voice, accomp])[None, :, None].repeat(2, 1, 2, 1)  # (B, S, C, T)
    targets = targets * torch.rand(2, 2, 1, 1) + 0.02 * torch.randn(2, 2, 2, length)
    mixture = targets.sum(dim=1)  # (B, C, T)
    model = small(lstm_dropout=0.0).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-2)
    loss_fn = build_loss("mse")
    losses = []
    for _ in range(12):
        loss = loss_fn(model(mixture), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0], losses


@pytest.mark.parametrize(("iterations", "softmask"), [(1, False), (1, True), (2, False), (0, True)])
def test_wiener_estimates_sum_to_mixture(iterations, softmask):
    torch.manual_seed(0)
    model = small(wiener_iterations=iterations, softmask=softmask).eval()
    x = 0.5 * torch.randn(2, 2, 6000)
    with torch.no_grad():
        y = model(x)
    assert (y.sum(dim=1) - x).abs().max() < 1e-3


def test_mixture_phase_estimates_do_not_sum_to_mixture():
    """Guard: without the Wiener filter (mixture phase, no softmask) the sum is not the mix."""
    torch.manual_seed(0)
    model = small(wiener_iterations=0, softmask=False).eval()
    x = 0.5 * torch.randn(2, 2, 6000)
    with torch.no_grad():
        y = model(x)
    assert (y.sum(dim=1) - x).abs().max() > 1e-2


@pytest.mark.parametrize(("iterations", "softmask"), [(0, False), (1, False), (2, True)])
def test_wiener_matches_norbert(iterations, softmask):
    norbert = pytest.importorskip("norbert")
    g = torch.Generator().manual_seed(0)
    b, s, c, f, k = 2, 3, 2, 17, 12
    mix = 30 * torch.randn(b, c, f, k, dtype=torch.complex128, generator=g)
    mags = 20 * torch.rand(b, s, c, f, k, dtype=torch.float64, generator=g)
    ours = wiener(mags, mix, iterations, softmask, eps=1e-10)  # (B, S, C, F, K)
    for i in range(b):
        # norbert: v (frames, bins, channels, sources), x (frames, bins, channels)
        ref = norbert.wiener(mags[i].permute(3, 2, 1, 0).numpy().copy(),
                             mix[i].permute(2, 1, 0).numpy().copy(), iterations=iterations,
                             use_softmask=softmask, eps=1e-10)
        np.testing.assert_allclose(ours[i].permute(3, 2, 1, 0).numpy(), ref, rtol=1e-9,
                                   atol=1e-9 * np.abs(ref).max())


def test_bad_config_names_key():
    with pytest.raises(ConfigError, match="model.hidden_size"):
        small(hidden_size=15)


