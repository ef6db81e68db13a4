"""The training loop: learning, exact resume, divergence, hooks, schedules, budgets, devices.

The bookkeeping tests use the "mini" Conv-TasNet of ``tests.sepcore.helpers`` (milliseconds per
step): what they check (which epochs run, when the LR drops, which checkpoints exist) does not
depend on what the model learns.
"""

import math

import pytest
import torch

import sepcore.train as train_mod
from sepcore.checkpoint import load_checkpoint, load_model
from sepcore.errors import CheckpointError, ConfigError, TrainingDiverged
from sepcore.metrics.sisdr import si_sdr
from sepcore.separate import apply_model
from sepcore.train import fit, select_device
from tests.sepcore.helpers import poison_loss, tiny_config


def _weights(path):
    return load_checkpoint(path).model_state


def _mini(root, out_dir, cache_dir, **train):
    """Two steps of two items per epoch of the mini model; exact (deterministic) by default."""
    params = {"size": "mini", "steps_per_epoch": 2, "batch_size": 2, "deterministic": True}
    return tiny_config(root, out_dir, cache_dir, **{**params, **train})


class EpochRecorder:
    """A hook that records the epochs ``fit`` actually ran (and their metrics)."""

    def __init__(self):
        self.metrics = []

    @property
    def epochs(self):
        return [m["epoch"] for m in self.metrics]

    def on_epoch_end(self, metrics):
        self.metrics.append(metrics)


@pytest.fixture(scope="module", autouse=True)
def restore_determinism():
    """``train.deterministic`` switches torch's deterministic algorithms on for the process."""
    enabled = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    yield
    torch.use_deterministic_algorithms(enabled, warn_only=warn_only)


def _assert_same_weights(a_path, b_path):
    a, b = _weights(a_path), _weights(b_path)
    assert a.keys() == b.keys()
    for key in a:  # deterministic algorithms, same process and thread count: bit-identical
        assert torch.equal(a[key], b[key]), key


@pytest.fixture(scope="module")
def straight(synth_root, cache_dir, tmp_path_factory):
    """Three epochs in one go, keeping one checkpoint per epoch; and the epochs its hook saw."""
    recorder = EpochRecorder()
    out = tmp_path_factory.mktemp("straight")
    result = fit(_mini(synth_root, out, cache_dir, epochs=3, keep_every=True), hooks=[recorder])
    return result, recorder.epochs


def test_keep_every_keeps_one_checkpoint_per_epoch(straight):
    result, epochs = straight
    assert epochs == [1, 2, 3] and result.epochs_run == 3
    kept = sorted(p.name for p in result.out_dir.glob("epoch_*.safetensors"))
    assert kept == ["epoch_001.safetensors", "epoch_002.safetensors", "epoch_003.safetensors"]
    steps = []
    for epoch, name in enumerate(kept, start=1):
        state = load_checkpoint(result.out_dir / name).train_state
        assert state["epoch"] == epoch and len(state["history"]) == epoch
        steps.append(state["global_step"])
    assert steps == [2, 4, 6]
    # the epochs differ (training happened between them) and the last one is last.safetensors
    first, last = _weights(result.out_dir / kept[0]), _weights(result.out_dir / kept[-1])
    assert any(not torch.equal(first[k], last[k]) for k in first)
    _assert_same_weights(result.out_dir / kept[-1], result.last_checkpoint)


def test_resume_auto_runs_only_the_remaining_epochs(straight, synth_root, cache_dir, tmp_path):
    reference, _ = straight
    first = fit(_mini(synth_root, tmp_path / "b", cache_dir, epochs=2))
    assert first.epochs_run == 2 and not list((tmp_path / "b").glob("epoch_*"))  # no keep_every
    recorder = EpochRecorder()
    resumed = fit(_mini(synth_root, tmp_path / "b", cache_dir, epochs=3, resume="auto"),
                  hooks=[recorder])
    assert recorder.epochs == [3]  # a resume that restarted from scratch would report 1, 2, 3
    assert resumed.epochs_run == 3 and resumed.global_step == reference.global_step == 6
    _assert_same_weights(reference.last_checkpoint, resumed.last_checkpoint)
    # and the trajectory is the same, not only the end point (the history comes from the file)
    assert [h["train_loss"] for h in reference.history] == \
        [h["train_loss"] for h in resumed.history]


def test_resume_from_an_explicit_checkpoint(straight, synth_root, cache_dir, tmp_path):
    """``train.resume=<path>`` continues that run's epoch 1 in a new folder: epochs 2 and 3."""
    reference, _ = straight
    recorder = EpochRecorder()
    resumed = fit(_mini(synth_root, tmp_path / "c", cache_dir, epochs=3,
                        resume=str(reference.out_dir / "epoch_001.safetensors")),
                  hooks=[recorder])
    assert recorder.epochs == [2, 3] and resumed.global_step == 6
    _assert_same_weights(reference.last_checkpoint, resumed.last_checkpoint)


def test_resume_is_exact_with_the_mel_encoder_and_meta_tasnet_augmentation(synth_root, cache_dir,
                                                                          tmp_path):
    """The mel branch's pooled statistics travel with the checkpoint, and half-batch remixing
    with per-source channels stays a function of (seed, epoch, index): 1 + 1 epochs == 2."""
    from sepcore.config import AugmentConfig
    from tests.sepcore.helpers import experiment_config

    def config(out, epochs, resume=None):
        cfg = experiment_config(
            {"name": "convtasnet", "encoder": {"N": 16, "L": 16, "encoding": "hybrid",
                                               "filterbank": "mel", "num_mels": 8, "n_fft": 256},
             "masker": {"B": 16, "H": 32, "P": 3, "X": 2, "R": 1}},
            synth_root, tmp_path / out, cache_dir,
            train={"epochs": epochs, "steps_per_epoch": 1, "batch_size": 4,
                   "deterministic": True, "resume": resume})
        cfg.data.augment = AugmentConfig(random_channel=True, channel_pick="source",
                                         channel_swap=False, remix_share=0.5)
        return cfg

    straight = fit(config("a", 2))
    fit(config("b", 1))
    resumed = fit(config("b", 2, resume="auto"))
    _assert_same_weights(straight.last_checkpoint, resumed.last_checkpoint)
    state = _weights(resumed.last_checkpoint)
    assert float(state["encoder.mel.seen"]) == 8  # 2 epochs x 1 step x 4 inputs pooled
    assert [h["train_loss"] for h in straight.history] == \
        [h["train_loss"] for h in resumed.history]


def test_resume_from_a_missing_checkpoint_names_it(synth_root, cache_dir, tmp_path):
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(CheckpointError, match=r"train\.resume=.*nope\.safetensors"):
        fit(_mini(synth_root, tmp_path / "d", cache_dir, resume=str(missing)))


def test_without_resume_an_existing_run_starts_over(synth_root, cache_dir, tmp_path):
    fit(_mini(synth_root, tmp_path / "e", cache_dir, epochs=1))
    recorder = EpochRecorder()
    again = fit(_mini(synth_root, tmp_path / "e", cache_dir, epochs=2), hooks=[recorder])
    assert recorder.epochs == [1, 2] and again.global_step == 4


def test_nan_loss_raises_training_diverged(synth_root, cache_dir, tmp_path, monkeypatch):
    poison_loss(monkeypatch, lambda n: n == 3, float("nan"))
    with pytest.raises(TrainingDiverged, match=r"epoch 1, step 3") as info:
        fit(_mini(synth_root, tmp_path / "nan", cache_dir, steps_per_epoch=5))
    assert info.value.step == 3 and info.value.epoch == 1


def test_hooks_checkpoints_and_stop_request(synth_root, cache_dir, tmp_path):
    seen, paths = [], []

    class Hook:
        def on_epoch_end(self, metrics):
            seen.append(metrics)

        def on_checkpoint(self, path):
            paths.append(path)

        def should_stop(self):
            return len(seen) >= 2

    result = fit(_mini(synth_root, tmp_path / "h", cache_dir, epochs=5), hooks=[Hook()])
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
    result = fit(_mini(synth_root, tmp_path / "s", cache_dir, epochs=10, steps_per_epoch=5,
                       max_steps=7))
    assert result.global_step == 7 and result.epochs_run == 2


# --- early stopping and the LR schedule, on a scripted validation loss ---------------------------

# Epoch:          1    2     3     4    5     6     7     8     9
SCRIPT = [1.0, 0.9, 0.95, 0.95, 0.8, 0.85, 0.85, 0.85, 0.1]


def _scripted_validation(monkeypatch, losses):
    """Replace validation by the given loss sequence (one value per epoch)."""
    remaining = list(losses)
    monkeypatch.setattr(train_mod, "_validate",
                        lambda *args: (remaining.pop(0), 0.0, {}))


def test_early_stop_after_n_epochs_without_improvement(synth_root, cache_dir, tmp_path,
                                                       monkeypatch):
    """early_stop=3: epochs 3-4 do not improve, 5 does (the count restarts), 6-8 do not: stop
    after epoch 8. Without the restart it would stop after 6; never stopping would reach 9."""
    _scripted_validation(monkeypatch, SCRIPT)
    recorder = EpochRecorder()
    result = fit(_mini(synth_root, tmp_path / "es", cache_dir, epochs=20, steps_per_epoch=1,
                       early_stop=3, lr_patience=100), hooks=[recorder])
    assert recorder.epochs == [1, 2, 3, 4, 5, 6, 7, 8]
    assert result.stopped_early and result.epochs_run == 8
    assert result.best_valid_loss == 0.8
    assert load_checkpoint(result.best_checkpoint).train_state["epoch"] == 5  # the best epoch
    assert load_checkpoint(result.last_checkpoint).train_state["bad_epochs"] == 3


def test_early_stop_zero_never_stops(synth_root, cache_dir, tmp_path, monkeypatch):
    _scripted_validation(monkeypatch, [1.0] * 6)
    result = fit(_mini(synth_root, tmp_path / "es0", cache_dir, epochs=6, steps_per_epoch=1,
                       early_stop=0))
    assert result.epochs_run == 6 and not result.stopped_early


def test_lr_is_multiplied_by_lr_factor_after_patience_epochs(synth_root, cache_dir, tmp_path,
                                                             monkeypatch):
    """torch's ReduceLROnPlateau: ``lr_patience`` epochs without improvement are tolerated, the
    next one multiplies the LR by ``lr_factor`` (and the count restarts).

    lr_patience=1 on SCRIPT: epoch 3 is the 1st bad epoch, 4 the 2nd → LR × 0.5 after epoch 4;
    5 improves; 6 is the 1st bad, 7 the 2nd → × 0.5 again after epoch 7. ``metrics["lr"]`` is the
    LR after the epoch's scheduler step, i.e. the LR the next epoch trains with.
    """
    _scripted_validation(monkeypatch, SCRIPT[:8])
    recorder = EpochRecorder()
    result = fit(_mini(synth_root, tmp_path / "lr", cache_dir, epochs=8, steps_per_epoch=1,
                       lr=1e-3, lr_patience=1, lr_factor=0.5), hooks=[recorder])
    lrs = [m["lr"] for m in recorder.metrics]
    assert lrs == pytest.approx([1e-3, 1e-3, 1e-3, 5e-4, 5e-4, 5e-4, 2.5e-4, 2.5e-4], rel=1e-12)
    groups = load_checkpoint(result.last_checkpoint).train_state["optimizer"]["param_groups"]
    assert groups[0]["lr"] == pytest.approx(2.5e-4, rel=1e-12)  # the optimizer's, not a label


def test_flat_validation_loss_stops_training(synth_root, cache_dir, tmp_path, monkeypatch):
    """A validation loss that never improves (the real validation runs; its loss is replaced by a
    constant): epoch 1 sets the best, epochs 2 and 3 are not better, early_stop=2 stops after
    epoch 3."""
    import sepcore.train as train_module

    real = train_module._validate
    monkeypatch.setattr(train_module, "_validate", lambda *args: (0.5, *real(*args)[1:]))
    result = fit(_mini(synth_root, tmp_path / "flat", cache_dir, epochs=10, steps_per_epoch=1,
                       early_stop=2))
    assert result.epochs_run == 3 and result.stopped_early
    assert [h["valid_loss"] for h in result.history] == [0.5, 0.5, 0.5]


# --- devices -------------------------------------------------------------------------------------


def test_cuda_without_cuda_is_a_one_line_config_error(monkeypatch, synth_root, cache_dir,
                                                      tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert select_device("auto") == torch.device("cpu")
    for name in ("cuda", "cuda:0"):
        with pytest.raises(ConfigError) as info:
            select_device(name)
        assert info.value.key == "train.device"
        assert "\n" not in str(info.value) and "CUDA is not available" in str(info.value)
    with pytest.raises(ConfigError, match="train.device") as info:
        fit(_mini(synth_root, tmp_path / "cuda", cache_dir, device="cuda"))
    assert info.value.key == "train.device"
    assert not (tmp_path / "cuda" / "last.safetensors").exists()


def test_bad_device_names_are_config_errors(monkeypatch):
    with pytest.raises(ConfigError, match="'gpu' is not a device") as info:
        select_device("gpu")
    assert info.value.key == "train.device"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ConfigError, match="1 CUDA device") as info:
        select_device("cuda:3")
    assert info.value.key == "train.device"
    assert select_device("cpu") == torch.device("cpu")


@pytest.mark.slow
def test_learning_small_convtasnet_beats_mixture_by_3db(synth_root, cache_dir, tmp_path):
    """A small Conv-TasNet trained for a fixed step budget separates held-out synthetic songs.

    The budget is in steps (about a minute on 2 cores), not in seconds. SI-SDR improvement of the
    vocal estimate over the mixture, on the synthetic *test* songs (never seen in training).
    """
    from sepcore.data import load_subset

    cfg = tiny_config(synth_root, tmp_path / "learn", cache_dir, epochs=100, max_steps=400,
                      steps_per_epoch=50, batch_size=4, lr=2e-3, loss="sisdr", early_stop=0)
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
