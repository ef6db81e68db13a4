"""Errors of the platform's shared services (artifact store, model registry)."""

from __future__ import annotations

from sepcore.errors import ConfigError


class ServiceError(ConfigError):
    """A platform service cannot do what was asked; the message names the value at fault."""


class ArtifactError(ServiceError):
    """An upload/download to the artifact store failed or did not verify."""


class RegistryError(ServiceError):
    """A registry operation (resolve, register, promote) cannot be done as asked."""
