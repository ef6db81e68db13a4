"""Errors raised by sepcore, each carrying the offending file/key/value in its message."""

from __future__ import annotations

import re


def one_line(text: object) -> str:
    """``text`` on one line (line breaks and the indentation after them become one space)."""
    return re.sub(r"\s*[\r\n]+\s*", " ", str(text).strip())


class SepcoreError(Exception):
    """Base class of sepcore's own errors. A message is kept on one line (a YAML parser's or a
    library's several-line text is joined), whoever prints or logs it."""

    def __init__(self, *args):
        if args and isinstance(args[0], str):
            args = (one_line(args[0]), *args[1:])
        super().__init__(*args)


class ConfigError(SepcoreError, ValueError):
    """A configuration value or key is wrong. ``key`` is the dotted path at fault."""

    def __init__(self, message: str, key: str | None = None, file: str | None = None):
        self.key = key
        self.file = file
        prefix = f"{file}: " if file else ""
        super().__init__(prefix + message)


class DataError(SepcoreError):
    """Audio data is missing, unreadable or malformed. The message names the file or folder."""


class TrainingDiverged(SepcoreError):
    """The loss became NaN or infinite; the message names the epoch and step."""

    def __init__(self, message: str, epoch: int, step: int):
        self.epoch = epoch
        self.step = step
        super().__init__(message)


class CheckpointError(SepcoreError):
    """A checkpoint is missing, corrupted or of an unsupported format version."""
