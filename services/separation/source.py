"""Where the served model comes from: a ``models:/NAME@ALIAS`` (or ``/VERSION``) of the MLflow
registry, asked which version it names now and fetched as a verified local checkpoint through
:mod:`services.registry`."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from mlflow import MlflowClient

from services.errors import RegistryError
from services.registry import ResolvedModel, alias_version, parse_model_uri, resolve

__all__ = ["RegistrySource", "ResolvedModel"]


class RegistrySource:
    """The registry behind one model URI: which version it names now, and that version fetched."""

    def __init__(self, client: MlflowClient, uri: str, cache_dir: str | Path):
        self.client = client
        self.uri = uri
        self.name, self.alias, self.pinned = parse_model_uri(uri, key="model")
        self.cache_dir = Path(cache_dir)

    def current_version(self) -> str:
        """The version the URI names now (the alias is looked up in the registry)."""
        if self.pinned is not None:
            return self.pinned
        version = alias_version(self.client, self.name, self.alias)
        if version is None:
            raise RegistryError(f"model: cannot resolve {self.uri!r}: model {self.name!r} has "
                                f"no alias {self.alias!r} (or no such model)", key="model")
        return version

    def fetch(self, version: str) -> ResolvedModel:
        """``version`` copied into the cache and checked against its recorded SHA-256 (a version
        without one is refused); see :func:`services.registry.resolve`."""
        resolved = resolve(self.client, f"models:/{self.name}/{version}", self.cache_dir,
                           key="model")
        return dataclasses.replace(resolved, alias=self.alias)
