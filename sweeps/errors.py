"""Errors of the sweep layer; each names the sweep file and the dotted key at fault."""

from __future__ import annotations

from sepcore.errors import ConfigError
from services.errors import ArtifactError, RegistryError  # noqa: F401  (raised by the services the sweeps use)


class SweepError(ConfigError):
    """A sweep file, profile or override is wrong (``file`` and ``key`` name the fault)."""
