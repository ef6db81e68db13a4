"""The `sep` command line: info, train/evaluate round trip, clear errors."""

import json

import numpy as np
import pytest

from sepcore.cli import main, split_overrides


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
    # overrides of the checkpoint's own config pick the subset, the song count and the folder
    assert main(["evaluate", str(ckpt), "eval.subset=train", "eval.max_tracks=2",
                 f"eval.out_dir={tmp_path / 'ev'}", "eval.device=cpu"]) == 0
    out = capsys.readouterr().out
    assert "SDR" in out and "vocals" in out and "accompaniment" in out
    assert len(list((tmp_path / "ev" / "train").glob("*.json"))) == 2
    # the 8 kHz mono model is scored as SiSEC scores: at the tree's 44.1 kHz stereo
    assert "protocol sisec: 44100 Hz, 2 ch, BSSEval v4" in out
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert (summary["protocol"], summary["sample_rate"], summary["channels"],
            summary["bsseval"], summary["subset"]) == ("sisec", 44100, 2, "v4", "train")
    assert set(summary["scores"]) == {"vocals", "accompaniment"}
    assert not (tmp_path / "ev" / "test").exists()
    song = next((synth_root / "test").iterdir())
    assert main(["separate", str(ckpt), str(song / "mixture.wav"), "--out",
                 str(tmp_path / "sep")]) == 0
    assert (tmp_path / "sep" / song.name / "vocals.wav").exists()


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    from sepcore.checkpoint import Checkpoint, checkpoint_config, save_checkpoint
    from sepcore.config import config_from_dict
    from sepcore.models import build_model

    cfg = config_from_dict({"model": {"name": "multiband", "num_bands": 1,
                                      "encoder": {"N": 16, "L": 16},
                                      "masker": {"B": 16, "H": 16, "X": 1, "R": 1}},
                            "audio": {"sample_rate": 8000, "channels": 1},
                            "eval": {"segment": 4.0, "overlap": 0.25}})
    model = build_model(cfg.model_name, cfg.model)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_checkpoint(path, Checkpoint(config=checkpoint_config(cfg), model_state=model.state_dict()))
    return path


def test_separate_takes_songs_and_overrides_in_any_order(tiny_checkpoint, tmp_path, monkeypatch):
    import soundfile as sf

    import sepcore.separate as separate

    calls = []
    real = separate.apply_model

    def spy(model, mixture, **kwargs):
        calls.append((kwargs["segment"], kwargs["overlap"], str(kwargs["device"])))
        return real(model, mixture, **kwargs)

    monkeypatch.setattr(separate, "apply_model", spy)
    song = tmp_path / "song.wav"
    sf.write(song, np.zeros((8000, 2), dtype=np.float32), 8000)
    assert main(["separate", str(tiny_checkpoint), "eval.segment=0.5", str(song),
                 "eval.overlap=0", "--out", str(tmp_path / "out")]) == 0
    assert calls == [(0.5, 0.0, "cpu")]
    assert (tmp_path / "out" / "song" / "vocals.wav").exists()
    calls.clear()  # without overrides: the checkpoint's eval section
    assert main(["separate", str(tiny_checkpoint), str(song), "--out", str(tmp_path / "o2")]) == 0
    assert calls == [(4.0, 0.25, "cpu")]


def test_split_overrides_keeps_existing_files_as_songs(tmp_path):
    odd = tmp_path / "eval.segment=3"  # a file whose name looks like an override
    odd.write_bytes(b"")
    songs, overrides = split_overrides([str(odd), "eval.segment=2", "a.wav", "x=1"])
    assert songs == [str(odd), "a.wav", "x=1"] and overrides == ["eval.segment=2"]


@pytest.mark.parametrize("override, key", [("eval.segmnt=3", "eval.segmnt"),
                                           ("eval.segment=long", "eval.segment"),
                                           ("model.num_bands=2", "model.num_bands"),
                                           ("audio.sample_rate=16000", "audio.sample_rate"),
                                           ("train.epochs", "train.epochs")])
@pytest.mark.parametrize("command", ["evaluate", "separate"])
def test_bad_overrides_of_a_checkpoint_are_one_line_errors(command, override, key,
                                                           tiny_checkpoint, tmp_path, capsys):
    song = tmp_path / "song.wav"
    song.write_bytes(b"")  # never read: the overrides fail first
    args = [command, str(tiny_checkpoint), override]
    if command == "separate":
        args += [str(song), "--out", str(tmp_path / "out")]
    if override == "train.epochs" and command == "separate":
        return  # no '=': a song name for `sep separate` (covered by the split test)
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error:"), err
    assert key in err and str(tiny_checkpoint) in err
    assert not (tmp_path / "out").exists()


def test_evaluate_refuses_an_override_outside_the_config_sections(tiny_checkpoint, capsys):
    assert main(["evaluate", str(tiny_checkpoint), "tune.metric=x"]) == 2
    err = capsys.readouterr().err
    assert "tune.metric" in err and "['data', 'eval', 'train']" in err


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
