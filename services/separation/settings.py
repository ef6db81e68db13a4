"""Settings of the separation service, from command-line flags or ``SEPCORE_SERVE_*`` variables.

``python -m services serve`` takes flags whose defaults come from the environment; the Ray Serve
application (``services.separation:app``) has no command line, so it reads the same variables
(and its ``serve run … key=value`` arguments). The bearer token is read from
``SEPCORE_SERVE_TOKEN`` only: never a flag, never logged.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sepcore.errors import ConfigError

DEFAULT_TRACKING_URI = "sqlite:///mlruns.db"

# setting -> environment variable (the token has no flag)
ENV = {
    "model": "SEPCORE_SERVE_MODEL",
    "poll": "SEPCORE_SERVE_POLL",
    "device": "SEPCORE_SERVE_DEVICE",
    "tracking_uri": "MLFLOW_TRACKING_URI",
    "cache_dir": "SEPCORE_SERVE_CACHE_DIR",
    "max_upload_mb": "SEPCORE_SERVE_MAX_UPLOAD_MB",
    "max_duration": "SEPCORE_SERVE_MAX_DURATION",
    "result_ttl": "SEPCORE_SERVE_RESULT_TTL",
    "queue_size": "SEPCORE_SERVE_QUEUE_SIZE",
    "max_sync": "SEPCORE_SERVE_MAX_SYNC",
    "token": "SEPCORE_SERVE_TOKEN",
}


@dataclass(frozen=True)
class ServeSettings:
    """What the service serves and the limits it enforces.

    Attributes:
        model: ``models:/NAME@ALIAS`` (followed when the alias moves) or ``models:/NAME/VERSION``.
        poll: seconds between checks of the alias (0: never re-check).
        device: ``auto`` (CUDA when present), ``cpu``, ``cuda``, ``cuda:N``.
        tracking_uri: the MLflow tracking/registry URI (``sqlite:///mlruns.db`` by default,
            relative sqlite paths made absolute).
        cache_dir: where verified copies of the checkpoints are kept.
        max_upload_mb: largest accepted request body, in MiB (413 above).
        max_duration: longest accepted song, in seconds (400 above).
        result_ttl: seconds a finished asynchronous separation stays downloadable.
        queue_size: asynchronous separations waiting at most (503 with Retry-After above).
        max_sync: synchronous ``/v1/separate`` requests separating at once (503 with
            Retry-After above, before the upload is read).
        token: bearer token every route but ``/healthz`` and the page ``/`` requires (None: open).
    """

    model: str
    poll: float = 10.0
    device: str = "auto"
    tracking_uri: str = DEFAULT_TRACKING_URI
    cache_dir: str = str(Path.home() / ".cache" / "sepcore" / "models")
    max_upload_mb: float = 200.0
    max_duration: float = 900.0
    result_ttl: float = 3600.0
    queue_size: int = 4
    max_sync: int = 2
    token: str | None = field(default=None, repr=False)

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **given: Any) -> ServeSettings:
        """Settings from keyword values (``None`` = not given), else the environment, else the
        defaults; every value checked (a :class:`ConfigError` names the flag/variable)."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if given.get(f.name) is not None:
                values[f.name] = (given[f.name], f"--{f.name.replace('_', '-')}")
            elif environ.get(ENV[f.name]):
                values[f.name] = (environ[ENV[f.name]], ENV[f.name])
        unknown = sorted(set(given) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ConfigError(f"unknown separation service setting(s): {', '.join(unknown)}")
        if "model" not in values:
            raise ConfigError("no model to serve: give --model models:/NAME@ALIAS or set "
                              "SEPCORE_SERVE_MODEL", key="model")
        typed = {name: _typed(name, value, where) for name, (value, where) in values.items()}
        typed.setdefault("tracking_uri", DEFAULT_TRACKING_URI)
        typed["tracking_uri"] = absolute_tracking_uri(typed["tracking_uri"])
        if typed.get("token") == "":
            typed["token"] = None
        return cls(**typed)


def _typed(name: str, value: Any, where: str) -> Any:
    kind = {f.name: f.type for f in dataclasses.fields(ServeSettings)}[name]
    if kind in ("float", "int"):
        try:
            number = float(value) if kind == "float" else int(str(value))
        except ValueError:
            raise ConfigError(f"{where}={value!r} is not a number", key=where) from None
        lowest = 0 if name == "poll" else (1 if kind == "int" else 0)
        if not math.isfinite(number) or number < lowest or (name != "poll" and number == 0):
            bound = ">= 0" if name == "poll" else "> 0"
            raise ConfigError(f"{where}={value!r} must be a finite number {bound}", key=where)
        return number
    value = str(value)
    if name == "model":
        from services.registry import parse_model_uri

        parse_model_uri(value, key=where)
    return value


def absolute_tracking_uri(uri: str) -> str:
    """A relative ``sqlite:///file.db`` or folder path made absolute against the working
    directory (the same store whatever directory a worker runs in); server URIs unchanged."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        return prefix + str(Path(uri[len(prefix):]).resolve())
    if ":" not in uri and uri != "databricks":
        return str(Path(uri).resolve())
    return uri
