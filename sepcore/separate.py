"""Long-audio inference: chunked overlap-add over songs of any length (the demucs approach).

:func:`apply_model` runs a model on a mixture of any length chunk by chunk, the chunks on the
model's device, the full track's estimates where the mixture lies (a CPU song: on the CPU; the
trainer's validation batches: on the GPU, no copy back per chunk). Two regimes, chosen from
the model's declared ``receptive_field``:

- **exact** (finite receptive field, e.g. Conv-TasNet with cLN/BN): each chunk is extended by the
  receptive field on both sides (clamped to the song), chunk starts are aligned to the model's
  ``frame_hop``, and only the chunk's core is kept. The result equals one pass over the whole song
  up to float rounding — the overlap-add is seamless by construction.
- **blended** (unbounded receptive field, e.g. gLN's global statistics): chunks overlap by
  ``overlap`` and are cross-faded with a triangular window normalised by the summed weights.

:func:`load_separator` loads a checkpoint into a :class:`Separator` (model, chunking, device), whose
:meth:`Separator.separate` takes decoded audio of any rate and channel count to the model's and
separates it; :func:`separate_files` (``sep separate``) and the separation service both go through
it, so the same checkpoint gives the same stems from either.
"""

from __future__ import annotations

import logging
import math
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from sepcore.errors import DataError

log = logging.getLogger(__name__)


def _frame_hop(model) -> int:
    return max(1, int(getattr(model, "frame_hop", 1)))


def _chunks_exact(length: int, core: int, context: int, hop: int):
    """(window_start, window_end, core_start, core_end) for each chunk, windows aligned to hop."""
    core = max(hop, (core // hop) * hop)
    for start in range(0, length, core):
        end = min(start + core, length)
        w_start = max(0, ((start - context) // hop) * hop)
        w_end = min(length, end + context)
        yield w_start, w_end, start, end


def _progress(iterable, total: int, enabled: bool, desc: str):
    return tqdm(iterable, total=total, desc=desc, disable=not (enabled and sys.stderr.isatty()),
                leave=False, unit="chunk")


@torch.no_grad()
def apply_model(
    model: torch.nn.Module,
    mixture: torch.Tensor,
    segment: float = 10.0,
    overlap: float = 0.25,
    device: str | torch.device | None = None,
    progress: bool = False,
    callback: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Separate ``mixture`` with ``model`` chunk by chunk.

    Args:
        model: a sepcore model (call contract of ``sepcore.models.base``), in eval mode.
        mixture: ``(C, T)`` or ``(B, C, T)`` at the model's rate and channel count.
        segment: chunk length in seconds (of core audio, excluding context).
        overlap: cross-fade share between chunks (blended regime only), in [0, 1).
        device: where chunks run (default: the model's device). The mixture is moved there once
            (not once per chunk); the estimates are assembled on the mixture's device, so a CPU
            song's full-length estimates stay on the CPU and only each chunk's kept core is
            copied back.
        progress: show a tqdm bar over chunks (only on a TTY).
        callback: called as ``callback(done, total)`` after each chunk (e.g. to report progress).

    Returns:
        ``(B, S, C', T)`` (or ``(S, C', T)`` for a 2-D input) on the mixture's device, float32,
        with ``C'`` the model's output channels (``C`` for a plain model).

    Oracles (``model.needs_references``, e.g. FB-IRM) are run through
    ``sepcore.models.oracles.with_references(model, mixture, references)``, which gives the model
    and the input to pass here (the true sources stacked onto the mixture's channels).
    """
    squeeze = mixture.dim() == 2
    if squeeze:
        mixture = mixture[None]
    if mixture.dim() != 3:
        raise ValueError(f"mixture must be (C, T) or (B, C, T), got shape {tuple(mixture.shape)}")
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    if not (math.isfinite(segment) and segment > 0):
        raise ValueError(f"segment must be a finite number of seconds > 0, got {segment}")
    if getattr(model, "needs_references", False):
        raise ValueError(f"{type(model).__name__} is an oracle: run it through "
                         "sepcore.models.oracles.with_references(model, mixture, references)")
    param = next(model.parameters(), None)
    device = torch.device(device) if device is not None else (
        param.device if param is not None else torch.device("cpu"))
    home = mixture.device  # where the full-length estimates are assembled
    mixture = mixture.to(device, torch.float32)  # one copy to the device, not one per chunk
    batch, channels, length = mixture.shape
    # (B, S, C', T), allocated at the first chunk: C' are the model's output channels
    out: torch.Tensor | None = None
    core = max(1, int(round(segment * model.sample_rate)))
    receptive_field = model.receptive_field

    done = 0

    def run(start: int, end: int, total: int, keep: slice = slice(None)) -> torch.Tensor:
        nonlocal out, done
        # only the kept samples leave the device (the exact regime drops the context there)
        estimate = model(mixture[..., start:end])[..., keep].to(home, torch.float32)
        if out is None:
            out = torch.zeros(*estimate.shape[:-1], length, device=home)
        done += 1
        if callback is not None:
            callback(done, total)
        return estimate

    if receptive_field is not None:
        hop = _frame_hop(model)
        spans = list(_chunks_exact(length, core, int(receptive_field), hop))
        for w_start, w_end, start, end in _progress(spans, len(spans), progress, "separate"):
            out[..., start:end] = run(w_start, w_end, len(spans),
                                      slice(start - w_start, end - w_start))
    else:
        stride = max(1, int(core * (1 - overlap)))
        fade = core - stride
        # the cross-fade window, ramps of `fade` samples at both ends of `core`; only its first
        # min(core, length) samples are ever used (a chunk longer than the song is never built)
        index = torch.arange(min(core, length), device=home)
        weight = torch.ones(len(index), device=home)
        if fade > 0:
            weight = torch.where(index < fade, (index + 1).float() / (fade + 1), weight)
            weight = torch.where(index >= core - fade, (core - index).float() / (fade + 1),
                                 weight)
        total = torch.zeros(length, device=home)
        starts = [0]
        while starts[-1] + core < length:
            starts.append(starts[-1] + stride)
        for start in _progress(starts, len(starts), progress, "separate"):
            end = min(start + core, length)
            w = weight[: end - start]
            estimate = run(start, end, len(starts))
            out[..., start:end] += estimate * w
            total[start:end] += w
        out /= total.clamp_min(1e-8)
    if out is None:  # an empty song: no chunk was run
        out = torch.zeros(batch, len(model.sources), getattr(model, "audio_channels", channels), 0,
                          device=home)
    return out[0] if squeeze else out


@dataclass(frozen=True)
class Separator:
    """A loaded model with the chunking and device it separates with.

    Attributes:
        model: the sepcore model, in eval mode, on ``device``.
        segment: chunk length in seconds (:func:`apply_model`).
        overlap: cross-fade share between chunks (:func:`apply_model`).
        device: where the chunks run.
    """

    model: torch.nn.Module
    segment: float
    overlap: float
    device: torch.device

    @property
    def sources(self) -> list[str]:
        return list(self.model.sources)

    @property
    def sample_rate(self) -> int:
        return int(self.model.sample_rate)

    def separate(self, audio: np.ndarray, rate: int, progress: bool = False,
                 callback: Callable[[int, int], None] | None = None) -> torch.Tensor:
        """Separate decoded audio ``(C, T)`` at ``rate`` Hz.

        The audio is resampled to the model's rate (soxr HQ) and converted to its channel count
        first. Returns ``(S, C', T')`` float32 on the CPU at the model's rate, sources in
        ``self.sources`` order. ``callback(done, total)`` is called after each chunk.
        """
        from sepcore.data.audio import resample, to_channels

        if audio.ndim != 2:
            raise DataError(f"audio must be (channels, time), got shape {tuple(audio.shape)}")
        check_length(audio.shape[1], audio.shape[0], rate, self.sample_rate)
        audio = to_channels(resample(audio, rate, self.model.sample_rate),
                            self.model.audio_channels)
        return apply_model(self.model, torch.from_numpy(np.ascontiguousarray(audio)),
                           segment=self.segment, overlap=self.overlap, device=self.device,
                           progress=progress, callback=callback)


def check_length(frames: int, channels: int, rate: int, model_rate: int) -> None:
    """Raise :class:`DataError` for audio with nothing to separate: no channel, no frame, or
    fewer frames than one sample period of the model (``frames / rate < 1 / model_rate``: two
    samples at 44.1 kHz resample to nothing at 8 kHz)."""
    if channels < 1 or frames < 1:
        raise DataError(f"the audio holds no samples ({frames} frames, {channels} channels); "
                        "nothing to separate")
    if frames * model_rate < rate:
        raise DataError(f"the audio is too short: {frames} frame(s) at {rate} Hz last less than "
                        f"one sample at the model's {model_rate} Hz")


def load_separator(
    checkpoint: str | Path,
    overrides: list[str] | tuple[str, ...] = (),
    *,
    segment: float | None = None,
    overlap: float | None = None,
    device: str | None = None,
) -> Separator:
    """Load ``checkpoint`` for separation.

    Chunking and device come from the checkpoint's ``eval`` section (``segment``, ``overlap``,
    ``device``), changed by dotlist ``overrides`` (``eval.segment=5``) or by the keyword
    arguments. An oracle model (one that needs the true sources) is refused with a
    :class:`~sepcore.errors.DataError`.
    """
    from sepcore.checkpoint import load_model
    from sepcore.train import select_device

    model, cfg = load_model(checkpoint, overrides=overrides)
    ev = cfg.eval
    dev = select_device(ev.device if device is None else device, key="eval.device")
    if getattr(model, "needs_references", False):
        raise DataError(f"{checkpoint} holds an oracle model ({cfg.model_name}): it needs the "
                        f"true sources, so it cannot separate plain songs; use `sep evaluate`")
    return Separator(model=model.to(dev), segment=ev.segment if segment is None else segment,
                     overlap=ev.overlap if overlap is None else overlap, device=dev)


def separate_files(
    songs: list[str | Path],
    checkpoint: str | Path,
    out_dir: str | Path,
    overrides: list[str] | tuple[str, ...] = (),
    *,
    segment: float | None = None,
    overlap: float | None = None,
    device: str | None = None,
    progress: bool = True,
    force: bool = False,
    nan_policy: str = "error",
) -> list[Path]:
    """Separate audio files with a checkpoint; writes ``out_dir/<song>/<source>.wav``.

    Chunking and device come from the checkpoint's ``eval`` section (``segment``, ``overlap``,
    ``device``), changed by dotlist ``overrides`` (``eval.segment=5``) or, from Python, by the
    keyword arguments. Input of any rate and channel count is converted to the model's; the stems
    are written at the model's rate as float WAV. Returns the written paths.

    ``<song>`` is the file's stem (a MUSDB-layout ``<song>/mixture.wav`` is named after its
    folder), made a safe folder name inside ``out_dir`` (:func:`song_folders`); songs of the same
    name get ``x``, ``x-2``, … An existing stem file is an error unless ``force``. A NaN/inf
    sample in a song is an error naming it (``nan_policy="error"``) or is replaced by 0
    (``"zero"``).
    """
    import soundfile as sf

    from sepcore.data.audio import audio_frames, read_audio

    songs = [Path(song) for song in songs]
    for song in songs:
        if not song.is_file():
            raise DataError(f"input song not found: {song}")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(f"--out {out_dir} is a file, not a folder")
    separator = load_separator(checkpoint, overrides, segment=segment, overlap=overlap,
                               device=device)  # bad overrides are named first
    for song in songs:  # every song's header is checked before the first is separated
        if audio_frames(song) == 0:
            raise DataError(f"{song}: the audio holds no samples (0 frames); nothing to separate")
    model = separator.model
    folders = song_folders(songs, out_dir)
    if not force:
        for folder in folders:
            for name in model.sources:
                if (folder / f"{name}.wav").exists():
                    raise DataError(f"{folder / (name + '.wav')} exists; use --force to "
                                    "overwrite it (or choose another --out)")
    written: list[Path] = []
    for song, folder in zip(songs, folders, strict=True):
        audio, rate = read_audio(song, nan_policy=nan_policy)  # (C, T)
        try:
            estimate = separator.separate(audio, rate, progress=progress)
        except DataError as exc:
            raise DataError(f"{song}: {exc}") from None
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DataError(f"cannot create output folder {folder}: {exc}") from None
        for name, stem in zip(model.sources, estimate.numpy(), strict=True):
            path = folder / f"{name}.wav"
            sf.write(path, stem.T, model.sample_rate, subtype="FLOAT")
            written.append(path)
        log.info("separated %s -> %s (%d sources, %.1f s)", song, folder, len(model.sources),
                 audio.shape[-1] / rate)
    return written


def song_name(song: Path) -> str:
    """A song's output folder name: its file stem (its folder's name for a MUSDB-layout
    ``mixture.wav``), with path separators, control characters and leading/trailing dots and
    spaces replaced, so that it is never empty, ``.`` or ``..`` (``"song"`` then)."""
    raw = song.resolve().parent.name if song.stem == "mixture" else song.stem
    name = re.sub(r'[\x00-\x1f\x7f/\\:*?"<>|]', "_", raw).strip(" .")
    return name or "song"


def song_folders(songs: list[Path], out_dir: Path) -> list[Path]:
    """One distinct folder inside ``out_dir`` per song (:func:`song_name`); a name taken by an
    earlier song gets ``-2``, ``-3``, … and is reported in the log."""
    taken: set[str] = set()
    folders = []
    for song in songs:
        base = name = song_name(song)
        n = 1
        while name.casefold() in taken:
            n += 1
            name = f"{base}-{n}"
        if name != base:
            log.warning("%s: another song is also named %r; writing it to %s", song, base,
                        out_dir / name)
        taken.add(name.casefold())
        folders.append(out_dir / name)
    return folders
