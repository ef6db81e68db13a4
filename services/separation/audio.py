"""Uploads in, stems out: the request body streamed to a temporary file under a size limit,
decoded and checked (one-line reasons), and stems encoded as WAV/FLAC files or a zip of them.

Every problem with what a client sent is an :class:`UploadError` carrying the HTTP status and a
one-line reason.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import zipfile
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import numpy as np
import soundfile as sf
from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

FIELD = "audio"
FORMATS = {"wav": ("WAV", "FLOAT", "audio/wav"), "flac": ("FLAC", "PCM_24", "audio/flac")}
_COPY_BLOCK = 1024 * 1024
# libsndfile's header log: "data : 64000 (should be 31956)" when the file ends before its data
_SHORT_CHUNK = re.compile(r"^\s*(?:data|RIFF|FORM|SSND)\s*:\s*\d+\s*\(should be \d+\)", re.M)


class UploadError(Exception):
    """What a client sent cannot be served: ``status`` (400, 413, 415, 422) and a reason."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _mib(size: int) -> str:
    return f"{size / (1024 * 1024):g} MiB"


async def _limited(stream: AsyncIterator[bytes], limit: int) -> AsyncIterator[bytes]:
    received = 0
    async for chunk in stream:
        received += len(chunk)
        if received > limit:
            raise UploadError(413, f"request body exceeds the upload limit of {_mib(limit)}")
        yield chunk


async def receive_upload(headers: Headers, stream: AsyncIterator[bytes], limit: int,
                         folder: str | Path) -> Path:
    """Stream a ``multipart/form-data`` body's ``audio`` file into a new file in ``folder``.

    The declared ``Content-Length`` is checked first and the bytes are counted as they arrive:
    past ``limit`` the upload stops with 413 at once. The parser spools parts to temporary files,
    never the whole body to memory.
    """
    content_type = headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        raise UploadError(415, f"send the song as multipart/form-data with a file field "
                               f"'{FIELD}' (got Content-Type {content_type or 'none'!r})")
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise UploadError(413, f"request body of {_mib(int(declared))} exceeds the upload limit "
                               f"of {_mib(limit)}")
    parser = MultiPartParser(headers, _limited(stream, limit), max_files=1, max_fields=8)
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise UploadError(400, f"malformed multipart body: {exc.message}") from None
    try:
        upload = form.get(FIELD)
        if not isinstance(upload, UploadFile):
            raise UploadError(400, f"the multipart body has no file field '{FIELD}'")
        out = tempfile.NamedTemporaryFile(dir=folder, prefix="upload-", delete=False)
        with out:
            await upload.seek(0)
            while block := await upload.read(_COPY_BLOCK):
                out.write(block)
        return Path(out.name)
    finally:
        await form.close()


def decode(path: str | Path, max_duration: float) -> tuple[np.ndarray, int]:
    """Decode an uploaded file into float32 ``(channels, time)`` and its rate, refusing files that
    do not decode, are truncated, are empty, are longer than ``max_duration`` seconds or hold
    NaN/infinite samples (400 with the reason)."""
    try:
        with sf.SoundFile(str(path)) as f:
            rate, frames = f.samplerate, f.frames
            if rate <= 0:
                raise UploadError(400, f"the audio declares a sample rate of {rate} Hz")
            if frames <= 0:
                raise UploadError(400, "the audio holds no samples (zero length)")
            if frames / rate > max_duration:
                raise UploadError(400, f"the audio is {frames / rate:.1f} s long; the limit is "
                                       f"{max_duration:g} s")
            if _SHORT_CHUNK.search(f.extra_info):
                raise UploadError(400, "the audio is truncated: the file ends before the data "
                                       "its header announces")
            data = f.read(dtype="float32", always_2d=True)  # (T, C)
    except sf.LibsndfileError as exc:
        raise UploadError(400, f"the upload does not decode as audio: "
                               f"{exc.error_string}") from None
    except (RuntimeError, ValueError, OSError) as exc:
        raise UploadError(400, f"the upload does not decode as audio: {exc}") from None
    if data.shape[0] < frames:
        raise UploadError(400, f"the audio is truncated: {data.shape[0]} of {frames} frames "
                               f"decode")
    if data.shape[0] == 0 or data.shape[1] == 0:
        raise UploadError(400, "the audio holds no samples (zero length)")
    if not np.isfinite(data).all():
        raise UploadError(400, "the audio holds NaN or infinite samples")
    return np.ascontiguousarray(data.T), int(rate)


def stem_arrays(estimate: np.ndarray, sources: Sequence[str],
                wanted: Sequence[str]) -> dict[str, np.ndarray]:
    """``(S, C, T)`` model output → ``{stem: (C, T)}`` for the ``wanted`` stems; a stem that is
    not a source is ``accompaniment``, the sum of every source but vocals."""
    out = {}
    for stem in wanted:
        if stem in sources:
            out[stem] = estimate[list(sources).index(stem)]
        else:
            others = [i for i, s in enumerate(sources) if s != "vocals"]
            out[stem] = estimate[others].sum(axis=0)
    return out


def write_stem(path: str | Path, audio: np.ndarray, rate: int, fmt: str) -> Path:
    """Write ``(C, T)`` as ``fmt``: WAV as 32-bit float (the samples ``sep separate`` writes),
    FLAC as 24-bit PCM (clipped to [-1, 1])."""
    container, subtype, _ = FORMATS[fmt]
    data = audio.T if fmt == "wav" else np.clip(audio.T, -1.0, 1.0)
    sf.write(str(path), data, rate, format=container, subtype=subtype)
    return Path(path)


def write_stems(folder: str | Path, stems: dict[str, np.ndarray], rate: int,
                fmt: str) -> dict[str, Path]:
    """One ``<stem>.<fmt>`` file per stem in ``folder``."""
    return {name: write_stem(Path(folder) / f"{name}.{fmt}", audio, rate, fmt)
            for name, audio in stems.items()}


def zip_files(path: str | Path, files: dict[str, Path]) -> Path:
    """A zip of ``files`` under their own names (stored: audio does not deflate)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for file in files.values():
            archive.write(file, arcname=file.name)
    return Path(path)


def media_type(fmt: str) -> str:
    return FORMATS[fmt][2]


def remove(path: str | Path) -> None:
    """Remove a file or folder, ignoring what is already gone."""
    path = Path(path)
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
