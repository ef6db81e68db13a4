"""HTMD-Net and Wave-U-Net: sizes, contract, checkpoints, deep supervision, training.

The paper configurations are those of the HTMD-Net paper (Garoufis, Zlatintsi & Maragos,
"HTMD-Net: A Hybrid Masking-Denoising Approach to Time-Domain Monaural Singing Voice Separation",
EUSIPCO 2021).
"""

from __future__ import annotations

import pytest
import torch

from sepcore.checkpoint import load_model
from sepcore.config import TrainConfig, config_from_dict, load_config
from sepcore.errors import ConfigError
from sepcore.losses import build_loss
from sepcore.models import build_model
from sepcore.models.base import count_parameters
from sepcore.models.htmd import HTMDNet
from sepcore.separate import apply_model
from sepcore.train import _training_loss, fit

PAPER_RATE = 22050  # the paper: MUSDB18 downmixed to mono, resampled to 22.05 kHz
SMALL_UNET = {"num_layers": 4, "num_filters": 4}
SMALL_HTMD = {
    "encoder": {"N": 32, "L": 16, "stride": 8},
    "masker": {"B": 16, "H": 32, "skip": 16, "P": 3, "X": 3, "R": 1},
    "denoiser": {"num_layers": 4, "num_filters": 4, "bottleneck_lstm_layers": 1},
}


def small(name: str, **over):
    base = {"waveunet": {"unet": dict(SMALL_UNET)}, "htmd": {k: dict(v) for k, v in
                                                            SMALL_HTMD.items()}}[name]
    for key, value in over.items():
        if isinstance(value, dict):
            base.setdefault(key, {}).update(value)
        else:
            base[key] = value
    return build_model(name, {"sample_rate": 8000, **base})


@pytest.fixture(scope="module")
def paper_models():
    models = {}
    for paper in ("htmd", "convtasnet_star", "waveunet"):
        cfg = load_config(f"paper/{paper}.yaml")
        torch.manual_seed(0)
        models[paper] = (cfg, build_model(cfg.model_name, cfg.model).eval())
    return models


# --- paper configurations (HTMD-Net paper, runtime/parameter table) ---------------------------


@pytest.mark.parametrize("paper,target", [("htmd", 4.5e6), ("convtasnet_star", 5.5e6),
                                          ("waveunet", 10.3e6)])
def test_paper_parameter_counts(paper, target, paper_models):
    cfg, model = paper_models[paper]
    params = count_parameters(model)
    assert abs(params - target) / target <= 0.03, (paper, params, target)
    assert model.sample_rate == PAPER_RATE and model.audio_channels == 1
    assert model.sources == ["vocals"] and cfg.data.targets == ["vocals"]


def test_htmd_paper_structure(paper_models):
    """The HTMD-Net paper's "Network Parameters": R=1, X=9, BN, LeakyReLU; halved Wave-U-Net with
    12 blocks and an LSTM in the bottleneck; the loss weights of the chosen table row."""
    cfg, model = paper_models["htmd"]
    masker = model.cfg.masker
    assert (masker.R, masker.X, masker.norm, masker.activation) == (1, 9, "BN", "leakyrelu")
    _, unet = paper_models["waveunet"]
    assert model.cfg.denoiser.num_layers == 12 == unet.cfg.unet.num_layers
    assert 2 * model.cfg.denoiser.num_filters == unet.cfg.unet.num_filters
    assert isinstance(model.denoising.bottleneck.lstm, torch.nn.LSTM)
    tc = cfg.train
    assert (tc.aux_loss, tc.aux_weight, tc.loss, tc.loss_weight) == ("mse", 1.0, "l1", 0.1)


@pytest.mark.parametrize("paper", ["htmd", "convtasnet_star", "waveunet"])
def test_paper_models_shapes_at_paper_input(paper, paper_models):
    """One second of mono 22.05 kHz audio (the paper gives no chunk size)."""
    _, model = paper_models[paper]
    length = PAPER_RATE
    with torch.no_grad():
        out = model(torch.randn(1, 1, length))
    assert out.shape == (1, 1, 1, length)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("paper", ["htmd", "waveunet"])
def test_paper_models_any_length(paper, paper_models):
    _, model = paper_models[paper]
    for length in (1, 1000, 3 * PAPER_RATE + 17):
        with torch.no_grad():
            out = model(torch.randn(1, 1, length))
        assert out.shape == (1, 1, 1, length), (paper, length)
        assert torch.isfinite(out).all()


def test_htmd_separate_returns_the_masking_estimate():
    torch.manual_seed(0)
    model = small("htmd").eval()
    x = torch.randn(1, 1, 5000)
    with torch.no_grad():
        sep = model.separate(x)
        assert torch.equal(sep.estimate, model(x))
        assert torch.equal(sep.intermediate["masking"], model.masking(x))
    assert model.has_intermediate and set(sep.intermediate) == {"masking"}
    assert not torch.allclose(sep.estimate, sep.intermediate["masking"])


# --- Wave-U-Net geometry -------------------------------------------------------------------------


@pytest.mark.parametrize("padding", ["same", "valid"])
@pytest.mark.parametrize("upsampling", ["linear", "learned"])
def test_waveunet_small_any_length(padding, upsampling):
    model = small("waveunet", audio_channels=2, sources=["vocals", "drums"],
                  unet={"padding": padding, "upsampling": upsampling}).eval()
    for length in (1, 15, 16, 17, 1000, 1237):
        with torch.no_grad():
            out = model(torch.randn(2, 2, length))
        assert out.shape == (2, 2, 2, length)


@pytest.mark.parametrize("padding", ["same", "valid"])
def test_waveunet_receptive_field_and_exact_chunking(padding):
    """Gradients of one output sample vanish beyond half the declared span; chunked inference
    (exact regime, windows aligned to frame_hop = 2**L) equals one pass."""
    torch.manual_seed(0)
    model = small("waveunet", unet={"padding": padding, "upsampling": "learned"}).eval()
    for layer in model.unet.upsample:
        torch.nn.init.normal_(layer.weight)
    rf, hop = model.receptive_field, model.frame_hop
    assert rf is not None and hop == 16
    x = torch.randn(1, 1, 6000, requires_grad=True)
    t = 3001
    model(x)[..., t].sum().backward()
    depends = (x.grad[0, 0] != 0).nonzero().flatten()
    assert t - depends.min() <= rf // 2 and depends.max() - t <= rf // 2
    assert depends.max() - depends.min() > rf // 3  # not a trivially loose bound
    with torch.no_grad():
        full = model(x.detach())
    chunked = apply_model(model, x.detach(), segment=0.1)
    assert torch.allclose(full, chunked, atol=1e-5)


def test_htmd_receptive_field_unbounded_with_lstm_finite_without():
    assert small("htmd").receptive_field is None
    no_lstm = small("htmd", masker={"norm": "BN"}, denoiser={"bottleneck_lstm_layers": 0})
    assert no_lstm.receptive_field == (no_lstm.masking.receptive_field
                                       + no_lstm.denoising.receptive_field)
    assert small("htmd", masker={"norm": "gLN"},
                 denoiser={"bottleneck_lstm_layers": 0}).receptive_field is None
    assert small("htmd").valid_length(100) % 16 == 0


@pytest.mark.parametrize("name,params,key", [
    ("waveunet", {"unet": {"upsampling": "nearest"}}, "model.unet.upsampling"),
    ("waveunet", {"unet": {"padding": "reflect"}}, "model.unet.padding"),
    ("waveunet", {"unet": {"down_kernel": 14}}, "model.unet.down_kernel"),
    ("htmd", {"denoiser": {"output_activation": "relu"}}, "model.denoiser.output_activation"),
    ("htmd", {"masker": {"norm": "LN"}}, "model.masker.norm"),
])
def test_bad_configs_name_the_key(name, params, key):
    with pytest.raises(ConfigError) as err:
        small(name, **params)
    assert err.value.key == key


# --- deep supervision (HTMD-Net paper: β·L_a + α·L_d) ----------------------------------------


def _masking_grads(model, mixture, targets, tc) -> list[torch.Tensor]:
    model.zero_grad(set_to_none=True)
    loss = _training_loss(model, mixture, targets, build_loss(tc.loss),
                          build_loss(tc.aux_loss or tc.loss), tc)
    loss.backward()
    # the TCN's last residual conv feeds nothing when skip paths are on: its grad stays None
    return [torch.zeros_like(p) if p.grad is None else p.grad.clone()
            for p in model.masking.parameters()]


def test_aux_weight_changes_the_masking_gradient_by_the_aux_term():
    torch.manual_seed(0)
    model = small("htmd").train()
    mixture = torch.randn(2, 1, 2000)
    targets = 0.5 * mixture.unsqueeze(1)  # (B, S=1, C, T)
    alpha, beta = 1.0, 0.5
    base = dict(loss="l1", loss_weight=alpha, aux_loss="mse")
    g0 = _masking_grads(model, mixture, targets, TrainConfig(**base, aux_weight=0.0))
    g5 = _masking_grads(model, mixture, targets, TrainConfig(**base, aux_weight=beta))
    assert any(not torch.allclose(a, b) for a, b in zip(g0, g5, strict=True))

    params = list(model.masking.parameters())
    # β = 0: only the final-estimate path reaches the masking network
    final = alpha * build_loss("l1")(model(mixture), targets)
    only_final = torch.autograd.grad(final, params, allow_unused=True, materialize_grads=True)
    for a, b in zip(g0, only_final, strict=True):
        assert torch.allclose(a, b, atol=1e-7)
    # β > 0 adds exactly β × the gradient of L_a(intermediate)
    aux = beta * build_loss("mse")(model.masking(mixture), targets)
    aux_grads = torch.autograd.grad(aux, params, allow_unused=True, materialize_grads=True)
    for a, b, c in zip(g5, g0, aux_grads, strict=True):
        assert torch.allclose(a, b + c, atol=1e-6)
    assert any(c.abs().sum() > 0 for c in aux_grads)


# --- one trainer run end to end -------------------------------------------------------------------


def test_fit_trains_a_shrunk_htmd(synth_root, cache_dir, tmp_path):
    cfg = config_from_dict({
        "model": {"name": "htmd", **SMALL_HTMD},
        "audio": {"sample_rate": 8000, "channels": 1, "sources": ["vocals"]},
        "data": {"root": str(synth_root), "segment": 1.0, "samples_per_track": 4,
                 "valid_segment": 4.0, "cache_dir": str(cache_dir)},
        "train": {"epochs": 1, "batch_size": 2, "lr": 1e-3, "steps_per_epoch": 2,
                  "loss": "l1", "loss_weight": 0.1, "aux_loss": "mse", "aux_weight": 1.0,
                  "out_dir": str(tmp_path / "htmd"), "progress": False, "seed": 0,
                  "early_stop": 0},
        "eval": {"segment": 2.0},
    })
    result = fit(cfg)
    assert result.epochs_run == 1 and result.global_step == 2
    metrics = result.history[-1]
    assert torch.isfinite(torch.tensor([metrics["train_loss"], metrics["valid_loss"],
                                        metrics["valid_sisdr_vocals"]])).all()
    model, loaded_cfg = load_model(result.best_checkpoint)
    assert isinstance(model, HTMDNet) and loaded_cfg.train.aux_weight == 1.0
    with torch.no_grad():
        assert model(torch.randn(1, 1, 8000)).shape == (1, 1, 1, 8000)
