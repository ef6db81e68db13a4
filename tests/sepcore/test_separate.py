"""Long-audio inference: seamless chunked overlap-add, any length/rate/channels."""

import numpy as np
import pytest
import soundfile as sf
import torch

from sepcore.checkpoint import save_model
from sepcore.config import config_from_dict
from sepcore.data.audio import read_audio, resample, to_channels
from sepcore.models import build_model
from sepcore.separate import apply_model, separate_files


def _model_cfg(norm, rate=44100, channels=2):
    return config_from_dict({
        "model": {"name": "convtasnet", "encoder": {"N": 32, "L": 16},
                  "masker": {"B": 32, "H": 64, "P": 3, "X": 3, "R": 2, "norm": norm}},
        "audio": {"sample_rate": rate, "channels": channels},
    })


def _checkpoint(tmp_path, norm, **kw):
    torch.manual_seed(0)
    cfg = _model_cfg(norm, **kw)
    model = build_model(cfg.model_name, cfg.model)
    path = save_model(tmp_path / f"{norm}.safetensors", cfg.model_name, model)
    return path, model.eval()


def test_three_minute_song_is_seamless(tmp_path):
    """The stems `sep separate` writes equal one pass of the model over the whole song."""
    from sepcore.data.synth import write_synthetic_musdb

    root = tmp_path / "long"
    write_synthetic_musdb(root, tracks=1, seconds=180.0, seed=7, test_fraction=0.0)
    song = next((root / "train").iterdir()) / "mixture.wav"
    ckpt, model = _checkpoint(tmp_path, "cLN")
    written = separate_files([song], ckpt, tmp_path / "out", segment=7.0, progress=False)
    assert [p.name for p in written] == ["vocals.wav", "accompaniment.wav"]
    stems = np.stack([sf.read(p, dtype="float32", always_2d=True)[0].T for p in written])
    audio, rate = read_audio(song)
    assert audio.shape[-1] == 180 * 44100
    with torch.no_grad():
        one_pass = model(torch.from_numpy(audio)[None])[0].numpy()
    assert stems.shape == one_pass.shape
    assert np.abs(stems - one_pass).max() < 1e-4
    assert np.abs(stems.sum(0) - one_pass.sum(0)).max() < 1e-4


def test_chunking_really_happens_and_matters_for_global_norm(tmp_path):
    """With gLN there is no finite receptive field: chunks are cross-faded, not exact."""
    _, model = _checkpoint(tmp_path, "gLN")
    x = torch.randn(2, 44100 * 6)
    chunked = apply_model(model, x, segment=1.0, overlap=0.25)
    with torch.no_grad():
        whole = model(x[None])[0]
    assert chunked.shape == whole.shape
    assert torch.isfinite(chunked).all()
    assert (chunked - whole).abs().max() > 1e-6  # proves the chunks were separate passes
    single = apply_model(model, x, segment=10.0)
    assert torch.allclose(single, whole, atol=1e-5)


@pytest.mark.parametrize("length", [1, 100, 44100 * 2 + 17])
def test_any_length(tmp_path, length):
    _, model = _checkpoint(tmp_path, "cLN")
    out = apply_model(model, torch.randn(3, 2, length), segment=0.5)
    assert out.shape == (3, 2, 2, length)


def test_any_rate_and_channels(tmp_path):
    ckpt, model = _checkpoint(tmp_path, "cLN", rate=16000, channels=2)
    t = np.arange(22050 * 3) / 22050
    mono = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    path = tmp_path / "mono22k.wav"
    sf.write(path, mono, 22050)
    written = separate_files([path], ckpt, tmp_path / "sep", segment=1.0, progress=False)
    data, rate = sf.read(written[0], always_2d=True)
    assert rate == 16000 and data.shape == (48000, 2)
    expected = to_channels(resample(mono[None], 22050, 16000), 2)
    with torch.no_grad():
        ref = model(torch.from_numpy(np.ascontiguousarray(expected))[None])[0, 0].numpy()
    assert np.abs(data.T - ref).max() < 1e-4
