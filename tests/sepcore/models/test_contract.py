"""The call contract, checked for every registered model (``sepcore.models.available_models()``).

For each model, built small: mono and stereo forward passes give ``(batch, sources, channels,
time)`` at the input length (and ``separate`` agrees with ``forward`` where the model has
intermediate outputs); a checkpoint saved and loaded gives bit-identical outputs; and a model that
claims a finite ``receptive_field`` (the context ``sepcore.separate`` relies on for exact chunked
inference) has an output sample that does not move when the input changes beyond it on both sides,
but does move when the input changes inside it. Oracle models (``needs_references``) get the true
sources through ``forward(mixture, references=...)`` and are perturbed through them.

A newly registered model is picked up automatically: it runs on its dataclass defaults when those
are small, and otherwise fails until it gets an entry in ``SMALL`` below.
"""

from __future__ import annotations

import copy

import pytest
import torch

from sepcore.checkpoint import load_model, save_model
from sepcore.models import available_models, build_model
from sepcore.models.base import Separation, count_parameters

# Per-model overrides of the dataclass defaults: tiny sizes so every model runs in well under a
# second on a CPU, and finite-context options (cLN/BN norms, no LSTM) where the model has them so
# that the receptive-field claim is exercised. Models missing here run on their defaults.
SMALL: dict[str, dict] = {
    "convtasnet": {"sample_rate": 8000, "encoder": {"N": 16, "L": 8},
                   "masker": {"B": 8, "H": 16, "X": 2, "R": 2, "norm": "cLN"}},
    "multiband": {"sample_rate": 8000, "num_bands": 2, "encoder": {"N": 16, "L": 8},
                  "masker": {"B": 8, "H": 16, "X": 2, "R": 1, "norm": "cLN"}},
    "fb_irm": {"sample_rate": 8000, "encoder": {"N": 16, "L": 8}},
    "htmd": {"sample_rate": 8000, "encoder": {"N": 16, "L": 16, "stride": 8},
             "masker": {"B": 8, "H": 16, "skip": 8, "X": 2, "R": 1},
             "denoiser": {"num_layers": 3, "num_filters": 4, "bottleneck_lstm_layers": 0}},
    "waveunet": {"sample_rate": 8000, "unet": {"num_layers": 3, "num_filters": 4}},
    "unet": {"sample_rate": 8000, "stft": {"n_fft": 256, "hop": 192, "patch_frames": 16},
             "channels": [4, 8]},
    "fusionnet": {"sample_rate": 8000, "stft": {"n_fft": 256, "hop": 192, "patch_frames": 16},
                  "channels": [4, 8]},
    "mad": {"sample_rate": 8000, "stft": {"n_fft": 64, "win_length": 63, "hop": 16},
            "encoder_bins": 12, "sequence_length": 8, "context": 2},
    "openunmix": {"sample_rate": 8000, "n_fft": 256, "hop": 64, "bandwidth": 3000.0,
                  "hidden_size": 8, "nb_layers": 2},
    "metatasnet": {"sample_rate": 16000, "stages": [8000, 16000],
                   "encoder": {"N": 16, "L": 8, "stride": 4, "filters": 2},
                   "masker": {"B": 8, "H": 8, "skip": 8, "X": 2, "R": 1},
                   "embedding_dim": 4, "generator_dim": 3},
}
# A model without a SMALL entry runs on its defaults only if they are at most this big.
MAX_DEFAULT_PARAMS = 100_000
MODELS = available_models()


pytestmark = pytest.mark.usefixtures("one_thread")


def build_small(name: str, channels: int):
    """Model ``name`` from its SMALL entry (or small defaults), seeded, in eval mode."""
    if name in SMALL:
        params = copy.deepcopy(SMALL[name])
    else:
        params = {}
        size = count_parameters(build_model(name, {}))
        if size > MAX_DEFAULT_PARAMS:
            pytest.fail(f"model {name!r} is registered but has no entry in SMALL in "
                        f"{__file__}, and its defaults have {size:,} parameters (more than "
                        f"{MAX_DEFAULT_PARAMS:,}): add a small CPU configuration for it to SMALL")
    params["audio_channels"] = channels
    torch.manual_seed(0)
    return build_model(name, params).eval()


def inputs(model, length: int, batch: int = 2, seed: int = 1):
    """A deterministic mixture (B, C, T) and, for oracles, its true sources (B, S, C, T)."""
    gen = torch.Generator().manual_seed(seed)
    sources = 0.5 * torch.randn(batch, len(model.sources), model.audio_channels, length,
                                generator=gen)
    return sources.sum(dim=1), sources


def run(model, mixture, sources):
    with torch.no_grad():
        if getattr(model, "needs_references", False):
            return model(mixture, references=sources)
        return model(mixture)


def test_small_configs_name_registered_models():
    assert set(SMALL) <= set(MODELS), sorted(set(SMALL) - set(MODELS))


@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("name", MODELS)
def test_output_shape_contract(name, channels):
    model = build_small(name, channels)
    assert model.audio_channels == channels
    for length in (1, 1001, 3 * model.frame_hop + 7):
        mixture, sources = inputs(model, length)
        out = run(model, mixture, sources)
        assert isinstance(out, torch.Tensor), (name, type(out))
        assert out.shape == (2, len(model.sources), channels, length), (name, length, out.shape)
        assert torch.isfinite(out).all(), (name, length)
        if getattr(model, "has_intermediate", False):
            with torch.no_grad():
                sep = model.separate(mixture)
            assert isinstance(sep, Separation)
            assert torch.equal(sep.estimate, out), name
            for key, estimate in sep.intermediate.items():
                assert estimate.shape == out.shape, (name, key, estimate.shape)


@pytest.mark.parametrize("name", MODELS)
def test_checkpoint_roundtrip_gives_identical_output(name, tmp_path):
    model = build_small(name, channels=2)
    mixture, sources = inputs(model, 2000)
    model.train()
    with torch.no_grad():  # moves norm layers' running statistics off their defaults
        run(model, mixture, sources)
    model.eval()
    path = save_model(tmp_path / f"{name}.safetensors", name, model)
    loaded, loaded_cfg = load_model(path)
    assert loaded_cfg.model_name == name and loaded_cfg.model == model.cfg
    assert not loaded.training
    assert torch.equal(run(loaded, mixture, sources), run(model, mixture, sources)), name


@pytest.mark.parametrize("name", MODELS)
def test_declared_receptive_field_holds(name):
    """Outside ``receptive_field`` (plus a frame hop) on both sides of a frame-aligned sample the
    input does not reach it; the quarter of it just before the sample does (the claim may be a
    conservative bound, so no single sample inside it is required to matter)."""
    model = build_small(name, channels=1)
    rf, hop = model.receptive_field, model.frame_hop
    if rf is None:
        pytest.skip(f"{name} claims no finite receptive field with this configuration")
    assert rf > 0
    t = (rf + 2 * hop) // hop * hop  # frame-aligned, with rf + hop of context before it
    length = t + rf + 2 * hop + 1
    mixture, sources = inputs(model, length, batch=1)
    ref = run(model, mixture, sources)[..., t]

    far = sources.clone()
    far[..., : t - rf - hop] += 1.0
    far[..., t + rf + hop + 1:] += 1.0
    moved = run(model, far.sum(dim=1), far)[..., t]
    assert torch.allclose(moved, ref, rtol=0, atol=1e-5), (name, (moved - ref).abs().max())

    near = sources.clone()
    near[..., t - max(1, rf // 4): t] += 1.0
    moved = run(model, near.sum(dim=1), near)[..., t]
    assert not torch.allclose(moved, ref, rtol=0, atol=1e-5), name
