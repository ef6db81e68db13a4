"""``sep evaluate``: score a checkpoint on a MUSDB-layout subset with BSSEval (museval).

For each song: chunked inference (:func:`sepcore.separate.apply_model`) on the mixture at the
model's rate and channel count, BSSEval against the reference stems (museval's per-track JSON is
written), SI-SDR over the whole song, PES and VAD on the target's silent segments
(:mod:`sepcore.metrics.silence`); then the median-of-medians table in the paper's form (SDR / SIR /
ISR / SAR per target) and a second table with the segment-wise mean/median, PES, VAD (and NSDR /
GNSDR with ``eval.nsdr``). ``<out_dir>/summary.json`` records the protocol and the tables.

``eval.protocol`` says where the scores are computed:

* ``sisec`` (default, as SiSEC 2018): the references are read at the dataset's native rate and
  channel layout (those of the first song's files: 44.1 kHz stereo for MUSDB18); every estimate
  is resampled to that rate (:func:`sepcore.data.audio.resample`), cut or zero-padded to the
  reference's length and, from a mono model, copied to every channel (as SiSEC's mono entries).
* ``model``: everything at the model's own rate and channel count (the references converted as the
  mixture is), for quick exploration only: at 8 kHz, BSSEval's 512-tap filters span 64 ms and the
  empty band above the anti-alias cut makes ISR/SAR ill-posed. Every table says so.

BSSEval runs where ``eval.metrics_device`` says (:func:`bsseval_device`): with ``auto``, on the
model's GPU when the model runs on one (its torch path on CUDA tensors), else on the CPU.

``eval.bsseval`` picks BSSEval v4 (``eval.win`` s windows, filters on the whole track, SiSEC 2018)
or v3 as ``museval.evaluate(..., mode="v3")`` with one window over the whole song (one SDR per
song, as the MIR-1K / ccMixter papers report with NSDR and GNSDR, the length-weighted mean NSDR).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from sepcore.checkpoint import load_model
from sepcore.data import load_subset
from sepcore.data.audio import resample, to_channels
from sepcore.errors import ConfigError, DataError
from sepcore.metrics.aggregate import aggregate, format_table
from sepcore.metrics.bsseval import evaluate_track, save_track_json
from sepcore.metrics.silence import nsdr, segment_statistics, silence_scores
from sepcore.metrics.sisdr import si_sdr
from sepcore.models.oracles import with_references
from sepcore.separate import apply_model

log = logging.getLogger(__name__)


@dataclass
class EvalResult:
    table: str
    scores: Any  # median of medians per target and metric (sepcore.metrics.aggregate)
    json_dir: Path
    sisdr: dict[str, dict[str, float]] = field(default_factory=dict)  # track -> target -> dB
    extra: dict[str, dict[str, float]] = field(default_factory=dict)  # target -> PES, VAD, ...
    extra_table: str = ""
    protocol: dict[str, Any] = field(default_factory=dict)  # protocol, sample_rate, channels, ...
    summary_path: Path | None = None


def evaluate_checkpoint(
    checkpoint: str | Path,
    overrides: list[str] | tuple[str, ...] = (),
    *,
    root: str | None = None,
    subset: str | None = None,
    out_dir: str | Path | None = None,
    max_tracks: int | None = None,
    tracks: list[str] | None = None,
    device: str | None = None,
    progress: bool = True,
) -> EvalResult:
    """Evaluate ``checkpoint`` with its own config (``sep evaluate CHECKPOINT [overrides…]``).

    ``overrides`` are dotlist overrides of the checkpoint's data/eval/train sections
    (``data.root=…``, ``eval.subset=train``, ``eval.max_tracks=2``, ``eval.device=cpu``); the
    keyword arguments, when given, take precedence over both (for callers in Python).
    """
    from sepcore.train import select_device

    model, cfg = load_model(checkpoint, overrides=overrides)
    given = {"subset": subset, "out_dir": out_dir, "max_tracks": max_tracks, "tracks": tracks,
             "device": device}
    ev = replace(cfg.eval, **{k: v for k, v in given.items() if v is not None})
    data_cfg = replace(cfg.data, root=root) if root else cfg.data
    dev = select_device(ev.device, key="eval.device")
    model.to(dev)
    bss_dev = bsseval_device(ev.metrics_device, dev)
    subset = ev.subset
    songs = load_subset(data_cfg, subset=subset, names=ev.tracks or None,
                        max_tracks=ev.max_tracks)
    if not songs:
        raise DataError(f"no songs to evaluate in {data_cfg.root}/{subset}")
    json_dir = Path(ev.out_dir or Path(cfg.train.out_dir) / "eval")
    model_rate, model_channels = model.sample_rate, data_cfg.channels
    if ev.protocol == "sisec":
        rate, channels = _native_format(data_cfg, subset, songs[0].name)
        native_cfg = replace(data_cfg, sample_rate=rate, channels=channels)
    else:
        rate, channels, native_cfg = model_rate, model_channels, None
    protocol = {"protocol": ev.protocol, "sample_rate": rate, "channels": channels,
                "bsseval": ev.bsseval, "model_sample_rate": model_rate,
                "model_channels": model_channels}
    log.info("scoring: %s; BSSEval on %s", describe_protocol(protocol), bss_dev or "the CPU")
    stores, sisdr = [], {}
    silent: dict[str, list] = {name: [] for name in model.sources}
    nsdrs: dict[str, list[tuple[float, int]]] = {name: [] for name in model.sources}
    bar = tqdm(songs, desc="evaluate", unit="song",
               disable=not (progress and sys.stderr.isatty()))
    for song in bar:
        mix_np = np.ascontiguousarray(song.mixture)  # (C, T) at the model's rate
        mixture = torch.from_numpy(mix_np)
        reference = song.targets(model.sources)  # (S, C, T)
        runner, inputs = with_references(  # oracles (FB-IRM) see the true sources
            model, mixture, torch.from_numpy(np.ascontiguousarray(reference)))
        estimate = apply_model(runner, inputs, segment=ev.segment, overlap=ev.overlap,
                               device=dev).numpy()  # (S, C, T)
        if len(model.sources) == 1:
            # BSSEval needs two targets: score the residual (mixture − estimate) as the second,
            # as museval does for vocals/accompaniment (the HTMD-Net paper separates vocals only);
            # the residual is the model's estimate, formed at its rate
            name = model.sources[0]
            rest = "accompaniment" if name == "vocals" else f"not_{name}"
            estimate = np.concatenate([estimate, mix_np[None] - estimate])
            reference = np.concatenate([reference, mix_np[None] - reference])
            names = [name, rest]
        else:
            names = list(model.sources)
        if native_cfg is not None:  # the references and the mixture as the dataset has them
            native = load_subset(native_cfg, subset=subset, names=[song.name])[0]
            reference = native.targets(model.sources)
            mix_np = np.ascontiguousarray(native.mixture)
            if len(model.sources) == 1:
                reference = np.concatenate([reference, mix_np[None] - reference])
            estimate = to_native(estimate, model_rate, rate, reference.shape[-2:])
        refs = {n: np.asarray(reference[i]).T for i, n in enumerate(names)}
        ests = {n: estimate[i].T for i, n in enumerate(names)}
        store = evaluate_track(_on(refs, bss_dev), _on(ests, bss_dev), track_name=song.name,
                               rate=rate, win=ev.win, hop=ev.hop, version=ev.bsseval)
        save_track_json(store, json_dir, subset)
        stores.append(store)
        values = si_sdr(torch.from_numpy(np.ascontiguousarray(estimate[:len(model.sources)])),
                        torch.from_numpy(np.ascontiguousarray(reference[:len(model.sources)])))
        sisdr[song.name] = dict(zip(model.sources, values.mean(dim=-1).tolist(), strict=True))
        for name in model.sources:
            silent[name].append(silence_scores(refs[name], ests[name], rate, ev.win, ev.hop,
                                               ev.silence_threshold_db))
        if ev.nsdr:
            # the mixture as the estimate of every scored target (also a residual one)
            mix = dict.fromkeys(refs, np.ascontiguousarray(mix_np.T))
            mix_sdr = _song_sdr(evaluate_track(_on(refs, bss_dev), _on(mix, bss_dev),
                                               track_name=song.name, rate=rate, win=ev.win,
                                               hop=ev.hop, version=ev.bsseval))
            est_sdr = _song_sdr(store)
            for name in model.sources:
                nsdrs[name].append((nsdr(est_sdr.get(name, np.nan), mix_sdr.get(name, np.nan)),
                                    mix_np.shape[-1]))
        log.info("evaluated %s", song.name)

    scores = aggregate(stores)
    extra = _extra_scores(stores, silent, nsdrs, model.sources)
    table = format_table(scores, list(scores))
    extra_table = format_extra_table(extra, model.sources)
    summary_path = write_summary(json_dir, {**protocol, "subset": subset,
                                            "tracks": [song.name for song in songs],
                                            "bsseval_device": str(bss_dev or "cpu"),
                                            "scores": scores, "segmentwise": extra,
                                            "sisdr": sisdr})
    return EvalResult(table=table, scores=scores, json_dir=json_dir, sisdr=sisdr, extra=extra,
                      extra_table=extra_table, protocol=protocol, summary_path=summary_path)


def bsseval_device(setting: str, model_device: torch.device) -> torch.device | None:
    """Where BSSEval runs (``eval.metrics_device``): a CUDA device, given torch tensors there, or
    None: numpy arrays, on the CPU. ``auto`` follows the model (its GPU when it runs on one);
    ``cuda`` without CUDA is a :class:`~sepcore.errors.ConfigError` naming the key."""
    if setting == "auto":
        return model_device if model_device.type == "cuda" else None
    if setting == "cpu":
        return None
    if model_device.type == "cuda":
        return model_device
    if not torch.cuda.is_available():
        raise ConfigError(f"eval.metrics_device={setting!r} but CUDA is not available "
                          f"(torch.version.cuda = {torch.version.cuda})",
                          key="eval.metrics_device")
    return torch.device("cuda")


def _on(arrays: dict[str, np.ndarray], device: torch.device | None) -> dict[str, Any]:
    """BSSEval's inputs: the numpy arrays (``device`` None) or torch tensors on ``device``."""
    if device is None:
        return arrays
    return {name: torch.from_numpy(a).to(device) for name, a in arrays.items()}


def _native_format(data_cfg, subset: str, name: str) -> tuple[int, int]:
    """Sample rate and channel count of the dataset's files (those of song ``name``)."""
    import soundfile as sf

    from sepcore.data.musdb import list_songs

    if data_cfg.layout == "folders":
        from sepcore.data.folders import list_folder_songs

        root = Path(data_cfg.root).expanduser()
        songs = list_folder_songs(root, subset if (root / subset).is_dir() else None)
    else:
        songs = list_songs(data_cfg, subset)
    song = next((s for s in songs if s.name == name), None)
    if song is None:
        raise DataError(f"song {name!r} not found in {data_cfg.root}/{subset}")
    track = getattr(song, "track", None)
    if track is not None:  # MUSDB18 .stem.mp4: stereo at the track's rate
        return int(track.rate), 2
    path = next(iter(song.files.values()))
    try:
        info = sf.info(str(path))
    except (sf.SoundFileError, RuntimeError, OSError) as exc:
        raise DataError(f"cannot read the header of audio file {path}: {exc}") from None
    return int(info.samplerate), int(info.channels)


def to_native(estimate: np.ndarray, rate_in: int, rate: int, shape: tuple[int, int]) -> np.ndarray:
    """Estimates ``(S, C, T)`` at the model's rate -> ``(S, *shape)`` at ``rate``: resampled with
    sepcore's resampler, cut or zero-padded to the references' length, a mono estimate copied to
    every reference channel."""
    channels, length = shape
    out = np.zeros((estimate.shape[0], channels, length), dtype=np.float32)
    for i, source in enumerate(estimate):
        audio = to_channels(resample(np.ascontiguousarray(source, dtype=np.float32), rate_in,
                                     rate), channels)
        n = min(length, audio.shape[-1])
        out[i, :, :n] = audio[:, :n]
    return out


def describe_protocol(protocol: dict[str, Any]) -> str:
    """One line naming the scoring protocol, rate, channels and BSSEval version."""
    version = protocol["bsseval"]
    how = ("BSSEval v3, one whole-song window" if version == "v3"
           else "BSSEval v4, median over windows then over songs")
    line = (f"protocol {protocol['protocol']}: {protocol['sample_rate']} Hz, "
            f"{protocol['channels']} ch, {how}")
    if protocol["protocol"] == "model":
        line += " (the model's own rate and channels, not comparable with SiSEC numbers)"
    elif (protocol.get("model_sample_rate"), protocol.get("model_channels")) != (
            protocol["sample_rate"], protocol["channels"]):
        line += (f" (estimates of the {protocol['model_sample_rate']} Hz, "
                 f"{protocol['model_channels']} ch model resampled to the references)")
    return line


def write_summary(folder: Path, summary: dict[str, Any]) -> Path:
    """``<folder>/summary.json``, written atomically (temporary file + ``os.replace``)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "summary.json"
    fd, tmp = tempfile.mkstemp(prefix=".summary.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(_jsonable(summary), handle, indent=2)
            handle.write("\n")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _jsonable(value: Any) -> Any:
    """NaN/inf -> None (strict JSON), numpy scalars -> Python numbers."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def _frames(store, target: str) -> list[dict[str, float]]:
    for entry in store.scores["targets"]:
        if entry["name"] == target:
            return [frame["metrics"] for frame in entry["frames"]]
    return []


def _song_sdr(store) -> dict[str, float]:
    """Median over windows of SDR per target (the song-wise number)."""
    out = {}
    for entry in store.scores["targets"]:
        values = np.array([f["metrics"]["SDR"] for f in entry["frames"]], dtype=np.float64)
        values = values[np.isfinite(values)]
        out[entry["name"]] = float(np.median(values)) if values.size else float("nan")
    return out


def _extra_scores(stores, silent, nsdrs, sources) -> dict[str, dict[str, float]]:
    """Per target: segment-wise mean/median, PES, VAD (pooled over silent segments), NSDR
    (median over songs) and GNSDR (mean over songs weighted by their length)."""
    extra: dict[str, dict[str, float]] = {}
    for name in sources:
        frames = [f for store in stores for f in _frames(store, name)]
        row = segment_statistics(frames)
        scored = [s for s in silent[name] if s.segments]
        count = sum(s.segments for s in scored)
        row["PES"] = (sum(s.pes * s.segments for s in scored) / count) if count else float("nan")
        row["VAD"] = (sum(s.vad * s.segments for s in scored) / count) if count else float("nan")
        row["silent_segments"] = float(count)
        if nsdrs.get(name):
            gains = np.array([g for g, _ in nsdrs[name]], dtype=np.float64)
            lengths = np.array([n for _, n in nsdrs[name]], dtype=np.float64)
            finite = np.isfinite(gains)
            row["NSDR"] = float(np.median(gains[finite])) if finite.any() else float("nan")
            # GNSDR: NSDR weighted by song length (Hsu & Jang, MIR-1K)
            row["GNSDR"] = (float(np.sum(gains[finite] * lengths[finite]) / lengths[finite].sum())
                            if finite.any() else float("nan"))
        extra[name] = row
    return extra


def format_extra_table(extra: dict[str, dict[str, float]], sources) -> str:
    """Segment-wise mean/median SDR/SIR/SAR, PES (dB, lower is better), VAD (%)."""
    columns = ["SDR_mean", "SDR_median", "SIR_mean", "SIR_median", "SAR_mean", "SAR_median",
               "PES", "VAD"]
    if any("NSDR" in extra[s] for s in sources):
        columns += ["NSDR", "GNSDR"]
    header = f"{'target':<14}" + "".join(f"{c:>11}" for c in columns)
    lines = [header, "-" * len(header)]
    for name in sources:
        lines.append(f"{name:<14}" + "".join(f"{extra[name].get(c, float('nan')):>11.2f}"
                                             for c in columns))
    return "\n".join(lines)
