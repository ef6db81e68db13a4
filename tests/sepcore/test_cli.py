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
