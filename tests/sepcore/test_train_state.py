"""The trainer's TrainState: its checkpoint form (``train_state`` JSON) and resuming from it."""

from __future__ import annotations

import math

import pytest
import torch

from sepcore.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from sepcore.config import config_from_dict
from sepcore.errors import CheckpointError
from sepcore.models import build_model
from sepcore.train import TrainState, _restore, _save

# The train_state keys as checkpoints of format_version 1 have them, in order.
KEYS = ["epoch", "global_step", "best_valid_loss", "bad_epochs", "history", "optimizer",
        "scheduler", "rng"]


def _cfg():
    return config_from_dict({
        "model": {"name": "convtasnet",
                  "encoder": {"N": 16, "L": 8}, "masker": {"B": 8, "H": 16, "X": 2, "R": 1}},
        "audio": {"sample_rate": 8000, "channels": 1},
    })


def _trainer(seed: int):
    """A model, its Adam and plateau scheduler, built from ``seed``."""
    cfg = _cfg()
    torch.manual_seed(seed)
    model = build_model(cfg.model_name, cfg.model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=1)
    return cfg, model, optimizer, scheduler


def _trained_state() -> TrainState:
    state = TrainState()
    for epoch, loss in enumerate([0.5, 0.25, 0.375], start=1):
        state.global_step += 4
        state.end_epoch(epoch, loss)
        state.history.append({"epoch": epoch, "step": state.global_step, "valid_loss": loss})
    return state


def test_end_epoch_tracks_the_best_loss_and_the_epochs_since():
    state = _trained_state()
    assert (state.epoch, state.global_step) == (3, 12)
    assert state.best_valid_loss == 0.25 and state.bad_epochs == 1
    assert state.end_epoch(4, 0.125) and state.bad_epochs == 0
    assert not state.end_epoch(5, math.nan) and state.bad_epochs == 1  # NaN never improves


@pytest.mark.parametrize("state", [TrainState(), _trained_state()], ids=["fresh", "trained"])
def test_train_state_roundtrips_through_a_checkpoint(tmp_path, state):
    cfg, model, optimizer, scheduler = _trainer(seed=0)
    model(torch.randn(2, 1, 800)).pow(2).mean().backward()
    optimizer.step()
    scheduler.step(1.0)
    path = _save(tmp_path / "last.safetensors", cfg, model, optimizer, scheduler, state,
                 {"epoch": state.epoch})
    stored = load_checkpoint(path).train_state
    assert list(stored) == KEYS
    assert TrainState.from_checkpoint_dict(stored, path) == state

    _, other, other_optimizer, other_scheduler = _trainer(seed=1)
    restored = _restore(path, other, other_optimizer, other_scheduler, torch.device("cpu"))
    assert restored == state and restored is not state
    assert math.isinf(TrainState().best_valid_loss) and TrainState().history == []
    for key, value in model.state_dict().items():
        assert torch.equal(other.state_dict()[key], value), key
    assert other_scheduler.state_dict() == scheduler.state_dict()
    assert other_optimizer.state_dict()["state"][0]["step"] == 1


def test_a_checkpoint_without_trainer_counters_is_refused_by_name(tmp_path):
    cfg, model, optimizer, scheduler = _trainer(seed=0)
    path = save_checkpoint(tmp_path / "weights.safetensors", Checkpoint(
        config=cfg.to_dict(), model_state=model.state_dict(), train_state={"epoch": 3}))
    with pytest.raises(CheckpointError, match=r"weights\.safetensors.*'global_step'"):
        _restore(path, model, optimizer, scheduler, torch.device("cpu"))
