"""Filterbank encodings (thesis ch. 5, Table A.1): closed forms, gradients, pseudo-inverse
reconstruction, every encoding × filterbank × who_is_pinv combination, M1 compatibility and
the analysis helpers."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from sepcore.checkpoint import Checkpoint, save_checkpoint
from sepcore.config import load_config
from sepcore.errors import ConfigError
from sepcore.models import build_model
from sepcore.models.base import count_parameters
from sepcore.models.convtasnet import EncoderConfig
from sepcore.models.filterbanks import (
    ENCODINGS,
    FILTERBANKS,
    PINV_SIDES,
    GammatoneFilterbank,
    SincFilterbank,
    band_edges,
    build_encoding,
    centre_frequencies_and_bandwidths,
    filter_responses,
    sinc_filters,
)

SR = 8000


# --- closed forms against independent numpy references ------------------------------------------


def test_param_sinc_filters_equal_numpy_closed_form():
    """Per band a cosine (ideal band-pass) and a sine (its quadrature) filter, band by band."""
    bank = SincFilterbank(1, 6, 25, 12, SR)
    assert bank.low.shape == bank.band.shape == (3,)  # n_filters = 2 × bands
    f1 = np.array([100.0, 700.0, 2500.0])
    f2 = np.array([400.0, 1900.0, 3900.0])
    with torch.no_grad():  # f1 = f_min + |low|, f2 = f1 + f_min + |band| (normalised)
        bank.low.copy_(torch.tensor(-(f1 / SR - bank.min_frequency)))  # sign must not matter
        bank.band.copy_(torch.tensor((f2 - f1) / SR - bank.min_frequency))
    n = np.arange(25) - 12.0

    def lowpass(f):  # 2 f sinc(2π f n) with n in samples and f in cycles per sample
        x = 2 * np.pi * (f / SR)[:, None] * n
        safe = np.where(x == 0, 1.0, x)
        return 2 * (f / SR)[:, None] * np.where(x == 0, 1.0, np.sin(safe) / safe)

    def sine(f_low, f_high):  # (cos 2π f1 n − cos 2π f2 n) / (π n), 0 at n = 0
        safe = np.where(n == 0, 1.0, n)
        g = (np.cos(2 * np.pi * (f_low / SR)[:, None] * safe)
             - np.cos(2 * np.pi * (f_high / SR)[:, None] * safe)) / (np.pi * safe)
        return np.where(n == 0, 0.0, g)

    hamming = 0.54 - 0.46 * np.cos(2 * np.pi * np.arange(25) / 24)
    got = bank.filters().detach().double().numpy()[:, 0, :]
    np.testing.assert_allclose(got[0::2], (lowpass(f2) - lowpass(f1)) * hamming, atol=1e-6)
    np.testing.assert_allclose(got[1::2], sine(f1, f2) * hamming, atol=1e-6)
    np.testing.assert_allclose(got[1::2], -got[1::2, ::-1], atol=1e-7)  # odd symmetric
    # unit pass-band gain at the centre of the bands wider than the window's resolution, for
    # both filters of a band
    centre = np.repeat((f1[1:] + f2[1:]) / 2, 2)
    gain = np.abs((np.exp(-2j * np.pi * np.outer(centre / SR, np.arange(25))) * got[2:]).sum(1))
    np.testing.assert_allclose(gain, 1.0, atol=0.02)


def test_pmpgtf_filters_equal_numpy_closed_form():
    bank = GammatoneFilterbank(1, 3, 40, 20, SR)
    f = np.array([200.0, 1000.0, 3000.0])
    b = np.array([50.0, 150.0, 400.0])
    phi = np.array([0.0, 0.7, -1.2])
    with torch.no_grad():
        bank.f.copy_(torch.tensor(f / SR))
        bank.b.copy_(torch.tensor(-b / SR))  # |b| is used
        bank.phi.copy_(torch.tensor(phi))
    t = np.arange(1, 41) / SR  # n = 1 .. L (see the module docstring)
    g = t * np.exp(-2 * np.pi * b[:, None] * t) * np.cos(2 * np.pi * f[:, None] * t + phi[:, None])
    expected = g / np.linalg.norm(g, axis=1, keepdims=True)
    got = bank.filters().detach().double().numpy()[:, 0, :]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)


def test_stereo_parameterised_bank_is_one_bank_per_channel():
    bank = GammatoneFilterbank(2, 6, 16, 8, SR)
    w = bank.filters().detach()  # (F, C, L)
    assert torch.count_nonzero(w[0::2, 1]) == 0 and torch.count_nonzero(w[1::2, 0]) == 0
    assert torch.equal(w[0::2, 0], w[1::2, 1])  # same frequency grid on both channels


def test_sinc_cutoffs_stay_ordered_below_nyquist():
    bank = SincFilterbank(1, 32, 16, 8, SR)
    with torch.no_grad():
        bank.low.normal_(std=0.3)
        bank.band.normal_(std=0.3)
    f1, f2 = bank.cutoffs()
    assert torch.all(f1 > 0) and torch.all(f1 < f2) and torch.all(f2 < SR / 2)


# --- pseudo-inverse pairs -------------------------------------------------------------------------


def _snr(x: torch.Tensor, y: torch.Tensor) -> float:
    return float(10 * torch.log10(x.pow(2).sum() / (x - y).pow(2).sum()))


@pytest.mark.parametrize("filterbank", ["conv", "pmpgtf", "param_sinc"])
@pytest.mark.parametrize("who_is_pinv", ["dec", "enc"])
@pytest.mark.parametrize("channels", [1, 2])
def test_pinv_pair_reconstructs_when_overcomplete(filterbank, who_is_pinv, channels):
    """Before the encoder's ReLU (``transform``), an overcomplete (N >= 2·C·L, stride = L/2)
    pseudo-inverse pair is an identity away from the edges (the first/last L - stride samples
    are covered by fewer frames)."""
    torch.manual_seed(0)
    L, stride = 16, 8
    cfg = EncoderConfig(N=2 * channels * L, L=L, stride=stride, who_is_pinv=who_is_pinv,
                        encoding="simple" if filterbank == "conv" else "filterbanks",
                        filterbank=filterbank)
    encoder, decoder = build_encoding(cfg, channels, SR)
    x = torch.randn(3, channels, 100 * stride + L)  # a valid length: (K-1)·stride + L
    with torch.no_grad():
        y = decoder(encoder.transform(x))  # (B, C, T)
        relu_y = decoder(encoder(x))
    assert y.shape == x.shape
    assert _snr(x[..., L:-L], y[..., L:-L]) > 40
    # the ReLU'd latent loses the negative half: the plain pair is no identity
    assert _snr(x[..., L:-L], relu_y[..., L:-L]) < 20


def _relative_error(x: torch.Tensor, y: torch.Tensor) -> float:
    return float((x - y).norm() / x.norm())


@pytest.mark.parametrize("channels", [1, 2])
def test_param_sinc_pinv_pair_reconstructs_random_audio(channels):
    """Cosine + sine filters span a whole frame: analysis → pseudo-inverse synthesis is an
    identity away from the edges. At N = 2·C·L the bank's condition number is about 21, so the
    float32 round trip errs by ~1e-6 relative: 1e-4 leaves two orders of magnitude for any
    CPU's rounding."""
    torch.manual_seed(0)
    L, stride = 16, 8
    cfg = EncoderConfig(N=2 * channels * L, L=L, stride=stride, encoding="filterbanks",
                        filterbank="param_sinc", who_is_pinv="dec")
    encoder, decoder = build_encoding(cfg, channels, SR)
    w = encoder.filters().detach().double().reshape(cfg.N, channels * L)
    assert torch.linalg.matrix_rank(w) == channels * L
    assert torch.linalg.cond(w) < 100
    x = torch.randn(3, channels, 100 * stride + L)
    with torch.no_grad():
        y = decoder(encoder.transform(x))
    assert _relative_error(x[..., L:-L], y[..., L:-L]) < 1e-4


def test_cosine_only_sinc_layout_cannot_reconstruct():
    """Documented limitation of the former layout (cosine filters only, one per band): zero-phase
    filters span only the L/2-dimensional even half of a frame, so no decoder inverts them."""
    torch.manual_seed(0)
    L, stride, bands = 16, 8, 32
    edges = band_edges(bands, SR, "mel")
    w = sinc_filters(edges[:-1], edges[1:] - 1.0, L, SR).float()  # (F, L), as the old bank
    assert torch.linalg.matrix_rank(w.double()) == L // 2
    pinv = torch.linalg.pinv(w).T * (stride / L)  # (F, L) synthesis filters
    x = torch.randn(2, 1, 100 * stride + L)
    with torch.no_grad():
        latent = torch.nn.functional.conv1d(x, w[:, None], stride=stride)  # (B, F, K)
        y = torch.nn.functional.conv_transpose1d(latent, pinv[:, None].contiguous(),
                                                 stride=stride)
    assert _relative_error(x[..., L:-L], y[..., L:-L]) > 0.5


def test_old_cosine_only_checkpoint_fails_with_a_clear_error(tmp_path):
    from sepcore.checkpoint import load_model
    from sepcore.errors import CheckpointError

    params = {"encoder": {"N": 16, "L": 8, "encoding": "filterbanks", "filterbank": "param_sinc"},
              "masker": MASKER, "audio_channels": 1, "sample_rate": SR}
    model = build_model("convtasnet", params)
    state = model.state_dict()
    assert state["encoder.low"].shape == (8,)
    for key in ("encoder.low", "encoder.band", "decoder.low", "decoder.band"):
        state[key] = torch.rand(16)  # the former layout: one cut-off pair per filter
    path = save_checkpoint(tmp_path / "old.safetensors",
                           Checkpoint(config={"model": {"name": "convtasnet", **params}},
                                      model_state=state))
    with pytest.raises(CheckpointError) as err:
        load_model(path)
    message = str(err.value)
    assert str(path) in message and "encoder.low" in message and "cosine-only" in message
    assert "retrain" in message


# --- every combination through both models --------------------------------------------------------

# (encoding, filterbank, who_is_pinv) -> the key the ConfigError must name
INVALID = {
    ("simple", "stft", None): "model.encoder.filterbank",
    ("simple", "stft", "enc"): "model.encoder.filterbank",
    ("simple", "stft", "dec"): "model.encoder.filterbank",
    ("simple", "param_sinc", "enc"): "model.encoder.who_is_pinv",
    ("simple", "pmpgtf", "enc"): "model.encoder.who_is_pinv",
    ("filterbanks", "conv", None): "model.encoder.filterbank",
    ("filterbanks", "conv", "enc"): "model.encoder.filterbank",
    ("filterbanks", "conv", "dec"): "model.encoder.filterbank",
    ("filterbanks", "stft", None): "model.encoder.filterbank",
    ("filterbanks", "stft", "enc"): "model.encoder.filterbank",
    ("filterbanks", "stft", "dec"): "model.encoder.filterbank",
    **{("hybrid", fb, side): "model.encoder.who_is_pinv"
       for fb in FILTERBANKS for side in ("enc", "dec")},
    ("simple", "mel", None): "model.encoder.filterbank",
    ("simple", "mel", "enc"): "model.encoder.filterbank",
    ("simple", "mel", "dec"): "model.encoder.filterbank",
    ("filterbanks", "mel", None): "model.encoder.filterbank",
    ("filterbanks", "mel", "enc"): "model.encoder.filterbank",
    ("filterbanks", "mel", "dec"): "model.encoder.filterbank",
    ("deep", "mel", None): "model.encoder.filterbank",
    ("deep", "mel", "enc"): "model.encoder.filterbank",
    ("deep", "mel", "dec"): "model.encoder.filterbank",
    ("deep", "stft", None): "model.encoder.filterbank",
    ("deep", "stft", "enc"): "model.encoder.filterbank",
    ("deep", "stft", "dec"): "model.encoder.filterbank",
    **{("deep", fb, side): "model.encoder.who_is_pinv"
       for fb in ("conv", "param_sinc", "pmpgtf") for side in ("enc", "dec")},
}
COMBINATIONS = [(e, f, p) for e in ENCODINGS for f in FILTERBANKS for p in PINV_SIDES]
MASKER = {"B": 8, "H": 16, "P": 3, "X": 2, "R": 1}


def _params(model, encoding, filterbank, who_is_pinv, channels, **encoder):
    params = {"encoder": {"N": 16, "L": 8, "encoding": encoding, "filterbank": filterbank,
                          "who_is_pinv": who_is_pinv, "filters": 2, "depth": 2,
                          "num_mels": 16, "n_fft": 64, **encoder},
              "masker": MASKER, "audio_channels": channels, "sample_rate": SR}
    if model == "multiband":
        params["num_bands"] = 2
    return params


def test_invalid_list_is_a_subset_of_the_combinations():
    assert set(INVALID) < set(COMBINATIONS)
    assert len(COMBINATIONS) - len(INVALID) == 21  # valid ones


@pytest.mark.parametrize("encoding,filterbank,who_is_pinv", COMBINATIONS)
def test_every_combination_builds_runs_and_trains_or_names_the_key(encoding, filterbank,
                                                                    who_is_pinv):
    for model_name in ("convtasnet", "multiband"):
        for channels in (1, 2):
            params = _params(model_name, encoding, filterbank, who_is_pinv, channels)
            if (encoding, filterbank, who_is_pinv) in INVALID:
                with pytest.raises(ConfigError) as err:
                    build_model(model_name, params)
                assert err.value.key == INVALID[(encoding, filterbank, who_is_pinv)]
                assert repr(who_is_pinv if "pinv" in err.value.key else filterbank) \
                    in str(err.value)
                continue
            torch.manual_seed(0)
            model = build_model(model_name, params)
            x = torch.randn(2, channels, 203)
            out = model(x)
            assert out.shape == (2, 2, channels, 203) and torch.isfinite(out).all()
            latent = model.encode(torch.nn.functional.pad(x, (0, model.valid_length(203) - 203)))
            assert latent.shape[:2] == (2, 16)
            if encoding in ("simple", "filterbanks"):
                assert (latent >= 0).all()
            out.pow(2).mean().backward()
            learnable = [(n, p) for n, p in model.named_parameters()
                         if n.startswith(("encoder.", "decoder."))]
            assert learnable
            for name, p in learnable:
                assert p.grad is not None and p.grad.abs().sum() > 0, (model_name, name)


@pytest.mark.parametrize("encoder", [{"encoding": "hybrid", "filterbank": "pmpgtf", "filters": 3},
                                     {"encoding": "hybrid", "filterbank": "stft", "filters": 2},
                                     {"encoding": "deep", "filterbank": "conv", "depth": 3}])
def test_receptive_field_covers_wide_and_deep_encodings(encoder):
    """The output's gradient support (the samples it depends on) fits in receptive_field."""
    torch.manual_seed(0)
    params = {"encoder": {"N": 16, "L": 8, **encoder}, "masker": {**MASKER, "norm": "cLN"},
              "audio_channels": 1, "sample_rate": SR}
    model = build_model("convtasnet", params).eval()
    rf = model.receptive_field
    assert rf == model.conv_receptive_field
    x = torch.randn(1, 1, 4 * rf, requires_grad=True)
    t = 2 * rf - (2 * rf) % model.frame_hop
    model(x)[0, :, 0, t].sum().backward()
    support = torch.nonzero(x.grad[0, 0]).squeeze(1)
    assert support.max() - support.min() + 1 <= rf
    assert support.max() - support.min() + 1 > rf // 2


# --- Conv-TasNet compatibility, parameter counts -----------------------------------------------


def test_simple_conv_keeps_m1_parameters_and_keys():
    cfg = load_config("paper/m1.yaml")
    model = build_model(cfg.model_name, cfg.model)
    assert count_parameters(model) == 6_595_120
    state = model.state_dict()
    assert state["encoder.weight"].shape == (256, 2, 20)
    assert state["decoder.weight"].shape == (256, 2, 20)
    assert not [k for k in state if k.startswith(("encoder.", "decoder."))
                and k not in ("encoder.weight", "decoder.weight")]


def test_pinv_shares_parameters_once():
    enc, dec = build_encoding(EncoderConfig(N=32, L=8, who_is_pinv="dec"), 2, SR)
    assert list(dict(dec.named_parameters())) == []
    enc, dec = build_encoding(EncoderConfig(N=32, L=8, encoding="filterbanks",
                                            filterbank="pmpgtf", who_is_pinv="enc"), 2, SR)
    assert list(dict(enc.named_parameters())) == [] and len(list(dec.parameters())) == 3


def test_hybrid_fb_ratio_splits_the_channels():
    cfg = EncoderConfig(N=64, L=8, encoding="hybrid", filterbank="pmpgtf", fb_ratio=0.75)
    encoder, _ = build_encoding(cfg, 2, SR)
    assert encoder.conv[0].num_filters == 16 and encoder.fb[0].num_filters == 48
    only_fb, _ = build_encoding(dataclasses.replace(cfg, fb_ratio=1.0), 2, SR)
    assert len(only_fb.conv) == 0 and only_fb(torch.randn(1, 2, 100)).shape == (1, 64, 24)


@pytest.mark.parametrize("field,value", [("fb_ratio", 1.5), ("filters", 0), ("init_type", "bark"),
                                         ("encoding", "wavelet"), ("filterbank", "mfcc")])
def test_bad_values_name_the_key(field, value):
    params = {"encoder": {"encoding": "hybrid", field: value}}
    with pytest.raises(ConfigError) as err:
        build_model("convtasnet", params)
    assert err.value.key == f"model.encoder.{field}" and repr(value) in str(err.value)


def test_encoder_from_a_checkpoint_and_frozen_through_train_keys(tmp_path):
    """The encoder/decoder of another model come in through train.init_from (+ init_keys) and
    stay fixed through train.frozen; the model config has no file paths."""
    from sepcore.config import TrainConfig
    from sepcore.train import apply_transfer

    small = {"encoder": {"N": 16, "L": 8}, "masker": MASKER, "audio_channels": 2}
    source = build_model("convtasnet", small)
    path = save_checkpoint(tmp_path / "m.safetensors",
                           Checkpoint(config={"model": {"name": "convtasnet"}},
                                      model_state=source.state_dict()))
    parts = ["encoder.*", "decoder.*"]
    model = build_model("convtasnet", small)
    apply_transfer(model, TrainConfig(init_from=str(path), init_keys=parts, frozen=parts))
    assert torch.equal(model.encoder.weight, source.encoder.weight)
    assert torch.equal(model.decoder.weight, source.decoder.weight)
    assert not torch.equal(model.masker.bottleneck.weight, source.masker.bottleneck.weight)
    assert not any(p.requires_grad for p in model.encoder.parameters())
    assert not any(p.requires_grad for p in model.decoder.parameters())
    assert all(p.requires_grad for p in model.masker.parameters())
    with pytest.raises(ConfigError) as err:  # N = 32 does not fit the checkpoint's N = 16
        apply_transfer(build_model("convtasnet", {**small, "encoder": {"N": 32, "L": 8}}),
                       TrainConfig(init_from=str(path), init_keys=parts))
    assert err.value.key == "train.init_from" and "encoder.weight" in str(err.value)


# --- analysis helpers ---------------------------------------------------------------------------


@pytest.mark.parametrize("filterbank", ["param_sinc", "pmpgtf"])
@pytest.mark.parametrize("init_type", ["mel", "uniform"])
def test_centre_frequencies_follow_the_initialisation(filterbank, init_type):
    cfg = EncoderConfig(N=16, L=128, stride=64, encoding="filterbanks", filterbank=filterbank,
                        init_type=init_type)
    encoder, _ = build_encoding(cfg, 1, SR)
    centre, bandwidth = centre_frequencies_and_bandwidths(filter_responses(encoder), SR)
    init = encoder.initial_centres()
    step = 2 if filterbank == "param_sinc" else 1  # sinc: a cosine and a sine filter per band
    assert torch.all(centre[step::step] > centre[:-step:step])
    tolerance = 0.05 * init + 2 * SR / 128  # window main-lobe leakage at low frequencies
    assert torch.all((centre - init).abs() < tolerance), (centre, init)
    assert torch.all(bandwidth > 0)
    if filterbank == "param_sinc":  # both filters of a band have its centre
        assert torch.equal(init[0::2], init[1::2])
    if filterbank == "param_sinc":  # the −3 dB width of a band-pass ≈ f2 − f1 for wide bands
        f1, f2 = encoder.cutoffs()
        wide = (f2 - f1) > 4 * SR / 128
        assert torch.allclose(bandwidth[wide], (f2 - f1)[wide].float(), rtol=0.25)
    if init_type == "mel":  # mel spacing: low bands narrower than high ones
        bands = init[::step]
        assert (bands[1] - bands[0]) < (bands[-1] - bands[-2])


def test_stereo_centres_are_non_decreasing_and_paired():
    encoder, _ = build_encoding(EncoderConfig(N=16, L=128, stride=64, filterbank="pmpgtf"), 2, SR)
    centre, _ = centre_frequencies_and_bandwidths(filter_responses(encoder), SR)
    assert torch.allclose(centre[0::2], centre[1::2])
    assert torch.all(centre[2::2] > centre[0:-2:2])


def test_filter_responses_refuses_nonlinear_encoders():
    encoder, _ = build_encoding(EncoderConfig(N=16, L=8, encoding="hybrid"), 1, SR)
    with pytest.raises(ConfigError) as err:
        filter_responses(encoder)
    assert err.value.key == "model.encoder.encoding"
