"""The config tree: one audio block feeds the model and the data; moved keys are named errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

import sepcore
from sepcore.config import config_from_dict, load_config
from sepcore.errors import ConfigError
from sepcore.models import build_model

CONFIGS = Path(sepcore.__file__).parent / "configs"
TINY = {"model": {"name": "convtasnet", "encoder": {"N": 16, "L": 8},
                  "masker": {"B": 8, "H": 16, "X": 2, "R": 1}},
        "audio": {"sample_rate": 16000, "channels": 1, "sources": ["vocals", "drums"]},
        "data": {"root": "somewhere", "segment": 2.0}}


def test_the_audio_block_fills_model_and_data():
    cfg = config_from_dict(TINY)
    m, d = cfg.model, cfg.data
    assert (m.sample_rate, m.audio_channels, m.sources) == (16000, 1, ["vocals", "drums"])
    assert (d.sample_rate, d.channels, d.targets) == (16000, 1, ["vocals", "drums"])
    model = build_model(cfg.model_name, cfg.model)
    assert (model.sample_rate, model.audio_channels, model.sources) == (16000, 1,
                                                                        ["vocals", "drums"])


def test_to_dict_states_the_audio_block_once_and_round_trips():
    cfg = config_from_dict(TINY)
    out = cfg.to_dict()
    assert out["audio"] == TINY["audio"]
    assert not {"sample_rate", "audio_channels", "sources"} & set(out["model"])
    assert not {"sample_rate", "channels", "targets"} & set(out["data"])
    again = config_from_dict(OmegaConf.create(cfg.to_yaml()))
    assert again == cfg


@pytest.mark.parametrize("section,key,audio_key", [
    ("model", "sample_rate", "sample_rate"), ("model", "audio_channels", "channels"),
    ("model", "sources", "sources"), ("data", "sample_rate", "sample_rate"),
    ("data", "channels", "channels"), ("data", "targets", "sources")])
def test_audio_values_under_model_or_data_are_errors_naming_the_audio_key(
        tmp_path, section, key, audio_key):
    value = ["vocals"] if audio_key == "sources" else 1
    path = tmp_path / "old.yaml"
    raw = {**TINY, section: {**TINY[section], key: value}}
    path.write_text(OmegaConf.to_yaml(OmegaConf.create(raw)))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert err.value.key == f"{section}.{key}" and f"audio.{audio_key}" in message
    assert str(path) in message and "\n" not in message


def test_overrides_reach_model_and_data_through_the_audio_block():
    cfg = load_config("demo.yaml", ["audio.sample_rate=16000", "audio.channels=2"])
    assert cfg.model.sample_rate == cfg.data.sample_rate == 16000
    assert cfg.model.audio_channels == cfg.data.channels == 2
    with pytest.raises(ConfigError, match="audio.sample_rate") as err:
        load_config("demo.yaml", ["model.sample_rate=16000"])
    assert err.value.key == "model.sample_rate"


@pytest.mark.parametrize("audio,key,match", [
    ({"channels": 3}, "audio.channels", "1 or 2"),
    ({"sample_rate": 0}, "audio.sample_rate", "positive"),
    ({"sources": []}, "audio.sources", "at least one"),
    ({"sources": ["vocals", "vocals"]}, "audio.sources", "each once"),
    ({"sources": ["vocals", "piano"]}, "audio.sources", "unknown source 'piano'"),
    ({"rate": 8000}, "audio.rate", "rate")])
def test_bad_audio_blocks_name_the_key(audio, key, match):
    with pytest.raises(ConfigError, match=match) as err:
        config_from_dict({**TINY, "audio": {**TINY["audio"], **audio}})
    assert err.value.key == key and "\n" not in str(err.value)


@pytest.mark.parametrize("section,body,key", [
    ("audio", {"rate": 1}, "audio.rate"), ("train", {"epoch": 1}, "train.epoch"),
    ("model", {"name": "convtasnet", "encoder": {"Nx": 1}}, "model.encoder.Nx")])
def test_unknown_keys_are_one_line_errors(section, body, key):
    with pytest.raises(ConfigError) as err:
        config_from_dict({**TINY, section: body}, file="f.yaml")
    assert err.value.key == key and "\n" not in str(err.value) and "f.yaml" in str(err.value)


def test_a_models_own_audio_limits_point_at_the_audio_block():
    """MaD estimates vocals (and the residual): the model rejects other sources when built,
    naming audio.sources, where a config file states them."""
    cfg = config_from_dict({"model": {"name": "mad"}, "audio": {"sources": ["drums"]}})
    with pytest.raises(ConfigError, match="audio.sources") as err:
        build_model(cfg.model_name, cfg.model)
    assert err.value.key == "audio.sources"


def test_diverged_copies_are_caught_when_written():
    cfg = config_from_dict(TINY)
    cfg.model.sample_rate = 8000  # changed behind the audio block's back
    with pytest.raises(ConfigError, match="audio.sample_rate") as err:
        cfg.to_dict()
    assert err.value.key == "audio.sample_rate"


@pytest.mark.parametrize("path", sorted(CONFIGS.rglob("*.yaml")),
                         ids=lambda p: str(p.relative_to(CONFIGS)))
def test_every_packaged_config_states_audio_once(path):
    raw = OmegaConf.load(path)
    assert "audio" in raw, path
    cfg = load_config(path)
    assert cfg.model.sample_rate == cfg.data.sample_rate == cfg.audio.sample_rate


@pytest.mark.parametrize("path", sorted((CONFIGS / "paper").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_paper_config_validates_in_chunks(path):
    """No paper run validates on whole songs (a full-song pass per validation song every
    epoch): data.valid_segment is set, to at most one inference chunk (each validation item
    then runs as one chunk, batched)."""
    cfg = load_config(path)
    assert cfg.data.valid_segment is not None, path
    assert cfg.data.segment <= cfg.data.valid_segment <= cfg.eval.segment


def test_typed_and_apply_overrides_raise_the_callers_error_class():
    """One helper turns OmegaConf's merge errors into one-line errors for every layer."""
    from sepcore.config import TrainConfig, apply_overrides, typed

    class LayerError(ConfigError):
        pass

    assert typed(TrainConfig, {"epochs": 3}, "train").epochs == 3
    with pytest.raises(LayerError, match=r"^f\.yaml: key 'train\.epochz'") as info:
        typed(TrainConfig, {"epochz": 3}, "train", "f.yaml", error=LayerError)
    assert info.value.key == "train.epochz" and info.value.file == "f.yaml"
    with pytest.raises(LayerError, match="key 'train.lr'") as info:
        typed(TrainConfig, {"lr": "fast"}, "train", error=LayerError)
    assert len(str(info.value).splitlines()) == 1
    node = OmegaConf.create({"train": {"epochs": 1}})
    assert apply_overrides(node, ["train.epochs=5"]).train.epochs == 5
    with pytest.raises(LayerError, match=r"'tune.x=1' must start with one of \['train'\]"):
        apply_overrides(node, ["tune.x=1"], error=LayerError, sections=("train",))
    with pytest.raises(LayerError, match="not of the form key=value"):
        apply_overrides(node, ["train.epochs"], error=LayerError)
