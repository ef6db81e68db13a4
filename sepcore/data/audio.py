"""Reading, resampling and channel conversion of audio arrays shaped ``(channels, time)``.

A NaN or infinite sample is an error naming the file and the first such sample. Every failure
to decode a file becomes a :class:`~sepcore.errors.DataError` naming that file;
resampling uses soxr (high quality) so that any input rate can reach the model's rate.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from sepcore.errors import DataError

log = logging.getLogger(__name__)


NAN_POLICIES = ("error", "zero")


def read_audio(path: str | Path, nan_policy: str = "error") -> tuple[np.ndarray, int]:
    """Decode ``path`` into a float32 array ``(channels, time)`` and its sample rate.

    A NaN or infinite sample (a float WAV can hold them) is a :class:`DataError` naming the file
    and the first such sample (``nan_policy="error"``), or is replaced by 0 with a warning
    (``nan_policy="zero"``).
    """
    if nan_policy not in NAN_POLICIES:
        raise ValueError(f"nan_policy must be one of {NAN_POLICIES}, got {nan_policy!r}")
    path = Path(path)
    if not path.is_file():
        raise DataError(f"audio file not found: {path}")
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)  # (T, C)
    except (sf.SoundFileError, RuntimeError, OSError, ValueError) as exc:
        raise DataError(f"cannot decode audio file {path}: {exc}") from None
    bad = first_non_finite(data)
    if bad is not None:
        where = describe_sample(data, bad, int(rate))
        if nan_policy == "error":
            raise DataError(f"{path}: non-finite audio sample ({where}); fix the file or "
                            "replace such samples by silence (sep separate --nan-policy zero)")
        count = int((~np.isfinite(data)).sum())
        log.warning("%s: %d non-finite sample(s), the first %s, replaced by 0", path, count,
                    where)
        data = np.nan_to_num(data, nan=0.0, posinf=0.0, neginf=0.0)
    return np.ascontiguousarray(data.T), int(rate)


def first_non_finite(data: np.ndarray) -> tuple[int, int] | None:
    """``(frame, channel)`` of the first NaN/inf sample of a ``(time, channels)`` array, or None."""
    bad = ~np.isfinite(data)
    if not bad.any():
        return None
    frame, channel = np.argwhere(bad)[0]
    return int(frame), int(channel)


def describe_sample(data: np.ndarray, where: tuple[int, int], rate: int) -> str:
    """``"nan at frame 100 (channel 0, 0.012 s)"`` for a ``(time, channels)`` array."""
    frame, channel = where
    return f"{data[frame, channel]} at frame {frame} (channel {channel}, {frame / rate:.3f} s)"


def audio_frames(path: str | Path) -> int:
    """Number of frames the header of ``path`` announces (no decoding)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"audio file not found: {path}")
    try:
        return int(sf.info(str(path)).frames)
    except (sf.SoundFileError, RuntimeError, OSError, ValueError) as exc:
        raise DataError(f"cannot read the header of audio file {path}: {exc}") from None


def resample(audio: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Resample ``(C, T)`` from ``rate_in`` to ``rate_out`` with soxr HQ; identity when equal."""
    if rate_in == rate_out:
        return audio
    if rate_in <= 0 or rate_out <= 0:
        raise DataError(f"cannot resample from {rate_in} Hz to {rate_out} Hz")
    out = soxr.resample(np.ascontiguousarray(audio.T, dtype=np.float32), rate_in, rate_out,
                        quality="HQ")  # (T', C)
    return np.ascontiguousarray(np.asarray(out, dtype=np.float32).reshape(-1, audio.shape[0]).T)


def to_channels(audio: np.ndarray, channels: int) -> np.ndarray:
    """Convert ``(C, T)`` to ``(channels, T)``: many → mono by mean, mono → many by copying."""
    have = audio.shape[0]
    if have == channels:
        return audio
    if channels == 1:
        return audio.mean(axis=0, keepdims=True, dtype=np.float32)
    if have == 1:
        return np.repeat(audio, channels, axis=0)
    raise DataError(f"cannot convert {have}-channel audio to {channels} channels")
