"""Meta-TasNet's encoder/decoder (Samuel et al., ICASSP 2020; reference code
pfnet-research/meta-tasnet ``model/encoder.py``, ``spectrogram.py``, ``decoder.py``) as
``encoding: hybrid, filterbank: mel``, and the multi-band masking paper's S1/S2 rows built on it
(Papantonakis et al., EUSIPCO 2022, Table 1: 7.32 M and 7.31 M parameters)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

import sepcore
from sepcore.config import load_config
from sepcore.models import build_model
from sepcore.models.base import count_parameters
from sepcore.models.convtasnet import EncoderConfig
from sepcore.models.filterbanks import (
    MelBranch,
    MetaTasNetDecoder,
    MetaTasNetEncoder,
    build_encoding,
    frozen_statistics,
)

CONFIGS = Path(sepcore.__file__).parent / "configs" / "paper"


def _reference_count(N: int, L: int, filters: int, channels: int, n_fft: int, mels: int) -> int:
    """Encoder + decoder parameters of the reference layout, written out from its code."""
    kernels = [L * 2**i for i in range(filters)]
    bins = n_fft // 2 + 1
    convs = sum(N // 4 * channels * k for k in kernels)
    spectrogram = 2 * bins + bins * mels + mels  # affine scale/bias, mel_transform (+ bias)
    bottleneck = (filters * (N // 4) + mels) * N + N * N
    widths = [N // 2 ** (i + 1) for i in range(filters)]
    decoder = N * sum(widths) + sum(w * channels * k for w, k in zip(widths, kernels, strict=True))
    return convs + spectrogram + bottleneck + decoder


@pytest.mark.parametrize("paper,target", [("s1", 7.32e6), ("s2", 7.31e6)])
def test_s1_s2_are_built_on_the_meta_tasnet_encoder_at_the_paper_sizes(paper, target):
    cfg = load_config(f"paper/{paper}.yaml")
    model = build_model(cfg.model_name, cfg.model)
    assert isinstance(model.encoder, MetaTasNetEncoder)
    assert isinstance(model.decoder, MetaTasNetDecoder)
    assert model.encoder.mel.n_fft == 4096 and model.encoder.mel.hop == 1024
    assert model.encoder.mel.mel_transform.out_channels == 256
    params = count_parameters(model)
    assert params == 7_374_386
    assert abs(params - target) / target <= 0.02
    text = (CONFIGS / f"{paper}.yaml").read_text()
    assert re.search(r"this config: 7,374,386 \(\+0\.[79] %\)", text)
    enc_dec = count_parameters(model.encoder) + count_parameters(model.decoder)
    assert enc_dec == _reference_count(256, 20, 3, 2, 4096, 256)


def test_reference_n_fft_rule_and_its_count_at_44k():
    """n_fft = 1024 · (rate // 8000): 1024 at 8 kHz, 5120 at 44.1 kHz, which puts S1 at
    7,506,482 parameters (+2.5 %: why the S1/S2 configs set n_fft 4096)."""
    for rate, n_fft in [(8000, 1024), (16000, 2048), (32000, 4096), (44100, 5120), (4000, 1024)]:
        encoder, _ = build_encoding(EncoderConfig(N=16, L=8, encoding="hybrid",
                                                  filterbank="mel", filters=1), 1, rate)
        assert encoder.mel.n_fft == n_fft
    cfg = load_config("paper/s1.yaml", ["model.encoder.n_fft=null"])
    assert count_parameters(build_model(cfg.model_name, cfg.model)) == 7_506_482


def test_meta_tasnet_stages_use_1024_times_the_rate_factor():
    cfg = load_config("paper/metatasnet.yaml")
    assert cfg.model.encoder.filterbank == "mel" and cfg.model.encoder.n_fft is None
    model = build_model(cfg.model_name, cfg.model)
    assert [stage.encoder.mel.n_fft for stage in model.stages] == [1024, 2048, 4096]
    assert [stage.encoder.conv[0].num_filters for stage in model.stages] == [110, 220, 440]


def test_log_power_equals_a_numpy_stft():
    torch.manual_seed(0)
    branch = MelBranch(num_mels=8, n_fft=64)
    x = torch.randn(2, 2, 700)
    got = branch.log_power(x).double().numpy()  # (B, bins, frames)
    padded = np.pad(x.double().numpy(), ((0, 0), (0, 0), (32, 32)), mode="reflect")
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(64) / 64)  # periodic Hann
    frames = 1 + 700 // 16
    spec = np.stack([np.fft.rfft(padded[..., i * 16:i * 16 + 64] * window, axis=-1)
                     for i in range(frames)], axis=-1)  # (B, C, bins, frames)
    expected = np.log10((np.abs(spec) ** 2).mean(axis=1) + 1e-8)
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_statistics_pool_the_first_training_inputs_exactly_then_stay_fixed():
    torch.manual_seed(0)
    branch = MelBranch(num_mels=4, n_fft=32)
    branch.stat_samples = 5
    batches = [torch.randn(2, 1, 400) * s for s in (1.0, 3.0, 0.5)]
    branch.eval()
    branch(batches[0], 10)
    assert float(branch.seen) == 0  # evaluation never pools
    branch.train()
    for x in batches:
        branch(x, 10)
    assert float(branch.seen) == 6  # 4 < 5 inputs seen before the third batch: it is pooled
    frozen = branch.mean.clone(), branch.var.clone()
    branch(torch.randn(2, 1, 400) * 10, 10)  # 6 >= 5: no more pooling
    assert float(branch.seen) == 6
    assert torch.equal(branch.mean, frozen[0]) and torch.equal(branch.var, frozen[1])
    pooled = torch.cat([branch.log_power(x) for x in batches], dim=0).double()
    mean = pooled.mean(dim=(0, 2), keepdim=True)
    var = pooled.var(dim=(0, 2), keepdim=True, unbiased=False)
    torch.testing.assert_close(branch.mean.double(), mean, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(branch.var.double(), var, atol=1e-4, rtol=1e-4)
    assert {"mean", "var", "seen"} <= set(branch.state_dict())
    fresh = MelBranch(num_mels=4, n_fft=32)
    with frozen_statistics(fresh):
        fresh.train()(batches[0], 10)
    assert float(fresh.seen) == 0 and fresh.pool


def test_encoder_frames_match_the_conv_frames_and_gradients_reach_every_parameter():
    torch.manual_seed(0)
    cfg = EncoderConfig(N=16, L=8, stride=4, encoding="hybrid", filterbank="mel", filters=2,
                        num_mels=12, n_fft=64)
    encoder, decoder = build_encoding(cfg, 2, 8000)
    x = torch.randn(2, 2, 4 * 50 + 8)
    latent = encoder(x)
    assert latent.shape == (2, 16, 51)
    out = decoder(latent)
    assert out.shape == x.shape
    out.pow(2).mean().backward()
    for name, p in [*encoder.named_parameters(), *decoder.named_parameters()]:
        assert p.grad is not None and p.grad.abs().sum() > 0, name
