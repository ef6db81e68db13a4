"""Checkpoints trials start from (``train.init_from``): staged by the driver, fetched by the trial.

On a cluster a trial runs on a node that cannot see the driver's disk, so no trial reads a driver
path. Before the trials start, :func:`stage_checkpoints` (on the driver) turns every
``train.init_from`` of the sweep (base, paper-table rows, searched values) into something a node
can fetch:

* a local file is uploaded once to the sweep's artifact store (``artifacts.uri``) under
  ``<sweep>/inputs/<sha256><suffix>`` (content-addressed: a second run, a resume or another row
  naming the same file uploads nothing) and replaced by its store URI;
* ``models:/NAME@ALIAS`` is pinned to the version the alias points at now
  (``models:/NAME/VERSION``), so every trial of the sweep starts from the same weights;
* a store URI (``s3://…``, ``file://…``; ``row:<id>`` becomes one after its row trained) and
  ``models:/NAME/VERSION`` stay as they are.

Inside the trial, :func:`fetch_init` gets the file into the node's cache
(``<data.cache_dir>/checkpoints``, per node like the decoded-audio cache beside it) and verifies
its SHA-256: store objects against the digest the driver recorded when it uploaded them
(``<sha256><suffix>``, reused by every later trial on that node), registry versions against their
``sepcore.checkpoint_sha256`` tag (:func:`services.registry.resolve`,
``models/<name>-v<version>/``). A copy takes its final name only once verified (a temporary file
in the cache folder, then an atomic rename), so trials fetching at once on one node never see half
a file and a mismatch leaves nothing behind.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from services.errors import ArtifactError
from services.redact import redact
from services.store import ArtifactStore, open_store, sha256_file
from sweeps.errors import SweepError
from sweeps.spec import ROW_REF, Sweep, map_train_values

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

KEY = "train.init_from"
MODELS = "models:/"
STORE_SCHEMES = ("s3://", "file://")  # an init_from in the sweep's artifact store
SHA256_TAG = "sepcore.init_sha256"  # a trial run's tag: the checkpoint it started from


@dataclass(frozen=True)
class Fetched:
    """A verified checkpoint on this node: its path, SHA-256 and the URI it came from."""

    path: Path
    sha256: str
    uri: str


def node_cache(cache_dir: str | None) -> Path:
    """This node's checkpoint cache: ``<data.cache_dir>/checkpoints``."""
    return Path(cache_dir or ".cache/sepcore").expanduser() / "checkpoints"


# --- the driver --------------------------------------------------------------------------------


def stage_checkpoints(sweep: Sweep, client: MlflowClient) -> tuple[Sweep, dict[str, str]]:
    """``sweep`` with every ``train.init_from`` a trial can fetch (see the module docstring),
    and the SHA-256 of each store URI it uploaded (``{uri: sha256}``, for :func:`fetch_init`).

    Raises:
        SweepError: a local file that is not there.
        RegistryError: a registry alias that does not exist.
    """
    uploaded: dict[str, str] = {}
    store: list[ArtifactStore] = []  # opened on the first local file

    def stage(key: str, value):
        if not isinstance(value, str) or value.startswith(ROW_REF) or \
                value.startswith(STORE_SCHEMES):
            return value
        if value.startswith(MODELS):
            return pin_model(client, value, key)
        if "://" in value:
            raise SweepError(f"'{key}' = {value!r}: use a local checkpoint file, a URI of the "
                             f"artifact store (s3://…, file://…) or models:/NAME@ALIAS",
                             key=key, file=sweep.file)
        path = Path(value).expanduser().resolve()
        if not path.is_file():
            raise SweepError(f"'{key}' = {value!r}: no such checkpoint file ({path})", key=key,
                             file=sweep.file)
        if not store:
            store.append(open_store(sweep.artifacts.uri))
        digest = sha256_file(path)
        name = f"{sweep.name}/inputs/{digest}{path.suffix}"
        if store[0].exists(name) and store[0].sha256_of(name) == digest:
            uri = store[0].uri_for(name)
        else:
            uri = store[0].put(path, name).uri
        log.info("%s: %s is %s for the trials (sha256 %s)", key, path, redact(uri), digest[:12])
        uploaded[uri] = digest
        return uri

    return map_train_values(sweep, "init_from", stage), uploaded


def pin_model(client: MlflowClient, uri: str, key: str = KEY) -> str:
    """``models:/NAME@ALIAS`` → ``models:/NAME/VERSION`` (the version the alias points at now);
    other model URIs unchanged."""
    from services.errors import RegistryError
    from services.registry import alias_version, parse_model_uri

    name, alias, _ = parse_model_uri(uri, key=key)
    if alias is None:
        return uri
    version = alias_version(client, name, alias)
    if version is None:
        raise RegistryError(f"{key}: cannot resolve {uri!r}: model {name!r} has no alias "
                            f"{alias!r} (or no such model)", key=key)
    log.info("%s: %s is version %s", key, uri, version)
    return f"{MODELS}{name}/{version}"


# --- the trial ---------------------------------------------------------------------------------


def fetch_init(uri: str, cache: Path, *, store_uri: str | None = None,
               checkpoints: dict[str, str] | None = None,
               registry_uri: str | None = None) -> Fetched | None:
    """The verified local copy of a staged ``train.init_from`` on this node (``None`` for a
    plain path: a run outside the sweep runner, or a single machine).

    ``store_uri`` is the sweep's artifact store, ``checkpoints`` the digests the driver recorded
    (``{uri: sha256}``; a store URI missing there is verified against the store's own record
    only), ``registry_uri`` the MLflow registry of ``models:/`` URIs (the tracking server).
    """
    if uri.startswith(MODELS):
        from mlflow import MlflowClient

        from services.registry import resolve

        client = MlflowClient(tracking_uri=registry_uri, registry_uri=registry_uri)
        found = resolve(client, uri, cache / "models", key=KEY)
        return Fetched(found.path, found.sha256, uri)
    if uri.startswith(STORE_SCHEMES):
        store = open_store(store_uri)
        return Fetched(*fetch_stored(store, uri, cache, (checkpoints or {}).get(uri)), uri)
    return None


def fetch_stored(store: ArtifactStore, uri: str, cache: Path,
                 sha256: str | None = None) -> tuple[Path, str]:
    """``uri`` of ``store`` in ``cache`` as ``<sha256><suffix>``: the cached file when it is there
    and verifies, else fetched (verified against the store's record, then against ``sha256``)
    into a temporary file that is renamed into place. Returns (path, sha256).

    Raises:
        ArtifactError: the object is missing, or its bytes match neither the store's record nor
            ``sha256`` (the bad copy is removed).
    """
    suffix = Path(uri).suffix or ".safetensors"
    if sha256 is not None:
        cached = cache / f"{sha256}{suffix}"
        if cached.is_file():
            if sha256_file(cached) == sha256:
                log.info("%s: %s from this node's cache %s", KEY, redact(uri), cached)
                return cached, sha256
            log.warning("%s: cached %s does not match its sha256; fetching it again", KEY,
                        cached)
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix=".fetch-") as folder:
        part = store.get(uri, Path(folder) / f"part{suffix}")
        actual = sha256_file(part)
        if sha256 is not None and actual != sha256:
            raise ArtifactError(f"{KEY}: {redact(uri)} has sha256 {actual}, not the {sha256} "
                                f"recorded when it was uploaded; removed the copy", key=KEY)
        target = cache / f"{actual}{suffix}"
        os.replace(part, target)  # atomic: a trial reading the cached copy keeps its file
    log.info("%s: fetched %s to %s (sha256 %s)", KEY, redact(uri), target, actual[:12])
    return target, actual

