"""The CUDA code paths on a real GPU (marked ``gpu``: skipped when torch sees no CUDA device).

Model forward and chunked inference on CUDA against the CPU, BSSEval on CUDA tensors against
museval, and one training step on CUDA. TF32 is switched off so that float32 convolutions and
matrix products on the GPU round like float32 (TF32 keeps 10 mantissa bits).
"""

from __future__ import annotations

import museval
import numpy as np
import pytest
import torch

from sepcore.checkpoint import load_checkpoint
from sepcore.metrics.bsseval import evaluate
from sepcore.models import build_model
from sepcore.separate import apply_model
from sepcore.train import fit
from tests.sepcore.helpers import SIZES, tiny_config
from tests.sepcore.metrics.test_bsseval_fast import WELL_POSED, _signals

pytestmark = pytest.mark.gpu


@pytest.fixture(autouse=True)
def no_tf32():
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def test_forward_and_chunked_inference_on_cuda_match_the_cpu():
    encoder, masker = SIZES["mini"]
    torch.manual_seed(0)
    model = build_model("convtasnet", {"sources": ["vocals", "accompaniment"], "audio_channels": 2,
                                       "sample_rate": 8000, "encoder": encoder,
                                       "masker": {**masker, "norm": "cLN"}}).eval()
    x = torch.randn(2, 2, 3 * 8000)  # (B, C, T)
    with torch.no_grad():
        on_cpu = model(x)
        on_cuda = model.to("cuda")(x.to("cuda"))
    assert on_cuda.device.type == "cuda"
    # float32 with other summation orders (cuDNN vs oneDNN), through ~10 layers: 1e-4 x the scale
    scale = float(on_cpu.abs().max())
    torch.testing.assert_close(on_cuda.cpu(), on_cpu, rtol=1e-4, atol=1e-4 * scale)
    chunked = apply_model(model, x, segment=0.7, device="cuda")  # chunks on the GPU, song on CPU
    assert chunked.device.type == "cpu"
    torch.testing.assert_close(chunked, on_cpu, rtol=1e-4, atol=1e-4 * scale)


def test_bsseval_on_cuda_tensors_matches_museval():
    """torch.fft and batched matmuls on the GPU (float64): museval's numbers to round-off (the
    tolerance of the CPU tests, WELL_POSED)."""
    refs, ests = _signals(4, 3, 2.5, 8000, 2)
    ours = np.stack(evaluate(torch.from_numpy(refs).cuda(), torch.from_numpy(ests).cuda(),
                             win=8000, hop=8000))
    theirs = np.stack(museval.evaluate(refs, ests, win=8000, hop=8000, mode="v4"))
    assert ours.shape == theirs.shape == (4, 3, 2)  # (metrics, sources, windows)
    assert np.isfinite(theirs).all()
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=WELL_POSED)


def test_one_training_epoch_on_cuda(synth_root, cache_dir, tmp_path):
    result = fit(tiny_config(synth_root, tmp_path, cache_dir, size="mini", epochs=1,
                             steps_per_epoch=2, batch_size=2, device="cuda"))
    assert result.global_step == 2
    state = load_checkpoint(result.last_checkpoint).model_state
    assert all(t.device.type == "cpu" and torch.isfinite(t).all() for t in state.values())


def test_batched_validation_on_cuda_matches_the_cpu(synth_root, cache_dir, tmp_path):
    """The trainer's validation with every batch and estimate on the GPU: the CPU's numbers."""
    from sepcore.data import build_datasets
    from sepcore.losses import build_loss
    from sepcore.train import _validate

    cfg = tiny_config(synth_root, tmp_path, cache_dir, size="mini", batch_size=4)
    cfg.data.valid_segment = 2.0
    torch.manual_seed(0)
    model = build_model(cfg.model_name, cfg.model).eval()
    _, valid_set = build_datasets(cfg.data, seed=0)
    loss_fn = build_loss(cfg.train.loss)
    on_cpu = _validate(cfg, model, valid_set, loss_fn, torch.device("cpu"))
    on_cuda = _validate(cfg, model.to("cuda"), valid_set, loss_fn, torch.device("cuda"))
    assert on_cuda[0] == pytest.approx(on_cpu[0], rel=1e-4)
    assert list(on_cuda[2].values()) == pytest.approx(list(on_cpu[2].values()), abs=1e-3)  # dB


def test_sep_evaluate_runs_bsseval_on_the_gpu(synth_root, cache_dir, tmp_path, monkeypatch):
    """`sep evaluate` on CUDA (eval.metrics_device auto): BSSEval on CUDA tensors, the CPU's
    scores (SDR needs no filters: round-off; the other metrics to the tolerance of badly
    conditioned systems, TOL)."""
    import json

    from sepcore.checkpoint import Checkpoint, save_checkpoint
    from sepcore.evaluate import evaluate_checkpoint
    from tests.sepcore.helpers import experiment_config
    from tests.sepcore.metrics.test_bsseval_fast import TOL
    from tests.sepcore.toy_models import register_toy_models

    register_toy_models(monkeypatch)
    cfg = experiment_config({"name": "true_sources", "leak": 0.1}, synth_root, tmp_path / "run",
                            cache_dir, evaluation={"max_tracks": 1})
    path = save_checkpoint(tmp_path / "c.safetensors",
                           Checkpoint(config=cfg.to_dict(), model_state={}))
    on_cpu = evaluate_checkpoint(path, out_dir=tmp_path / "cpu", device="cpu", progress=False)
    on_cuda = evaluate_checkpoint(path, out_dir=tmp_path / "cuda", device="cuda", progress=False)
    assert json.loads(on_cuda.summary_path.read_text())["bsseval_device"].startswith("cuda")
    assert json.loads(on_cpu.summary_path.read_text())["bsseval_device"] == "cpu"
    for target, row in on_cpu.scores.items():
        assert on_cuda.scores[target]["SDR"] == pytest.approx(row["SDR"], abs=WELL_POSED)
        np.testing.assert_allclose(list(on_cuda.scores[target].values()), list(row.values()),
                                   rtol=0, atol=TOL)
