"""Seed 000's remaining rows (M5 frozen, M6 sorted, S1/S2), FB-IRM and the filter analysis."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from sepcore.checkpoint import Checkpoint, save_checkpoint
from sepcore.config import config_from_dict, load_config
from sepcore.models import build_model
from sepcore.models.base import count_parameters
from sepcore.models.filterbanks import centre_frequencies_and_bandwidths, filter_responses

SMALL_ENC = {"N": 32, "L": 16, "stride": 8}
SMALL_TCN = {"B": 16, "H": 32, "X": 2, "R": 1}


def _save(model, name, tmp_path, rate=8000, channels=1):
    cfg = config_from_dict({"model": {"name": name, **dataclasses.asdict(model.cfg)},
                            "data": {"sample_rate": rate, "channels": channels,
                                     "targets": list(model.sources)}})
    return save_checkpoint(tmp_path / f"{name}.safetensors",
                           Checkpoint(config=cfg.to_dict(), model_state=model.state_dict()))


@pytest.fixture
def pretrained_m1(tmp_path):
    """An M1-sized checkpoint whose encoder/decoder M5 and M6 load."""
    cfg = load_config("paper/m1.yaml")
    model = build_model(cfg.model_name, cfg.model)
    return save_checkpoint(tmp_path / "m1.safetensors",
                           Checkpoint(config=cfg.to_dict(), model_state=model.state_dict()))


@pytest.mark.parametrize("paper,target", [("m5", 6.56e6), ("m6", 6.56e6), ("s1", 7.32e6),
                                          ("s2", 7.31e6)])
def test_step3_paper_parameter_counts(paper, target, pretrained_m1):
    overrides = [f"model.encoder.pretrained={pretrained_m1}"] if paper in ("m5", "m6") else []
    cfg = load_config(f"paper/{paper}.yaml", overrides)
    model = build_model(cfg.model_name, cfg.model)
    params = count_parameters(model)
    assert abs(params - target) / target <= 0.02, (paper, params, target)


def test_m5_loads_and_freezes_the_pretrained_encoder(pretrained_m1):
    from sepcore.checkpoint import load_checkpoint

    cfg = load_config("paper/m5.yaml", [f"model.encoder.pretrained={pretrained_m1}"])
    model = build_model(cfg.model_name, cfg.model)
    state = load_checkpoint(pretrained_m1).model_state
    assert torch.equal(model.encoder.weight, state["encoder.weight"])
    assert torch.equal(model.decoder.weight, state["decoder.weight"])
    assert count_parameters(model, trainable_only=True) < count_parameters(model)


def test_frozen_encoder_decoder_do_not_move_while_separators_train(tmp_path):
    torch.manual_seed(0)
    source = build_model("convtasnet", {"audio_channels": 1, "sample_rate": 8000,
                                        "encoder": SMALL_ENC, "masker": SMALL_TCN})
    path = _save(source, "convtasnet", tmp_path)
    model = build_model("multiband", {
        "audio_channels": 1, "sample_rate": 8000, "num_bands": 2, "masker": SMALL_TCN,
        "encoder": {**SMALL_ENC, "pretrained": str(path), "frozen": True}})
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=1e-3)
    x = torch.randn(4, 1, 800)
    for _ in range(3):
        opt.zero_grad()
        (model(x) - torch.stack([0.3 * x, 0.7 * x], 1)).abs().mean().backward()
        opt.step()
    after = model.state_dict()
    for key in before:
        moved = not torch.equal(before[key], after[key])
        if key.startswith(("encoder.", "decoder.")):
            assert not moved, key
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("bands."))


def _sorted_model(tmp_path, num_bands=2):
    torch.manual_seed(1)
    source = build_model("convtasnet", {"audio_channels": 1, "sample_rate": 8000,
                                        "encoder": SMALL_ENC, "masker": SMALL_TCN})
    path = _save(source, "convtasnet", tmp_path)
    return build_model("multiband", {
        "audio_channels": 1, "sample_rate": 8000, "num_bands": num_bands, "band_split": "sorted",
        "masker": SMALL_TCN, "encoder": {**SMALL_ENC, "pretrained": str(path)}}).eval()


@pytest.mark.parametrize("num_bands", [2, 4])
def test_sorted_latent_bands_hold_increasing_centre_frequencies(tmp_path, num_bands):
    model = _sorted_model(tmp_path, num_bands)
    centre, _ = centre_frequencies_and_bandwidths(filter_responses(model.encoder), 8000)
    centre = np.asarray(centre)
    bands = np.asarray(model.band_order).reshape(num_bands, -1)  # channel indices per band
    for low, high in zip(bands[:-1], bands[1:], strict=True):
        assert centre[low].max() <= centre[high].min()
    # the contiguous split of the same encoder does not have this property (random filters)
    contiguous = np.arange(len(centre)).reshape(num_bands, -1)
    assert any(centre[a].max() > centre[b].min()
               for a, b in zip(contiguous[:-1], contiguous[1:], strict=True))


def test_sorted_band_separators_see_their_frequency_band_only(tmp_path):
    model = _sorted_model(tmp_path)
    band1, band2 = np.asarray(model.band_order).reshape(2, -1)
    latent = torch.rand(1, 32, 40)
    with torch.no_grad():
        ref = model.mask_scores(latent)
        changed = latent.clone()
        changed[:, band2] = torch.rand(1, len(band2), 40)
        out = model.mask_scores(changed)
    assert torch.allclose(out[:, :, band1], ref[:, :, band1])
    assert not torch.allclose(out[:, :, band2], ref[:, :, band2])


def test_sorted_order_survives_a_checkpoint(tmp_path):
    from sepcore.checkpoint import load_model

    model = _sorted_model(tmp_path)
    path = _save(model, "multiband", tmp_path)
    loaded, _ = load_model(path)
    assert torch.equal(loaded.band_order, model.band_order)


# --- FB-IRM --------------------------------------------------------------------------------------

def _fb_irm(**encoder):
    return build_model("fb_irm", {"audio_channels": 2, "sample_rate": 8000,
                                  "encoder": {**SMALL_ENC, **encoder}})


def test_fb_irm_masks_partition_the_latent_and_need_references():
    model = _fb_irm().eval()
    refs = torch.randn(2, 2, 2, 1000)
    masks = model.ratio_masks(refs)
    assert torch.allclose(masks.sum(dim=1), torch.ones_like(masks[:, 0]), atol=1e-5)
    mixture = refs.sum(dim=1)
    out = model(mixture, references=refs)
    assert out.shape == refs.shape
    with torch.no_grad():
        whole = model.decode(model.encode(mixture).unsqueeze(1))[:, 0]
    assert torch.allclose(out.sum(dim=1), whole, atol=1e-4)
    with pytest.raises(ValueError, match="oracle"):
        model(mixture)


def _two_tone_batch(n=8, length=2000):
    """A low tone and a high tone with random frequencies and phases, (B, 2, 1, T)."""
    t = torch.arange(length) / 8000
    low = torch.sin(2 * torch.pi * (100 + 400 * torch.rand(n, 1)) * t + 6 * torch.rand(n, 1))
    high = 0.7 * torch.sin(2 * torch.pi * (1500 + 1500 * torch.rand(n, 1)) * t
                           + 6 * torch.rand(n, 1))
    return torch.stack([low, high], dim=1)[:, :, None]


@pytest.mark.slow
def test_fb_irm_trains_an_encoder_decoder_pair_without_a_separator():
    """The thesis's use of FB-IRM: train only an encoder/decoder through the oracle masks."""
    from sepcore.losses import build_loss
    from sepcore.metrics.sisdr import si_sdr

    torch.manual_seed(0)
    model = build_model("fb_irm", {"audio_channels": 1, "sample_rate": 8000,
                                   "encoder": {"N": 64, "L": 16, "stride": 8}})
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    loss_fn = build_loss("l1", None)
    refs = _two_tone_batch()
    with torch.no_grad():
        untrained = si_sdr(model(refs.sum(1), references=refs), refs).mean()
    for _ in range(200):
        refs = _two_tone_batch()
        opt.zero_grad()
        loss_fn(model(refs.sum(1), references=refs), refs).backward()
        opt.step()
    refs = _two_tone_batch()
    with torch.no_grad():
        trained = si_sdr(model(refs.sum(1), references=refs), refs).mean(dim=(0, 2))
        mixture = si_sdr(refs.sum(1, keepdim=True).expand_as(refs), refs).mean(dim=(0, 2))
    assert (trained > mixture + 10).all(), (trained, mixture)
    assert trained.mean() > untrained + 10


def test_fb_irm_trains_evaluates_and_refuses_plain_separation(synth_root, cache_dir, tmp_path):
    from sepcore.errors import DataError
    from sepcore.evaluate import evaluate_checkpoint
    from sepcore.separate import separate_files
    from sepcore.train import fit

    cfg = config_from_dict({
        "model": {"name": "fb_irm", "audio_channels": 1, "sample_rate": 8000,
                  "encoder": {"N": 32, "L": 16, "encoding": "hybrid", "filterbank": "pmpgtf"}},
        "data": {"root": str(synth_root), "sample_rate": 8000, "channels": 1, "segment": 1.0,
                 "samples_per_track": 4, "valid_segment": 4.0, "cache_dir": str(cache_dir)},
        "train": {"epochs": 1, "steps_per_epoch": 3, "batch_size": 2, "out_dir": str(tmp_path),
                  "progress": False, "lr": 1e-3},
        "eval": {"segment": 4.0},
    })
    result = fit(cfg)
    assert result.global_step == 3 and np.isfinite(result.history[-1]["valid_sisdr"])
    evaluation = evaluate_checkpoint(result.last_checkpoint, max_tracks=1, progress=False)
    assert set(evaluation.scores) == {"vocals", "accompaniment"}
    song = next((synth_root / "test").iterdir()) / "mixture.wav"
    with pytest.raises(DataError, match="oracle"):
        separate_files([song], result.last_checkpoint, tmp_path / "sep", progress=False)


# --- analysis ------------------------------------------------------------------------------------

def test_sep_analyze_filters_writes_the_figure(tmp_path, capsys):
    from sepcore.cli import main

    model = _sorted_model(tmp_path)
    path = _save(model, "multiband", tmp_path)
    out = tmp_path / "filters.png"
    assert main(["analyze", "filters", str(path), "--out", str(out)]) == 0
    assert out.stat().st_size > 5000 and out.read_bytes()[:4] == b"\x89PNG"
    text = capsys.readouterr().out
    medians = [float(line.split("median centre ")[1].split(" Hz")[0])
               for line in text.splitlines() if line.startswith("band ")]
    assert len(medians) == 2 and medians[0] < medians[1]


def test_sep_analyze_refuses_a_nonlinear_encoder(tmp_path, capsys):
    from sepcore.cli import main

    model = build_model("convtasnet", {"audio_channels": 1, "sample_rate": 8000,
                                       "encoder": {**SMALL_ENC, "encoding": "hybrid",
                                                   "filterbank": "stft"},
                                       "masker": SMALL_TCN})
    path = _save(model, "convtasnet", tmp_path)
    assert main(["analyze", "filters", str(path), "--out", str(tmp_path / "x.png")]) == 2
    assert "model.encoder.encoding" in capsys.readouterr().err
