"""Reading, resampling and channel conversion of audio arrays shaped ``(channels, time)``.

Every failure to decode a file becomes a :class:`~sepcore.errors.DataError` naming that file;
resampling uses soxr (high quality) so that any input rate can reach the model's rate.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from sepcore.errors import DataError


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """Decode ``path`` into a float32 array ``(channels, time)`` and its sample rate."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"audio file not found: {path}")
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)  # (T, C)
    except (sf.SoundFileError, RuntimeError, OSError, ValueError) as exc:
        raise DataError(f"cannot decode audio file {path}: {exc}") from None
    return np.ascontiguousarray(data.T), int(rate)


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
