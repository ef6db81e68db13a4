"""``sep separate`` on hostile audio files: lengths 0-3 (and a little longer), NaN/inf samples,
huge values, 0/1/2/3/5 channels, odd rates, integer and float sample formats, truncated files,
damaged headers, random bytes; with the chunking overrides at and past their domain's edges.

Contract (contract.py): exit 2 with one ``error:`` line naming the song or the override, or exit
0 with one finite stem per source at the model's rate and channel count whose length is the
song's duration at that rate."""

from __future__ import annotations

import io
import math
import struct

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st

from sepcore.cli import main
from tests.robustness.contract import cli_case

RATE = 8000  # the tiny model's
SOURCES = ("vocals", "accompaniment")
RATES = [8000, 44100, 16000, 11025, 1, 7, 3000, 4000, 96000, 192000]  # the first: simplest
SPECIALS = [math.nan, math.inf, -math.inf, 1e30, -1e30, 3.4e38]
# the chunking overrides at and past their domain's edges (sepcore.config.DOMAINS)
SEGMENTS = ["0.2", "0.05", "1e9", "0.049", "0", "-1", "nan", "inf", "1e-9", "abc"]
OVERLAPS = ["0", "0.5", "0.75", "0.999", "1", "1.5", "-0.1", "nan"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny stereo 8 kHz model (two sources), saved once."""
    from sepcore.checkpoint import Checkpoint, checkpoint_config, save_checkpoint
    from sepcore.config import config_from_dict
    from sepcore.models import build_model

    cfg = config_from_dict({
        "model": {"name": "multiband", "num_bands": 1, "encoder": {"N": 8, "L": 16},
                  "masker": {"B": 8, "H": 16, "X": 1, "R": 1}},
        "audio": {"sample_rate": RATE, "channels": 2},
        "eval": {"segment": 0.25, "device": "cpu"}})
    path = tmp_path_factory.mktemp("robust-ckpt") / "tiny.safetensors"
    save_checkpoint(path, Checkpoint(config=checkpoint_config(cfg),
                                     model_state=build_model(cfg.model_name, cfg.model)
                                     .state_dict()))
    return path


@st.composite
def audio_files(draw) -> bytes:
    """The bytes of an audio file, well-formed or not."""
    kind = draw(st.sampled_from(["wav"] * 4 + ["flac", "random", "empty"]))
    if kind == "empty":
        return b""
    if kind == "random":
        return draw(st.binary(min_size=1, max_size=200))
    rate = draw(st.sampled_from(RATES))
    # lengths 0-3 mostly; longer ones only where they stay short at 8 kHz (a case stays cheap)
    frames = draw(st.one_of(st.integers(1, 3), st.just(0), st.integers(4, 48 if rate >= 3000
                                                                       else 6)))
    channels = draw(st.sampled_from([2, 1, 2, 1, 2, 1, 3, 5]))
    if kind == "flac":
        subtype, rate = draw(st.sampled_from(["PCM_16", "PCM_24"])), max(rate, 1)
    else:
        subtype = draw(st.sampled_from(["FLOAT", "DOUBLE", "PCM_16", "PCM_U8"]))
    audio = np.asarray(draw(st.lists(st.floats(-1, 1, width=32), min_size=frames * channels,
                                     max_size=frames * channels)),
                       dtype=np.float64).reshape(frames, channels)
    if frames and subtype in ("FLOAT", "DOUBLE"):
        for _ in range(draw(st.sampled_from([0, 0, 1, 2]))):  # NaN, inf or huge samples
            audio[draw(st.integers(0, frames - 1)), draw(st.integers(0, channels - 1))] = \
                draw(st.sampled_from(SPECIALS))
    buffer = io.BytesIO()
    sf.write(buffer, audio, rate, format=kind.upper(), subtype=subtype)
    data = bytearray(buffer.getvalue())
    damage = draw(st.sampled_from(["none"] * 8 + ["truncate", "header", "channels", "rate"]))
    if damage == "truncate" and len(data) > 1:
        del data[draw(st.integers(1, len(data) - 1)):]
    elif damage == "header" and data:  # a few random bytes somewhere in the first 64
        for _ in range(draw(st.integers(1, 4))):
            data[draw(st.integers(0, min(63, len(data) - 1)))] = draw(st.integers(0, 255))
    elif damage == "channels" and kind == "wav":  # the fmt chunk's channel count: 0 or absurd
        data[22:24] = struct.pack("<H", draw(st.sampled_from([0, 3, 1024, 65535])))
    elif damage == "rate" and kind == "wav":  # the fmt chunk's sample rate
        data[24:28] = struct.pack("<I", draw(st.sampled_from([0, 1, 2**31 - 1, 2**32 - 1])))
    return bytes(data)


def _check_stems(out, song, nan_policy):
    """The stems of an exit-0 run, against what soundfile decodes of the song."""
    decoded, rate = sf.read(str(song), always_2d=True, dtype="float64")
    frames = decoded.shape[0]
    assert frames > 0, "exit 0 for a song without samples"
    if nan_policy == "error":
        assert np.isfinite(decoded).all(), "exit 0 for a song with NaN/inf under --nan-policy error"
    folder = out / song.stem
    for name in SOURCES:
        stem, stem_rate = sf.read(str(folder / f"{name}.wav"), always_2d=True)
        assert stem_rate == RATE and stem.shape[1] == 2, (stem.shape, stem_rate)
        expected = frames * RATE / rate
        assert abs(stem.shape[0] - expected) <= 1.5, (stem.shape, frames, rate)
        assert np.isfinite(stem).all(), f"non-finite samples in {name}"


@settings(settings.get_profile("robustness"), max_examples=60)
@given(data=audio_files(), nan_policy=st.sampled_from(["error", "zero"]),
       segment=st.sampled_from([None] * 10 + SEGMENTS),
       overlap=st.sampled_from([None] * 10 + OVERLAPS))
def test_separate_hostile_audio(checkpoint, tmp_path_factory, data, nan_policy, segment, overlap):
    work = tmp_path_factory.mktemp("case")
    song = work / "song.wav"
    song.write_bytes(data)
    out = work / "out"
    overrides = ([f"eval.segment={segment}"] if segment is not None else []) + \
        ([f"eval.overlap={overlap}"] if overlap is not None else [])
    argv = ["separate", str(checkpoint), str(song), "--out", str(out), "--nan-policy",
            nan_policy, *overrides]
    cli_case("sep separate: audio files", main, argv,
             names=(str(song), "eval.segment", "eval.overlap"),
             check_output=lambda result: _check_stems(out, song, nan_policy))
