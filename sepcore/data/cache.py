"""On-disk and in-process cache of decoded, resampled, channel-converted audio.

A decoded stem is stored once as ``<cache_dir>/<hh>/<hash>.npy`` where the hash covers the
absolute source path, its size and modification time, the target rate and channel count (and any
extra key such as the stem name inside a ``.stem.mp4``): editing or replacing a file invalidates
its entry. Files are written atomically (temporary file + ``os.replace``) so parallel workers never
read half a file, and read back memory-mapped. A process-wide dict keeps every array it has
loaded so an epoch never decodes or even re-opens audio twice.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from sepcore.errors import DataError

log = logging.getLogger(__name__)

_FORMAT = "sepcore-audio-cache-v1"
_MEMORY: dict[str, np.ndarray] = {}


def default_cache_dir(cache_dir: str | Path | None) -> Path:
    """``cache_dir`` or, when None, ``<cwd>/.cache/sepcore``."""
    return Path(cache_dir) if cache_dir else Path.cwd() / ".cache" / "sepcore"


def cache_key(source: str | Path, rate: int, channels: int, *extra: str) -> str:
    """Hash of (absolute path, size, mtime_ns, rate, channels, extra) of an existing file."""
    path = Path(source).absolute()
    try:
        stat = path.stat()
    except OSError as exc:
        raise DataError(f"audio file not found: {path} ({exc.strerror})") from None
    parts = [_FORMAT, str(path), str(stat.st_size), str(stat.st_mtime_ns), str(rate),
             str(channels), *extra]
    return hashlib.sha1("\0".join(parts).encode()).hexdigest()


def clear_memory_cache() -> None:
    """Forget the arrays held in this process (the files on disk stay)."""
    _MEMORY.clear()


def cached_audio(key: str, decode: Callable[[], np.ndarray],
                 cache_dir: str | Path | None) -> np.ndarray:
    """The array stored under ``key``: from memory, else from disk, else ``decode()`` and store it.

    The returned array must be treated as read-only (it may be a memory map shared by every user).
    """
    if key in _MEMORY:
        return _MEMORY[key]
    path = default_cache_dir(cache_dir) / key[:2] / f"{key}.npy"
    array = _load(path)
    if array is None:
        array = np.ascontiguousarray(decode(), dtype=np.float32)
        array = _store(path, array)
    _MEMORY[key] = array
    return array


def _load(path: Path) -> np.ndarray | None:
    if not path.is_file():
        return None
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable cache file %s (%s); decoding again", path, exc)
        return None


def _store(path: Path, array: np.ndarray) -> np.ndarray:
    """Write ``array`` atomically to ``path``; returns the memory-mapped copy (or ``array``)."""
    tmp_name = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".tmp-", suffix=".npy",
                                         delete=False) as handle:
            tmp_name = handle.name
            np.save(handle, array, allow_pickle=False)
        os.replace(tmp_name, path)
    except OSError as exc:
        log.warning("cannot write audio cache %s (%s); keeping the audio in memory", path, exc)
        if tmp_name is not None and os.path.exists(tmp_name):
            os.unlink(tmp_name)
        return array
    return np.load(path, mmap_mode="r", allow_pickle=False)
