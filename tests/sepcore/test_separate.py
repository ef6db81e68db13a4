"""Long-audio inference: seamless chunked overlap-add, any length/rate/channels.

Chunking is checked against one pass over the whole song: a Conv-TasNet with a finite receptive
field (the exact regime), and a pointwise toy model (output at t = gain × input at t) for which the
cross-faded regime must give the whole-song output too, whatever the overlap.
"""

import numpy as np
import pytest
import soundfile as sf
import torch

from sepcore.checkpoint import Checkpoint, save_checkpoint
from sepcore.data.audio import read_audio
from sepcore.models import build_model
from sepcore.separate import apply_model, separate_files
from tests.sepcore.helpers import experiment_config, tiny_config
from tests.sepcore.toy_models import register_toy_models

RATE = 8000


def _checkpoint(tmp_path, model: dict, rate=RATE, channels=2):
    """Save a fresh model (seed 0) of the given registry params and return (path, model)."""
    torch.manual_seed(0)
    cfg = experiment_config(model, tmp_path, tmp_path / "run", tmp_path / "cache", rate=rate,
                            channels=channels)
    net = build_model(cfg.model_name, cfg.model)
    path = save_checkpoint(tmp_path / f"{model['name']}.safetensors",
                           Checkpoint(config=cfg.to_dict(), model_state=net.state_dict()))
    return path, net.eval()


def _convtasnet(tmp_path, norm, **kw):
    cfg = tiny_config(tmp_path, tmp_path / "run", tmp_path / "cache", norm=norm, size="mini",
                      channels=kw.get("channels", 2), rate=kw.get("rate", RATE))
    params = {"name": cfg.model_name, "encoder": vars(cfg.model.encoder),
              "masker": vars(cfg.model.masker)}
    return _checkpoint(tmp_path, params, **kw)


@pytest.fixture()
def toy_models(monkeypatch):
    register_toy_models(monkeypatch)


def test_long_song_is_seamless(tmp_path):
    """The stems `sep separate` writes equal one pass of the model over the whole song.

    20 s at 8 kHz cut into 0.7 s chunks: 29 chunk boundaries, each with its receptive-field
    context on both sides (cLN: a finite receptive field, the exact regime).
    """
    from sepcore.data.synth import write_synthetic_musdb

    root = tmp_path / "long"
    write_synthetic_musdb(root, tracks=1, seconds=20.0, seed=7, test_fraction=0.0,
                          sample_rate=RATE)
    song = next((root / "train").iterdir()) / "mixture.wav"
    ckpt, model = _convtasnet(tmp_path, "cLN")
    assert model.receptive_field is not None
    written = separate_files([song], ckpt, tmp_path / "out", segment=0.7, progress=False)
    assert [p.name for p in written] == ["vocals.wav", "accompaniment.wav"]
    stems = np.stack([sf.read(p, dtype="float32", always_2d=True)[0].T for p in written])
    audio, rate = read_audio(song)
    assert rate == RATE and audio.shape == (2, 20 * RATE)
    with torch.no_grad():
        one_pass = model(torch.from_numpy(audio)[None])[0].numpy()
    assert stems.shape == one_pass.shape
    # float32 convolutions over windows of other lengths: round-off of a few 1e-7 x the scale
    scale = np.abs(one_pass).max()
    assert np.abs(stems - one_pass).max() < 1e-5 * scale


@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.5, 0.9])
@pytest.mark.parametrize("segment", [0.37, 1.0])
def test_cross_faded_chunks_of_a_pointwise_model_equal_one_pass(toy_models, tmp_path, overlap,
                                                                segment):
    """Cross-fading weights are normalised by their sum, so chunks that agree give back exactly
    what they agree on: 20 s at 8 kHz in 0.37 s chunks is ~54-540 chunk boundaries."""
    _, model = _checkpoint(tmp_path, {"name": "pointwise", "blended": True})
    assert model.receptive_field is None  # the cross-faded regime
    torch.manual_seed(1)
    x = torch.randn(3, 2, 20 * RATE + 13)  # (B, C, T), not a whole number of chunks
    chunked = apply_model(model, x, segment=segment, overlap=overlap)
    with torch.no_grad():
        whole = model(x)
    assert chunked.shape == whole.shape == (3, 2, 2, 20 * RATE + 13)
    # per sample: products and sums of a handful of float32 values, each rounded relatively
    # (<= 2^-24); 1e-6 relative is ~16 roundings
    torch.testing.assert_close(chunked, whole, rtol=1e-6, atol=0)


def test_exact_regime_of_a_pointwise_model_is_exact(toy_models, tmp_path):
    """Receptive field 0: each output sample is the same single float32 product in a chunk as in
    one pass (IEEE multiplication is correctly rounded), so the result is bit-identical."""
    _, model = _checkpoint(tmp_path, {"name": "pointwise", "blended": False})
    assert model.receptive_field == 0
    torch.manual_seed(2)
    x = torch.randn(2, 20 * RATE + 5)
    chunked = apply_model(model, x, segment=0.37, overlap=0.5)
    with torch.no_grad():
        assert torch.equal(chunked, model(x[None])[0])


def test_chunking_really_happens_and_matters_for_global_norm(tmp_path):
    """With gLN there is no finite receptive field: chunks are cross-faded separate passes."""
    _, model = _convtasnet(tmp_path, "gLN")
    assert model.receptive_field is None
    torch.manual_seed(3)
    x = torch.randn(2, RATE * 6)
    chunked = apply_model(model, x, segment=1.0, overlap=0.25)
    with torch.no_grad():
        whole = model(x[None])[0]
    assert chunked.shape == whole.shape
    assert torch.isfinite(chunked).all()
    assert (chunked - whole).abs().max() > 1e-3 * whole.abs().max()  # separate passes
    single = apply_model(model, x, segment=10.0)  # one chunk: one pass
    torch.testing.assert_close(single, whole, rtol=1e-5, atol=1e-6 * float(whole.abs().max()))


@pytest.mark.parametrize("length", [1, 100, RATE * 2 + 17])
def test_any_length(tmp_path, length):
    _, model = _convtasnet(tmp_path, "cLN")
    out = apply_model(model, torch.randn(3, 2, length), segment=0.5)
    assert out.shape == (3, 2, 2, length)


def test_any_rate_and_channels(toy_models, tmp_path):
    """A mono 22.05 kHz tone through a 16 kHz stereo pointwise model: each stem is the model's
    gain times the same tone sampled at 16 kHz on both channels (closed form, not the resampler)."""
    ckpt, model = _checkpoint(tmp_path, {"name": "pointwise", "gains": [0.5, -0.25]},
                              rate=16000, channels=2)
    t = np.arange(22050 * 3) / 22050
    mono = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    path = tmp_path / "mono22k.wav"
    sf.write(path, mono, 22050, subtype="FLOAT")
    written = separate_files([path], ckpt, tmp_path / "sep", segment=1.0, progress=False)
    tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(48000) / 16000)
    for gain, stem in zip([0.5, -0.25], written, strict=True):
        data, rate = sf.read(stem, always_2d=True)
        assert rate == 16000 and data.shape == (48000, 2)
        assert np.array_equal(data[:, 0], data[:, 1])  # mono copied to both channels
        # away from the edges (the resampler's filter transient), to the resampler's accuracy
        assert np.abs(data[200:-200, 0] - gain * tone[200:-200]).max() < 1e-3 * 0.3


@pytest.mark.parametrize("blended", [True, False])
def test_callback_counts_every_chunk(toy_models, tmp_path, blended):
    """``callback(done, total)`` once per chunk, in order, ending at (total, total)."""
    _, model = _checkpoint(tmp_path, {"name": "pointwise", "blended": blended})
    calls = []
    apply_model(model, torch.randn(2, RATE * 3 + 7), segment=0.5, overlap=0.5,
                callback=lambda done, total: calls.append((done, total)))
    total = calls[-1][1]
    assert total >= 6  # 3 s in 0.5 s chunks (half of them again when cross-faded)
    assert calls == [(i, total) for i in range(1, total + 1)]


def test_separator_matches_separate_files(toy_models, tmp_path):
    """The decode-free entry point gives what `sep separate` writes, resampling included."""
    from sepcore.separate import load_separator

    ckpt, _ = _checkpoint(tmp_path, {"name": "pointwise", "gains": [0.5, -0.25]}, rate=16000)
    audio = (0.1 * np.random.default_rng(0).standard_normal((1, 22050))).astype(np.float32)
    sf.write(tmp_path / "song.wav", audio.T, 22050, subtype="FLOAT")
    written = separate_files([tmp_path / "song.wav"], ckpt, tmp_path / "sep", progress=False)
    separator = load_separator(ckpt)
    assert (separator.sources, separator.sample_rate) == (["vocals", "accompaniment"], 16000)
    stems = separator.separate(audio, 22050).numpy()
    for stem, path in zip(stems, written, strict=True):
        np.testing.assert_array_equal(sf.read(path, dtype="float32", always_2d=True)[0].T, stem)
