"""Where the served model comes from: a ``models:/NAME@ALIAS`` (or ``/VERSION``) of the MLflow
registry, resolved to a verified local checkpoint by :mod:`services.registry`."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from services.errors import RegistryError
from services.registry import resolve_model_uri
from services.separation.settings import MODEL_URI

log = logging.getLogger(__name__)
SHA256_TAG = "sepcore.checkpoint_sha256"


@dataclass(frozen=True)
class ResolvedModel:
    """A registry version fetched to ``path`` and checked against its SHA-256."""

    path: Path
    name: str
    version: str
    alias: str | None
    sha256: str
    source: str


def parse_model_uri(uri: str) -> tuple[str, str | None, str | None]:
    """``(name, alias, version)`` of ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION``."""
    match = MODEL_URI.fullmatch(uri)
    if match is None:
        raise RegistryError(f"{uri!r} is not models:/NAME@ALIAS or models:/NAME/VERSION")
    return match.group("name"), match.group("alias"), match.group("version")


class RegistrySource:
    """The registry behind one model URI: which version it names now, and that version fetched."""

    def __init__(self, client: MlflowClient, uri: str, cache_dir: str | Path):
        self.client = client
        self.uri = uri
        self.name, self.alias, self.pinned = parse_model_uri(uri)
        self.cache_dir = Path(cache_dir)

    def current_version(self) -> str:
        """The version the URI names now (the alias is looked up in the registry)."""
        if self.pinned is not None:
            return self.pinned
        try:
            return str(self.client.get_model_version_by_alias(self.name, self.alias).version)
        except MlflowException as exc:
            raise RegistryError(f"cannot resolve {self.uri!r}: {exc.message}") from None

    def fetch(self, version: str) -> ResolvedModel:
        """Download (S3) or locate (file) ``version`` and verify it against the version's
        ``sepcore.checkpoint_sha256`` tag; a version without that tag is refused."""
        try:
            mv = self.client.get_model_version(self.name, version)
        except MlflowException as exc:
            raise RegistryError(f"cannot resolve models:/{self.name}/{version}: "
                                f"{exc.message}") from None
        digest = (mv.tags or {}).get(SHA256_TAG)
        if not digest:
            raise RegistryError(f"models:/{self.name}/{version} has no {SHA256_TAG} tag: its "
                                f"checkpoint cannot be verified, so it is not served")
        path = resolve_model_uri(self.client, f"models:/{self.name}/{version}", self.cache_dir)
        return ResolvedModel(path=path, name=self.name, version=str(version), alias=self.alias,
                             sha256=digest, source=mv.source)
