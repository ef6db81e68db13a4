"""GPU-first training on the CPU: device resolution, mixed precision (bf16 through CPU autocast,
fp16 with the gradient scaler on the CPU), float32 islands, CUDA flags, the cached
pseudo-inverse and a step loop without host syncs.

The CUDA code paths are exercised with CPU tensors and faked device checks; no test needs a GPU.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch

import sepcore
import sepcore.train as train_mod
from sepcore.config import config_from_dict
from sepcore.errors import ConfigError, TrainingDiverged
from sepcore.models import build_model
from sepcore.models.base import float32
from sepcore.models.convtasnet import (
    ChannelwiseLayerNorm,
    GlobalLayerNorm,
    apply_mask_nonlinearity,
)
from sepcore.models.unet import soft_masks
from sepcore.train import autocast_dtype, cuda_speedups, fit, select_device
from tests.sepcore.helpers import poison_loss, tiny_config
from tests.sepcore.models.test_contract import SMALL, build_small, inputs

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


# --- device and AMP mode resolution -------------------------------------------------------------


@pytest.mark.parametrize(("cuda_version", "says"), [
    (None, "was built without CUDA (torch.version.cuda is None)"),
    ("12.4", "is a CUDA 12.4 build but sees no GPU"),
])
def test_cuda_without_a_gpu_says_why(monkeypatch, cuda_version, says):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", cuda_version)
    for name in ("cuda", "cuda:1"):
        with pytest.raises(ConfigError) as info:
            select_device(name)
        message = str(info.value)
        assert info.value.key == "train.device" and "\n" not in message
        assert says in message and f"train.device='{name}'" in message
    with pytest.raises(ConfigError) as info:  # the same resolution names the caller's key
        select_device("cuda", key="eval.device")
    assert info.value.key == "eval.device" and "eval.device='cuda'" in str(info.value)
    assert select_device("auto") == CPU


def test_autocast_dtype_per_mode_and_device(monkeypatch):
    assert autocast_dtype("off", CPU) is None
    assert autocast_dtype("auto", CPU) is None  # CPU autocast only when asked for
    assert autocast_dtype("bf16", CPU) == torch.bfloat16
    assert autocast_dtype("fp16", CPU) == torch.float16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert autocast_dtype("auto", CUDA) == torch.bfloat16
    assert autocast_dtype("fp16", CUDA) == torch.float16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla V100")
    assert autocast_dtype("auto", CUDA) is None
    with pytest.raises(ConfigError, match="Tesla V100 has no native bfloat16") as info:
        autocast_dtype("bf16", CUDA)
    assert info.value.key == "train.amp"


@pytest.mark.parametrize(("value", "mode"), [
    (True, "auto"), (False, "off"), ("bf16", "bf16"), ("FP16", "fp16"), ("off", "off"),
    ("auto", "auto")])
def test_train_amp_values_and_booleans_of_older_configs(value, mode):
    cfg = config_from_dict({"model": {"name": "convtasnet"}, "train": {"amp": value}})
    assert cfg.train.amp == mode


@pytest.mark.parametrize("value", ["fp8", "yes", 1.5])
def test_bad_train_amp_is_a_one_line_config_error(value):
    with pytest.raises(ConfigError, match="train.amp") as info:
        config_from_dict({"model": {"name": "convtasnet"}, "train": {"amp": value}})
    assert info.value.key == "train.amp" and "\n" not in str(info.value)


@pytest.mark.parametrize("deterministic", [False, True])
def test_cuda_speedups_set_tf32_and_benchmark_and_restore_them(deterministic):
    flags = (torch.backends.cuda.matmul, "allow_tf32"), (torch.backends.cudnn, "allow_tf32"), \
        (torch.backends.cudnn, "benchmark")

    def read():
        return [getattr(owner, name) for owner, name in flags]

    before = read()
    try:
        for owner, name in flags:  # a caller's own settings, all off
            setattr(owner, name, False)
        with cuda_speedups(CPU):
            assert read() == [False, False, False]  # nothing changes off CUDA
        with pytest.raises(RuntimeError, match="boom"), cuda_speedups(CUDA, deterministic):
            assert read() == [True, True, not deterministic]
            raise RuntimeError("boom")
        assert read() == [False, False, False]  # restored, also after an error
    finally:
        for (owner, name), value in zip(flags, before, strict=True):
            setattr(owner, name, value)


def test_fit_runs_inside_cuda_speedups(monkeypatch):
    """``fit`` wraps the whole run in :func:`cuda_speedups` for the device it resolved."""
    seen = []

    class Recorder:
        def __init__(self, device, deterministic):
            seen.append((device, deterministic))

        def __enter__(self):
            seen.append("enter")

        def __exit__(self, *exc):
            seen.append("exit")

    monkeypatch.setattr(train_mod, "cuda_speedups", Recorder)
    monkeypatch.setattr(train_mod, "_fit", lambda cfg, hooks, device: seen.append("fit"))
    cfg = config_from_dict({"model": {"name": "convtasnet"}, "train": {"deterministic": True}})
    fit(cfg)
    assert seen == [(CPU, True), "enter", "fit", "exit"]


# --- float32 islands under autocast -------------------------------------------------------------


def test_float32_decorator_runs_without_autocast():
    @float32
    def product(a, b, scale=None):
        return a @ b * (1 if scale is None else scale)

    a = torch.randn(4, 4, dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert (torch.randn(4, 4) @ torch.randn(4, 4)).dtype == torch.bfloat16  # autocast is on
        assert product(a, a, scale=torch.tensor(2.0, dtype=torch.float16)).dtype == torch.float32
        assert product(a.double(), a.double()).dtype == torch.float64  # float64 stays


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_masks_and_norms_are_float32_under_autocast(dtype):
    x = torch.randn(2, 8, 50).to(dtype)
    with torch.autocast("cpu", dtype=dtype):
        for norm in (GlobalLayerNorm(8), ChannelwiseLayerNorm(8)):
            out = norm(x)
            assert out.dtype == torch.float32
            torch.testing.assert_close(out, norm(x.float()))  # same as from float32 input
        for kind in ("sigmoid", "softmax", "relu"):
            assert apply_mask_nonlinearity(x[:, None], kind).dtype == torch.float32


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_soft_masks_of_vanishing_scores_stay_finite(dtype):
    scores = torch.zeros(2, 3, 4, 5, dtype=dtype)  # every network's sigmoid mask underflowed
    if dtype == torch.float16:  # what the eq. (2) mask is in fp16: 1e-8 rounds to 0, so 0/0
        naive = scores + 1e-8
        assert torch.isnan(naive / naive.sum(dim=1, keepdim=True)).all()
    with torch.autocast("cpu", dtype=dtype):
        masks = soft_masks(scores)
    assert masks.dtype == torch.float32 and torch.isfinite(masks).all()
    torch.testing.assert_close(masks, torch.full_like(masks, 1 / 3))  # a partition of one


@pytest.mark.parametrize("name", ["unet", "fusionnet"])
def test_spectrogram_unets_stay_finite_on_tiny_inputs_under_autocast(name, one_thread):
    model = build_small(name, 2)
    mixture = 1e-30 * torch.randn(2, 2, 4000, generator=torch.Generator().manual_seed(0))
    masks = model.masks(model.stft(mixture.reshape(4, -1)).abs())
    for dtype in (torch.bfloat16, torch.float16):
        with torch.no_grad(), torch.autocast("cpu", dtype=dtype):
            out = model(mixture)
            masks = model.masks(model.stft(mixture.reshape(4, -1)).abs())
        assert torch.isfinite(out).all() and masks.dtype == torch.float32
        torch.testing.assert_close(masks.sum(dim=1), torch.ones_like(masks[:, 0]))


def test_openunmix_normalises_its_input_in_float32(one_thread):
    model = build_small("openunmix", 2)
    net = next(iter(model.unmix.values()))
    magnitude = 300 * torch.rand(5, 2, 2, 129)  # (K, B, C, F): raw magnitudes in the hundreds
    with torch.autocast("cpu", dtype=torch.bfloat16):
        x = net.normalise_input(magnitude.to(torch.bfloat16))
        spec = model.stft(torch.randn(4, 4000))
    assert x.dtype == torch.float32 and spec.dtype == torch.complex64


PAPER_FAMILIES = ["convtasnet", "multiband", "openunmix", "unet", "fusionnet", "mad",
                  "metatasnet", "htmd", "waveunet"]


@pytest.mark.parametrize("name", PAPER_FAMILIES)
def test_every_paper_family_trains_a_step_under_bf16_autocast(name, one_thread):
    assert name in SMALL
    model = build_small(name, 2).train()
    mixture, sources = inputs(model, 4000)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        estimate = model(mixture)
        loss = (estimate.float() - sources).abs().mean()
    assert estimate.shape == sources.shape and torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads), "no gradient reached"
    assert all(g is None or torch.isfinite(g).all() for g in grads)


# --- the pseudo-inverse cached in eval mode -----------------------------------------------------


def test_pinv_decoder_is_cached_in_eval_and_follows_weight_changes(monkeypatch, one_thread):
    calls = []
    real = torch.linalg.pinv
    monkeypatch.setattr(torch.linalg, "pinv", lambda *a, **k: calls.append(1) or real(*a, **k))
    params = copy.deepcopy(SMALL["convtasnet"])
    params["encoder"]["who_is_pinv"] = "dec"
    model = build_model("convtasnet", {**params, "audio_channels": 1}).eval()
    x = torch.randn(1, 1, 800)
    with torch.no_grad():
        first = [model(x) for _ in range(3)]
    assert len(calls) == 1  # one SVD for three forwards
    assert all(torch.equal(first[0], y) for y in first[1:])
    with torch.no_grad():
        next(model.encoder.parameters()).mul_(1.5)  # an in-place update (optimizer step, load)
        changed = model(x)
    assert len(calls) == 2 and not torch.allclose(changed, first[0])
    calls.clear()
    model(x).sum().backward()  # eval with autograd: fresh each time, gradients reach the source
    assert len(calls) == 1 and next(model.encoder.parameters()).grad is not None
    model.train()
    with torch.no_grad():
        model(x)
        model(x)
    assert len(calls) == 3  # training mode: every forward
    model.eval()
    with torch.no_grad():
        model(x)
        model(x)
    assert len(calls) == 4


# --- the step loop: no host sync per step; non-finite steps --------------------------------------


def _mini(root, out_dir, cache_dir, **train):
    params = {"size": "mini", "steps_per_epoch": 2, "batch_size": 2, "epochs": 1}
    return tiny_config(root, out_dir, cache_dir, **{**params, **train})


SYNCS = ("item", "tolist", "__bool__", "__float__", "__int__", "cpu", "numpy")


LIBRARY = str(Path(sepcore.__file__).parent)


def _syncs_in_train_epoch(monkeypatch, cfg) -> int:
    """Calls from sepcore's code that read a tensor back to the host, made inside
    ``_train_epoch`` (torch's own CPU-side reads, e.g. Adam's step counters, are not counted)."""
    count = {"n": 0, "on": False}
    for name in SYNCS:
        real = getattr(torch.Tensor, name)

        def counted(self, *args, _real=real, **kwargs):
            caller = sys._getframe(1).f_code.co_filename
            count["n"] += count["on"] and caller.startswith(LIBRARY)
            return _real(self, *args, **kwargs)
        monkeypatch.setattr(torch.Tensor, name, counted)
    real_epoch = train_mod._train_epoch

    def epoch(*args, **kwargs):
        count["on"] = True
        try:
            return real_epoch(*args, **kwargs)
        finally:
            count["on"] = False
    monkeypatch.setattr(train_mod, "_train_epoch", epoch)
    fit(cfg)
    monkeypatch.undo()
    return count["n"]


def test_no_host_sync_per_step(synth_root, cache_dir, tmp_path, monkeypatch):
    """No ``.item()`` in the step loop: the syncs of an epoch do not grow with its steps."""
    syncs = {steps: _syncs_in_train_epoch(monkeypatch, _mini(
        synth_root, tmp_path / str(steps), cache_dir, steps_per_epoch=steps, log_every=100))
        for steps in (2, 6)}
    assert syncs[2] == syncs[6] and syncs[2] <= 4, syncs
    # every log_every steps one read of the statistics
    every_two = _syncs_in_train_epoch(monkeypatch, _mini(
        synth_root, tmp_path / "log2", cache_dir, steps_per_epoch=6, log_every=2))
    assert every_two == syncs[6] + 2, (every_two, syncs)


def test_nan_without_scaler_found_at_the_check_names_its_step(synth_root, cache_dir, tmp_path,
                                                             monkeypatch):
    poison_loss(monkeypatch, lambda n: n == 3)
    with pytest.raises(TrainingDiverged, match=r"epoch 1, step 3 \(found when checking steps "
                                               r"3-4\)") as info:
        fit(_mini(synth_root, tmp_path / "nan", cache_dir, steps_per_epoch=6, log_every=2,
                  amp="bf16"))
    assert (info.value.epoch, info.value.step) == (1, 3)


def test_fp16_scaler_skips_non_finite_steps_and_counts_them(synth_root, cache_dir, tmp_path,
                                                            monkeypatch):
    poison_loss(monkeypatch, lambda n: n in (2, 3))  # training calls only: validation comes later
    result = fit(_mini(synth_root, tmp_path / "fp16", cache_dir, steps_per_epoch=5,
                       amp="fp16", log_every=2))
    metrics = result.history[0]
    assert metrics["skipped_steps"] == 2 and result.global_step == 5
    assert 0 < metrics["train_loss"] < float("inf")  # the mean of the finite steps


def test_fp16_run_of_skipped_steps_is_training_diverged(synth_root, cache_dir, tmp_path,
                                                        monkeypatch):
    poison_loss(monkeypatch, lambda n: n >= 2)
    with pytest.raises(TrainingDiverged, match="3 consecutive steps skipped") as info:
        fit(_mini(synth_root, tmp_path / "div", cache_dir, steps_per_epoch=8, amp="fp16",
                  max_skipped_steps=3, log_every=4))
    assert info.value.epoch == 1 and info.value.step == 4


def test_skipped_steps_is_an_epoch_metric():
    assert "skipped_steps" in train_mod.epoch_metric_names(["vocals"])


def test_mel_branch_reads_its_pooled_count_only_when_it_changes(monkeypatch):
    from sepcore.models.filterbanks import MelBranch

    branch = MelBranch(num_mels=4, n_fft=32).train()
    branch.stat_samples = 4
    reads = []
    real = torch.Tensor.__float__
    monkeypatch.setattr(torch.Tensor, "__float__",
                        lambda self: reads.append(1) or real(self))
    x = torch.randn(2, 1, 400)
    for _ in range(5):
        branch(x, 10)
    assert branch.seen_count() == 4 and len(reads) == 3  # 0, 2, then 4: pooling is over
    branch.load_state_dict({**branch.state_dict(), "seen": torch.tensor(1.0)})
    assert branch.seen_count() == 1 and len(reads) == 4  # a loaded count is read again
