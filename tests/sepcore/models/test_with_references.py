"""Oracles bound to their true sources (``with_references``): chunked inference and training."""

from __future__ import annotations

import pytest
import torch

from sepcore.config import config_from_dict
from sepcore.losses import build_loss
from sepcore.models import build_model
from sepcore.models.oracles import WithReferences, with_references
from sepcore.separate import apply_model
from sepcore.train import _training_loss

RATE = 8000


def _fb_irm(channels: int = 2):
    torch.manual_seed(0)
    return build_model("fb_irm", {"sources": ["a", "b", "c"], "audio_channels": channels,
                                  "sample_rate": RATE,
                                  "encoder": {"N": 16, "L": 16, "stride": 8}}).eval()


def _sources(batch: int, channels: int, length: int, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return 0.5 * torch.randn(batch, 3, channels, length, generator=gen)  # (B, S, C, T)


@pytest.mark.parametrize("channels", [1, 2])
def test_chunked_wrapper_equals_the_oracle_on_the_whole_song(channels):
    model = _fb_irm(channels)
    assert model.receptive_field is not None  # the exact (not cross-faded) regime
    refs = _sources(2, channels, 3 * RATE + 13)
    mixture = refs.sum(dim=1)
    with torch.no_grad():
        whole = model(mixture, references=refs)  # (B, S, C, T), one pass
    runner, inputs = with_references(model, mixture, refs)
    assert inputs.shape == (2, channels * 4, refs.shape[-1])
    # ~10 chunks; a core of 2405 samples, not a multiple of the frame hop: starts get aligned
    chunked = apply_model(runner, inputs, segment=0.3 + 5 / RATE)
    assert chunked.shape == whole.shape
    torch.testing.assert_close(chunked, whole, atol=1e-4, rtol=0)

    # guard: chunks without the receptive field's context do not give the one-pass result
    core = int(0.3 * RATE) // model.frame_hop * model.frame_hop
    with torch.no_grad():
        naive = torch.cat([model(mixture[..., s:s + core], references=refs[..., s:s + core])
                           for s in range(0, mixture.shape[-1], core)], dim=-1)
    assert (naive - whole).abs().max() > 1e-2


def test_unbatched_input_and_the_sources_are_really_used():
    model = _fb_irm(channels=2)
    refs = _sources(1, 2, RATE)[0]  # (S, C, T)
    mixture = refs.sum(dim=0)
    runner, inputs = with_references(model, mixture, refs)
    assert inputs.shape == (2 * 4, RATE)
    estimate = apply_model(runner, inputs, segment=0.25)  # (S, C, T)
    with torch.no_grad():
        whole = model(mixture[None], references=refs[None])[0]
    torch.testing.assert_close(estimate, whole, atol=1e-4, rtol=0)
    swapped = apply_model(*with_references(model, mixture, refs.flip(0)), segment=0.25)
    assert (swapped - estimate).abs().max() > 1e-2


def test_wrapper_forwards_the_oracles_contract_and_parameters():
    model = _fb_irm()
    runner, _ = with_references(model, torch.zeros(1, 2, 10), torch.zeros(1, 3, 2, 10))
    assert isinstance(runner, WithReferences) and runner.oracle is model
    for name in ("sample_rate", "sources", "audio_channels", "frame_hop", "receptive_field"):
        assert getattr(runner, name) == getattr(model, name), name
    assert runner.valid_length(1001) == model.valid_length(1001)
    assert not runner.needs_references
    params = list(model.parameters())
    assert params and all(p is q for p, q in zip(runner.parameters(), params, strict=True))


def test_plain_models_pass_through_and_bad_references_are_refused():
    plain = build_model("convtasnet", {"sample_rate": RATE, "audio_channels": 1,
                                       "encoder": {"N": 16, "L": 8},
                                       "masker": {"B": 8, "H": 16, "X": 2, "R": 1}})
    mixture = torch.randn(1, 1, 100)
    runner, inputs = with_references(plain, mixture, None)
    assert runner is plain and inputs is mixture
    oracle = _fb_irm()
    with pytest.raises(ValueError, match="FBIRM is an oracle"):
        with_references(oracle, torch.randn(1, 2, 100), None)
    with pytest.raises(ValueError, match=r"must be the 3 true sources.*got \(1, 2, 3, 100\)"):
        with_references(oracle, torch.randn(1, 2, 100), torch.randn(1, 2, 3, 100))
    with pytest.raises(ValueError, match="with_references"):
        apply_model(oracle, torch.randn(1, 2, 100))
    with pytest.raises(ValueError, match="stacked"):
        WithReferences(oracle)(torch.randn(1, 2, 100))


def test_training_loss_of_an_oracle_is_the_loss_of_its_references_call():
    model = _fb_irm(channels=1).train()
    targets = _sources(4, 1, 2000)
    mixture = targets.sum(dim=1)
    tc = config_from_dict({"model": {"name": "fb_irm"},
                           "train": {"loss_weight": 0.5}}).train
    loss_fn = build_loss("l1", None)
    loss = _training_loss(model, mixture, targets, loss_fn, loss_fn, tc)
    expected = 0.5 * loss_fn(model(mixture, references=targets), targets)
    torch.testing.assert_close(loss, expected, atol=0, rtol=1e-5)
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters()
               if p.requires_grad)
