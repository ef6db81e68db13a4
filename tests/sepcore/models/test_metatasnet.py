"""Meta-TasNet (Samuel et al. 2020; thesis §3.2.2): contract, generated per-instrument weights,
the multi-rate cascade, the auxiliary loss terms and paper sizes."""

from __future__ import annotations

import math
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import sepcore
from sepcore.errors import ConfigError
from sepcore.info import model_info
from sepcore.losses import neg_sisdr
from sepcore.models import available_models, build_model
from sepcore.models.metatasnet import (
    MetaTasNet,
    latent_dissimilarity,
    latent_similarity,
    resample,
)
from sepcore.train import _training_loss

CONFIGS = Path(sepcore.__file__).parent / "configs" / "paper"
SOURCES = ["drums", "bass", "other", "vocals"]
SMALL = {
    "sample_rate": 16000, "stages": [8000, 16000], "sources": SOURCES,
    "encoder": {"N": 16, "L": 8, "stride": 4, "filters": 2},
    "masker": {"B": 8, "H": 8, "skip": 8, "P": 3, "X": 2, "R": 1},
    "embedding_dim": 4, "generator_dim": 3,
}
WEIGHTS = ("stage_weight", "reconstruction_weight", "dissimilarity_weight", "similarity_weight")


pytestmark = pytest.mark.usefixtures("one_thread")


def small(**over) -> MetaTasNet:
    params = {k: (dict(v) if isinstance(v, dict) else v) for k, v in SMALL.items()}
    params.update(over)
    return build_model("metatasnet", params)


def test_registered_and_builds_with_defaults():
    assert "metatasnet" in available_models()
    model = small()
    assert isinstance(model, MetaTasNet) and len(model.stages) == 2
    assert model.has_intermediate and model.sources == SOURCES


@pytest.mark.parametrize("channels", [1, 2])
def test_forward_backward_mono_and_stereo(channels):
    torch.manual_seed(0)
    model = small(audio_channels=channels)
    x = torch.randn(2, channels, 3000)
    out = model(x)
    assert out.shape == (2, 4, channels, 3000) and torch.isfinite(out).all()
    targets = torch.randn(2, 4, channels, 3000)
    tc = SimpleNamespace(loss_weight=1.0, aux_weight=0.0)
    _training_loss(model, x, targets, neg_sisdr, neg_sisdr, tc).backward()
    # with a skip path the last block's residual conv feeds nothing (as in any skip-path TCN)
    last_res = f"blocks.{len(model.stages[0].masker._template[0].blocks) - 1}.res_conv.weight"
    unused = {f"stages.{k}.masker.generators.{stage.masker.names.index(last_res)}."
              for k, stage in enumerate(model.stages)}
    for name, p in model.named_parameters():
        if any(name.startswith(u) for u in unused):
            continue
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


@pytest.mark.parametrize("over", [{}, {"sample_rate": 11025, "stages": [4000, 8000]},
                                  {"stages": [8000]}])
def test_any_length_exactly_t_out(over):
    model = small(**over).eval()
    rate = model.sample_rate
    with torch.no_grad():
        for length in (1, 1000, 3 * rate + 17):
            out = model(torch.randn(1, 2, length))
            assert out.shape == (1, 4, 2, length)
            assert torch.isfinite(out).all()


def test_stage_lengths_rates_and_frames_coincide():
    model = small(sample_rate=11025, stages=[4000, 8000])
    sep = model.separate(torch.randn(1, 2, 5000))
    first, second = sep.stages
    assert (first.rate, second.rate) == (4000, 8000)
    assert first.length == math.ceil(5000 * 4000 / 11025)
    assert second.length == math.ceil(5000 * 8000 / 11025)
    assert first.masked.shape[-1] == second.masked.shape[-1]  # same frames K at both rates
    assert second.masked.shape[2] == 2 * first.masked.shape[2]  # N doubles with the rate
    assert sep.intermediate == {}
    assert model.frame_hop == 441  # 4 · 11025 / 4000 · (4000 / gcd) -> whole samples


def test_training_steps_reduce_the_loss():
    torch.manual_seed(0)
    model = small(audio_channels=1, sources=["a", "b"])
    t = torch.arange(4000) / 16000
    low = torch.sin(2 * math.pi * 300 * t) * torch.rand(4, 1, 1)  # (B, 1, T)
    high = torch.sin(2 * math.pi * 5000 * t) * torch.rand(4, 1, 1)
    target = torch.stack([low, high], dim=1)  # (B, S, C, T)
    mixture = target.sum(dim=1)
    tc = SimpleNamespace(loss_weight=1.0, aux_weight=0.0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(10):
        loss = _training_loss(model, mixture, target, neg_sisdr, neg_sisdr, tc)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0] - 1.0, losses


def test_trainer_adds_the_auxiliary_terms():
    torch.manual_seed(0)
    model = small()
    x, target = torch.randn(2, 2, 2000), torch.randn(2, 4, 2, 2000)
    tc = SimpleNamespace(loss_weight=1.0, aux_weight=0.0)
    with torch.no_grad():
        total = _training_loss(model, x, target, neg_sisdr, neg_sisdr, tc)
        sep = model.separate(x)
        main = neg_sisdr(sep.estimate, target)
        extra = sum(model.auxiliary_losses(sep, x, target).values())
    assert torch.allclose(total, main + extra, atol=1e-4)


def test_per_instrument_parameters_differ_and_gradients_reach_the_generator():
    torch.manual_seed(0)
    # no skip path: every tensor of the template TCN then feeds the output
    model = small(masker={**SMALL["masker"], "skip": 0})
    for stage in model.stages:
        params = stage.masker.instrument_parameters()
        assert len(params) == 4
        for name in stage.masker.names:
            for s in range(1, 4):
                assert not torch.allclose(params[0][name], params[s][name]), name
    model(torch.randn(1, 2, 2000)).square().mean().backward()
    for stage in model.stages:
        masker = stage.masker
        assert masker.embedding.weight.grad is not None
        assert masker.embedding.weight.grad.abs().sum(dim=1).gt(0).all()  # every instrument
        for gen in masker.generators:
            assert gen.bottleneck.weight.grad.abs().sum() > 0
            assert gen.output.weight.grad.abs().sum() > 0
    # the template TCN holds no trainable state of its own
    names = [n for n, _ in model.named_parameters()]
    assert not any("_template" in n for n in names)


def test_generated_tensors_start_at_the_template_scale():
    torch.manual_seed(0)
    masker = small().stages[0].masker
    params = masker.instrument_parameters()[0]
    template = dict(masker._template[0].named_parameters())
    for name, tensor in params.items():
        if tensor.numel() > 16 and "weight" in name and "norm" not in name:
            ratio = tensor.std() / template[name].std()
            assert 0.5 < ratio < 3.0, (name, float(ratio))


def test_auxiliary_terms_finite_signed_and_follow_their_weights():
    torch.manual_seed(0)
    model = small()
    x, target = torch.randn(3, 2, 2000), torch.randn(3, 4, 2, 2000)
    target[0, 1] = 0.0  # a silent source is left out of the latent terms
    with torch.no_grad():
        sep = model.separate(x)
        terms = model.auxiliary_losses(sep, x, target)
    expected = {"stage_8000", "reconstruction_8000", "reconstruction_16000",
                "dissimilarity_8000", "dissimilarity_16000", "similarity_8000",
                "similarity_16000"}
    assert set(terms) == expected  # no stage term for the last stage (the trainer's loss)
    assert all(torch.isfinite(v) and v.dim() == 0 for v in terms.values())
    for name, value in terms.items():
        if name.startswith(("dissimilarity", "similarity")):
            assert value >= 0, name
    prefix = {"stage_weight": "stage", "reconstruction_weight": "reconstruction",
              "dissimilarity_weight": "dissimilarity", "similarity_weight": "similarity"}
    for weight in WEIGHTS:
        before = getattr(model.cfg, weight)
        setattr(model.cfg, weight, 2 * before)
        with torch.no_grad():
            doubled = model.auxiliary_losses(sep, x, target)
        setattr(model.cfg, weight, 0.0)
        with torch.no_grad():
            off = model.auxiliary_losses(sep, x, target)
        setattr(model.cfg, weight, before)
        for name in terms:
            if name.startswith(prefix[weight] + "_"):
                assert torch.allclose(doubled[name], 2 * terms[name]), name
                assert name not in off
            else:
                assert torch.equal(doubled[name], terms[name]), (weight, name)


def test_latent_terms_closed_forms():
    z = torch.rand(2, 3, 5, 4)  # (B, S, N, K)
    active = torch.ones(2, 3)
    same = z[:, :1].expand(-1, 3, -1, -1)
    assert torch.allclose(latent_dissimilarity(same, active), torch.tensor(1.0))
    orthogonal = torch.zeros(1, 2, 2, 1)
    orthogonal[0, 0, 0], orthogonal[0, 1, 1] = 1.0, 1.0
    assert torch.allclose(latent_dissimilarity(orthogonal, torch.ones(1, 2)), torch.tensor(0.0))
    assert torch.allclose(latent_similarity(z[:1].expand(2, -1, -1, -1), active),
                          torch.tensor(1.0))
    assert torch.allclose(latent_similarity(torch.cat([z[:1], -z[:1]]), active),
                          torch.tensor(-1.0))
    assert latent_dissimilarity(z, torch.zeros(2, 3)) == 0


def test_resample_matches_a_sine_and_lengths():
    t = torch.arange(44100, dtype=torch.float64) / 44100
    x = torch.sin(2 * math.pi * 440 * t).float()
    y = resample(x, 44100, 8000)
    assert y.shape == (8000,)
    ref = torch.sin(2 * math.pi * 440 * torch.arange(8000, dtype=torch.float64) / 8000).float()
    assert (y - ref)[200:-200].abs().max() < 1e-3
    assert resample(torch.randn(2, 3, 7), 11025, 4000).shape == (2, 3, math.ceil(7 * 4000 / 11025))
    assert torch.equal(resample(x, 8000, 8000), x)


@pytest.mark.parametrize("over,key", [
    ({"stages": [8000, 12000]}, "model.stages"),
    ({"stages": []}, "model.stages"),
    ({"masker": {"B": 8, "H": 8, "norm": "BN"}}, "model.masker.norm"),
    ({"similarity_weight": -1.0}, "model.similarity_weight"),
])
def test_config_errors_name_the_key(over, key):
    with pytest.raises(ConfigError) as info:
        small(**over)
    assert info.value.key == key


@pytest.mark.parametrize("name,stages", [("metatasnet", 3), ("metatasnet_8k", 1)])
def test_parameter_counts_match_the_yaml_comments(name, stages):
    path = CONFIGS / f"{name}.yaml"
    match = re.search(rf"`sep info paper/{name}\.yaml`: ([\d,]+)", path.read_text())
    assert match, f"{path} has no measured parameter count"
    info = model_info(str(path))
    assert info["params"] == int(match.group(1).replace(",", ""))
    assert info["model"] == "metatasnet" and info["sources"] == SOURCES


