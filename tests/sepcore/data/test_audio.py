"""Audio reading, resampling, channel conversion, loading songs at any rate, and the cache."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

import sepcore.data.audio as audio_mod
from sepcore.config import STEMS, DataConfig
from sepcore.data import load_subset
from sepcore.data.audio import read_audio, resample, to_channels
from sepcore.data.cache import clear_memory_cache
from sepcore.errors import DataError


def test_read_audio_missing_file_names_it(tmp_path):
    path = tmp_path / "nope.wav"
    with pytest.raises(DataError, match="nope.wav"):
        read_audio(path)


def test_read_audio_garbage_names_file(tmp_path):
    path = tmp_path / "garbage.wav"
    path.write_bytes(b"not a wav file at all" * 10)
    with pytest.raises(DataError, match="garbage.wav"):
        read_audio(path)


def test_read_audio_shape_and_rate(tmp_path):
    path = tmp_path / "x.wav"
    data = np.random.default_rng(0).uniform(-0.5, 0.5, (1000, 2)).astype(np.float32)
    sf.write(path, data, 22050, subtype="FLOAT")
    audio, rate = read_audio(path)
    assert rate == 22050 and audio.shape == (2, 1000) and audio.dtype == np.float32
    assert np.array_equal(audio, data.T)


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 44100])
def test_resample_length(rate):
    x = np.random.default_rng(0).standard_normal((2, 44100 * 2)).astype(np.float32)
    y = resample(x, 44100, rate)
    assert y.shape == (2, 2 * rate) and y.dtype == np.float32
    if rate == 44100:
        assert y is x


def test_resample_keeps_a_sine():
    t = np.arange(44100) / 44100
    x = np.sin(2 * np.pi * 440 * t)[None].astype(np.float32)
    y = resample(x, 44100, 16000)
    ref = np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)
    assert np.abs(y[0, 200:-200] - ref[200:-200]).max() < 1e-3


def test_to_channels():
    stereo = np.array([[1.0, 2.0], [3.0, 6.0]], dtype=np.float32)
    assert np.array_equal(to_channels(stereo, 1), [[2.0, 4.0]])
    mono = stereo[:1]
    assert np.array_equal(to_channels(mono, 2), [[1.0, 2.0], [1.0, 2.0]])
    assert to_channels(stereo, 2) is stereo
    with pytest.raises(DataError, match="3-channel"):
        to_channels(np.zeros((3, 4), np.float32), 2)


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 44100])
@pytest.mark.parametrize("channels", [1, 2])
def test_loaded_song_rate_and_channels(synth_root, cache_dir, rate, channels):
    cfg = DataConfig(root=str(synth_root), sample_rate=rate, channels=channels,
                     cache_dir=str(cache_dir))
    song = load_subset(cfg, "test", max_tracks=1)[0]
    _, file_rate = read_audio(synth_root / "test" / song.name / "vocals.wav")
    frames = sf.info(str(synth_root / "test" / song.name / "vocals.wav")).frames
    expected = round(frames * rate / file_rate)
    assert set(song.stems) == set(STEMS)
    for stem in song.stems.values():
        assert stem.shape == (channels, expected) and stem.dtype == np.float32
    assert song.num_samples == expected and song.mixture.shape == (channels, expected)


def test_mixture_matches_mixture_wav(synth_root, cache_dir):
    cfg = DataConfig(root=str(synth_root), sample_rate=44100, channels=2, cache_dir=str(cache_dir))
    for song in load_subset(cfg, "test"):
        mixture, _ = read_audio(synth_root / "test" / song.name / "mixture.wav")
        assert song.mixture.shape == mixture.shape
        assert np.abs(song.mixture - mixture).max() < 1e-4


def test_second_load_reads_from_cache(synth_root, tmp_path, monkeypatch):
    calls = []
    real = audio_mod.read_audio

    def counting(path):
        calls.append(path)
        return real(path)

    monkeypatch.setattr(audio_mod, "read_audio", counting)
    cfg = DataConfig(root=str(synth_root), sample_rate=16000, channels=1,
                     cache_dir=str(tmp_path / "cache"))
    clear_memory_cache()
    first = load_subset(cfg, "test", max_tracks=1)[0]
    assert len(calls) == 4  # decoded once per stem
    assert len(list((tmp_path / "cache").rglob("*.npy"))) == 4
    clear_memory_cache()  # a new process: only the files on disk remain
    second = load_subset(cfg, "test", max_tracks=1)[0]
    third = load_subset(cfg, "test", max_tracks=1)[0]  # in-process cache
    assert len(calls) == 4
    for name in STEMS:
        assert np.array_equal(first.stems[name], second.stems[name])
        assert np.array_equal(first.stems[name], third.stems[name])


def test_cache_invalidated_when_file_changes(tmp_path):
    from sepcore.data.cache import cache_key

    path = tmp_path / "a.wav"
    sf.write(path, np.zeros((100, 1), np.float32), 8000)
    key = cache_key(path, 8000, 1)
    assert key != cache_key(path, 16000, 1) and key != cache_key(path, 8000, 2)
    sf.write(path, np.zeros((200, 1), np.float32), 8000)
    assert cache_key(path, 8000, 1) != key
