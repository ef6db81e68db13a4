"""Errors of the sweep layer; each names the sweep file and the dotted key at fault."""

from __future__ import annotations

from sepcore.errors import ConfigError


class SweepError(ConfigError):
    """A sweep file, profile or override is wrong (``file`` and ``key`` name the fault)."""


class ArtifactError(SweepError):
    """An upload/download to the artifact store failed or did not verify."""


class RegistryError(SweepError):
    """A registry operation (register, promote) cannot be done as asked."""
