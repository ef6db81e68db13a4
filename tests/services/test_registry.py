"""Registry aliases on a temporary sqlite MLflow registry: champion, challenger, promote."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from mlflow import MlflowClient

from services.errors import RegistryError
from services.registry import champion, promote, register_checkpoint


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


def test_resolve_model_uri_by_alias_and_version(tmp_path):
    from mlflow import MlflowClient

    from services.errors import RegistryError
    from services.registry import register_checkpoint, resolve_model_uri
    from services.store import open_store

    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns.db")
    run = client.create_run(client.create_experiment("x"))
    source = tmp_path / "model.safetensors"
    source.write_bytes(b"weights")
    stored = open_store(str(tmp_path / "store")).put(source, "a/model.safetensors")
    register_checkpoint(client, "m", stored.uri, run.info.run_id, "valid_sisdr", 1.0, "max",
                        tags={"sepcore.checkpoint_sha256": stored.sha256})
    path = resolve_model_uri(client, "models:/m@champion", tmp_path / "cache")
    assert path.read_bytes() == b"weights"
    assert resolve_model_uri(client, "models:/m/1", tmp_path / "cache") == path
    path.write_bytes(b"tampered")
    with pytest.raises(RegistryError, match="SHA-256"):
        resolve_model_uri(client, "models:/m@champion", tmp_path / "cache")
    with pytest.raises(RegistryError, match="cannot resolve"):
        resolve_model_uri(client, "models:/m@nobody", tmp_path / "cache")
