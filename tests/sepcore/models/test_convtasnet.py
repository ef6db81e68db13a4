"""Conv-TasNet and multi-band masking: contract, paper sizes, config errors, receptive field."""

from __future__ import annotations

import pytest
import torch

from sepcore.config import load_config
from sepcore.errors import ConfigError
from sepcore.models import available_models, build_model
from sepcore.models.base import count_parameters

SMALL = {"encoder": {"N": 32, "L": 8}, "masker": {"B": 16, "H": 32, "P": 3, "X": 3, "R": 2}}
SMALL_BY_MODEL = {
    "convtasnet": SMALL,
    "multiband": {**SMALL, "num_bands": 2},
}


def small(name, **over):
    params = {k: (dict(v) if isinstance(v, dict) else v) for k, v in SMALL_BY_MODEL[name].items()}
    for key, value in over.items():
        if isinstance(value, dict):
            params.setdefault(key, {}).update(value)
        else:
            params[key] = value
    return build_model(name, params)


@pytest.mark.parametrize("name", sorted(SMALL_BY_MODEL))
@pytest.mark.parametrize("channels,sources", [(1, ["vocals", "accompaniment"]),
                                              (2, ["vocals", "drums", "bass", "other"])])
def test_contract_shapes_any_length(name, channels, sources):
    model = small(name, audio_channels=channels, sources=sources).eval()
    for length in (1, 7, 8, 1000, 1237):
        out = model(torch.randn(2, channels, length))
        assert out.shape == (2, len(sources), channels, length)
        assert torch.isfinite(out).all()


def test_registry_covers_tested_models():
    assert set(SMALL_BY_MODEL) <= set(available_models())


@pytest.mark.parametrize("paper,target", [("m1", 6.6e6), ("m2", 6.58e6), ("m3", 12.97e6),
                                          ("m4", 6.71e6)])
def test_paper_parameter_counts(paper, target):
    cfg = load_config(f"paper/{paper}.yaml")
    model = build_model(cfg.model_name, cfg.model)
    params = count_parameters(model)
    assert abs(params - target) / target <= 0.02, (paper, params, target)
    assert model.audio_channels == 2 and len(model.sources) == 2


@pytest.mark.parametrize("name", sorted(SMALL_BY_MODEL))
def test_one_training_step_reduces_loss_and_reaches_every_parameter(name):
    torch.manual_seed(0)
    model = small(name, audio_channels=1, full_band=True) if name == "multiband" else \
        small(name, audio_channels=1)
    x = torch.randn(4, 1, 2000)
    target = torch.stack([0.3 * x, 0.7 * x], dim=1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(5):
        opt.zero_grad()
        loss = (model(x) - target).abs().mean()
        loss.backward()
        if not losses:
            missing = [n for n, p in model.named_parameters() if p.grad is None]
            assert not missing, missing
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_softmax_masks_partition_the_latent():
    """With softmax masks the sources' latents sum to the mixture latent: estimates sum to the
    decoded mixture (the decoder is linear)."""
    model = small("convtasnet", audio_channels=1, masker={"mask_nonlinear": "softmax"}).eval()
    x = torch.randn(1, 1, 800)
    with torch.no_grad():
        total = model(x).sum(dim=1)  # (B, C, T)
        latent = model.encode(x)
        whole = model.decode(latent.unsqueeze(1))[:, 0]
    assert torch.allclose(total, whole, atol=1e-5)


@pytest.mark.parametrize("kind", ["sigmoid", "relu"])
def test_mask_ranges(kind):
    from sepcore.models.convtasnet import apply_mask_nonlinearity

    masks = apply_mask_nonlinearity(torch.randn(2, 3, 4, 5) * 10, kind)
    assert masks.min() >= 0
    if kind == "sigmoid":
        assert masks.max() <= 1


@pytest.mark.parametrize("norm", ["cLN", "BN"])
def test_receptive_field_is_exact(norm):
    """Changing the input just outside the receptive field leaves an output sample untouched;
    changing it just inside changes it."""
    torch.manual_seed(0)
    model = small("convtasnet", audio_channels=1, masker={"norm": norm}).eval()
    rf = model.receptive_field
    assert rf is not None and rf > model.cfg.encoder.L
    length, hop = 4000, model.frame_hop
    t = 2000 - 2000 % hop  # a sample at a frame start
    x = torch.randn(1, 1, length)
    with torch.no_grad():
        ref = model(x)[..., t]
        far = x.clone()
        far[..., : t - rf - hop] += 1.0
        far[..., t + rf + hop:] += 1.0
        assert torch.allclose(model(far)[..., t], ref, atol=1e-5)
        near = x.clone()
        near[..., t - rf // 4] += 1.0
        assert not torch.allclose(model(near)[..., t], ref, atol=1e-5)


def test_gln_has_global_context():
    assert small("convtasnet").receptive_field is None
    assert small("convtasnet").conv_receptive_field > 0


def test_causal_output_ignores_the_future():
    torch.manual_seed(0)
    model = small("convtasnet", audio_channels=1, masker={"norm": "cLN", "causal": True}).eval()
    x = torch.randn(1, 1, 3000)
    y = x.clone()
    y[..., 1600:] = torch.randn(1, 1, 1400)
    with torch.no_grad():
        # samples decoded only from frames ending before the change are identical
        safe = 1600 - model.cfg.encoder.L
        assert torch.allclose(model(x)[..., :safe], model(y)[..., :safe], atol=1e-5)


def test_skip_path_and_activation_options_build():
    model = small("convtasnet", masker={"skip": 24, "activation": "leakyrelu"})
    n_skip = sum(1 for n, _ in model.named_parameters() if "skip_conv" in n)
    assert n_skip == 6  # one per block (X=3, R=2)
    assert model(torch.randn(1, 2, 500)).shape == (1, 2, 2, 500)


def test_band_separators_see_only_their_band():
    """Without the full-band path, band q's masks depend only on latent band q."""
    torch.manual_seed(0)
    model = small("multiband", audio_channels=1, num_bands=2).eval()
    latent = torch.rand(1, 32, 50)
    with torch.no_grad():
        ref = model.mask_scores(latent)
        changed = latent.clone()
        changed[:, 16:] = torch.rand(1, 16, 50)
        out = model.mask_scores(changed)
    assert torch.allclose(out[:, :, :16], ref[:, :, :16])
    assert not torch.allclose(out[:, :, 16:], ref[:, :, 16:])


@pytest.mark.parametrize("name,params,key", [
    ("convtasnet", {"masker": {"norm": "LN"}}, "model.masker.norm"),
    ("convtasnet", {"masker": {"mask_nonlinear": "tanh"}}, "model.masker.mask_nonlinear"),
    ("convtasnet", {"masker": {"activation": "gelu"}}, "model.masker.activation"),
    ("convtasnet", {"encoder": {"N": 32, "L": 8, "stride": 9}}, "model.encoder"),
    ("multiband", {"num_bands": 3}, "model.num_bands"),
    ("multiband", {"band_split": "diagonal"}, "model.band_split"),
])
def test_bad_model_configs_name_the_key(name, params, key):
    with pytest.raises(ConfigError) as err:
        small(name, **params)
    assert err.value.key == key
    assert key.split(".")[-1] in str(err.value)


def test_unknown_model_key_is_named():
    with pytest.raises(ConfigError, match="masker.depth"):
        build_model("convtasnet", {"masker": {"depth": 3}})


def test_unknown_model_lists_known():
    with pytest.raises(ConfigError, match="convtasnet.*multiband"):
        build_model("tasnet9000", {})


def test_global_layer_norm_is_conv_tasnet_eq_13():
    """gLN by torch's fused group norm equals eq. 13 written out (mean and variance over channels
    and time, per example), with a non-trivial gain and bias."""
    from sepcore.models.convtasnet import GlobalLayerNorm

    torch.manual_seed(0)
    norm = GlobalLayerNorm(6)
    with torch.no_grad():
        norm.gamma.copy_(torch.randn(1, 6, 1))
        norm.beta.copy_(torch.randn(1, 6, 1))
    x = 3.0 + 2.0 * torch.randn(2, 6, 50, dtype=torch.float64)
    mean = x.mean(dim=(1, 2), keepdim=True)
    var = (x - mean).pow(2).mean(dim=(1, 2), keepdim=True)
    expected = norm.gamma * (x - mean) / torch.sqrt(var + 1e-8) + norm.beta
    torch.testing.assert_close(norm.double()(x), expected, rtol=0, atol=1e-12)
