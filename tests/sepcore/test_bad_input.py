"""Bad input gets a one-line error naming the key, file or value (exit 2), never a traceback,
a hang or a silent wrong result."""

from __future__ import annotations

import pytest

from sepcore.cli import main
from sepcore.config import config_from_dict
from sepcore.errors import ConfigError

BASE = {"model": {"name": "multiband", "num_bands": 1, "encoder": {"N": 16, "L": 16},
                  "masker": {"B": 16, "H": 32, "X": 1, "R": 1}},
        "audio": {"sample_rate": 8000, "channels": 1},
        "data": {"root": "somewhere"}}

OUT_OF_DOMAIN = [
    ("train.epochs", 0), ("train.batch_size", 0), ("train.batch_size", -2),
    ("train.lr", -1.0), ("train.lr", float("nan")), ("train.lr", 0.0), ("train.lr", float("inf")),
    ("train.steps_per_epoch", 0), ("train.lr_factor", 1.5), ("train.grad_clip", -1.0),
    ("eval.overlap", 1.5), ("eval.overlap", 1.0), ("eval.overlap", -0.1),
    ("eval.segment", 0.0), ("eval.segment", -3.0), ("eval.segment", float("nan")),
    ("eval.win", 0.0), ("data.segment", 0.0), ("data.samples_per_track", 0),
    ("data.valid_segment", -1.0), ("data.valid_ratio", 1.0), ("audio.sample_rate", 0),
    ("audio.sample_rate", -8000),
]


def _with(key: str, value) -> dict:
    raw = {section: dict(body) for section, body in BASE.items()}
    section, name = key.split(".", 1)
    raw.setdefault(section, {})[name] = value
    return raw


@pytest.mark.parametrize("key,value", OUT_OF_DOMAIN, ids=[f"{k}={v}" for k, v in OUT_OF_DOMAIN])
def test_values_out_of_their_domain_are_refused_naming_key_and_value(key, value):
    with pytest.raises(ConfigError) as err:
        config_from_dict(_with(key, value), file="c.yaml")
    msg = str(err.value)
    assert err.value.key == key and key in msg and repr(value) in msg and "c.yaml" in msg, msg
    assert "\n" not in msg


def test_values_in_their_domain_build():
    cfg = config_from_dict({**_with("train.lr", 3e-3), "eval": {"overlap": 0.0, "segment": 0.5}})
    assert cfg.train.lr == 3e-3 and cfg.eval.overlap == 0.0


@pytest.mark.parametrize("override", ["train.epochs=0", "train.batch_size=0", "train.lr=-1",
                                      "train.lr=nan", "eval.overlap=1.5"])
def test_sep_train_refuses_out_of_domain_overrides(override, tmp_path, capsys):
    assert main(["train", "paper/m1.yaml", override, f"train.out_dir={tmp_path / 'run'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and override.split("=")[0] in err and "\n" not in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("segment", [0.0, -1.0, float("nan")])
def test_apply_model_refuses_a_chunk_of_no_length(segment):
    import torch

    from sepcore.models import build_model
    from sepcore.separate import apply_model

    cfg = config_from_dict(BASE)
    model = build_model(cfg.model_name, cfg.model).eval()
    with pytest.raises(ValueError, match="segment"):
        apply_model(model, torch.zeros(1, 8000), segment=segment)
