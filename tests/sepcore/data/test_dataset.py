"""Songs, targets, malformed files, short songs, training/validation chunks and the split."""

from __future__ import annotations

import shutil
from dataclasses import replace

import numpy as np
import pytest
import soundfile as sf
import torch

from sepcore.config import STEMS, AugmentConfig, DataConfig
from sepcore.data import TrackAudio, ValidChunks, build_datasets, list_tracks, load_subset
from sepcore.data.split import split_train_valid
from sepcore.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def small_root(tmp_path_factory):
    """A tiny tree (4 songs of 3 s: 3 train, 1 test) that tests copy before damaging it."""
    from sepcore.data.synth import write_synthetic_musdb

    root = tmp_path_factory.mktemp("small-musdb")
    write_synthetic_musdb(root, tracks=4, seconds=3.0, seed=7)
    return root


def _copy(root, tmp_path):
    target = tmp_path / "tree"
    shutil.copytree(root, target)
    return target


def _cfg(root, cache, **kw) -> DataConfig:
    base = dict(root=str(root), sample_rate=8000, channels=1, segment=1.0, samples_per_track=4,
                valid_segment=4.0, cache_dir=str(cache))
    base.update(kw)
    return DataConfig(**base)


def _first_train_song(root):
    return sorted(p for p in (root / "train").iterdir() if p.is_dir())[0]


def test_missing_root_names_path(tmp_path):
    missing = tmp_path / "no-such-musdb"
    with pytest.raises(DataError, match="no-such-musdb"):
        load_subset(_cfg(missing, tmp_path / "c"), "test")
    with pytest.raises(DataError, match="no-such-musdb"):
        build_datasets(_cfg(missing, tmp_path / "c"), seed=0)


def test_missing_subset_folder_names_path(small_root, tmp_path):
    root = _copy(small_root, tmp_path)
    shutil.rmtree(root / "test")
    with pytest.raises(DataError, match="test"):
        load_subset(_cfg(root, tmp_path / "c"), "test")


def test_corrupted_wav_names_file(small_root, tmp_path):
    root = _copy(small_root, tmp_path)
    song = _first_train_song(root)
    path = song / "drums.wav"
    data = bytearray(path.read_bytes())
    data[:64] = bytes(range(64, 128))
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match="drums.wav") as info:
        load_subset(_cfg(root, tmp_path / "c"), "train", names=[song.name])
    assert song.name in str(info.value)


def test_truncated_wav_names_file_and_lengths(small_root, tmp_path):
    root = _copy(small_root, tmp_path)
    song = _first_train_song(root)
    path = song / "bass.wav"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"bass\.wav has \d+ samples .* have \d+"):
        build_datasets(_cfg(root, tmp_path / "c", valid_split="tracks",
                            valid_tracks=[_first_train_song(root).name]), seed=0)


def _shorten(song_dir, frames):
    for wav in song_dir.glob("*.wav"):
        audio, rate = sf.read(wav, dtype="float32")
        sf.write(wav, audio[:frames], rate, subtype="FLOAT")


def test_short_song_padded_with_warning_or_skipped(small_root, tmp_path):
    root = _copy(small_root, tmp_path)
    songs = sorted(p for p in (root / "train").iterdir() if p.is_dir())
    assert len(songs) == 3
    _shorten(songs[0], 4410)  # 0.1 s < one 1 s chunk
    cfg = _cfg(root, tmp_path / "c", valid_split="tracks", valid_tracks=[songs[1].name])
    n_train = len(songs) - 1
    with pytest.warns(UserWarning, match=f"'{songs[0].name}' is shorter.*zero-padded"):
        train, _ = build_datasets(cfg, seed=0)
    assert len(train) == n_train * cfg.samples_per_track
    for i in range(len(train)):
        mixture, targets = train[i]
        assert mixture.shape == (1, 8000) and targets.shape == (2, 1, 8000)
    with pytest.warns(UserWarning, match="skipped"):
        train, _ = build_datasets(replace(cfg, short_tracks="skip"), seed=0)
    assert len(train) == (n_train - 1) * cfg.samples_per_track
    with pytest.warns(UserWarning, match="skipped"), pytest.raises(DataError, match="usable"):
        build_datasets(replace(cfg, short_tracks="skip", segment=10.0), seed=0)


def test_unknown_target_is_an_error(synth_root, cache_dir):
    cfg = _cfg(synth_root, cache_dir, targets=["vocals", "piano"])
    with pytest.raises(ConfigError, match="piano") as info:
        build_datasets(cfg, seed=0)
    assert info.value.key == "audio.sources"
    song = load_subset(_cfg(synth_root, cache_dir), "test", max_tracks=1)[0]
    with pytest.raises(DataError, match="piano"):
        song.targets(["piano"])


def test_targets_accompaniment_and_four_stems(synth_root, cache_dir):
    song = load_subset(_cfg(synth_root, cache_dir, channels=2), "test", max_tracks=1)[0]
    assert isinstance(song, TrackAudio)
    two = song.targets(["vocals", "accompaniment"])
    assert two.shape == (2, 2, song.num_samples) and two.dtype == np.float32
    s = song.stems
    assert np.array_equal(two[0], s["vocals"])
    assert np.allclose(two[1], s["drums"] + s["bass"] + s["other"], atol=1e-6)
    assert not np.allclose(two[1], 0)
    four = song.targets(list(STEMS))
    assert four.shape == (4, 2, song.num_samples)
    assert np.allclose(four.sum(0), song.mixture, atol=1e-5)


def test_load_subset_names_sorted_and_unknown(synth_root, cache_dir):
    cfg = _cfg(synth_root, cache_dir)
    names = [song.name for song in list_tracks(cfg, "train")]
    assert names == sorted(names) and len(names) == 6
    picked = load_subset(cfg, "train", names=[names[2], names[0]])
    assert [song.name for song in picked] == [names[0], names[2]]
    with pytest.raises(DataError, match="Nobody - Nothing") as info:
        load_subset(cfg, "train", names=["Nobody - Nothing"])
    assert names[0] in str(info.value)


def _train_cfg(synth_root, cache_dir, **aug):
    augment = AugmentConfig(**aug) if aug else AugmentConfig()
    return _cfg(synth_root, cache_dir, channels=2, augment=augment)


def test_train_chunks_deterministic_per_seed_epoch_index(synth_root, cache_dir):
    cfg = _train_cfg(synth_root, cache_dir, random_channel=True)
    a, _ = build_datasets(cfg, seed=3)
    b, _ = build_datasets(cfg, seed=3)
    assert len(a) == 5 * cfg.samples_per_track  # 6 train songs, 1 held out (ratio 0.2)
    a.set_epoch(1)
    b.set_epoch(1)
    later = b[7]  # reading order does not matter
    for i in (0, 7, len(a) - 1):
        assert torch.equal(a[i][0], b[i][0]) and torch.equal(a[i][1], b[i][1])
    assert torch.equal(a[7][1], later[1])
    first = a[7][0].clone()
    a.set_epoch(2)
    assert not torch.equal(a[7][0], first)
    c, _ = build_datasets(cfg, seed=4)
    c.set_epoch(1)
    assert not torch.equal(c[7][0], first)


@pytest.mark.parametrize("aug", [dict(gain=False, channel_swap=False, remix=False),
                                 dict(random_channel=True, gain=True, channel_swap=True,
                                      remix=True)])
def test_train_mixture_is_sum_of_targets(synth_root, cache_dir, aug):
    train, _ = build_datasets(_train_cfg(synth_root, cache_dir, **aug), seed=0)
    for i in range(0, len(train), 3):
        mixture, targets = train[i]
        assert mixture.dtype == targets.dtype == torch.float32
        assert mixture.shape == (2, 8000) and targets.shape == (2, 2, 8000)
        assert torch.allclose(mixture, targets.sum(0), atol=1e-5)


def test_train_chunk_without_augmentation_is_a_song_excerpt(synth_root, cache_dir):
    cfg = _train_cfg(synth_root, cache_dir, gain=False, channel_swap=False, remix=False)
    train, _ = build_datasets(cfg, seed=0)
    song = train.songs[1]
    mixture, _ = train[cfg.samples_per_track]  # first chunk of the second song
    whole = torch.from_numpy(song.mixture)
    starts = torch.nonzero((whole[0, : whole.shape[-1] - 8000 + 1] - mixture[0, 0]).abs() < 1e-7)
    assert any(torch.allclose(mixture, whole[:, o : o + 8000], atol=1e-6) for o in starts[:, 0])


def test_valid_chunks_whole_songs_and_segments(synth_root, cache_dir):
    songs = load_subset(_cfg(synth_root, cache_dir), "test")
    n = songs[0].num_samples  # 12 s at 8 kHz
    whole = ValidChunks(songs, _cfg(synth_root, cache_dir, valid_segment=None))
    assert len(whole) == len(songs) and whole[0][0].shape == (1, n)
    mixture, targets = whole[0]
    assert torch.allclose(mixture, targets.sum(0), atol=1e-5)
    assert len(ValidChunks(songs, _cfg(synth_root, cache_dir, valid_segment=4.0))) == 3 * len(songs)
    five = ValidChunks(songs, _cfg(synth_root, cache_dir, valid_segment=5.0))
    assert len(five) == 2 * len(songs) and five[1][0].shape == (1, 40000)
    long = ValidChunks(songs, _cfg(synth_root, cache_dir, valid_segment=20.0))
    assert len(long) == len(songs) and long[0][1].shape == (2, 1, n)


def test_valid_split_ratio_is_seeded_and_disjoint(synth_root, cache_dir):
    cfg = _cfg(synth_root, cache_dir, valid_split="ratio", valid_ratio=0.34)
    train, valid = split_train_valid(cfg, seed=0)
    assert len(valid) == 2 and len(train) == 4
    assert not {s.name for s in train} & {s.name for s in valid}
    again = split_train_valid(cfg, seed=0)[1]
    assert [s.name for s in again] == [s.name for s in valid]
    picks = {tuple(s.name for s in split_train_valid(cfg, seed=k)[1]) for k in range(8)}
    assert len(picks) > 1


def test_valid_split_named_tracks(synth_root, cache_dir):
    names = [s.name for s in list_tracks(_cfg(synth_root, cache_dir), "train")]
    cfg = _cfg(synth_root, cache_dir, valid_tracks=[names[3]])  # auto → tracks
    train, valid = build_datasets(cfg, seed=0)
    assert [s.name for s in valid.songs] == [names[3]]
    assert names[3] not in {s.name for s in train.songs} and len(train.songs) == 5
    with pytest.raises(DataError, match="Nobody - Nothing"):
        split_train_valid(replace(cfg, valid_tracks=["Nobody - Nothing"]), seed=0)


def test_valid_split_auto_falls_back_to_ratio_without_musdb_tracks(synth_root, cache_dir):
    cfg = _cfg(synth_root, cache_dir)
    assert cfg.valid_split == "auto" and not cfg.valid_tracks
    auto = split_train_valid(cfg, seed=5)
    ratio = split_train_valid(replace(cfg, valid_split="ratio"), seed=5)
    assert [s.name for s in auto[1]] == [s.name for s in ratio[1]] and len(auto[1]) == 1
    with pytest.raises(DataError, match="14 named"):
        split_train_valid(replace(cfg, valid_split="musdb"), seed=0)
    with pytest.raises(ConfigError) as info:
        split_train_valid(replace(cfg, valid_split="sometimes"), seed=0)
    assert info.value.key == "data.valid_split"


def test_ratio_split_needs_two_songs(small_root, tmp_path):
    root = _copy(small_root, tmp_path)
    songs = sorted(p for p in (root / "train").iterdir() if p.is_dir())
    for extra in songs[1:]:
        shutil.rmtree(extra)
    with pytest.raises(DataError, match="at least 2"):
        build_datasets(_cfg(root, tmp_path / "c", valid_split="ratio"), seed=0)


def test_truncated_wav_caught_after_decoding_too(small_root, tmp_path, monkeypatch):
    """Even if a header announced the full length, the decoded lengths are compared."""
    import sepcore.data.audio as audio_mod

    root = _copy(small_root, tmp_path)
    song = _first_train_song(root)
    path = song / "vocals.wav"
    path.write_bytes(path.read_bytes()[: 30000])
    monkeypatch.setattr(audio_mod, "audio_frames", lambda p: 132300)
    with pytest.raises(DataError, match=r"vocals\.wav \(vocals\) has \d+ samples"):
        load_subset(_cfg(root, tmp_path / "c"), "train", names=[song.name])


def _labelled_songs(count: int, length: int) -> list[TrackAudio]:
    """Stems whose left channel is +code and right −code, code = 10·song + stem + 1."""
    songs = []
    for k in range(count):
        stems = {}
        for j, name in enumerate(STEMS):
            code = 10.0 * k + j + 1
            stems[name] = np.stack([np.full(length, code), np.full(length, -code)]).astype(
                np.float32)
        songs.append(TrackAudio(name=f"song {k}", stems=stems))
    return songs


def test_meta_tasnet_augmentation_remixes_half_of_each_batch(tmp_path):
    """Per-source random channel, and remix across songs in half of every batch (the other
    half keeps each chunk's own song), as the Meta-TasNet reference's dataset.py."""
    from sepcore.data.augment import remixed
    from sepcore.data.dataset import TrainChunks

    aug = AugmentConfig(random_channel=True, channel_pick="source", gain=False,
                        channel_swap=False, remix=True, remix_share=0.5)
    cfg = DataConfig(root=str(tmp_path), sample_rate=100, channels=2, segment=1.0,
                     samples_per_track=8, targets=list(STEMS), augment=aug)
    train = TrainChunks(_labelled_songs(6, 300), cfg, seed=5)
    train.set_epoch(3)
    batch = 4
    kept_songs, mixed_items, flipped = set(), 0, set()
    for start in range(0, len(train), batch):
        flags = []
        for i in range(start, start + batch):
            mixture, targets = train[i]
            assert torch.equal(targets[:, 0], targets[:, 1])  # one channel per source, copied
            assert torch.allclose(mixture, targets.sum(0))
            code = targets[:, 0, 0].numpy()  # (S,) ±(10·song + stem + 1)
            assert np.array_equal(np.abs(code) % 10, [1, 2, 3, 4])  # stem j stays stem j
            flipped.add(tuple(np.sign(code)))
            songs = set((np.abs(code) // 10).astype(int).tolist())
            flags.append(remixed(i, 0.5))
            if flags[-1]:
                mixed_items += len(songs) > 1
            else:
                assert len(songs) == 1
                kept_songs |= songs
        assert sum(flags) == batch // 2
    assert mixed_items > len(train) // 4  # remixed items mostly combine several songs
    assert len(kept_songs) >= 4  # the kept half is spread over the songs, not in song order
    assert len(flipped) > 4  # channels are picked per source
    again = TrainChunks(_labelled_songs(6, 300), cfg, seed=5)
    again.set_epoch(3)
    assert all(torch.equal(train[i][1], again[i][1]) for i in (0, 9, 30, 47))
    again.set_epoch(4)
    assert not all(torch.equal(train[i][1], again[i][1]) for i in range(len(train)))


def test_mono_model_picks_a_channel_per_source_from_stereo_stems(synth_root, cache_dir):
    aug = AugmentConfig(random_channel=True, channel_pick="source", gain=False,
                        channel_swap=False, remix=False)
    cfg = _cfg(synth_root, cache_dir, channels=1, augment=aug, targets=list(STEMS))
    train, valid = build_datasets(cfg, seed=0)
    assert train.songs[0].stems["vocals"].shape[0] == 2  # read in stereo for the pick
    assert valid[0][0].shape[0] == 1  # validation: the model's mono
    mixture, targets = train[0]
    assert mixture.shape == (1, 8000) and targets.shape == (4, 1, 8000)
    whole = train.songs[0].stems["vocals"]  # (2, T)
    assert not np.allclose(whole[0], whole[1])  # the song's vocals are not dual-mono
    target = targets[STEMS.index("vocals"), 0].numpy()
    hits = [(c, o) for c in (0, 1) for o in np.flatnonzero(whole[c] == target[0])
            if o + 8000 <= whole.shape[-1] and np.array_equal(whole[c, o:o + 8000], target)]
    assert hits  # the target is one channel of the song's vocals, not the channel mean


@pytest.mark.parametrize("key,value", [("channel_pick", "left"), ("remix_share", 1.5)])
def test_bad_augment_values_name_the_key(key, value):
    from sepcore.config import config_from_dict

    with pytest.raises(ConfigError) as err:
        config_from_dict({"model": {"name": "convtasnet"}, "data": {"augment": {key: value}}})
    assert err.value.key == f"data.augment.{key}" and repr(value) in str(err.value)


def test_configs_citing_meta_tasnet_use_its_augmentation():
    from sepcore.config import load_config

    for name in ("m1", "m2", "m3", "m4", "m5", "m6", "s1", "s2", "metatasnet", "metatasnet_8k"):
        aug = load_config(f"paper/{name}.yaml").data.augment
        assert (aug.random_channel, aug.channel_pick, aug.gain, aug.channel_swap, aug.remix,
                aug.remix_share) == (True, "source", True, False, True, 0.5), name
    other = load_config("paper/thesis_a1.yaml").data.augment  # other configs keep theirs
    assert (other.channel_pick, other.remix_share) == ("shared", 1.0)
