"""MLflow Model Registry steps for sweep checkpoints: register a version, move aliases, promote.

MLflow 3 deprecates stages, so the registry state is carried by aliases only:
``champion`` (the best version on the sweep metric, served as ``models:/<name>@champion``),
``challenger`` (the latest registered version that did not beat the champion) and
``previous-champion`` (the champion a move displaced, kept reachable for rollback).

A version's ``source`` is the checkpoint's URI in the artifact store (``services.store``),
already uploaded and verified; nothing is re-uploaded into MLflow. Each version carries the tags
``sepcore.metric``, ``sepcore.metric_value`` and ``sepcore.mode`` that the champion comparison
reads, and ``sepcore.checkpoint_sha256``, without which ``resolve`` refuses the version.

``resolve`` turns ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` into a verified local copy of
the checkpoint (``ResolvedModel``); ``alias_version`` tells cheaply where an alias points now.
"""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlparse
from urllib.request import url2pathname

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import (
    INVALID_PARAMETER_VALUE,
    RESOURCE_ALREADY_EXISTS,
    RESOURCE_DOES_NOT_EXIST,
    ErrorCode,
)

from sepcore.redact import redact
from services.errors import ArtifactError, RegistryError
from services.store import sha256_file

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS_CHAMPION = "previous-champion"
METRIC_TAG = "sepcore.metric"
VALUE_TAG = "sepcore.metric_value"
MODE_TAG = "sepcore.mode"
SHA256_TAG = "sepcore.checkpoint_sha256"
MODES = ("max", "min")


@dataclass(frozen=True)
class RegistrationResult:
    """Outcome of ``register_checkpoint``.

    Attributes:
        version: the new model version.
        alias: ``"champion"`` or ``"challenger"``, the alias the new version received.
        previous_champion: the version that lost ``champion`` to this one, ``None`` when the
            champion did not move or there was none.
    """

    version: str
    alias: str
    previous_champion: str | None


def _is_code(err: MlflowException, *codes: int) -> bool:
    return err.error_code in {ErrorCode.Name(code) for code in codes}


def _ensure_registered_model(client: MlflowClient, name: str) -> None:
    try:
        client.get_registered_model(name)
        return
    except MlflowException as err:
        if not _is_code(err, RESOURCE_DOES_NOT_EXIST):
            raise
    try:
        client.create_registered_model(name)
        log.info("created registered model %r", name)
    except MlflowException as err:  # another trial created it in between
        if not _is_code(err, RESOURCE_ALREADY_EXISTS):
            raise


def _version_by_alias(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as err:
        # sqlalchemy store: INVALID_PARAMETER_VALUE for a missing alias, RESOURCE_DOES_NOT_EXIST
        # for a missing model; anything else (connection, auth) is a real failure.
        if _is_code(err, INVALID_PARAMETER_VALUE, RESOURCE_DOES_NOT_EXIST):
            return None
        raise


def champion(client: MlflowClient, name: str) -> ModelVersion | None:
    """The version holding ``champion`` for model ``name``; ``None`` without one (or no model)."""
    return _version_by_alias(client, name, CHAMPION)


def _beats(value: float, metric: str, mode: str, current: ModelVersion) -> bool:
    """Whether ``value`` on ``metric`` beats ``current`` (scored on another metric: it does)."""
    tags = current.tags or {}
    if tags.get(METRIC_TAG) != metric:
        log.info(
            "champion v%s was scored on %r, not %r: replacing it",
            current.version,
            tags.get(METRIC_TAG),
            metric,
        )
        return True
    try:
        current_value = float(tags[VALUE_TAG])
    except (KeyError, ValueError):
        log.warning("champion v%s has no usable %s tag: replacing it", current.version, VALUE_TAG)
        return True
    if math.isnan(current_value):
        return True
    return value > current_value if mode == "max" else value < current_value


def register_checkpoint(
    client: MlflowClient,
    name: str,
    source_uri: str,
    run_id: str,
    metric: str,
    value: float,
    mode: str,
    tags: dict[str, str],
    promote: bool = True,
) -> RegistrationResult:
    """Register a verified checkpoint as a new version of ``name`` and set its alias.

    The new version becomes ``champion`` when there is none, when the champion was scored on another
    metric, or when ``value`` is strictly better (``mode`` ``"max"`` or ``"min"``); the displaced
    champion then gets ``previous-champion``. Otherwise the new version becomes ``challenger``.

    Args:
        client: MLflow client whose registry URI is the target registry.
        name: registered model name (created when missing).
        source_uri: the checkpoint's artifact-store URI (``s3://…`` or ``file://…``).
        run_id: the trial's MLflow run.
        metric: sweep metric name, e.g. ``"val/sdr"``.
        value: the trial's value of ``metric``.
        mode: ``"max"`` or ``"min"``.
        tags: extra version tags (trial id, checkpoint URI, sha256, …).
        promote: when False the new version never takes ``champion`` (it becomes
            ``challenger``; promote it by hand with ``python -m sweeps promote``).

    Raises:
        RegistryError: ``mode`` is not max/min or ``value`` is not finite.
    """
    if mode not in MODES:
        raise RegistryError(f"mode must be one of {MODES}, got {mode!r}", key="tune.mode")
    value = float(value)
    if not math.isfinite(value):
        raise RegistryError(
            f"cannot register {source_uri} for model {name!r}: {metric} = {value} is not finite"
        )
    _ensure_registered_model(client, name)
    version_tags = {
        **{str(k): str(v) for k, v in tags.items()},
        METRIC_TAG: metric,
        VALUE_TAG: repr(value),
        MODE_TAG: mode,
    }
    new = client.create_model_version(name, source=source_uri, run_id=run_id, tags=version_tags)
    current = champion(client, name)
    if promote and (current is None or _beats(value, metric, mode, current)):
        previous = str(current.version) if current is not None else None
        if previous is not None:
            client.set_registered_model_alias(name, PREVIOUS_CHAMPION, previous)
        client.set_registered_model_alias(name, CHAMPION, str(new.version))
        log.info(
            "model %r v%s is champion (%s=%s, previous champion %s)",
            name,
            new.version,
            metric,
            value,
            previous,
        )
        return RegistrationResult(
            version=str(new.version), alias=CHAMPION, previous_champion=previous
        )
    client.set_registered_model_alias(name, CHALLENGER, str(new.version))
    log.info(
        "model %r v%s is challenger (%s=%s does not beat champion v%s)",
        name,
        new.version,
        metric,
        value,
        current.version,
    )
    return RegistrationResult(version=str(new.version), alias=CHALLENGER, previous_champion=None)


def check_run_id(run_id: str) -> None:
    """A run id as MLflow accepts it (so it is safe in a search filter), else RegistryError."""
    from mlflow.utils.validation import _validate_run_id

    try:
        _validate_run_id(run_id)
    except MlflowException:
        raise RegistryError(f"--run {run_id!r} is not an MLflow run id (letters, digits, '_' "
                            "and '-', as printed by `python -m sweeps run`)") from None


def _version_of_run(client: MlflowClient, name: str, run_id: str) -> str:
    check_run_id(run_id)
    # filtered on the run alone: a model name may hold quotes a filter string cannot
    found = [mv for mv in client.search_model_versions(f"run_id = '{run_id}'")
             if mv.name == name]
    if not found:
        raise RegistryError(f"model {name!r} has no version registered from run {run_id!r}")
    latest = max(found, key=lambda mv: int(mv.version))
    if len(found) > 1:
        log.info(
            "run %s has %d versions of %r: using the latest, v%s",
            run_id,
            len(found),
            name,
            latest.version,
        )
    return str(latest.version)


def promote(
    client: MlflowClient,
    name: str,
    version: str | None = None,
    run_id: str | None = None,
    alias: str = CHAMPION,
) -> str:
    """Point ``alias`` at a chosen version of ``name`` by hand; returns that version.

    Give exactly one of ``version`` or ``run_id`` (the latest version registered from that run).
    When ``champion`` moves, the displaced version gets ``previous-champion``.

    Raises:
        RegistryError: the model, version or run's version does not exist, or both/neither of
            ``version`` and ``run_id`` were given.
    """
    if (version is None) == (run_id is None):
        raise RegistryError(
            f"promote model {name!r}: give exactly one of version or run_id "
            f"(got version={version!r}, run_id={run_id!r})"
        )
    if run_id is not None:
        check_run_id(run_id)
    try:
        client.get_registered_model(name)
    except MlflowException as err:
        if _is_code(err, RESOURCE_DOES_NOT_EXIST):
            raise RegistryError(f"no registered model {name!r}") from err
        raise
    if run_id is not None:
        target = _version_of_run(client, name, run_id)
    else:
        target = str(version)
        try:
            client.get_model_version(name, target)
        except MlflowException as err:
            if _is_code(err, RESOURCE_DOES_NOT_EXIST, INVALID_PARAMETER_VALUE):
                raise RegistryError(f"model {name!r} has no version {target!r}") from err
            raise
    if alias == CHAMPION:
        current = champion(client, name)
        if current is not None and str(current.version) != target:
            client.set_registered_model_alias(name, PREVIOUS_CHAMPION, str(current.version))
    client.set_registered_model_alias(name, alias, target)
    log.info("model %r: alias %r -> v%s", name, alias, target)
    return target


@dataclass(frozen=True)
class ResolvedModel:
    """A registry version resolved to a local checkpoint whose SHA-256 was checked.

    Attributes:
        path: the verified local copy (in the cache folder given to ``resolve``).
        name: registered model name.
        version: the version number, as a string.
        alias: the alias the URI named (``None`` for ``models:/NAME/VERSION``).
        sha256: the version's recorded SHA-256, which ``path`` matches.
        source: the version's artifact-store URI (``s3://…`` or ``file://…``).
    """

    path: Path
    name: str
    version: str
    alias: str | None
    sha256: str
    source: str


_URI_FORMS = "use models:/NAME@ALIAS or models:/NAME/VERSION"


def parse_model_uri(uri: str, *, key: str | None = None) -> tuple[str, str | None, str | None]:
    """``models:/NAME@ALIAS`` → ``(NAME, ALIAS, None)``; ``models:/NAME/VERSION`` → ``(NAME, None,
    VERSION)``.

    Raises:
        RegistryError: any other form (naming ``uri`` and ``key``).
    """
    if not isinstance(uri, str) or not uri.startswith("models:/") or uri.startswith("models://"):
        raise RegistryError(f"{key + ': ' if key else ''}{uri!r} is not a model URI ({_URI_FORMS})",
                            key=key)
    body = uri[len("models:/"):]
    if "@" in body:
        name, alias = body.rsplit("@", 1)
        if name and alias and "/" not in name and "/" not in alias:
            return name, alias, None
    elif body.count("/") == 1:
        name, version = body.split("/")
        if name and version.isdigit() and int(version) > 0:
            return name, None, str(int(version))
    raise RegistryError(f"{key + ': ' if key else ''}bad model URI {uri!r} ({_URI_FORMS})",
                        key=key)


def alias_version(client: MlflowClient, name: str, alias: str) -> str | None:
    """The version ``alias`` points at now (one registry call, for polling); ``None`` when the
    model or the alias does not exist."""
    found = _version_by_alias(client, name, alias)
    return None if found is None else str(found.version)


def _source_path(source: str) -> Path | None:
    """The local path of a ``file://`` URI (percent-escapes decoded) or of an absolute path;
    ``None`` for other schemes."""
    parsed = urlparse(source)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            return None
        return Path(url2pathname(parsed.path))
    if not parsed.scheme and os.path.isabs(source):
        return Path(source)
    return None


def _cache_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "model"


def resolve(client: MlflowClient, uri: str, cache_dir: str | Path, *, key: str = "model",
            store_options: dict[str, Any] | None = None) -> ResolvedModel:
    """``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` → a verified local checkpoint.

    The version's source (``file://`` or ``s3://``) is copied into
    ``cache_dir/<name>-v<version>/`` through a temporary file that takes its final name only once
    its SHA-256 equals the version's ``sepcore.checkpoint_sha256`` tag; a cached file whose digest
    matches is reused without fetching again. A version without that tag is refused.

    Args:
        client: MLflow client whose registry URI holds the model.
        uri: the model URI.
        cache_dir: folder for verified local copies (created when missing).
        key: the setting ``uri`` came from, named in errors (e.g. ``"train.init_from"``).
        store_options: passed to ``services.store.open_store`` for ``s3://`` sources (retry
            window, endpoint, …).

    Raises:
        RegistryError: a bad URI, a missing model/alias/version, a version without a recorded
            SHA-256, a source that is missing, unsupported or does not match its SHA-256.
    """
    from services.store import open_store

    name, alias, number = parse_model_uri(uri, key=key)
    try:
        if alias is not None:
            version = _version_by_alias(client, name, alias)
            if version is None:
                raise RegistryError(f"{key}: cannot resolve {uri!r}: model {name!r} has no "
                                    f"alias {alias!r} (or no such model)", key=key)
        else:
            version = client.get_model_version(name, number)
    except MlflowException as err:
        if _is_code(err, INVALID_PARAMETER_VALUE, RESOURCE_DOES_NOT_EXIST):
            raise RegistryError(f"{key}: cannot resolve {uri!r}: {err.message}",
                                key=key) from None
        raise
    number = str(version.version)
    source = version.source
    expected = (version.tags or {}).get(SHA256_TAG, "").strip().lower()
    if not expected:
        raise RegistryError(f"{key}: {uri!r} (model {name!r} v{number}, no {SHA256_TAG} tag) "
                            f"has no recorded SHA-256; refusing to trust it", key=key)
    folder = Path(cache_dir) / f"{_cache_name(name)}-v{number}"
    local_source = _source_path(source)
    basename = (local_source.name if local_source is not None
                else PurePosixPath(urlparse(source).path).name) or "model.safetensors"
    target = folder / basename
    resolved = ResolvedModel(path=target, name=name, version=number, alias=alias,
                             sha256=expected, source=source)
    if target.is_file() and sha256_file(target) == expected:
        log.info("resolved %s to cached %s (v%s)", redact(uri), target, number)
        return resolved
    folder.mkdir(parents=True, exist_ok=True)
    fd, name_tmp = tempfile.mkstemp(dir=folder, prefix=f".{basename}.", suffix=".part")
    os.close(fd)
    tmp = Path(name_tmp)
    try:
        if local_source is not None:
            if not local_source.is_file():
                raise RegistryError(f"{key}: {uri!r} points at {source}, which does not exist",
                                    key=key)
            shutil.copyfile(local_source, tmp)
        elif urlparse(source).scheme == "s3":
            bucket = urlparse(source).netloc
            try:
                open_store(f"s3://{bucket}", **(store_options or {})).get(source, tmp)
            except ArtifactError as err:
                raise RegistryError(f"{key}: {uri!r}: {err}", key=key) from err
        else:
            raise RegistryError(f"{key}: {uri!r} has source {source!r}, which is neither "
                                f"file:// nor s3://", key=key)
        actual = sha256_file(tmp)
        if actual != expected:
            raise RegistryError(f"{key}: {uri!r}: {source} does not match its registered "
                                f"SHA-256 ({actual} != {expected})", key=key)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("resolved %s to %s (v%s, sha256 %s)", redact(uri), target, number, expected)
    return resolved


def resolve_model_uri(client: MlflowClient, uri: str, cache_dir: str | Path,
                      key: str = "train.init_from", **options: Any) -> Path:
    """The verified local path of ``uri`` (see :func:`resolve`)."""
    return resolve(client, uri, cache_dir, key=key, **options).path
