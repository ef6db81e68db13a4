"""Values at and just past each config domain's edge (sepcore.config.DOMAINS), written out here
independently of DOMAINS so that a domain that drifts fails a test.

``EDGES[key] = (inside, outside)``: dotlist value texts that must build, and that must be refused
with an error naming the key. They hold against :data:`BASE` (whose ``eval.overlap`` is 0 and
``eval.segment`` 10 s, so that the chunk-hop rule ``segment * (1 - overlap) >= 0.05`` is tested
on its own edge).
"""

from __future__ import annotations

BASE_YAML = """\
model: {name: multiband, num_bands: 1, encoder: {N: 8, L: 16}, masker: {B: 8, H: 16, X: 1, R: 1}}
audio: {sample_rate: 8000, channels: 1, sources: [vocals, accompaniment]}
data: {root: data/nowhere}
eval: {segment: 10.0, overlap: 0.0}
"""

EDGES: dict[str, tuple[list[str], list[str]]] = {
    "audio.sample_rate": (["1", "8000", "44100"], ["0", "-8000"]),
    "data.segment": (["0.001", "4.0"], ["0", "-1", "nan", "inf"]),
    "data.samples_per_track": (["1"], ["0", "-1"]),
    "data.valid_segment": (["null", "0.5"], ["0", "-0.5", "inf"]),
    "data.valid_ratio": (["0.01", "0.5", "0.99"], ["0", "1", "-0.1", "nan"]),
    "data.num_workers": (["0", "2", "auto"], ["-1", "many"]),
    "data.augment.gain_min": (["0.5", "1.25"], ["0", "-1", "inf", "1.3"]),  # gain_max is 1.25
    "data.augment.gain_max": (["0.75", "3"], ["0", "0.7", "inf", "nan"]),  # gain_min is 0.75
    "data.augment.remix_share": (["0", "0.5", "1"], ["-0.1", "1.1", "nan", "inf"]),
    "data.augment.channel_pick": (["shared", "source"], ["both", "random", "1"]),
    "train.epochs": (["1"], ["0", "-1"]),
    "train.steps_per_epoch": (["null", "1"], ["0", "-1"]),
    "train.max_steps": (["null", "1"], ["0", "-1"]),
    "train.batch_size": (["1"], ["0", "-2"]),
    "train.lr": (["1e-300", "1.0", "1e300"], ["0", "-1", "nan", "inf", "-inf"]),
    "train.weight_decay": (["0", "0.1"], ["-1e-9", "nan", "inf"]),
    "train.lr_patience": (["0", "3"], ["-1"]),
    "train.lr_factor": (["0.001", "0.999"], ["0", "1", "1.5", "nan"]),
    "train.early_stop": (["0", "5"], ["-1"]),
    "train.grad_clip": (["null", "1e-6"], ["0", "-1", "inf", "nan"]),
    "train.log_every": (["1", "50"], ["0", "-1"]),
    "train.max_skipped_steps": (["1", "20"], ["0", "-1"]),
    "train.loss_weight": (["0", "1"], ["-1", "nan", "inf"]),
    "train.aux_weight": (["0", "0.5"], ["-0.1", "inf"]),
    "train.source_weights": (["null", "[0.5,2]", "[0,1]"], ["[-1,1]", "[nan,1]", "[1,inf]"]),
    "eval.max_tracks": (["null", "1"], ["0", "-5"]),
    "eval.segment": (["0.05", "10"], ["0.049", "0", "-1", "nan", "inf"]),
    # with segment 10 s: overlap 0.995 moves chunks by exactly 0.05 s, 0.996 by less
    "eval.overlap": (["0", "0.5", "0.995"], ["0.996", "1", "-0.01", "1.5", "nan"]),
    "eval.win": (["0.001", "1"], ["0", "-1", "inf"]),
    "eval.hop": (["0.001", "1"], ["0", "-1", "inf"]),
    "eval.silence_threshold_db": (["-200", "0", "60"], ["nan", "inf", "-inf"]),
}

# texts no numeric key takes as they are: each is refused or converted, never a traceback
JUNK = ["1.5", "abc", "true", "[1]", "{a: 1}", "1e999", "-0", "0x10", "", "'3'", "None", "~"]
