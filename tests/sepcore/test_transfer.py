"""Transfer set-ups (thesis ch. 6: tl / retrain / finetune): init_from, trainable, reinit."""

from __future__ import annotations

import shutil

import pytest
import torch

from sepcore.checkpoint import load_checkpoint
from sepcore.config import TrainConfig, config_from_dict, load_config
from sepcore.errors import ConfigError
from sepcore.models import build_model
from sepcore.train import _matches, apply_transfer, fit

TARGETS = ["vocals", "accompaniment"]
AUDIO = {"sample_rate": 8000, "channels": 1, "sources": TARGETS}
MODEL = {"name": "openunmix", "n_fft": 256, "hop": 128, "bandwidth": 3000.0, "hidden_size": 8,
         "nb_layers": 1}
# the same model's own config (build_model), with what the audio block fills
UMX_PARAMS = {**{k: v for k, v in MODEL.items() if k != "name"}, "sample_rate": 8000,
              "audio_channels": 1, "sources": TARGETS}


def umx_config(root, out_dir, cache_dir, model=None, **train):
    """A tiny Open-Unmix run (mono, 8 kHz, hidden 8) that trains in a few seconds."""
    train_params = {"epochs": 1, "batch_size": 2, "lr": 1e-2, "steps_per_epoch": 2,
                    "out_dir": str(out_dir), "progress": False, "seed": 0, "early_stop": 0}
    train_params.update(train)
    return config_from_dict({
        "model": {**MODEL, **(model or {})},
        "audio": AUDIO,
        "data": {"root": str(root), "segment": 1.0, "samples_per_track": 2, "valid_segment": 2.0,
                 "valid_ratio": 0.2, "cache_dir": str(cache_dir)},
        "train": train_params,
        "eval": {"segment": 2.0},
    })


def _params(path) -> dict[str, torch.Tensor]:
    model = build_model("openunmix", UMX_PARAMS)
    state = load_checkpoint(path).model_state
    return {n: state[n] for n, _ in model.named_parameters()}


@pytest.fixture(scope="module")
def pretrained(synth_root, cache_dir, tmp_path_factory):
    """A 'pre-trained' checkpoint: two steps of a fresh tiny run."""
    out = tmp_path_factory.mktemp("pretrained")
    return fit(umx_config(synth_root, out, cache_dir)).last_checkpoint


def test_pattern_matches_name_or_dotted_suffix():
    assert _matches("unmix.vocals.fc3.weight", "fc3.*")
    assert _matches("unmix.vocals.fc3.weight", "unmix.*.fc3.weight")
    assert not _matches("unmix.vocals.fc3.weight", "fc2.*")
    assert not _matches("unmix.vocals.bn3.weight", "fc3.*")


def test_tl_trains_exactly_the_matching_parameters(pretrained, synth_root, cache_dir, tmp_path):
    """tl: init from the pre-trained weights, train fc2/fc3 only (thesis ch. 6)."""
    result = fit(umx_config(synth_root, tmp_path, cache_dir, init_from=str(pretrained),
                            trainable=["fc2.*", "fc3.*"]))
    before, after = _params(pretrained), _params(result.last_checkpoint)
    trained = {n for n in before if not torch.equal(before[n], after[n])}
    expected = {n for n in before if ".fc2." in n or ".fc3." in n}
    assert len(expected) == 4  # fc2, fc3 weights of both target networks
    assert trained == expected
    # the optimizer only holds the trainable parameters
    groups = load_checkpoint(result.last_checkpoint).train_state["optimizer"]["param_groups"]
    assert sum(len(g["params"]) for g in groups) == len(expected)


def test_init_from_loads_weights(pretrained):
    model = build_model("openunmix", UMX_PARAMS)
    state = load_checkpoint(pretrained).model_state
    assert not torch.equal(model.state_dict()["unmix.vocals.fc1.weight"],
                           state["unmix.vocals.fc1.weight"])
    apply_transfer(model, TrainConfig(init_from=str(pretrained)))
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert all(p.requires_grad for p in model.parameters())  # finetune: everything trains


def test_init_keys_load_only_the_matching_tensors(pretrained):
    """init_keys=["fc3.*"]: the fc3 tensors come from the checkpoint, all others keep the fresh
    initialisation (compared with a second model built from the same seed)."""
    torch.manual_seed(3)
    fresh = build_model("openunmix", UMX_PARAMS).state_dict()
    torch.manual_seed(3)
    model = build_model("openunmix", UMX_PARAMS)
    apply_transfer(model, TrainConfig(init_from=str(pretrained), init_keys=["fc3.*"]))
    source = load_checkpoint(pretrained).model_state
    loaded = {k for k, v in model.state_dict().items() if torch.equal(v, source[k])}
    kept = {k for k, v in model.state_dict().items() if torch.equal(v, fresh[k])}
    fc3 = {k for k in fresh if ".fc3." in k}
    assert fc3 and {k for k in fc3 if not torch.equal(fresh[k], source[k])}  # visible change
    differs = {k for k in fresh if not torch.equal(fresh[k], source[k])}
    assert loaded >= fc3 and (loaded & differs) == (fc3 & differs)
    assert kept >= set(fresh) - fc3
    with pytest.raises(ConfigError, match=r"train\.init_keys.*fc9") as info:
        apply_transfer(model, TrainConfig(init_from=str(pretrained), init_keys=["fc9.*"]))
    assert info.value.key == "train.init_keys"


def test_reinit_resets_only_matching_parameters(pretrained):
    model = build_model("openunmix", UMX_PARAMS)
    torch.manual_seed(1)
    apply_transfer(model, TrainConfig(init_from=str(pretrained),
                                      reinit=["fc3.weight", "vocals.output_mean"]))
    state = load_checkpoint(pretrained).model_state
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, state[n])}
    assert changed == {"unmix.vocals.fc3.weight", "unmix.accompaniment.fc3.weight",
                       "unmix.vocals.output_mean"}
    assert torch.equal(model.unmix["vocals"].output_mean, torch.ones_like(state[
        "unmix.vocals.output_mean"]))


def test_strict_init_rejects_other_shapes_non_strict_loads_the_rest(pretrained):
    other = UMX_PARAMS | {"hidden_size": 12}
    model = build_model("openunmix", other)
    with pytest.raises(ConfigError, match="shape mismatch") as info:
        apply_transfer(model, TrainConfig(init_from=str(pretrained)))
    assert info.value.key == "train.init_from"
    apply_transfer(model, TrainConfig(init_from=str(pretrained), init_strict=False))
    state = load_checkpoint(pretrained).model_state
    assert torch.equal(model.unmix["vocals"].input_mean, state["unmix.vocals.input_mean"])


def test_bad_trainable_pattern_is_a_config_error(synth_root, cache_dir, tmp_path):
    cfg = umx_config(synth_root, tmp_path, cache_dir, trainable=["fc3.*", "fc9.*"])
    with pytest.raises(ConfigError, match=r"train\.trainable.*fc9") as info:
        fit(cfg)
    assert info.value.key == "train.trainable"


def test_registry_uri_must_be_resolved_first(synth_root, cache_dir, tmp_path):
    cfg = umx_config(synth_root, tmp_path, cache_dir, init_from="models:/umx@champion")
    with pytest.raises(ConfigError, match="python -m sweeps") as info:
        fit(cfg)
    assert info.value.key == "train.init_from"


def test_missing_init_checkpoint_names_key(tmp_path):
    model = build_model("openunmix", UMX_PARAMS)
    with pytest.raises(ConfigError, match="no such checkpoint") as info:
        apply_transfer(model, TrainConfig(init_from=str(tmp_path / "nope.safetensors")))
    assert info.value.key == "train.init_from"


def test_resume_does_not_reapply_init_from(pretrained, synth_root, cache_dir, tmp_path):
    """1 + 1 resumed epochs equal 2 straight epochs; the resume never reads init_from again."""
    init = tmp_path / "init.safetensors"
    shutil.copyfile(pretrained, init)
    kw = {"init_from": str(init), "trainable": ["fc3.*"], "deterministic": True}
    straight = fit(umx_config(synth_root, tmp_path / "a", cache_dir, epochs=2, **kw))
    fit(umx_config(synth_root, tmp_path / "b", cache_dir, epochs=1, **kw))
    init.unlink()  # a resumed run restores its own checkpoint and must not need the init file
    resumed = fit(umx_config(synth_root, tmp_path / "b", cache_dir, epochs=2, resume="auto", **kw))
    a, b = _params(straight.last_checkpoint), _params(resumed.last_checkpoint)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert not torch.equal(a["unmix.vocals.fc3.weight"],
                           _params(pretrained)["unmix.vocals.fc3.weight"])


@pytest.mark.parametrize("name", ["umx", "umx_tl", "umx_retrain", "umx_finetune"])
def test_paper_configs_load_and_patterns_match(name):
    cfg = load_config(f"paper/{name}.yaml")
    assert cfg.model_name == "openunmix" and cfg.train.loss == "mse"
    if cfg.train.trainable is not None:  # tl: only fc2/fc3 of each target train
        model = build_model("openunmix", cfg.model)
        apply_transfer(model, TrainConfig(trainable=cfg.train.trainable))
        trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        assert trainable == {f"unmix.{s}.fc{i}.weight" for s in cfg.model.sources for i in (2, 3)}
    assert (cfg.train.init_from is None) == (name in ("umx", "umx_retrain"))
