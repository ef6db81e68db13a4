"""MaD (Mimilakis et al., ICASSP 2018): shapes, any length, residual accompaniment, training,
parameter counts, recurrent inference, and the generalised KL loss against its closed form."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import sepcore
from sepcore.errors import ConfigError
from sepcore.info import model_info
from sepcore.losses import GKL_STFT, build_loss, generalized_kl, gkl
from sepcore.models import available_models, build_model
from sepcore.models import mad as mad_module
from sepcore.models.base import count_parameters
from sepcore.models.mad import MaD, recurrent_inference
from sepcore.separate import apply_model
from sepcore.train import _training_loss

CONFIGS = Path(sepcore.__file__).parent / "configs" / "paper"
PAPER = {"mad_nri": (0, 1e-2), "mad_ris_s": (3, 1e-2), "mad_ris_l": (10, 1e-3)}
SMALL = {"stft": {"n_fft": 64, "win_length": 63, "hop": 16}, "encoder_bins": 12,
         "sequence_length": 8, "context": 2, "sample_rate": 8000}


def small(**over) -> MaD:
    return build_model("mad", {**SMALL, **over})


@pytest.fixture()
def fast_init(monkeypatch):
    """Skip the orthogonal GRU initialisation (QR of 4464 x 1488 matrices, seconds on a CPU):
    full-size models built only to count parameters need no initial values."""
    monkeypatch.setattr(mad_module, "_init_gru", lambda gru: None)


def test_registered_and_paper_defaults(fast_init):
    assert "mad" in available_models()
    model = build_model("mad", {})
    assert model.sources == ["vocals", "accompaniment"] and model.frame_hop == 384
    assert model.receptive_field is None and model.has_intermediate


@pytest.mark.parametrize("channels", [1, 2])
def test_forward_backward(channels):
    torch.manual_seed(0)
    model = small(audio_channels=channels, iterations=3, tau=1e-6)
    x = torch.randn(2, channels, 700)
    sep = model.separate(x)
    assert sep.estimate.shape == (2, 2, channels, 700)
    assert sep.intermediate["masker"].shape == (2, 2, channels, 700)
    (sep.estimate[:, 0].pow(2).mean() + sep.intermediate["masker"][:, 0].abs().mean()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("length", [1, 15, 16, 17, 301, 1234])
def test_any_length_exactly_t_out_and_residual_accompaniment(length):
    torch.manual_seed(0)
    model = small(audio_channels=2).eval()
    x = torch.randn(1, 2, length)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (1, 2, 2, length)
    torch.testing.assert_close(y.sum(dim=1), x)  # accompaniment = mixture − vocals


def test_vocals_only_and_channels_are_independent():
    torch.manual_seed(0)
    model = small(sources=["vocals"], audio_channels=2).eval()
    x = torch.randn(1, 2, 500)
    with torch.no_grad():
        both = model(x)
        left = model(x[:, :1])
    assert both.shape == (1, 1, 2, 500)
    torch.testing.assert_close(both[:, :, :1], left)


def test_chunked_inference():
    """MaD has no finite receptive field (recurrent, stop per sequence): cross-faded chunks; one
    chunk as long as the song is one pass. (Save/load: tests/sepcore/models/test_contract.py.)"""
    torch.manual_seed(0)
    model = small(iterations=3, tau=1e-4).eval()
    x = torch.randn(1, 1, 2000)
    with torch.no_grad():
        whole = model(x)
    chunked = apply_model(model, x, segment=0.125, overlap=0.25)
    assert chunked.shape == (1, 2, 1, 2000) and torch.isfinite(chunked).all()
    single = apply_model(model, x, segment=1.0)  # 8000 samples: one chunk
    torch.testing.assert_close(single, whole, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("key", "value"), [
    ("sources", ["drums"]), ("sources", ["accompaniment"]), ("sequence_length", 4),
    ("encoder_bins", 34), ("iterations", -1), ("tau", 0.0),
])
def test_bad_config_names_the_key(key, value):
    with pytest.raises(ConfigError) as err:
        small(**{key: value})
    # the sources come from the config's audio block, so that is the key named
    assert err.value.key == ("audio.sources" if key == "sources" else f"model.{key}")


def test_training_steps_reduce_the_loss():
    torch.manual_seed(0)
    model = small(sources=["vocals"])
    x = torch.randn(2, 1, 400)
    target = (0.4 * x)[:, None]  # (B, S, C, T): a constant mask reaches it
    loss_fn = build_loss("gkl")
    tc = SimpleNamespace(loss_weight=1.0, aux_weight=1.0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(6):
        loss = _training_loss(model, x, target, loss_fn, loss_fn, tc)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(np.isfinite(losses))
    assert losses[-1] < 0.7 * losses[0], losses


def test_auxiliary_losses_are_the_paper_regularisers():
    model = small(mask_l1=0.5, denoiser_l2=0.25)
    terms = model.auxiliary_losses(None, None, None)
    w_mask, w_dec = model.mask.linear.weight, model.denoiser.decoder.weight
    torch.testing.assert_close(terms["mask_l1"], 0.5 * torch.diagonal(w_mask).abs().sum())
    torch.testing.assert_close(terms["denoiser_l2"], 0.25 * w_dec.pow(2).sum())
    assert small(mask_l1=0.0, denoiser_l2=0.0).auxiliary_losses(None, None, None) == {}


@pytest.mark.parametrize("name", sorted(PAPER))
def test_parameter_counts_match_the_yaml_comments(name, fast_init):
    path = CONFIGS / f"{name}.yaml"
    text = path.read_text()
    match = re.search(rf"`sep info paper/{name}\.yaml`: ([\d,]+)", text)
    assert match, f"{path} has no measured parameter count"
    written = int(match.group(1).replace(",", ""))
    info = model_info(str(path))
    assert info["params"] == written
    parts = re.search(r"encoder ([\d,]+) \+ decoder ([\d,]+) \+ mask ([\d,]+) \+ denoiser ([\d,]+)",
                      text)
    model = build_model("mad", {})
    for module, count in zip((model.encoder, model.decoder, model.mask, model.denoiser),
                             parts.groups(), strict=True):
        assert count_parameters(module) == int(count.replace(",", ""))
    iterations, tau = PAPER[name]
    assert re.search(rf"^  iterations: {iterations}\b", text, re.M)
    assert float(re.search(r"^  tau: ([\d.e+-]+)", text, re.M).group(1)) == tau


# --- recurrent inference -------------------------------------------------------------------------


def _halve(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x


def test_recurrent_inference_by_hand():
    # S_0 = h/2 and H_i = h/2^(i+1), so MSE(S_{i-1}, H_i) = (h/2^(i+1))^2. With tau = 2e-2:
    # h = 1 gives 1/16, 1/64 < tau: it stops at i = 2 with H_2 = 1/8;
    # h = 4 gives 1, 1/4, 1/16, 1/64 < tau: it stops at i = 4 with H_4 = 1/8.
    h = torch.tensor([1.0, 4.0])[:, None, None].expand(2, 3, 5)  # (N, K, D)
    for iterations in range(11):
        state, steps = recurrent_inference(_halve, h, iterations, 2e-2)
        taken = [min(iterations, 2), min(iterations, 4)]
        want = torch.tensor([1.0 / 2 ** (taken[0] + 1), 4.0 / 2 ** (taken[1] + 1)])
        assert torch.equal(state, want[:, None, None].expand(2, 3, 5)), iterations
        assert steps.tolist() == taken


def test_recurrent_inference_stops_once_below_tau_with_the_model_decoder():
    """The stopping rule on a random decoder: each sequence stops at the first i with
    MSE(S_{i-1}, H_i) < tau and returns that H_i; more iterations never change it.

    The iterates are recomputed here without stopping (S_0, H_1, H_2, ...). Which i that is
    depends on the random weights and the CPU's rounding, so the test derives it from the MSEs it
    measures (and checks they are not within round-off of tau, where either answer is right).
    """
    torch.manual_seed(0)
    model = small(iterations=10)
    scale = torch.tensor([0.1, 1.0, 3.0])[:, None, None]  # sequences that settle at different i
    h = torch.randn(3, 4, 2 * SMALL["encoder_bins"]) * scale  # (N, K, 2F)
    tau = 2e-4
    with torch.no_grad():
        states, errors = [model.decoder(h)], []  # S_0, then H_1, H_2, ... with no stopping
        for _ in range(10):
            states.append(model.decoder(states[-1]))
            errors.append((states[-1] - states[-2]).pow(2).mean(dim=(1, 2)))  # (N,)
        errors = torch.stack(errors)  # (iter, N)
        # well-posed: no MSE within 1e-3 (relative) of tau, far above float32 round-off
        assert ((errors - tau).abs() > 1e-3 * tau).all(), errors
        later, _ = recurrent_inference(model.decoder, h, 10, tau)
        stops = []
        for iterations in range(11):
            got, steps = recurrent_inference(model.decoder, h, iterations, tau)
            for n in range(3):
                below = (errors[:iterations, n] < tau).nonzero()
                stop = int(below[0]) + 1 if len(below) else iterations  # first i with MSE < tau
                assert int(steps[n]) == stop
                # the H at which it stopped (the batch is decoded as a whole in both, but not
                # necessarily with the same kernels: float32 tolerance, far below |H_i - H_i+1|)
                torch.testing.assert_close(got[n], states[stop][n], rtol=1e-5, atol=1e-6)
                if len(below):  # more iterations never change it once tau is met
                    assert float(errors[stop - 1, n]) < tau
                    torch.testing.assert_close(later[n], got[n], rtol=1e-5, atol=1e-6)
            stops = steps.tolist()
    # the test exercises a per-sequence stop: with 10 iterations all three sequences met tau, and
    # not all at the same i (else a batch-wide stop would pass too)
    assert all(stop < 10 for stop in stops) and len(set(stops)) > 1, stops
    for n, stop in enumerate(stops):  # H_stop is distinguishable from H_stop-1 at that tolerance
        assert float((states[stop][n] - states[stop - 1][n]).abs().max()) > 1e-4


def test_iter_zero_is_the_plain_decoder():
    torch.manual_seed(0)
    model = small(iterations=0)
    h = torch.randn(2, 4, 2 * SMALL["encoder_bins"])
    assert torch.equal(model.decode(h), model.decoder(h))
    state, steps = recurrent_inference(model.decoder, h, 0, 1e-3)
    assert torch.equal(state, model.decoder(h)) and steps.tolist() == [0, 0]


# --- generalised KL ------------------------------------------------------------------------------


def test_generalized_kl_closed_form_and_zero():
    y = torch.tensor([1.0, 2.0, 0.0, 3.0], dtype=torch.float64)
    y_hat = torch.tensor([2.0, 1.0, 0.5, 3.0], dtype=torch.float64)
    # Σ y log(y / ŷ) − y + ŷ (0 log 0 = 0): 1·log(1/2) − 1 + 2 + 2·log 2 − 2 + 1 + 0.5 + 0
    want = np.log(0.5) + 1 + 2 * np.log(2) - 1 + 0.5
    got = generalized_kl(y_hat, y, eps=1e-12).sum().item()
    assert got == pytest.approx(want, abs=1e-9)
    assert got == pytest.approx(np.log(2) + 0.5, abs=1e-9)
    assert generalized_kl(y, y).abs().max().item() == 0.0
    assert (generalized_kl(y_hat, y) >= 0).all()


def _np_magnitude(x: np.ndarray) -> np.ndarray:
    """Centred, zero-padded STFT magnitudes with the documented GKL_STFT, in plain numpy."""
    n_fft, win, hop = GKL_STFT["n_fft"], GKL_STFT["win_length"], GKL_STFT["hop"]
    window = np.zeros(n_fft)
    start = (n_fft - win) // 2
    window[start:start + win] = np.hamming(win)
    padded = np.pad(x, n_fft // 2)
    frames = [padded[k * hop:k * hop + n_fft] * window for k in range(1 + len(x) // hop)]
    return np.abs(np.fft.rfft(np.stack(frames, axis=1), axis=0))  # (F, K)


def test_gkl_waveform_loss_matches_reference():
    gen = torch.Generator().manual_seed(0)
    target = torch.randn(2, 2, 1, 1500, generator=gen, dtype=torch.float64)  # (B, S, C, T)
    estimate = 0.5 * target + 0.1 * torch.randn(2, 2, 1, 1500, generator=gen, dtype=torch.float64)
    per_source = []
    for s in range(2):
        values = []
        for b in range(2):
            y = _np_magnitude(target[b, s, 0].numpy())
            y_hat = _np_magnitude(estimate[b, s, 0].numpy())
            d = y * (np.log(y + 1e-6) - np.log(y_hat + 1e-6)) - y + y_hat  # (F, K)
            values.append(d.sum(axis=0).mean())
        per_source.append(np.mean(values))
    weights = [1.0, 3.0]
    want = (per_source[0] + 3 * per_source[1]) / 4
    assert gkl(estimate, target, weights).item() == pytest.approx(want, rel=1e-6)
    assert build_loss("gkl")(target, target).item() == 0.0
