"""Multitrack folder datasets with a stem → class mapping (thesis §4.1, §6.1)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from sepcore.data.folders import (
    ClassTrack,
    load_folder_subset,
    load_mapping,
    noisy_copy,
)
from sepcore.errors import ConfigError, DataError

RATE = 8000
MAPPING = """
classes:
  vocals: [lead_vocals, backing_vocals]
  guitar: [electric_guitar]
  bass: [bass]
missing: filter
"""


def _tone(freq: float, amp: float, channels: int = 2, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return np.repeat((amp * np.sin(2 * np.pi * freq * t))[None], channels, 0).astype(np.float32)


def _write_song(folder: Path, stems: dict[str, np.ndarray]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, audio in stems.items():
        sf.write(folder / f"{name}.wav", audio.T, RATE, subtype="FLOAT")


@pytest.fixture(autouse=True)
def cache_in_tmp_path(tmp_path, monkeypatch):
    """Calls without ``cache_dir`` cache decoded audio under <cwd>/.cache/sepcore: keep it here."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def dataset(tmp_path):
    root = tmp_path / "karaoke"
    full = {"lead_vocals": _tone(440, 0.3), "backing_vocals": _tone(660, 0.2),
            "electric_guitar": _tone(330, 0.25), "bass": _tone(55, 0.4)}
    _write_song(root / "test" / "A full", full)
    _write_song(root / "test" / "B no guitar", {"lead_vocals": _tone(500, 0.3),
                                                "bass": _tone(60, 0.4)})
    mapping = tmp_path / "classes.yaml"
    mapping.write_text(MAPPING)
    return root, mapping, full


def test_mapping_groups_stems_into_classes_by_summing(dataset):
    root, mapping, full = dataset
    songs = load_folder_subset(root, mapping, subset="test", sample_rate=RATE, channels=2)
    assert [s.name for s in songs] == ["A full"]  # missing: filter drops the song without guitar
    song = songs[0]
    assert isinstance(song, ClassTrack) and song.classes == ("vocals", "guitar", "bass")
    np.testing.assert_allclose(song.stems["vocals"], full["lead_vocals"] + full["backing_vocals"],
                               atol=1e-6)
    np.testing.assert_allclose(song.stems["guitar"], full["electric_guitar"], atol=1e-6)
    np.testing.assert_allclose(song.mixture, sum(full.values()), atol=1e-5)
    targets = song.targets(["bass", "vocals", "accompaniment"])
    assert targets.shape == (3, 2, RATE)
    np.testing.assert_allclose(targets[2], full["electric_guitar"] + full["bass"], atol=1e-6)
    assert song.num_samples == RATE and song.stacked().shape == (3, 2, RATE)


def test_missing_class_filter_versus_silence(dataset):
    root, mapping, _ = dataset
    filtered = load_folder_subset(root, load_mapping(mapping), subset="test", sample_rate=RATE)
    silenced = load_folder_subset(root, load_mapping(mapping, missing="silence"), subset="test",
                                  sample_rate=RATE)
    assert len(filtered) == 1 and [s.name for s in silenced] == ["A full", "B no guitar"]
    b = silenced[1]
    assert b.classes == ("vocals", "guitar", "bass")
    assert not np.any(b.stems["guitar"]) and np.any(b.stems["vocals"])
    with pytest.raises(ConfigError, match="missing must be one of"):
        load_mapping(mapping, missing="drop")


def test_unknown_stem_names_the_file_unless_a_catch_all_class(dataset, tmp_path):
    root, mapping, _ = dataset
    _write_song(root / "test" / "C kazoo", {"lead_vocals": _tone(300, 0.1),
                                            "electric_guitar": _tone(200, 0.1),
                                            "bass": _tone(50, 0.1), "kazoo": _tone(900, 0.1)})
    with pytest.raises(DataError, match=r"kazoo\.wav.*'kazoo' is in no class"):
        load_folder_subset(root, mapping, subset="test", sample_rate=RATE)
    catch_all = tmp_path / "other.yaml"
    catch_all.write_text(MAPPING + "other: other\n")
    songs = load_folder_subset(root, catch_all, subset="test", sample_rate=RATE)
    kazoo = {s.name: s for s in songs}["C kazoo"]
    assert kazoo.classes == ("vocals", "guitar", "bass", "other")
    np.testing.assert_allclose(kazoo.stems["other"], _tone(900, 0.1), atol=1e-6)


def test_mapping_file_errors(tmp_path, dataset):
    root, _, _ = dataset
    with pytest.raises(ConfigError, match="class mapping file not found"):
        load_folder_subset(root, tmp_path / "nope.yaml", subset="test")
    bad = tmp_path / "bad.yaml"
    bad.write_text("classes:\n  vocals: [a]\n  lead: [a]\n")
    with pytest.raises(ConfigError, match="stem 'a' is in both classes"):
        load_mapping(bad)
    bad.write_text("vocals: [a]\n")
    with pytest.raises(ConfigError, match="needs a 'classes:' mapping"):
        load_mapping(bad)


def test_adaptive_mixing_from_the_mapping_keeps_the_sum_and_full_scale(dataset, tmp_path):
    root, _, _ = dataset
    loud = {"lead_vocals": _tone(440, 0.9), "electric_guitar": _tone(330, 0.9),
            "bass": _tone(55, 0.9), "backing_vocals": _tone(880, 0.9)}
    _write_song(root / "test" / "D loud", loud)
    mapping = tmp_path / "adaptive.yaml"
    mapping.write_text(MAPPING + "mixing: adaptive\n")
    song = load_folder_subset(root, mapping, subset="test", names=["D loud"],
                              sample_rate=RATE)[0]
    assert song.mix is None  # the mixture is the exact sum of the class stems
    np.testing.assert_array_equal(song.mixture, song.stacked().sum(axis=0, dtype=np.float32))
    assert np.abs(song.mixture).max() <= 1.0
    summed = sum(loud.values())
    assert np.abs(summed).max() > 1.0  # summing alone would have clipped


def test_noisy_copy_adds_crowd_noise_at_the_requested_snr():
    clean = ClassTrack(name="x", stems={"vocals": _tone(440, 0.1), "bass": _tone(55, 0.1)},
                       classes=("vocals", "bass"))
    noisy = noisy_copy(clean, snr_db=10.0, rng=np.random.default_rng(0), bleed_db=None)
    assert noisy.classes == ("vocals", "bass")
    for name in noisy.classes:
        noise = noisy.stems[name] - clean.stems[name]
        snr = 10 * np.log10(np.sum(clean.stems[name] ** 2) / np.sum(noise ** 2))
        assert snr == pytest.approx(10.0, abs=0.01)
    bleed = noisy_copy(clean, snr_db=60.0, rng=np.random.default_rng(0), bleed_db=-6.0)
    leak = np.sum(bleed.stems["vocals"] * clean.stems["bass"]) / np.sum(clean.stems["bass"] ** 2)
    assert leak == pytest.approx(10 ** (-6 / 20), rel=0.01)
    np.testing.assert_allclose(bleed.mixture, bleed.stacked().sum(axis=0), atol=1e-6)


def test_data_pipeline_trains_and_evaluates_on_class_targets(tmp_path):
    from sepcore.config import DataConfig, config_from_dict
    from sepcore.data import build_datasets, load_subset

    root = tmp_path / "folders"
    for k in range(4):
        _write_song(root / "train" / f"song{k}", {
            "lead_vocals": _tone(400 + 10 * k, 0.3, seconds=2.0),
            "electric_guitar": _tone(300, 0.2, seconds=2.0), "bass": _tone(50, 0.3, seconds=2.0)})
    mapping = tmp_path / "classes.yaml"
    mapping.write_text(MAPPING.replace("missing: filter", "missing: silence"))
    cfg = DataConfig(root=str(root), layout="folders", mapping=str(mapping), sample_rate=RATE,
                     targets=["guitar", "vocals"], segment=0.5, samples_per_track=2,
                     valid_ratio=0.25, cache_dir=str(tmp_path / "cache"))
    train, valid = build_datasets(cfg, seed=0)
    assert len(train.songs) == 3 and len(valid.songs) == 1
    mixture, targets = train[0]
    assert mixture.shape == (2, RATE // 2) and targets.shape == (2, 2, RATE // 2)
    mixture, targets = valid[0]
    song = valid.songs[0]
    np.testing.assert_allclose(targets[0].numpy(), song.stems["guitar"], atol=1e-6)
    np.testing.assert_allclose(mixture.numpy(), song.mixture, atol=1e-6)
    assert [s.name for s in load_subset(cfg, "train", max_tracks=2)] == ["song0", "song1"]
    bad = DataConfig(**{**cfg.__dict__, "targets": ["kazoo"]})
    with pytest.raises(ConfigError, match="not classes of the mapping") as err:
        build_datasets(bad, seed=0)
    assert err.value.key == "audio.sources"
    # the experiment config accepts class names as sources for a folder layout only
    model = {"name": "convtasnet"}
    audio = {"sources": ["guitar", "vocals"], "sample_rate": RATE}
    data = {"root": str(root), "layout": "folders", "mapping": str(mapping)}
    cfg = config_from_dict({"model": model, "audio": audio, "data": data})
    assert cfg.data.layout == "folders" and cfg.data.targets == ["guitar", "vocals"]
    with pytest.raises(ConfigError, match="unknown source 'guitar'") as err:
        config_from_dict({"model": model, "audio": audio, "data": {**data, "layout": "musdb"}})
    assert err.value.key == "audio.sources"
