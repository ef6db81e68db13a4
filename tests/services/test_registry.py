"""Registry on a temporary sqlite MLflow registry: champion, challenger, promote, resolve."""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath

import pytest
from mlflow import MlflowClient

from services.errors import RegistryError
from services.registry import (
    alias_version,
    champion,
    parse_model_uri,
    promote,
    register_checkpoint,
    resolve,
    resolve_model_uri,
)
from services.store import LocalStore, open_store
from tests.services.conftest import BUCKET


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> MlflowClient:
    db = tmp_path_factory.mktemp("mlflow") / "mlruns.db"
    uri = f"sqlite:///{db}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


@pytest.fixture
def name(request: pytest.FixtureRequest) -> str:
    return f"sep-{request.node.name.replace('[', '-').rstrip(']')}"


@pytest.fixture
def register(client: MlflowClient, name: str) -> Callable[..., tuple]:
    """Register a checkpoint from a fresh run; returns (result, run_id)."""
    experiment_id = client.get_experiment_by_name("Default").experiment_id

    def _register(value: float, metric: str = "val/sdr", mode: str = "max"):
        run_id = client.create_run(experiment_id).info.run_id
        uri = f"s3://bucket/sweeps/{run_id}/ckpt.safetensors"
        result = register_checkpoint(
            client,
            name,
            uri,
            run_id,
            metric,
            value,
            mode,
            tags={
                "sepcore.trial_id": f"trial-{run_id[:6]}",
                "sepcore.checkpoint_uri": uri,
                "sepcore.sha256": "ab" * 32,
            },
        )
        return result, run_id

    return _register


def _aliases(client: MlflowClient, name: str) -> dict[str, str]:
    return {k: str(v) for k, v in client.get_registered_model(name).aliases.items()}


def test_first_registration_is_champion(client: MlflowClient, name: str, register) -> None:
    assert champion(client, name) is None  # no model yet
    result, run_id = register(5.0)
    assert (result.version, result.alias, result.previous_champion) == ("1", "champion", None)
    version = client.get_model_version(name, result.version)
    assert version.run_id == run_id
    assert version.source == f"s3://bucket/sweeps/{run_id}/ckpt.safetensors"
    assert version.tags["sepcore.metric"] == "val/sdr"
    assert float(version.tags["sepcore.metric_value"]) == 5.0
    assert version.tags["sepcore.mode"] == "max"
    assert version.tags["sepcore.trial_id"] == f"trial-{run_id[:6]}"
    assert str(champion(client, name).version) == result.version


def test_worse_is_challenger_better_moves_champion(
    client: MlflowClient, name: str, register
) -> None:
    first, _ = register(5.0)
    worse, _ = register(4.0)
    assert (worse.alias, worse.previous_champion) == ("challenger", None)
    assert _aliases(client, name) == {"champion": first.version, "challenger": worse.version}

    tie, _ = register(5.0)
    assert tie.alias == "challenger"  # must be strictly better

    better, _ = register(6.5)
    assert (better.alias, better.previous_champion) == ("champion", first.version)
    aliases = _aliases(client, name)
    assert aliases["champion"] == better.version
    assert aliases["previous-champion"] == first.version
    assert str(champion(client, name).version) == better.version


def test_mode_min_flips_comparison(client: MlflowClient, name: str, register) -> None:
    first, _ = register(0.30, metric="val/loss", mode="min")
    higher, _ = register(0.40, metric="val/loss", mode="min")
    lower, _ = register(0.20, metric="val/loss", mode="min")
    assert first.alias == "champion"
    assert higher.alias == "challenger"
    assert (lower.alias, lower.previous_champion) == ("champion", first.version)


def test_champion_on_other_metric_is_replaced(client: MlflowClient, name: str, register) -> None:
    first, _ = register(9.0, metric="val/sdr")
    other, _ = register(1.0, metric="val/si_sdr")
    assert (other.alias, other.previous_champion) == ("champion", first.version)


def test_register_rejects_bad_mode_and_nan(client: MlflowClient, name: str, register) -> None:
    with pytest.raises(RegistryError, match="maximize"):
        register(1.0, mode="maximize")
    with pytest.raises(RegistryError, match="not finite"):
        register(float("nan"))


def test_promote_by_version_and_run(client: MlflowClient, name: str, register) -> None:
    first, first_run = register(5.0)
    second, second_run = register(3.0)
    third, _ = register(4.0)

    assert promote(client, name, version=second.version) == second.version
    aliases = _aliases(client, name)
    assert aliases["champion"] == second.version
    assert aliases["previous-champion"] == first.version

    assert promote(client, name, run_id=first_run) == first.version
    aliases = _aliases(client, name)
    assert aliases["champion"] == first.version
    assert aliases["previous-champion"] == second.version

    assert promote(client, name, version=first.version) == first.version  # already champion
    assert _aliases(client, name)["previous-champion"] == second.version  # not itself

    assert promote(client, name, version=third.version, alias="staging") == third.version
    assert _aliases(client, name)["champion"] == first.version  # other aliases leave champion
    assert promote(client, name, run_id=second_run) == second.version  # by run: its own version
    assert _aliases(client, name)["champion"] == second.version


def test_promote_unknown_targets_raise(client: MlflowClient, name: str, register) -> None:
    register(5.0)
    with pytest.raises(RegistryError, match=rf"{name}.*version '42'"):
        promote(client, name, version="42")
    with pytest.raises(RegistryError, match="run 'deadbeef'"):
        promote(client, name, run_id="deadbeef")
    with pytest.raises(RegistryError, match="no registered model 'sep-missing'"):
        promote(client, "sep-missing", version="1")
    with pytest.raises(RegistryError, match="exactly one"):
        promote(client, name)


# ---------------------------------------------------------------- resolve models:/ URIs


def test_parse_model_uri_forms() -> None:
    assert parse_model_uri("models:/sep-m1@champion") == ("sep-m1", "champion", None)
    assert parse_model_uri("models:/sep-m1/12") == ("sep-m1", None, "12")
    for bad in ("models:/sep-m1", "models:/sep-m1/", "models:/sep-m1/latest", "models:/@champion",
                "models:/sep-m1@", "models:/a/b/3", "runs:/abc/model", "models://m/1",
                "models:/sep-m1/0", "/path/to/ckpt.safetensors"):
        with pytest.raises(RegistryError, match=r"models:/NAME@ALIAS") as info:
            parse_model_uri(bad, key="serve.model")
        assert repr(bad) in str(info.value) and "serve.model" in str(info.value)
        assert info.value.key == "serve.model"


@pytest.fixture
def odd_store(tmp_path: Path) -> LocalStore:
    """A local store whose root has a space and a non-ASCII letter: its URIs carry escapes."""
    return LocalStore(tmp_path / "store dir é")


def _register_file(client: MlflowClient, store, name: str, data: bytes, key: str,
                   sha256: str | None = "record", promote_: bool = True) -> tuple[str, object]:
    """Put ``data`` in ``store`` and register it (with the stored SHA-256 unless told)."""
    with tempfile.TemporaryDirectory() as folder:
        src = Path(folder) / PurePosixPath(key).name
        src.write_bytes(data)
        stored = store.put(src, key)
    run_id = client.create_run(client.get_experiment_by_name("Default").experiment_id).info.run_id
    tags = {} if sha256 is None else {
        "sepcore.checkpoint_sha256": stored.sha256 if sha256 == "record" else sha256}
    result = register_checkpoint(client, name, stored.uri, run_id, "val/sdr", float(len(data)),
                                 "max", tags=tags, promote=promote_)
    return result.version, stored


def test_resolve_escaped_file_uri_by_alias_and_version(
    client: MlflowClient, name: str, odd_store: LocalStore, tmp_path: Path
) -> None:
    version, stored = _register_file(client, odd_store, name, b"weights-1", "sw/t 1/model é.bin")
    assert "%20" in stored.uri and "%C3%A9" in stored.uri  # a proper file URI, escaped
    assert client.get_model_version(name, version).source == stored.uri
    cache = tmp_path / "cache"

    by_alias = resolve(client, f"models:/{name}@champion", cache)
    assert by_alias.path.read_bytes() == b"weights-1"
    assert by_alias.path.name == "model é.bin" and by_alias.path.parent.parent == cache
    assert (by_alias.name, by_alias.version, by_alias.alias) == (name, version, "champion")
    assert by_alias.sha256 == stored.sha256 and by_alias.source == stored.uri

    by_version = resolve(client, f"models:/{name}/{version}", cache)
    assert (by_version.path, by_version.alias, by_version.version) == (by_alias.path, None, version)
    assert resolve_model_uri(client, f"models:/{name}@champion", cache) == by_alias.path
    assert not list(cache.rglob(".*.part"))  # no temporary files left behind


def test_resolve_reuses_a_verified_cached_copy_and_repairs_a_bad_one(
    client: MlflowClient, name: str, odd_store: LocalStore, tmp_path: Path
) -> None:
    _register_file(client, odd_store, name, b"weights-2", "sw/t2/model.bin")
    cache = tmp_path / "cache"
    first = resolve(client, f"models:/{name}@champion", cache).path
    source = odd_store.root / "sw" / "t2" / "model.bin"

    source.rename(source.with_suffix(".away"))  # the cached copy verifies: the source is not read
    assert resolve(client, f"models:/{name}@champion", cache).path == first
    source.with_suffix(".away").rename(source)

    first.write_bytes(b"tampered")  # a cached copy that no longer verifies is fetched again
    again = resolve(client, f"models:/{name}@champion", cache)
    assert again.path == first and first.read_bytes() == b"weights-2"


def test_resolve_refuses_a_source_that_does_not_match(
    client: MlflowClient, name: str, odd_store: LocalStore, tmp_path: Path
) -> None:
    version, _ = _register_file(client, odd_store, name, b"weights-3", "sw/t3/model.bin")
    (odd_store.root / "sw" / "t3" / "model.bin").write_bytes(b"swapped behind the registry")
    cache = tmp_path / "cache"
    with pytest.raises(RegistryError, match="does not match its registered SHA-256") as info:
        resolve(client, f"models:/{name}/{version}", cache, key="serve.model")
    assert f"models:/{name}/{version}" in str(info.value) and "serve.model" in str(info.value)
    assert not [p for p in cache.rglob("*") if p.is_file()]  # nothing unverified stays


def test_resolve_refuses_a_version_without_sha256(
    client: MlflowClient, name: str, odd_store: LocalStore, tmp_path: Path
) -> None:
    version, _ = _register_file(client, odd_store, name, b"weights-4", "sw/t4/model.bin",
                                sha256=None)
    refused = "has no recorded SHA-256; refusing to trust it"
    with pytest.raises(RegistryError, match=refused) as info:
        resolve_model_uri(client, f"models:/{name}@champion", tmp_path / "cache")
    assert f"models:/{name}@champion" in str(info.value)
    assert info.value.key == "train.init_from" and "train.init_from" in str(info.value)
    assert f"v{version}" in str(info.value)
    assert not (tmp_path / "cache").exists()


def test_resolve_missing_model_alias_version_source(
    client: MlflowClient, name: str, odd_store: LocalStore, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    for uri in (f"models:/{name}@champion", f"models:/{name}/1"):  # no such model yet
        with pytest.raises(RegistryError, match="cannot resolve") as info:
            resolve(client, uri, cache, key="serve.model")
        assert repr(uri) in str(info.value) and info.value.key == "serve.model"
    version, _ = _register_file(client, odd_store, name, b"weights-5", "sw/t5/model.bin")
    with pytest.raises(RegistryError, match=rf"'models:/{name}@staging'.*no alias 'staging'"):
        resolve(client, f"models:/{name}@staging", cache)
    with pytest.raises(RegistryError, match=rf"'models:/{name}/7'"):
        resolve(client, f"models:/{name}/7", cache)
    (odd_store.root / "sw" / "t5" / "model.bin").unlink()
    with pytest.raises(RegistryError, match="which does not exist"):
        resolve(client, f"models:/{name}/{version}", cache)


def test_alias_version_follows_the_alias(
    client: MlflowClient, name: str, odd_store: LocalStore
) -> None:
    assert alias_version(client, name, "champion") is None  # no model
    first, _ = _register_file(client, odd_store, name, b"w6", "sw/t6/a.bin")
    assert alias_version(client, name, "champion") == first
    assert alias_version(client, name, "challenger") is None  # no such alias
    second, _ = _register_file(client, odd_store, name, b"w6-better", "sw/t6/b.bin")
    assert alias_version(client, name, "champion") == second  # 9 bytes beat 2: champion moved
    assert alias_version(client, name, "previous-champion") == first
    promote(client, name, version=first)
    assert alias_version(client, name, "champion") == first


def test_resolve_s3_source(client: MlflowClient, name: str, s3_endpoint: str, s3,
                           tmp_path: Path) -> None:
    store = open_store(f"s3://{BUCKET}/models", endpoint_url=s3_endpoint)
    version, stored = _register_file(client, store, name, b"s3-weights" * 1000, "t7/model.bin")
    assert stored.uri == f"s3://{BUCKET}/models/t7/model.bin"
    cache = tmp_path / "cache"
    resolved = resolve(client, f"models:/{name}@champion", cache)
    assert resolved.path.read_bytes() == b"s3-weights" * 1000
    assert resolved.path.is_relative_to(cache) and resolved.version == version

    # the object replaced behind the registry (with matching S3 metadata): the registry's digest
    # still refuses it, and no file is left in the cache
    fresh = tmp_path / "fresh"
    s3.put_object(Bucket=BUCKET, Key="models/t7/model.bin", Body=b"other bytes",
                  Metadata={"sha256": hashlib.sha256(b"other bytes").hexdigest()})
    with pytest.raises(RegistryError, match="registered SHA-256"):
        resolve(client, f"models:/{name}/{version}", fresh)
    assert not [p for p in fresh.rglob("*") if p.is_file()]
    s3.delete_object(Bucket=BUCKET, Key="models/t7/model.bin")
    with pytest.raises(RegistryError, match=rf"models:/{name}/{version}.*no artifact"):
        resolve(client, f"models:/{name}/{version}", fresh)


def test_promote_by_a_run_id_with_a_quote_is_refused(client: MlflowClient, name: str,
                                                      register) -> None:
    register(0.5)
    with pytest.raises(RegistryError, match="not an MLflow run id"):
        promote(client, name, run_id="x' or name = 'y")
