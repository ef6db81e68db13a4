"""The synthetic MUSDB18-HQ writer: layout read by musdb, exact mixtures, determinism, music."""

from __future__ import annotations

import re

import musdb
import numpy as np
import pytest
import soundfile as sf

from sepcore.data.synth import STEM_NAMES, write_synthetic_musdb
from sepcore.errors import DataError

RATE = 44100
SECONDS = 4.0


def _read(folder, name):
    audio, rate = sf.read(folder / f"{name}.wav", dtype="float32", always_2d=True)
    assert rate == RATE
    return audio  # (samples, channels)


def _song(folder):
    return {name: _read(folder, name) for name in ("mixture", *STEM_NAMES)}


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """3 songs of 4 s (2 train, 1 test) and the folders the writer returned."""
    root = tmp_path_factory.mktemp("synth")
    songs = write_synthetic_musdb(root, tracks=3, seconds=SECONDS, seed=5)
    return root, songs


def test_layout_and_musdb_reads_both_subsets(tree):
    root, songs = tree
    assert [p.parent.name for p in songs] == ["train", "train", "test"]
    assert all(p.is_dir() and p.parent.parent == root for p in songs)
    for song in songs:
        assert song.name.startswith("Synth ") and " - " in song.name
        assert sorted(p.name for p in song.iterdir()) == sorted(
            f"{n}.wav" for n in ("mixture", *STEM_NAMES))
        info = sf.info(str(song / "vocals.wav"))
        assert (info.samplerate, info.channels, info.subtype) == (RATE, 2, "FLOAT")
        assert info.frames == int(SECONDS * RATE)
    for subset, count in (("train", 2), ("test", 1)):
        db = musdb.DB(root=str(root), is_wav=True, subsets=subset)
        assert len(db) == count
        assert {t.name for t in db.tracks} == {p.name for p in songs if p.parent.name == subset}
        for track in db.tracks:
            assert track.rate == RATE
            assert list(track.sources) == list(STEM_NAMES)
            assert track.audio.shape == (int(SECONDS * RATE), 2)
            assert track.targets["vocals"].audio.shape == (int(SECONDS * RATE), 2)


@pytest.mark.parametrize("tracks, fraction, expected_test",
                         [(1, 0.25, 0), (2, 0.25, 1), (8, 0.25, 2), (4, 0.0, 0)])
def test_test_split_counts(tmp_path, tracks, fraction, expected_test):
    songs = write_synthetic_musdb(tmp_path, tracks=tracks, seconds=0.2, seed=0,
                                  test_fraction=fraction)
    assert len(songs) == tracks
    assert sum(p.parent.name == "test" for p in songs) == expected_test


def test_mixture_is_exactly_the_sum_of_the_stems(tree):
    for song in tree[1]:
        audio = _song(song)
        total = audio["vocals"] + audio["drums"] + audio["bass"] + audio["other"]
        assert np.array_equal(audio["mixture"], total)


def test_levels_finite_no_clipping_every_stem_sounds(tree):
    for song in tree[1]:
        audio = _song(song)
        for name, x in audio.items():
            assert np.isfinite(x).all(), name
            assert np.sqrt(np.mean(x ** 2)) > 1e-3, f"{name} of {song.name} is (almost) silent"
        peak = np.abs(audio["mixture"]).max()
        assert 0.5 < peak <= 1.0
        vocals_db = 10 * np.log10(np.mean(audio["vocals"] ** 2))
        accompaniment = audio["drums"] + audio["bass"] + audio["other"]
        accompaniment_db = 10 * np.log10(np.mean(accompaniment ** 2))
        assert abs(vocals_db - accompaniment_db) < 12.0


def test_same_seed_same_audio_other_seed_differs(tree, tmp_path):
    _, songs = tree
    again = write_synthetic_musdb(tmp_path / "again", tracks=3, seconds=SECONDS, seed=5)
    assert [p.name for p in again] == [p.name for p in songs]
    for a, b in zip(songs, again, strict=True):
        for name in ("mixture", *STEM_NAMES):
            assert (a / f"{name}.wav").read_bytes() == (b / f"{name}.wav").read_bytes()
    other = write_synthetic_musdb(tmp_path / "other", tracks=1, seconds=SECONDS, seed=6)
    assert not np.array_equal(_read(other[0], "mixture"), _read(songs[0], "mixture"))


def test_song_depends_only_on_seed_and_index(tree, tmp_path):
    """Song 1 is the same whether 2 or 3 songs are written (only its subset may change)."""
    _, songs = tree
    fewer = write_synthetic_musdb(tmp_path, tracks=2, seconds=SECONDS, seed=5)
    assert fewer[1].name == songs[1].name
    assert np.array_equal(_read(fewer[1], "vocals"), _read(songs[1], "vocals"))


def test_vocals_have_rests_and_singing(tree):
    frame = RATE // 10  # 100 ms
    for song in tree[1]:
        vocals = _read(song, "vocals")
        frames = vocals[: len(vocals) // frame * frame].reshape(-1, frame, 2)
        rms = np.sqrt(np.mean(frames ** 2, axis=(1, 2)))
        assert np.mean(rms < 1e-6) >= 0.1, f"no rests in the vocals of {song.name}"
        assert np.mean(rms > 1e-3) >= 0.3, f"too little singing in {song.name}"
        assert np.count_nonzero(vocals == 0.0) > 0  # rests are exact zeros


def _band_fraction(x, low, high):
    power = np.abs(np.fft.rfft(x.mean(axis=1))) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / RATE)
    return power[(freqs >= low) & (freqs <= high)].sum() / power.sum()


def test_vocals_overlap_other_in_frequency(tree):
    for song in tree[1]:
        assert _band_fraction(_read(song, "vocals"), 200, 800) > 0.3
        assert _band_fraction(_read(song, "other"), 200, 800) > 0.3
        assert _band_fraction(_read(song, "bass"), 20, 200) > 0.3
        assert _band_fraction(_read(song, "drums"), 2000, RATE / 2) > 0.01  # hats and snare


def test_stereo_channels_differ(tree):
    for song in tree[1]:
        for name, x in _song(song).items():
            assert not np.allclose(x[:, 0], x[:, 1]), f"{name} of {song.name} is mono"


@pytest.mark.parametrize("kwargs, value", [({"tracks": 0}, "0"), ({"tracks": -3}, "-3"),
                                           ({"seconds": 0.0}, "0.0"), ({"seconds": -2.5}, "-2.5")])
def test_bad_arguments_raise_data_error_naming_the_value(tmp_path, kwargs, value):
    with pytest.raises(DataError, match=re.escape(f"got {value}")):
        write_synthetic_musdb(tmp_path, **kwargs)
    assert not (tmp_path / "train").exists()


def test_stems_on_the_16_bit_grid_and_bsseval_well_posed(tree):
    """Stems are multiples of 2**-15 (MUSDB18-HQ's 16-bit PCM); with that noise floor BSSEval's
    filters are well posed, so sepcore's BSSEval equals museval's on a synthetic song (without it
    museval's own ISR/SIR/SAR moved by up to 12 dB under 1e-12 input noise)."""
    import museval

    from sepcore.metrics.bsseval import evaluate

    song = _song(tree[1][0])
    for name in STEM_NAMES:
        scaled = song[name].astype(np.float64) * 2**15
        assert np.array_equal(scaled, np.round(scaled))
    refs = np.stack([song[name] for name in STEM_NAMES]).astype(np.float64)
    rng = np.random.default_rng(0)  # leakage of another stem, and artefacts (noise)
    ests = refs + 0.2 * np.roll(refs, 1, axis=0) + 0.01 * rng.standard_normal(refs.shape)
    ours = np.stack(evaluate(refs, ests))
    theirs = np.stack(museval.evaluate(refs, ests, win=RATE, hop=RATE, mode="v4"))
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(theirs))
    finite = np.isfinite(theirs)
    assert finite.sum() >= 8
    np.testing.assert_allclose(ours[finite], theirs[finite], rtol=0, atol=1e-3)
