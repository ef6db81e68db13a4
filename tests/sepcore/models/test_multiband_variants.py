"""The multi-band masking paper's remaining rows (M5 frozen, M6 sorted, S1/S2) and the
filter analysis (Papantonakis et al., "Multi-band Masking for Waveform-based Singing Voice
Separation", EUSIPCO 2022, Table 1)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from sepcore.checkpoint import save_model
from sepcore.config import TrainConfig, config_from_dict, load_config
from sepcore.errors import ConfigError
from sepcore.models import build_model
from sepcore.models.base import count_parameters
from sepcore.models.filterbanks import centre_frequencies_and_bandwidths, filter_responses
from sepcore.train import apply_transfer, trainable_parameters
from tests.sepcore.helpers import tiny_config

SMALL_ENC = {"N": 32, "L": 16, "stride": 8}
SMALL_TCN = {"B": 16, "H": 32, "X": 2, "R": 1}


def _save(model, name, tmp_path):
    return save_model(tmp_path / f"{name}.safetensors", name, model)


@pytest.mark.parametrize("paper,target", [("m5", 6.56e6), ("m6", 6.56e6), ("s1", 7.32e6),
                                          ("s2", 7.31e6)])
def test_paper_parameter_counts_of_the_multiband_variants(paper, target, tmp_path, monkeypatch,
                                                          capsys):
    from sepcore.cli import main

    monkeypatch.chdir(tmp_path)  # a fresh clone: no runs/ folder, so no trained M1 to read
    assert main(["info", f"paper/{paper}.yaml"]) == 0
    assert "parameters" in capsys.readouterr().out
    cfg = load_config(f"paper/{paper}.yaml")
    model = build_model(cfg.model_name, cfg.model)
    params = count_parameters(model)
    assert abs(params - target) / target <= 0.02, (paper, params, target)
    if paper in ("m5", "m6"):  # the frozen encoder/decoder count, and only they are frozen
        trainable = trainable_parameters(model, cfg.train)
        assert {n for n, _ in model.named_parameters()} - trainable == {"encoder.weight",
                                                                         "decoder.weight"}
        assert not (tmp_path / "runs").exists()


def test_removed_encoder_keys_say_what_replaces_them():
    for key, value, hint in [("pretrained", "runs/m1/best.safetensors", "train.init_from"),
                             ("frozen", True, "train.frozen")]:
        with pytest.raises(ConfigError, match=hint) as err:
            config_from_dict({"model": {"name": "multiband", "encoder": {key: value}}})
        assert err.value.key == f"model.encoder.{key}" and "\n" not in str(err.value)
        with pytest.raises(ConfigError) as err:  # a model config alone: an unknown key, named
            build_model("multiband", {"encoder": {key: value}})
        assert err.value.key == f"model.encoder.{key}"


def _m1_checkpoint(tmp_path, seed=1):
    """A small trained-M1 stand-in (Conv-TasNet, 8 kHz mono) whose encoder/decoder M5/M6 load."""
    torch.manual_seed(seed)
    source = build_model("convtasnet", {"audio_channels": 1, "sample_rate": 8000,
                                        "encoder": SMALL_ENC, "masker": SMALL_TCN})
    return source, _save(source, "convtasnet", tmp_path)


ENC_DEC = ["encoder.*", "decoder.*"]


@pytest.mark.parametrize("band_split", ["contiguous", "sorted"])
def test_m5_m6_train_separators_on_the_loaded_frozen_encoder(band_split, synth_root, cache_dir,
                                                             tmp_path):
    """M5/M6 as a training set-up: init_from + init_keys load M1's encoder/decoder exactly,
    frozen keeps them through training steps while the band separators move."""
    from sepcore.checkpoint import load_checkpoint
    from sepcore.train import fit

    source, path = _m1_checkpoint(tmp_path)
    cfg = tiny_config(synth_root, tmp_path / "run", cache_dir, model="multiband", epochs=1,
                      steps_per_epoch=2, init_from=str(path), init_keys=ENC_DEC, frozen=ENC_DEC)
    cfg.model.encoder = dataclasses.replace(cfg.model.encoder, **SMALL_ENC)
    cfg.model.masker = dataclasses.replace(cfg.model.masker, **SMALL_TCN)
    cfg.model.band_split = band_split
    torch.manual_seed(cfg.train.seed)
    initial = build_model(cfg.model_name, cfg.model).state_dict()  # what fit starts from
    assert not torch.equal(initial["encoder.weight"], source.encoder.weight)
    result = fit(cfg)
    assert result.global_step == 2
    trained = load_checkpoint(result.last_checkpoint).model_state
    for key in ("encoder.weight", "decoder.weight"):
        assert torch.equal(trained[key], source.state_dict()[key]), key
    bands = [k for k in initial if k.startswith("bands.") and initial[k].is_floating_point()]
    assert bands and all(trained[k].shape == initial[k].shape for k in bands)
    assert any(not torch.equal(trained[k], initial[k]) for k in bands)
    if band_split == "sorted":  # the order is measured on the loaded filters, not the initial
        assert torch.equal(trained["band_order"], _centre_order(source.encoder))


def test_trainable_and_frozen_express_the_same_m5():
    model = build_model("multiband", {"audio_channels": 1, "sample_rate": 8000, "num_bands": 2,
                                      "encoder": SMALL_ENC, "masker": SMALL_TCN})
    frozen = trainable_parameters(model, TrainConfig(frozen=ENC_DEC))
    assert frozen == trainable_parameters(model, TrainConfig(trainable=["bands.*"]))
    assert frozen == {n for n, _ in model.named_parameters()} - {"encoder.weight",
                                                                 "decoder.weight"}


def _centre_order(encoder) -> torch.Tensor:
    centre, _ = centre_frequencies_and_bandwidths(filter_responses(encoder), 8000)
    return torch.argsort(torch.as_tensor(centre), stable=True)


def _sorted_model(tmp_path, num_bands=2):
    """An M6-like model whose encoder/decoder came from an M1 checkpoint through init_from."""
    _, path = _m1_checkpoint(tmp_path)
    model = build_model("multiband", {
        "audio_channels": 1, "sample_rate": 8000, "num_bands": num_bands, "band_split": "sorted",
        "masker": SMALL_TCN, "encoder": SMALL_ENC})
    apply_transfer(model, TrainConfig(init_from=str(path), init_keys=ENC_DEC))
    return model.eval()


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


def test_sorted_order_without_init_from_follows_the_initial_filters():
    torch.manual_seed(3)
    model = build_model("multiband", {"audio_channels": 1, "sample_rate": 8000,
                                      "band_split": "sorted", "masker": SMALL_TCN,
                                      "encoder": SMALL_ENC})
    assert torch.equal(model.band_order, _centre_order(model.encoder))
    assert torch.equal(model.band_order[model.band_inverse], torch.arange(SMALL_ENC["N"]))


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


def test_sorted_order_is_measured_after_init_from_and_survives_a_checkpoint(tmp_path):
    from sepcore.checkpoint import load_model

    source, path = _m1_checkpoint(tmp_path / "m1")
    torch.manual_seed(7)
    model = build_model("multiband", {"audio_channels": 1, "sample_rate": 8000,
                                      "band_split": "sorted", "masker": SMALL_TCN,
                                      "encoder": SMALL_ENC})
    at_construction = model.band_order.clone()
    apply_transfer(model, TrainConfig(init_from=str(path), init_keys=ENC_DEC))
    expected = _centre_order(source.encoder)
    assert not torch.equal(at_construction, expected)  # random filters: another order
    assert torch.equal(model.band_order, expected)
    assert torch.equal(model.band_order[model.band_inverse], torch.arange(SMALL_ENC["N"]))
    # a checkpoint loads from its own config and weights alone: the M1 file is gone
    saved = _save(model, "multiband", tmp_path)
    path.unlink()
    loaded, _ = load_model(saved)
    assert torch.equal(loaded.band_order, expected)
    # the stored order is used as saved, on load and on init_from (the separators were trained on
    # it): a deliberately unsorted order proves nothing is recomputed from the filters
    state = model.state_dict()
    shuffled = torch.roll(expected, 5)
    state["band_order"], state["band_inverse"] = shuffled, torch.argsort(shuffled)
    model.load_state_dict(state)
    unsorted = _save(model, "multiband", tmp_path)
    loaded, _ = load_model(unsorted)
    assert torch.equal(loaded.band_order, shuffled)
    assert torch.equal(loaded.band_inverse, torch.argsort(shuffled))
    other = build_model("multiband", dataclasses.asdict(model.cfg))
    apply_transfer(other, TrainConfig(init_from=str(unsorted)))
    assert torch.equal(other.band_order, shuffled)


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
