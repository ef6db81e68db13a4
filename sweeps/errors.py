"""Errors of the sweep layer; each names the sweep file and the dotted key at fault."""

from __future__ import annotations

from sepcore.errors import ConfigError
from sepcore.redact import redact
from services.errors import ArtifactError, RegistryError  # noqa: F401  (raised by the services the sweeps use)


class SweepError(ConfigError):
    """A sweep file, profile or override is wrong (``file`` and ``key`` name the fault).

    Its message is redacted when raised (a URI's ``user:password@`` becomes ``***@``): Ray
    and MLflow log and store a trial's exception text, not only the command line.
    """

    def __init__(self, message: str, key: str | None = None, file: str | None = None):
        super().__init__(redact(message), key=key, file=None if file is None else redact(file))
