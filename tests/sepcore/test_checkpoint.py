import json

import pytest
import torch

from sepcore.checkpoint import (
    FORMAT_VERSION,
    Checkpoint,
    checkpoint_config,
    flatten_optimizer_state,
    load_checkpoint,
    load_model,
    save_checkpoint,
    save_model,
    unflatten_optimizer_state,
)
from sepcore.config import config_from_dict
from sepcore.errors import CheckpointError
from sepcore.models import build_model


def _cfg():
    return config_from_dict({
        "model": {"name": "convtasnet", "encoder": {"N": 16, "L": 8},
                  "masker": {"B": 8, "H": 16, "X": 2, "R": 1}},
        "audio": {"sample_rate": 8000, "channels": 1, "sources": ["vocals", "drums"]},
        "data": {"root": "somewhere", "segment": 2.0},
    })


def test_roundtrip_model_and_optimizer(tmp_path):
    cfg = _cfg()
    model = build_model(cfg.model_name, cfg.model)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.randn(2, 1, 800)).pow(2).mean().backward()
    opt.step()
    tensors, rest = flatten_optimizer_state(opt.state_dict())
    path = save_checkpoint(tmp_path / "a.safetensors", Checkpoint(
        config=checkpoint_config(cfg), model_state=model.state_dict(), optimizer_state=tensors,
        train_state={"optimizer": rest, "epoch": 3}))
    ckpt = load_checkpoint(path)
    assert ckpt.model_name == "convtasnet" and ckpt.train_state["epoch"] == 3
    for k, v in model.state_dict().items():
        assert torch.equal(ckpt.model_state[k], v)
    opt2 = torch.optim.Adam(build_model(cfg.model_name, cfg.model).parameters(), lr=1e-3)
    opt2.load_state_dict(unflatten_optimizer_state(ckpt.optimizer_state,
                                                   ckpt.train_state["optimizer"]))
    s1, s2 = opt.state_dict()["state"], opt2.state_dict()["state"]
    assert s1.keys() == s2.keys()
    for i in s1:
        for key in s1[i]:
            assert torch.equal(torch.as_tensor(s1[i][key]), torch.as_tensor(s2[i][key]))
    loaded, loaded_cfg = load_model(path)
    x = torch.randn(1, 1, 1234)
    model.eval()
    assert torch.equal(loaded(x), model(x))
    assert loaded_cfg.to_dict() == cfg.to_dict()


def test_no_pickle_and_metadata_is_json(tmp_path):
    cfg = _cfg()
    model = build_model(cfg.model_name, cfg.model)
    path = save_checkpoint(tmp_path / "b.safetensors",
                           Checkpoint(config=checkpoint_config(cfg),
                                      model_state=model.state_dict()))
    import safetensors

    with safetensors.safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["sepcore"])
    assert meta["format_version"] == FORMAT_VERSION == 2 and meta["model"] == "convtasnet"
    assert "torch" in meta["versions"]
    # the model section is the model's full config; the audio block is not stored twice
    assert meta["config"]["model"]["sample_rate"] == 8000
    assert meta["config"]["model"]["audio_channels"] == 1
    assert meta["config"]["model"]["sources"] == ["vocals", "drums"]
    assert "audio" not in meta["config"] and "sample_rate" not in meta["config"]["data"]
    assert not list(tmp_path.glob("*.tmp")), "temporary file left behind"


def test_corrupted_and_missing(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CheckpointError, match="bad.safetensors"):
        load_checkpoint(bad)


def _write_old(path, config, state, version=1):
    """A checkpoint as an older sepcore (format ``version``) wrote it."""
    from safetensors.torch import save_file

    meta = {"format_version": version, "model": config["model"]["name"], "config": config,
            "train_state": {}, "metrics": {}, "versions": {}}
    save_file({f"model.{k}": v.contiguous() for k, v in state.items()}, str(path),
              metadata={"sepcore": json.dumps(meta)})
    return path


def test_version_1_checkpoints_load_with_their_encoder_keys_moved_to_train(tmp_path):
    cfg = _cfg()
    model = build_model(cfg.model_name, cfg.model).eval()
    old = checkpoint_config(cfg)  # version 1: the data section repeated rate, channels, sources
    old["data"].update(sample_rate=8000, channels=1, targets=["vocals", "drums"])
    old["model"]["encoder"].update(pretrained="runs/m1/best.safetensors", frozen=True)
    path = _write_old(tmp_path / "v1.safetensors", old, model.state_dict())
    loaded, loaded_cfg = load_model(path)
    x = torch.randn(1, 1, 999)
    assert torch.equal(loaded(x), model(x))
    assert loaded_cfg.train.init_from == "runs/m1/best.safetensors"
    assert loaded_cfg.train.init_keys == loaded_cfg.train.frozen == ["encoder.*", "decoder.*"]
    assert loaded_cfg.audio == cfg.audio and loaded_cfg.data == cfg.data
    path = _write_old(tmp_path / "v99.safetensors", old, model.state_dict(), version=99)
    with pytest.raises(CheckpointError, match="format_version 99"):
        load_checkpoint(path)


def test_a_bare_model_loads_from_its_model_section_alone(tmp_path):
    """No data/train/eval sections: the model builds from its own config, and the experiment
    config's audio block is the model's rate, channels and sources."""
    model = build_model("convtasnet", {"sample_rate": 16000, "audio_channels": 1,
                                       "sources": ["bass"], "encoder": {"N": 16, "L": 8},
                                       "masker": {"B": 8, "H": 16, "X": 2, "R": 1}}).eval()
    path = save_model(tmp_path / "bare.safetensors", "convtasnet", model)
    assert set(load_checkpoint(path).config) == {"model"}
    loaded, cfg = load_model(path)
    assert (loaded.sample_rate, loaded.audio_channels, loaded.sources) == (16000, 1, ["bass"])
    assert (cfg.audio.sample_rate, cfg.audio.channels, cfg.audio.sources) == (16000, 1, ["bass"])
    assert (cfg.data.sample_rate, cfg.data.channels, cfg.data.targets) == (16000, 1, ["bass"])
    x = torch.randn(1, 1, 777)
    assert torch.equal(loaded(x), model(x))


def test_a_config_in_file_form_also_loads(tmp_path):
    """A checkpoint whose config is ExperimentConfig.to_dict() (audio block, model section
    without the audio fields) builds the model at the audio block's rate, not a default."""
    cfg = _cfg()
    model = build_model(cfg.model_name, cfg.model).eval()
    path = save_checkpoint(tmp_path / "f.safetensors",
                           Checkpoint(config=cfg.to_dict(), model_state=model.state_dict()))
    loaded, loaded_cfg = load_model(path)
    assert loaded.sample_rate == 8000 and loaded.sources == ["vocals", "drums"]
    assert loaded_cfg.to_dict() == cfg.to_dict()
