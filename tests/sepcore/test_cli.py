"""The `sep` command line: info, train/evaluate round trip, clear errors."""

import json

import pytest

from sepcore.cli import main


def test_info_json_on_paper_config(capsys):
    assert main(["info", "paper/m1.yaml", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert abs(info["params"] - 6.6e6) / 6.6e6 < 0.02
    assert info["latent_frame_rate"] > 0 and info["model"] == "convtasnet"


def test_info_text(capsys):
    assert main(["info", "paper/m2.yaml"]) == 0
    out = capsys.readouterr().out
    assert "parameters" in out and "receptive field" in out and "latent frames" in out


def test_unknown_config_key_is_named(capsys):
    assert main(["info", "paper/m1.yaml", "train.epochz=3"]) == 2
    err = capsys.readouterr().err
    assert "epochz" in err and "m1.yaml" in err


def test_unknown_model_lists_known(tmp_path, capsys):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("model:\n  name: tasnetz\n")
    assert main(["info", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "tasnetz" in err and "convtasnet" in err and "multiband" in err


def test_missing_data_root_is_named(tmp_path, capsys):
    missing = tmp_path / "no-such-musdb"
    assert main(["train", "paper/m1.yaml", f"data.root={missing}",
                 f"train.out_dir={tmp_path / 'run'}"]) == 2
    assert str(missing) in capsys.readouterr().err


def test_train_evaluate_separate_roundtrip(synth_root, cache_dir, tmp_path, capsys):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(f"""
model: {{name: multiband, num_bands: 2, encoder: {{N: 32, L: 16}},
        masker: {{B: 32, H: 64, X: 2, R: 1}}}}
audio: {{sample_rate: 8000, channels: 1}}
data: {{root: {synth_root}, segment: 1.0, samples_per_track: 4, valid_segment: 4.0,
       cache_dir: {cache_dir}}}
train: {{epochs: 1, batch_size: 2, steps_per_epoch: 3, out_dir: {tmp_path / 'run'}, lr: 1.0e-3}}
eval: {{segment: 4.0, max_tracks: 1}}
""")
    assert main(["train", str(cfg)]) == 0
    ckpt = tmp_path / "run" / "best.safetensors"
    assert ckpt.exists()
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(ckpt), "--out", str(tmp_path / "ev")]) == 0
    out = capsys.readouterr().out
    assert "SDR" in out and "vocals" in out and "accompaniment" in out
    assert list((tmp_path / "ev").rglob("*.json"))
    song = next((synth_root / "test").iterdir())
    assert main(["separate", str(song / "mixture.wav"), "--checkpoint", str(ckpt), "--out",
                 str(tmp_path / "sep")]) == 0
    assert (tmp_path / "sep" / song.name / "vocals.wav").exists()


@pytest.mark.parametrize("cmd", [["synth", "--help"], ["train", "--help"], ["separate", "--help"]])
def test_help(cmd):
    with pytest.raises(SystemExit) as info:
        main(cmd)
    assert info.value.code == 0


def test_sep_synth_writes_a_deterministic_tree_musdb_reads(tmp_path, capsys):
    import musdb
    import soundfile as sf

    args = ["--tracks", "3", "--seconds", "2", "--seed", "4"]
    assert main(["synth", "--out", str(tmp_path / "a"), *args]) == 0
    assert "wrote 3 synthetic songs" in capsys.readouterr().out
    assert main(["synth", "--out", str(tmp_path / "b"), *args]) == 0
    assert main(["synth", "--out", str(tmp_path / "c"), *args[:-1], "5"]) == 0
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.wav"))
    assert len(files) == 3 * 5 and {p.parts[0] for p in files} == {"train", "test"}
    # the same seed writes the same bytes; another seed other songs
    assert all((tmp_path / "a" / p).read_bytes() == (tmp_path / "b" / p).read_bytes()
               for p in files)
    first = sorted((tmp_path / "a" / "train").iterdir())[0] / "mixture.wav"
    other = sorted((tmp_path / "c" / "train").iterdir())[0] / "mixture.wav"
    assert sf.read(first)[0].shape == sf.read(other)[0].shape
    assert first.read_bytes() != other.read_bytes()
    for subset, count in (("train", 2), ("test", 1)):
        db = musdb.DB(root=str(tmp_path / "a"), is_wav=True, subsets=subset)
        assert len(db) == count
        for track in db.tracks:
            assert track.rate == 44100 and track.audio.shape == (2 * 44100, 2)
            assert list(track.sources) == ["vocals", "drums", "bass", "other"]


def test_sep_synth_bad_value_is_one_error_line(tmp_path, capsys):
    assert main(["synth", "--out", str(tmp_path / "x"), "--tracks", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "tracks" in err and "\n" not in err


@pytest.mark.slow
def test_sep_demo_on_a_tiny_budget(tmp_path, capsys):
    """The whole demo (synthetic songs, training, BSSEval) with a budget of two steps."""
    from sepcore.metrics.aggregate import aggregate, format_table

    overrides = ["train.epochs=1", "train.steps_per_epoch=2", "data.samples_per_track=2",
                 "data.valid_segment=4.0", "eval.segment=4.0"]
    assert main(["demo", "--workdir", str(tmp_path), *overrides]) == 0
    out = capsys.readouterr().out
    assert "demo: multiband trained 1 epochs (2 steps)" in out
    assert len(list((tmp_path / "data" / "synth-demo" / "train").iterdir())) == 8
    assert (tmp_path / "runs" / "demo" / "best.safetensors").exists()
    assert list((tmp_path / ".cache" / "sepcore").rglob("*.npy"))  # the cache is the workdir's
    scores = aggregate(tmp_path / "runs" / "demo" / "eval", subset="test")
    assert set(scores) == {"vocals", "accompaniment"}
    assert format_table(scores, ["vocals", "accompaniment"]) in out  # what the JSON files hold
    songs = [line for line in out.splitlines() if line.startswith("mean SI-SDR per song")]
    assert len(songs) == 1 and songs[0].count("vocals") == 2  # two synthetic test songs
