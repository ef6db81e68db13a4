"""Bad input gets a one-line error naming the key, file or value (exit 2), never a traceback,
a hang or a silent wrong result."""

from __future__ import annotations

import pytest

from sepcore.cli import main
from sepcore.config import config_from_dict
from sepcore.errors import ConfigError

BASE = {"model": {"name": "multiband", "num_bands": 1, "encoder": {"N": 16, "L": 16},
                  "masker": {"B": 16, "H": 32, "X": 1, "R": 1}},
        "audio": {"sample_rate": 8000, "channels": 1},
        "data": {"root": "somewhere"}}

OUT_OF_DOMAIN = [
    ("train.epochs", 0), ("train.batch_size", 0), ("train.batch_size", -2),
    ("train.lr", -1.0), ("train.lr", float("nan")), ("train.lr", 0.0), ("train.lr", float("inf")),
    ("train.steps_per_epoch", 0), ("train.lr_factor", 1.5), ("train.grad_clip", -1.0),
    ("eval.overlap", 1.5), ("eval.overlap", 1.0), ("eval.overlap", -0.1),
    ("eval.segment", 0.0), ("eval.segment", -3.0), ("eval.segment", float("nan")),
    ("eval.win", 0.0), ("data.segment", 0.0), ("data.samples_per_track", 0),
    ("data.valid_segment", -1.0), ("data.valid_ratio", 1.0), ("audio.sample_rate", 0),
    ("audio.sample_rate", -8000),
    # chunks 0.01 s apart (segment 10 s): the model would run once per 80 samples at 8 kHz
    ("eval.overlap", 0.999),
]


def _with(key: str, value) -> dict:
    raw = {section: dict(body) for section, body in BASE.items()}
    section, name = key.split(".", 1)
    raw.setdefault(section, {})[name] = value
    return raw


@pytest.mark.parametrize("key,value", OUT_OF_DOMAIN, ids=[f"{k}={v}" for k, v in OUT_OF_DOMAIN])
def test_values_out_of_their_domain_are_refused_naming_key_and_value(key, value):
    with pytest.raises(ConfigError) as err:
        config_from_dict(_with(key, value), file="c.yaml")
    msg = str(err.value)
    assert err.value.key == key and key in msg and repr(value) in msg and "c.yaml" in msg, msg
    assert "\n" not in msg


def test_values_in_their_domain_build():
    cfg = config_from_dict({**_with("train.lr", 3e-3), "eval": {"overlap": 0.0, "segment": 0.5}})
    assert cfg.train.lr == 3e-3 and cfg.eval.overlap == 0.0


@pytest.mark.parametrize("override", ["train.epochs=0", "train.batch_size=0", "train.lr=-1",
                                      "train.lr=nan", "eval.overlap=1.5"])
def test_sep_train_refuses_out_of_domain_overrides(override, tmp_path, capsys):
    assert main(["train", "paper/m1.yaml", override, f"train.out_dir={tmp_path / 'run'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and override.split("=")[0] in err and "\n" not in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("segment", [0.0, -1.0, float("nan")])
def test_apply_model_refuses_a_chunk_of_no_length(segment):
    import torch

    from sepcore.models import build_model
    from sepcore.separate import apply_model

    cfg = config_from_dict(BASE)
    model = build_model(cfg.model_name, cfg.model).eval()
    with pytest.raises(ValueError, match="segment"):
        apply_model(model, torch.zeros(1, 8000), segment=segment)


# --- audio in, output folders: `sep separate`, `sep score`, `sep train` ----------------------

RATE = 8000


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from sepcore.checkpoint import Checkpoint, checkpoint_config, save_checkpoint
    from sepcore.models import build_model

    cfg = config_from_dict({**BASE, "eval": {"segment": 1.0, "device": "cpu"}})
    model = build_model(cfg.model_name, cfg.model)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_checkpoint(path, Checkpoint(config=checkpoint_config(cfg), model_state=model.state_dict()))
    return path


def _song(path, seconds=0.5, bad_at=None, value=float("nan")):
    import numpy as np
    import soundfile as sf

    audio = np.random.default_rng(0).uniform(-0.5, 0.5, (int(seconds * RATE), 1))
    if bad_at is not None:
        audio[bad_at, 0] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, audio.astype("float32"), RATE, format="WAV", subtype="FLOAT")
    return path


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("error: "), err
    return err[-1]


def test_separate_refuses_a_song_with_nan_samples_unless_told(checkpoint, tmp_path, capsys):
    import numpy as np
    import soundfile as sf

    song = _song(tmp_path / "in" / "noisy.wav", bad_at=1234)
    out = tmp_path / "out"
    assert main(["separate", str(checkpoint), str(song), "--out", str(out)]) == 2
    line = _error_line(capsys)
    assert str(song) in line and "frame 1234" in line and "nan" in line
    assert not out.exists() or not any(out.rglob("*.wav"))
    assert main(["separate", str(checkpoint), str(song), "--out", str(out),
                 "--nan-policy", "zero"]) == 0
    stems = sorted((out / "noisy").glob("*.wav"))
    assert [p.name for p in stems] == ["accompaniment.wav", "vocals.wav"]
    assert all(np.isfinite(sf.read(p)[0]).all() for p in stems)


@pytest.mark.parametrize("override", ["eval.segment=0", "eval.segment=-1", "eval.overlap=1.5"])
def test_separate_refuses_bad_chunking(checkpoint, tmp_path, capsys, override):
    song = _song(tmp_path / "a.wav")
    assert main(["separate", str(checkpoint), str(song), override, "--out",
                 str(tmp_path / "out")]) == 2
    assert override.split("=")[0] in _error_line(capsys)


def test_song_folders_stay_inside_out_and_never_collide(checkpoint, tmp_path, capsys, caplog):
    songs = [_song(tmp_path / "in" / "...wav"), _song(tmp_path / "in" / "..wav"),
             _song(tmp_path / "a" / "x.wav"), _song(tmp_path / "b" / "x.wav"),
             _song(tmp_path / "c" / "X.wav")]
    out = tmp_path / "out" / "sub"
    assert main(["separate", str(checkpoint), *map(str, songs), "--out", str(out)]) == 0
    written = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.wav")
                     if p.parent.parent == out)
    folders = sorted({p.parent.name for p in written})
    assert folders == ["X-3", "song", "song-2", "x", "x-2"], folders
    assert len(written) == 2 * len(songs)
    assert not list((tmp_path / "out").glob("*.wav")) and not list(out.glob("*.wav"))
    printed = capsys.readouterr().out.split()
    assert len(printed) == 2 * len(songs) and all(str(out) in p for p in printed)
    reported = [r.getMessage() for r in caplog.records if "also named" in r.getMessage()]
    assert len(reported) == 3 and str(out / "x-2") in reported[1], reported


def test_existing_stems_need_force(checkpoint, tmp_path, capsys):
    song = _song(tmp_path / "a.wav")
    out = tmp_path / "out"
    assert main(["separate", str(checkpoint), str(song), "--out", str(out)]) == 0
    before = (out / "a" / "vocals.wav").stat().st_mtime_ns
    assert main(["separate", str(checkpoint), str(song), "--out", str(out)]) == 2
    line = _error_line(capsys)
    assert str(out / "a") in line and "--force" in line
    assert (out / "a" / "vocals.wav").stat().st_mtime_ns == before
    assert main(["separate", str(checkpoint), str(song), "--out", str(out), "--force"]) == 0


def test_out_that_is_a_file(checkpoint, tmp_path, capsys):
    song = _song(tmp_path / "a.wav")
    target = tmp_path / "taken"
    target.write_text("x")
    assert main(["separate", str(checkpoint), str(song), "--out", str(target)]) == 2
    assert str(target) in _error_line(capsys)


def _score_tree(root, song="s", bad=None, silent=False):
    import numpy as np
    import soundfile as sf

    rng = np.random.default_rng(1)
    refs = {n: rng.standard_normal((2 * RATE, 1)) * 0.1 for n in ("vocals", "accompaniment")}
    for name, ref in refs.items():
        est = ref + 0.01 * rng.standard_normal(ref.shape)
        if name == "vocals" and bad is not None:
            est[RATE + 7, 0] = bad
        if name == "vocals" and silent:
            est[:] = 0
        for kind, audio in (("references", ref), ("estimates", est)):
            (root / kind / song).mkdir(parents=True, exist_ok=True)
            sf.write(root / kind / song / f"{name}.wav", audio, RATE, subtype="DOUBLE")
    return root / "references", root / "estimates"


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_score_of_a_non_finite_estimate_is_nan_as_museval_and_says_so(tmp_path, capsys, bad):
    import math

    from sepcore.metrics.score import score_dirs

    refs, ests = _score_tree(tmp_path, bad=bad)
    ours = score_dirs(refs, ests, tmp_path / "a")
    theirs = score_dirs(refs, ests, tmp_path / "b", backend="museval")
    for target in ("vocals", "accompaniment"):
        for metric, value in theirs.scores[target].items():
            mine = ours.scores[target][metric]
            assert (math.isnan(mine) and math.isnan(value)) or mine == pytest.approx(value, 1e-6)
    assert math.isnan(ours.scores["vocals"]["SDR"])
    assert math.isfinite(ours.scores["accompaniment"]["SDR"])
    assert main(["score", "--references", str(refs), "--estimates", str(ests), "--out",
                 str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    assert "warning:" in out and str(ests / "s" / "vocals.wav") in out and "NaN" in out


def test_score_of_a_silent_estimate_is_one_line(tmp_path, capsys):
    refs, ests = _score_tree(tmp_path, silent=True)
    assert main(["score", "--references", str(refs), "--estimates", str(ests), "--out",
                 str(tmp_path / "c")]) == 2
    line = _error_line(capsys)
    assert str(ests / "s" / "vocals.wav") in line and "silent" in line


def _train_config(tmp_path):
    from sepcore.data.synth import write_synthetic_musdb

    root = tmp_path / "musdb"
    write_synthetic_musdb(root, tracks=3, seconds=2.0, seed=0)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"""
model: {{name: multiband, num_bands: 1, encoder: {{N: 16, L: 16}},
        masker: {{B: 16, H: 32, X: 1, R: 1}}}}
audio: {{sample_rate: 8000, channels: 1}}
data: {{root: {root}, segment: 1.0, samples_per_track: 2, cache_dir: {tmp_path / 'cache'}}}
train: {{epochs: 1, batch_size: 2, steps_per_epoch: 1, out_dir: {tmp_path / 'run'},
        progress: false}}
""")
    return root, cfg


def test_training_on_a_stem_with_nan_samples_names_it(tmp_path, capsys):
    import numpy as np
    import soundfile as sf

    root, cfg = _train_config(tmp_path)
    bad = sorted((root / "train").glob("*/vocals.wav"))
    for path in bad:
        audio, rate = sf.read(path, always_2d=True)
        audio[5, 0] = np.nan
        sf.write(path, audio, rate, subtype="FLOAT")
    assert main(["train", str(cfg)]) == 2
    line = _error_line(capsys)
    assert "vocals.wav" in line and any(str(p) in line for p in bad) and "frame 5" in line


@pytest.mark.parametrize("run_id", ["abc' or '1'='1", 'a"b', "../x"])
def test_promote_of_a_run_id_with_quotes_is_one_line(tmp_path, capsys, run_id):
    from sweeps.__main__ import main as sweeps_main

    db = tmp_path / "mlflow.db"
    assert sweeps_main(["promote", "sepcore-x", "--run", run_id,
                        "--tracking-uri", f"sqlite:///{db}"]) == 2
    line = _error_line(capsys)
    assert run_id in line and "--run" in line
    assert not db.exists()  # refused before the registry is opened


@pytest.mark.parametrize("meta", ["{not json", "[1, 2]", '{"format_version": 2}',
                                  '{"format_version": 2, "config": {"train": {}}}',
                                  '{"format_version": 2, "config": "x"}'])
def test_checkpoint_with_bad_metadata_is_one_line(tmp_path, capsys, meta):
    import torch
    from safetensors.torch import save_file

    path = tmp_path / "bad.safetensors"
    save_file({"model.w": torch.zeros(2)}, str(path), metadata={"sepcore": meta})
    song = _song(tmp_path / "a.wav")
    assert main(["separate", str(path), str(song), "--out", str(tmp_path / "out")]) == 2
    line = _error_line(capsys)
    assert str(path) in line and "metadata" in line


def test_training_whose_validation_loss_is_nan_fails(tmp_path, capsys, monkeypatch):
    import sepcore.train as train

    _, cfg = _train_config(tmp_path)
    monkeypatch.setattr(train, "_validate", lambda *a: (float("nan"), float("nan"), {}))
    assert main(["train", str(cfg)]) == 2
    line = _error_line(capsys)
    assert "validation loss is nan after epoch 1" in line


def test_out_paths_that_are_files_or_folders(checkpoint, tmp_path, capsys):
    refs, ests = _score_tree(tmp_path)
    taken = tmp_path / "taken"
    taken.write_text("x")
    assert main(["score", "--references", str(refs), "--estimates", str(ests), "--out",
                 str(taken)]) == 2
    assert str(taken) in _error_line(capsys)
    assert main(["analyze", "filters", str(checkpoint), "--out", str(refs)]) == 2
    assert str(refs) in _error_line(capsys)
    assert not (tmp_path / "references.png").exists()
    assert main(["analyze", "filters", str(checkpoint), "--out", str(taken / "x.png")]) == 2
    assert str(taken) in _error_line(capsys)


def test_separate_overrides_may_follow_the_options(checkpoint, tmp_path, capsys):
    song = _song(tmp_path / "a.wav")
    assert main(["separate", str(checkpoint), str(song), "--out", str(tmp_path / "o"),
                 "eval.overlap=2"]) == 2
    assert "eval.overlap" in _error_line(capsys)
    assert main(["separate", str(checkpoint), str(song), "--out", str(tmp_path / "o"),
                 "eval.segment=0.5"]) == 0
    with pytest.raises(SystemExit):
        main(["separate", str(checkpoint), str(song), "--out", str(tmp_path / "o"), "--nope"])


def _samples(path, frames, rate=RATE, channels=1):
    import numpy as np
    import soundfile as sf

    audio = np.random.default_rng(frames).uniform(-0.5, 0.5, (frames, channels))
    sf.write(path, audio.astype("float32"), rate, format="WAV", subtype="FLOAT")
    return path


def test_separate_refuses_an_empty_song_before_writing_anything(checkpoint, tmp_path, capsys):
    good, empty = _song(tmp_path / "good.wav"), _samples(tmp_path / "empty.wav", 0)
    out = tmp_path / "out"
    assert main(["separate", str(checkpoint), str(good), str(empty), "--out", str(out)]) == 2
    line = _error_line(capsys)
    assert str(empty) in line and "no samples" in line
    assert not out.exists()


@pytest.mark.parametrize("frames", [1, 2, 3])
def test_separate_of_a_song_of_a_few_samples(checkpoint, tmp_path, capsys, frames):
    import numpy as np
    import soundfile as sf

    song = _samples(tmp_path / "tiny.wav", frames, channels=2)
    assert main(["separate", str(checkpoint), str(song), "--out", str(tmp_path / "out")]) == 0
    for name in ("vocals", "accompaniment"):
        stem, rate = sf.read(tmp_path / "out" / "tiny" / f"{name}.wav", always_2d=True)
        assert rate == RATE and stem.shape == (frames, 1) and np.isfinite(stem).all()
    # at 44.1 kHz two samples last less than one sample of the 8 kHz model: an error, not 0 frames
    short = _samples(tmp_path / "short.wav", 2, rate=44100)
    assert main(["separate", str(checkpoint), str(short), "--out", str(tmp_path / "o2")]) == 2
    line = _error_line(capsys)
    assert str(short) in line and "too short" in line and "44100 Hz" in line


def test_separator_refuses_audio_with_nothing_to_separate():
    from sepcore.errors import DataError
    from sepcore.separate import check_length

    check_length(1, 1, 8000, 8000)
    check_length(6, 2, 44100, 8000)
    for frames, channels, rate in [(0, 1, 8000), (5, 0, 8000), (5, 2, 44100)]:
        with pytest.raises(DataError, match="no samples|too short"):
            check_length(frames, channels, rate, 8000)


def test_separate_with_a_chunk_far_longer_than_the_song(checkpoint, tmp_path):
    """eval.segment=1e9 once allocated a cross-fade window of 8e12 samples (found by
    tests/robustness): the window is never longer than the song."""
    import numpy as np
    import soundfile as sf

    song = _song(tmp_path / "a.wav")
    assert main(["separate", str(checkpoint), str(song), "--out", str(tmp_path / "out"),
                 "eval.segment=1e9", "eval.overlap=0.5"]) == 0
    stem = sf.read(tmp_path / "out" / "a" / "vocals.wav")[0]
    assert stem.shape == (int(0.5 * RATE),) and np.isfinite(stem).all()


def test_yaml_syntax_errors_are_one_line(tmp_path):
    """A YAML parser's message spans lines; sepcore's errors never do (found by
    tests/robustness on sweep files)."""
    from sepcore.config import load_config
    from sweeps.errors import SweepError
    from sweeps.spec import load_sweep

    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {name: [\n  - :\n")
    with pytest.raises(ConfigError) as err:
        load_config(bad)
    with pytest.raises(SweepError) as sweep_err:
        load_sweep(bad)
    for exc in (err.value, sweep_err.value):
        assert str(bad) in str(exc) and "cannot parse YAML" in str(exc) and "\n" not in str(exc)


@pytest.mark.parametrize("change", ["huge config", "nan weight"])
def test_checkpoint_whose_weights_disagree_with_it_is_one_line(checkpoint, tmp_path, change):
    """A config of 10^9 encoder filters is refused from the weights' shapes before any model is
    allocated; a NaN weight would give NaN stems."""
    import json

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from sepcore.checkpoint import load_model
    from sepcore.errors import CheckpointError

    with safe_open(str(checkpoint), framework="pt") as handle:
        meta = json.loads(handle.metadata()["sepcore"])
    tensors = load_file(str(checkpoint))
    if change == "huge config":
        meta["config"]["model"]["encoder"]["N"] = 10**9
    else:
        key = sorted(tensors)[0]
        tensors[key] = tensors[key].clone().fill_(float("nan"))
    path = tmp_path / "odd.safetensors"
    save_file(tensors, str(path), metadata={"sepcore": json.dumps(meta)})
    with pytest.raises(CheckpointError) as err:
        load_model(path)
    msg = str(err.value)
    assert str(path) in msg and "\n" not in msg
    assert ("do not match the stored config" in msg) if change == "huge config" else ("NaN" in msg)
