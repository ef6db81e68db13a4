"""Fuzz of the two file parsers a user hands to sepcore: the checkpoint loader
(``sepcore.checkpoint.load_model``) and the sweep-file parser (``sweeps.spec.load_sweep``).

Inputs: random bytes, valid files cut short or with bytes overwritten, and valid files whose
content (checkpoint metadata JSON and tensors, sweep YAML) has one part replaced by an arbitrary
value (numbers at their extremes, NaN, strings with OmegaConf interpolations, nested lists and
mappings), a key added or a key removed.

Contract: one of the parser's own errors (CheckpointError/ConfigError, SweepError) whose message
is one line naming the file, or a result that holds (a model in eval mode with finite weights; a
sweep whose searched values give configs that build)."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from sepcore.errors import SepcoreError
from tests.robustness.contract import judge_call
from tests.robustness.edges import BASE_YAML

PROFILE = settings.get_profile("robustness")

# arbitrary JSON/YAML values: extremes, NaN, interpolations, nesting
SCALARS = (st.none() | st.booleans()
           | st.sampled_from([0, -1, 1, 2, 7, 2**31, -(2**63), 10**6, 0.5, -0.5, 1e-300, 1e300,
                              math.nan, math.inf, -math.inf])
           | st.text(alphabet="ab1.:_-${}[] ", max_size=10))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(alphabet="abN_.", min_size=1, max_size=5), inner,
                                        max_size=3), max_leaves=6)


def _paths(obj, prefix=()):
    """Every key path of a nested mapping/list (the places a mutation may hit)."""
    yield prefix
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from _paths(value, prefix + (key,))
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            yield from _paths(value, prefix + (i,))


@st.composite
def mutated(draw, document):
    """``document`` (nested dicts/lists) with one part replaced, one key added or removed."""
    doc = copy.deepcopy(document)
    path = draw(st.sampled_from(list(_paths(doc))[1:]))
    parent = doc
    for part in path[:-1]:
        parent = parent[part]
    action = draw(st.sampled_from(["replace", "replace", "add", "remove"]))
    if action == "replace":
        parent[path[-1]] = draw(VALUES)
    elif action == "add" and isinstance(parent, dict):
        parent[draw(st.text(alphabet="abN_.", min_size=1, max_size=6))] = draw(VALUES)
    elif isinstance(parent, dict):
        del parent[path[-1]]
    return doc


def _damaged(draw, data: bytes) -> bytes:
    """Cut short or a few bytes overwritten (the header is at the start)."""
    data = bytearray(data)
    if draw(st.booleans()):
        del data[draw(st.integers(0, len(data) - 1)):]
    else:
        for _ in range(draw(st.integers(1, 4))):
            data[draw(st.integers(0, min(len(data) - 1, 300)))] = draw(st.integers(0, 255))
    return bytes(data)


# --- checkpoints ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint_parts(tmp_path_factory):
    """A tiny valid checkpoint: its bytes, its metadata and its tensors."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    from sepcore.checkpoint import Checkpoint, checkpoint_config, save_checkpoint
    from sepcore.config import config_from_dict
    from sepcore.models import build_model

    cfg = config_from_dict(yaml.safe_load(BASE_YAML))
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_checkpoint(path, Checkpoint(config=checkpoint_config(cfg),
                                     model_state=build_model(cfg.model_name, cfg.model)
                                     .state_dict()))
    with safe_open(str(path), framework="pt") as handle:
        meta = json.loads(handle.metadata()["sepcore"])
    return path.read_bytes(), meta, load_file(str(path))


@st.composite
def checkpoint_files(draw, parts):
    data, meta, tensors = parts
    kind = draw(st.sampled_from(["meta", "meta", "meta", "tensors", "bytes", "random"]))
    if kind == "random":
        return draw(st.binary(max_size=300))
    if kind == "bytes":
        return _damaged(draw, data)
    from safetensors.torch import save

    tensors = dict(tensors)
    if kind == "tensors":  # one tensor renamed, reshaped, dropped or given NaNs
        key = draw(st.sampled_from(sorted(tensors)))
        change = draw(st.sampled_from(["rename", "reshape", "drop", "nan"]))
        value = tensors.pop(key)
        if change == "rename":
            tensors[key + "x"] = value
        elif change == "reshape":
            tensors[key] = torch.zeros(value.numel() + draw(st.integers(1, 3)))
        elif change == "nan":
            value = value.clone()
            value.view(-1)[0] = draw(st.sampled_from([math.nan, math.inf]))
            tensors[key] = value
        return save(tensors, metadata={"sepcore": json.dumps(meta)})
    text = json.dumps(draw(mutated(meta)))  # NaN/inf become JSON's NaN/Infinity
    return save(tensors, metadata={"sepcore": text})


def _model_ok(result):
    model, config = result
    assert not model.training
    assert all(torch.isfinite(p).all() for p in model.parameters()), "non-finite weights"


@settings(PROFILE, max_examples=80)
@given(data=st.data())
def test_checkpoint_loader(checkpoint_parts, tmp_path_factory, data):
    from sepcore.checkpoint import load_model

    path = tmp_path_factory.mktemp("c") / "model.safetensors"
    path.write_bytes(data.draw(checkpoint_files(checkpoint_parts), label="file"))
    judge_call("checkpoint loader: damaged files", lambda: load_model(path), (SepcoreError,),
               (str(path),), _model_ok)


# --- sweep files ---------------------------------------------------------------------------------

SWEEP = {
    "base": yaml.safe_load(BASE_YAML),
    "search": {"train.lr": {"loguniform": [1e-4, 1e-2]},
               "model.num_bands": {"grid": [1, 2]},
               "model.masker.X": {"choice": [1, 2], "when": {"model.num_bands": [2]}}},
    "tune": {"metric": "valid_sisdr", "mode": "max", "num_samples": 2, "search_alg": "optuna",
             "scheduler": {"type": "asha", "grace_period": 1}, "max_concurrent": 1},
    "tracking": {"uri": None, "experiment": None},
    "artifacts": {"top_k": 1},
    "registry": {"model_name": None, "promote": True},
    "profiles": {"smoke": {"tune": {"num_samples": 1}}},
}


@st.composite
def sweep_files(draw):
    kind = draw(st.sampled_from(["yaml"] * 6 + ["bytes", "text"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "text":
        return draw(st.text(alphabet="ab:{}[]-,$\n '\"#&*!|>%@`", max_size=80)).encode()
    return yaml.safe_dump(draw(mutated(SWEEP)), allow_unicode=True).encode()


def _sweep_ok(sweep):
    for param in sweep.params:  # each searched value's config builds, its condition met
        context = {other: allowed[0] for other, allowed in param.when.items()}
        sweep.config_for({**context, param.path: param.values[0]})


@settings(PROFILE, max_examples=50)
@given(data=sweep_files(), profile=st.sampled_from([None, None, "smoke", "nope"]))
def test_sweep_file_parser(tmp_path_factory, data, profile):
    from sweeps.errors import SweepError
    from sweeps.spec import load_sweep

    path = tmp_path_factory.mktemp("s") / "sweep.yaml"
    path.write_bytes(data)
    judge_call("sweep-file parser: damaged files", lambda: load_sweep(path, profile=profile),
               (SweepError,), (str(path),), _sweep_ok)
