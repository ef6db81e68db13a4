"""Static tests of docker/: the three Dockerfiles, compose.yaml and .env.example.

No image is built (no registry here): the files are parsed and cross-checked against the repository
and the installed CLIs; each check is also run on a broken copy to show that it catches the fault.
"""

from __future__ import annotations

import re
import shutil

import pytest

from tests.deploy import checks

DOCKERFILES = sorted(checks.DOCKER.glob("*.Dockerfile"))
COMPOSE = checks.DOCKER / "compose.yaml"
ENV_EXAMPLE = checks.DOCKER / ".env.example"


def test_the_three_images_exist():
    assert {p.name for p in DOCKERFILES} == {"ray.Dockerfile", "mlflow.Dockerfile",
                                              "separation.Dockerfile"}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile(dockerfile):
    assert checks.dockerfile_problems(dockerfile) == []


def test_ray_image_is_ray_260_gpu_with_cuda_torch_and_the_project():
    text = (checks.DOCKER / "ray.Dockerfile").read_text()
    froms = [i["value"] for i in checks.dockerfile_instructions(checks.DOCKER / "ray.Dockerfile")
             if i["instruction"] == "FROM"]
    assert froms == ["rayproject/ray:2.60.0-py311-gpu"]
    assert "ARG TORCH_VERSION=2.13.0" in text
    assert re.search(r"ARG TORCH_INDEX_URL=https://download\.pytorch\.org/whl/cu\d+", text)
    # torch before the project, so pip keeps the CUDA build
    assert text.index('"torch==${TORCH_VERSION}"') < text.index('".[sweeps,serve]"')


def test_mlflow_image_has_the_postgres_and_s3_drivers():
    text = (checks.DOCKER / "mlflow.Dockerfile").read_text()
    for package in ("mlflow[auth]", "psycopg2", "boto3"):
        assert package in text


@pytest.mark.parametrize("broken, expected", [
    ("FROM python:3.11.14-slim-bookworm", "FROM python"),
    ("FROM python:3.11.14-slim-bookworm", "FROM python:latest"),
    ("USER mlflow", "USER root"),
    ("WORKDIR /home/mlflow", "WORKDIR /home/mlflow\nENV MLFLOW_TRACKING_PASSWORD=hunter2"),
    ("ARG MLFLOW_VERSION=3.17.2", "ARG MLFLOW_VERSION=3.17.2\nARG DB_PASSWORD=s3cret"),
    ("COPY --chmod=0755 docker/mlflow-entrypoint.sh", "COPY --chmod=0755 docker/missing.sh"),
])
def test_dockerfile_check_catches(tmp_path, broken, expected):
    text = (checks.DOCKER / "mlflow.Dockerfile").read_text()
    assert broken in text
    copy = tmp_path / "mlflow.Dockerfile"
    copy.write_text(text.replace(broken, expected, 1))
    assert checks.dockerfile_problems(copy) != []


def test_dockerfile_without_user_runs_as_root(tmp_path):
    copy = tmp_path / "x.Dockerfile"
    copy.write_text("FROM python:3.11.14-slim-bookworm\nRUN true\n")
    assert any("root" in p for p in checks.dockerfile_problems(copy))


def test_compose_against_spec_and_repository():
    assert checks.compose_problems(COMPOSE, ENV_EXAMPLE) == []


def test_compose_has_the_platform_services():
    doc = checks.load_compose(COMPOSE, ENV_EXAMPLE)
    services = doc["services"]
    assert {"postgres", "minio", "minio-buckets", "mlflow", "ray-head", "ray-worker",
            "separation"} <= set(services)
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    gpu = services["ray-worker"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["capabilities"] == ["gpu"] and gpu["driver"] == "nvidia"
    head = services["ray-head"]
    assert head["environment"]["RAY_AUTH_MODE"] == "token"
    for name in ("ray-head", "ray-worker", "separation"):
        env = services[name]["environment"]
        assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
        assert {"MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"} <= set(env)
    assert "SEPCORE_SERVE_TOKEN" in services["separation"]["environment"]
    # every bucket the paper profiles write to is created
    buckets = set(services["minio-buckets"]["environment"]["S3_BUCKETS"].split())
    dest = services["mlflow"]["environment"]["MLFLOW_ARTIFACTS_DESTINATION"]
    assert dest.startswith("s3://") and dest[5:].split("/")[0] in buckets
    for sweep in (checks.ROOT / "sweeps").glob("*.yaml"):
        for bucket in re.findall(r"s3://([a-z0-9.-]+)", sweep.read_text()):
            assert bucket in buckets, f"{sweep.name}: bucket {bucket} is not created"


def test_env_example_has_no_secret():
    assert checks.env_example_problems(ENV_EXAMPLE, COMPOSE) == []


def test_mlflow_entrypoint_runs_basic_auth_with_proxied_s3_artifacts():
    script = checks.DOCKER / "mlflow-entrypoint.sh"
    args = checks.mlflow_entrypoint_args(script)
    assert checks.cli_problems("mlflow", ["server", *args]) == []
    assert args[args.index("--app-name") + 1] == "basic-auth"
    assert "--serve-artifacts" in args and "--artifacts-destination" in args
    # what the script insists on is given to the mlflow service by compose
    env = checks.load_compose(COMPOSE, ENV_EXAMPLE)["services"]["mlflow"]["environment"]
    assert checks.script_required_env(script) <= set(env)
    assert env["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql://")


def test_cli_check_catches_a_bad_option():
    assert checks.cli_problems("ray", ["start", "--head", "--dashbord-host=0.0.0.0"]) != []
    assert checks.cli_problems("mlflow", ["server", "--app-name", "basic-auth",
                                          "--artefacts-destination", "s3://b"]) != []


def test_separation_service_command():
    """The compose service runs the separation service's command, ``python -m services serve``."""
    doc = checks.load_compose(COMPOSE, ENV_EXAMPLE)
    argv = checks._service_argv("separation", doc["services"]["separation"], checks.DOCKER)
    assert argv[:4] == ["python", "-m", "services", "serve"]
    assert argv[argv.index("--model") + 1].startswith("models:/")
    if "serve" not in checks.services_cli_commands():
        pytest.skip("`python -m services serve` is not in the repository yet")
    assert checks.runnable_module_exists("services")


def _broken_copy(tmp_path, old, new, file=COMPOSE):
    """A copy of the repository (docker/ copied, the rest linked) with one change in ``file``."""
    shutil.copytree(checks.DOCKER, tmp_path / "docker")
    for name in ("sepcore", "sweeps", "services", "pyproject.toml", "README.md"):
        (tmp_path / name).symlink_to(checks.ROOT / name)
    target = tmp_path / "docker" / file.name
    text = target.read_text()
    assert old in text, old
    target.write_text(text.replace(old, new, 1))
    return tmp_path / "docker" / COMPOSE.name, tmp_path / "docker" / ENV_EXAMPLE.name


def test_unchanged_copy_passes(tmp_path):
    """The mutation tests below start from a copy that passes, so each failure is the change's."""
    compose, env = _broken_copy(tmp_path, "name: sepcore", "name: sepcore")
    assert checks.compose_problems(compose, env, compose.parents[1]) == []
    assert checks.env_example_problems(env, compose) == []


@pytest.mark.parametrize("old, new", [
    ("RAY_AUTH_TOKEN=\n", "", ),                                   # variable missing
    ("SEPARATION_PORT=8000\n", "SEPARATION_PORT=8000\nUNUSED=1\n"),  # stale variable
])
def test_compose_check_catches_env_example_drift(tmp_path, old, new):
    compose, env = _broken_copy(tmp_path, old, new, ENV_EXAMPLE)
    assert checks.compose_problems(compose, env, compose.parents[1]) != []


@pytest.mark.parametrize("old, new", [
    ("  shm_size: 8gb", "  shm_size: 8gb\n  gpus_please: true"),           # not in the spec
    ("MLFLOW_TRACKING_URI: http://mlflow:5000", "MLFLOW_TRACKING_URI: http://mlflow:5001"),
    ("      test: [\"CMD-SHELL\", \"pg_isready", "      x-test: [\"CMD-SHELL\", \"pg_isready"),
    ("image: minio/minio:RELEASE.2025-04-22T22-12-26Z", "image: minio/minio"),
    ("dockerfile: docker/mlflow.Dockerfile", "dockerfile: docker/mlfow.Dockerfile"),
    ('["ray", "start", "--head",', '["ray", "start", "--hed",'),
    ("urlopen('http://127.0.0.1:8000/healthz'", "urlopen('http://127.0.0.1:8080/healthz'"),
    ("SEPCORE_SERVE_TOKEN: ${SEPCORE_SERVE_TOKEN:?set SEPCORE_SERVE_TOKEN in docker/.env}",
     "SEPCORE_SERVE_TOKEN: letmein"),
    ("      mlflow: {condition: service_healthy}\n    command: [\"--model\"",
     "      mlfow: {condition: service_healthy}\n    command: [\"--model\""),
])
def test_compose_check_catches(tmp_path, old, new):
    compose, env = _broken_copy(tmp_path, old, new)
    assert checks.compose_problems(compose, env, compose.parents[1]) != []


def test_compose_check_catches_a_module_that_does_not_exist(tmp_path):
    old = '    command: ["--model"'
    compose, env = _broken_copy(tmp_path, old, '    entrypoint: ["python", "-m", "nosuchpkg"]\n'
                                          + old)
    assert any("nosuchpkg" in p for p in checks.compose_problems(compose, env, compose.parents[1]))


@pytest.mark.parametrize("old, new", [
    ("RAY_AUTH_TOKEN=\n", "RAY_AUTH_TOKEN=0123456789abcdef\n"),
    ("POSTGRES_PASSWORD=\n", "POSTGRES_PASSWORD=postgres\n"),
])
def test_env_example_check_catches_a_secret(tmp_path, old, new):
    compose, env = _broken_copy(tmp_path, old, new, ENV_EXAMPLE)
    assert checks.env_example_problems(env, compose) != []


def test_env_example_check_catches_an_optional_secret(tmp_path):
    compose, env = _broken_copy(
        tmp_path, "RAY_AUTH_TOKEN: ${RAY_AUTH_TOKEN:?set RAY_AUTH_TOKEN in docker/.env}",
        "RAY_AUTH_TOKEN: ${RAY_AUTH_TOKEN}")
    assert checks.env_example_problems(env, compose) != []


def test_interpolation_follows_compose():
    env = {"A": "1", "E": ""}
    assert checks.interpolate("${A}-${B:-d}-${E:-d}-${E-d}-$${A}", env) == "1-d-d--${A}"
    with pytest.raises(KeyError):
        checks.interpolate("${E:?required}", env)
