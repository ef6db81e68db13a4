"""MLflow Model Registry steps for sweep checkpoints: register a version, move aliases, promote.

MLflow 3 deprecates stages, so the registry state is carried by aliases only:
``champion`` (the best version on the sweep metric, served as ``models:/<name>@champion``),
``challenger`` (the latest registered version that did not beat the champion) and
``previous-champion`` (the champion a move displaced, kept reachable for rollback).

A version's ``source`` is the checkpoint's URI in the artifact store (``services.store``),
already uploaded and verified; nothing is re-uploaded into MLflow. Each version carries the tags
``sepcore.metric``, ``sepcore.metric_value`` and ``sepcore.mode`` that the champion comparison
reads.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import (
    INVALID_PARAMETER_VALUE,
    RESOURCE_ALREADY_EXISTS,
    RESOURCE_DOES_NOT_EXIST,
    ErrorCode,
)

from services.errors import RegistryError

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS_CHAMPION = "previous-champion"
METRIC_TAG = "sepcore.metric"
VALUE_TAG = "sepcore.metric_value"
MODE_TAG = "sepcore.mode"
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


def champion(client: MlflowClient, name: str) -> ModelVersion | None:
    """The version holding ``champion`` for model ``name``; ``None`` without one (or no model)."""
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException as err:
        # sqlalchemy store: INVALID_PARAMETER_VALUE for a missing alias, RESOURCE_DOES_NOT_EXIST
        # for a missing model; anything else (connection, auth) is a real failure.
        if _is_code(err, INVALID_PARAMETER_VALUE, RESOURCE_DOES_NOT_EXIST):
            return None
        raise


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


def _version_of_run(client: MlflowClient, name: str, run_id: str) -> str:
    found = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
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


def resolve_model_uri(client: MlflowClient, uri: str, cache_dir: str | Path) -> Path:
    """``models:/name@alias`` or ``models:/name/version`` → a verified local checkpoint path.

    The version's source is the artifact-store URI the sweep registered (``file://`` or
    ``s3://``); S3 objects are downloaded to ``cache_dir``; the file's SHA-256 must equal the
    version's ``sepcore.checkpoint_sha256`` tag when it has one.
    """
    from services.store import open_store, sha256_file

    body = uri.removeprefix("models:/")
    try:
        if "@" in body:
            name, alias = body.split("@", 1)
            version = client.get_model_version_by_alias(name, alias)
        else:
            name, number = body.rsplit("/", 1)
            version = client.get_model_version(name, number)
    except (MlflowException, ValueError) as exc:
        raise RegistryError(f"cannot resolve {uri!r}: {exc}", key="train.init_from") from None
    source = version.source
    if source.startswith("s3://"):
        bucket = source[len("s3://"):].split("/", 1)[0]
        folder = Path(cache_dir) / f"{name}-v{version.version}"
        folder.mkdir(parents=True, exist_ok=True)
        path = open_store(f"s3://{bucket}").get(source, folder)
    else:
        path = Path(source.removeprefix("file://"))
    if not path.is_file():
        raise RegistryError(f"{uri!r} points at {source}, which does not exist",
                            key="train.init_from")
    expected = (version.tags or {}).get("sepcore.checkpoint_sha256")
    if expected and sha256_file(path) != expected:
        raise RegistryError(f"{uri!r}: {path} does not match its registered SHA-256",
                            key="train.init_from")
    log.info("resolved %s to %s", uri, path)
    return path
