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
