"""The training loop: learning, exact resume, divergence, hooks, early stopping."""

import math

import pytest
import torch

import sepcore.train as train_mod
from sepcore.checkpoint import load_checkpoint, load_model
from sepcore.errors import TrainingDiverged
from sepcore.metrics.sisdr import si_sdr
from sepcore.separate import apply_model
from sepcore.train import fit
from tests.sepcore.helpers import tiny_config


def _weights(path):
    return load_checkpoint(path).model_state


def test_resume_gives_identical_weights(synth_root, cache_dir, tmp_path):
    straight = fit(tiny_config(synth_root, tmp_path / "a", cache_dir, epochs=3))
    first = fit(tiny_config(synth_root, tmp_path / "b", cache_dir, epochs=2))
    assert first.epochs_run == 2
    resumed = fit(tiny_config(synth_root, tmp_path / "b", cache_dir, epochs=3, resume="auto"))
    assert resumed.epochs_run == 3 and resumed.global_step == straight.global_step == 15
    a, b = _weights(straight.last_checkpoint), _weights(resumed.last_checkpoint)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    # and the trajectory is the same, not only the end point
    assert [h["train_loss"] for h in straight.history] == [h["train_loss"] for h in resumed.history]


def test_interrupted_run_differs_without_resume(synth_root, cache_dir, tmp_path):
    """Guard against a resume test that cannot fail: a fresh start is not the same run."""
    fit(tiny_config(synth_root, tmp_path / "c", cache_dir, epochs=1))
    restarted = fit(tiny_config(synth_root, tmp_path / "c", cache_dir, epochs=2, seed=1))
    straight = fit(tiny_config(synth_root, tmp_path / "d", cache_dir, epochs=2))
    a, b = _weights(straight.last_checkpoint), _weights(restarted.last_checkpoint)
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_nan_loss_raises_training_diverged(synth_root, cache_dir, tmp_path, monkeypatch):
    real = train_mod.build_loss
    calls = {"n": 0}

    def poisoned(name, weights=None):
        fn = real(name, weights)

        def loss(est, tgt):
            calls["n"] += 1
            value = fn(est, tgt)
            return value * float("nan") if calls["n"] == 3 else value
        return loss

    monkeypatch.setattr(train_mod, "build_loss", poisoned)
    with pytest.raises(TrainingDiverged, match=r"epoch 1, step 3") as info:
        fit(tiny_config(synth_root, tmp_path / "nan", cache_dir))
    assert info.value.step == 3 and info.value.epoch == 1


def test_hooks_checkpoints_and_early_stop(synth_root, cache_dir, tmp_path):
    seen, paths = [], []

    class Hook:
        def on_epoch_end(self, metrics):
            seen.append(metrics)

        def on_checkpoint(self, path):
            paths.append(path)

        def should_stop(self):
            return len(seen) >= 2

    result = fit(tiny_config(synth_root, tmp_path / "h", cache_dir, epochs=5), hooks=[Hook()])
    assert result.epochs_run == 2 and result.stopped_early
    assert [m["epoch"] for m in seen] == [1, 2]
    for m in seen:
        assert {"train_loss", "valid_loss", "valid_sisdr", "valid_sisdr_vocals", "lr"} <= set(m)
        assert math.isfinite(m["train_loss"])
    assert paths and all(p.exists() for p in paths)
    assert result.best_checkpoint.exists()
    ckpt = load_checkpoint(result.last_checkpoint)
    assert ckpt.train_state["epoch"] == 2 and "rng" in ckpt.train_state


def test_max_steps_budget(synth_root, cache_dir, tmp_path):
    result = fit(tiny_config(synth_root, tmp_path / "s", cache_dir, epochs=10, max_steps=7))
    assert result.global_step == 7 and result.epochs_run == 2


@pytest.mark.slow
def test_learning_small_convtasnet_beats_mixture_by_3db(synth_root, cache_dir, tmp_path):
    """A small Conv-TasNet trained for a fixed step budget separates held-out synthetic songs.

    The budget is in steps (about a minute on 2 cores), not in seconds. SI-SDR improvement of the
    vocal estimate over the mixture, on the synthetic *test* songs (never seen in training).
    """
    from sepcore.data import load_subset

    cfg = tiny_config(synth_root, tmp_path / "learn", cache_dir, epochs=100, max_steps=400,
                      steps_per_epoch=50, batch_size=8, lr=2e-3, loss="sisdr", early_stop=0)
    result = fit(cfg)
    assert result.global_step == 400
    model, _ = load_model(result.last_checkpoint)
    songs = load_subset(cfg.data, subset="test")
    assert len(songs) >= 2
    improvements = []
    for song in songs:
        mixture = torch.from_numpy(song.mixture.copy())
        vocals = torch.from_numpy(song.targets(["vocals"])[0].copy())
        estimate = apply_model(model, mixture, segment=4.0)[0]
        improvements.append(float(si_sdr(estimate, vocals).mean() - si_sdr(mixture, vocals).mean()))
    mean_improvement = sum(improvements) / len(improvements)
    print(f"vocal SI-SDR improvement per test song: {improvements}")
    assert mean_improvement >= 3.0, improvements


def test_deep_supervision_loss_combines_final_and_intermediate():
    """β·L_a(intermediate) + α·L_d(final) for any model with the Separation side channel."""
    from types import SimpleNamespace

    from sepcore.losses import build_loss
    from sepcore.models.base import Separation
    from sepcore.train import _training_loss

    class TwoStage(torch.nn.Module):
        has_intermediate = True

        def __init__(self):
            super().__init__()
            self.first = torch.nn.Parameter(torch.tensor(0.5))
            self.second = torch.nn.Parameter(torch.tensor(2.0))

        def separate(self, mixture):
            coarse = self.first * mixture[:, None]
            return Separation(estimate=self.second * coarse, intermediate={"coarse": coarse})

        def forward(self, mixture):
            return self.separate(mixture).estimate

    model = TwoStage()
    mixture = torch.ones(1, 1, 10)
    targets = torch.zeros(1, 1, 1, 10)
    l1, mse = build_loss("l1"), build_loss("mse")
    for alpha, beta in ((1.0, 0.0), (1.0, 0.5), (0.1, 1.0)):
        tc = SimpleNamespace(loss_weight=alpha, aux_weight=beta)
        loss = _training_loss(model, mixture, targets, l1, mse, tc)
        assert loss.item() == pytest.approx(alpha * 1.0 + beta * 0.25)
    tc0 = SimpleNamespace(loss_weight=1.0, aux_weight=0.0)
    model.zero_grad()
    _training_loss(model, mixture, targets, l1, mse, tc0).backward()
    g0 = model.first.grad.clone()
    model.zero_grad()
    _training_loss(model, mixture, targets, l1, mse,
                   SimpleNamespace(loss_weight=1.0, aux_weight=0.5)).backward()
    assert model.first.grad.item() != pytest.approx(g0.item())  # β reaches the first stage
