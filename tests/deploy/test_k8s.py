"""Static tests of infra/k8s/: the KubeRay resources against the vendored CRD schemas and KubeRay's
own rules, the MLflow Deployment/Service, the secrets infra/README.md creates, and the rendering by
``kubectl kustomize`` (skipped where neither kubectl nor kustomize is installed). Each check also
runs on a broken copy to show that it catches the fault.
"""

from __future__ import annotations

import copy
import json
import shutil

import pytest
import yaml

from tests.deploy import checks

README = checks.ROOT / "infra" / "README.md"


@pytest.fixture(scope="module")
def docs():
    return checks.load_manifests()


def _one(docs, kind, name=None):
    found = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, (kind, name, len(found))
    return copy.deepcopy(found[0])


def test_vendored_schemas_name_their_source():
    for kind, file in checks.CRD_SCHEMAS.items():
        schema = json.loads((checks.K8S / "schemas" / file).read_text())
        assert "ray-project/kuberay v1.7.0" in schema["$comment"]
        assert schema["properties"]["kind"]["type"] == "string"
        assert "spec" in schema["properties"], kind


def test_manifests(docs):
    assert checks.manifest_problems(docs) == []


def test_the_platform_resources_are_there(docs):
    cluster = _one(docs, "RayCluster", "sepcore")["spec"]
    assert cluster["authOptions"]["mode"] == "token"
    assert cluster["enableInTreeAutoscaling"] is True and cluster["autoscalerOptions"]
    head = cluster["headGroupSpec"]
    assert head["rayStartParams"]["dashboard-host"] == "0.0.0.0"
    assert "nvidia.com/gpu" not in json.dumps(head)            # a CPU head
    (gpu,) = cluster["workerGroupSpecs"]
    assert gpu["minReplicas"] == 0 and gpu["maxReplicas"] >= 1
    limits = gpu["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert int(limits["nvidia.com/gpu"]) >= 1
    job = _one(docs, "RayJob")["spec"]
    assert "sweeps/bands.yaml --profile paper" in job["entrypoint"]
    assert job["clusterSelector"] == {"ray.io/cluster": "sepcore"}
    assert job["activeDeadlineSeconds"] > 0 and job["submissionMode"] == "K8sJobMode"
    service = _one(docs, "RayService")["spec"]
    apps = yaml.safe_load(service["serveConfigV2"])["applications"]
    assert [a["import_path"] for a in apps] == ["services.separation:app"]
    _one(docs, "Deployment", "mlflow")
    _one(docs, "Service", "mlflow")


def test_mlflow_deployment_matches_the_image(docs):
    dep = _one(docs, "Deployment", "mlflow")
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"
    exposed = checks.dockerfile_exposed(checks.DOCKER / "mlflow.Dockerfile")
    assert {p["containerPort"] for p in container["ports"]} == exposed
    env = {e["name"] for e in container["env"]}
    # what docker/mlflow-entrypoint.sh insists on, apart from what the config map gives
    kust = yaml.safe_load((checks.K8S / "kustomization.yaml").read_text())
    literals = {lit.split("=")[0] for g in kust["configMapGenerator"] for lit in g["literals"]}
    assert checks.script_required_env(checks.DOCKER / "mlflow-entrypoint.sh") <= env | literals
    uri = [lit for g in kust["configMapGenerator"] for lit in g["literals"]
           if lit.startswith("MLFLOW_TRACKING_URI=")]
    assert uri == [f"MLFLOW_TRACKING_URI=http://mlflow:{exposed.pop()}"]


def test_separation_import_path():
    """The RayService's import path services.separation:app, checked once the module exists."""
    if not checks.module_exists("services.separation"):
        pytest.skip("services.separation is not in the repository yet")
    import ast

    source = checks.ROOT / "services" / "separation"
    source = source / "__init__.py" if source.is_dir() else source.with_suffix(".py")
    names = set()
    for node in ast.parse(source.read_text()).body:
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.FunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.ImportFrom | ast.Import):
            names |= {a.asname or a.name for a in node.names}
    assert "app" in names, f"{source}: no top-level name app for import_path ...:app"


def test_every_secret_read_is_created_in_the_readme(docs):
    refs = checks.secret_refs(docs)
    assert refs, "the manifests read no secret"
    assert refs <= checks.documented_secrets(README)


def test_readme_secrets_are_placeholders():
    text = README.read_text()
    for line in text.splitlines():
        if "--from-literal=" in line and "admin-username" not in line:
            value = line.split("--from-literal=", 1)[1].split("=", 1)[1]
            assert "<" in value and ">" in value, line


def _mutated(docs, kind, change):
    docs = copy.deepcopy(docs)
    change(next(d for d in docs if d["kind"] == kind))
    return checks.manifest_problems(docs)


def _set(path, value):
    def change(doc):
        node = doc
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return change


def _delete(path):
    def change(doc):
        node = doc
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]
    return change


@pytest.mark.parametrize("kind, change", [
    ("RayCluster", _set(["spec", "enableInTreeAutoscalling"], True)),          # unknown field
    ("RayCluster", _set(["spec", "workerGroupSpecs", 0, "maxReplicas"], "eight")),  # wrong type
    ("RayCluster", _set(["spec", "authOptions", "mode"], "password")),         # not in the enum
    ("RayCluster", _set(["spec", "rayVersion"], "2.50.0")),                    # token needs 2.52
    ("RayCluster", _delete(["spec", "authOptions"])),
    ("RayCluster", _set(["spec", "workerGroupSpecs", 0, "minReplicas"], 1)),
    ("RayCluster", _set(["spec", "headGroupSpec", "rayStartParams", "dashbord-host"], "x")),
    ("RayCluster", _set(["spec", "headGroupSpec", "template", "spec", "containers", 0, "image"],
                        "rayproject/ray:latest")),
    ("RayCluster", _delete(["spec", "workerGroupSpecs", 0, "template", "spec", "containers", 0,
                            "resources", "limits", "nvidia.com/gpu"])),
    ("RayJob", _set(["spec", "ttlSecondsAfterFinished"], 3600)),
    ("RayJob", _set(["spec", "clusterSelector"], {"ray.io/cluster": "other"})),
    ("RayJob", _set(["spec", "submissionMode"], "Interactive")),
    ("RayJob", _set(["spec", "entrypoint"], "python -m sweeps run sweeps/nope.yaml")),
    ("RayJob", _set(["spec", "entrypoint"], "python -m sweeps run sweeps/bands.yaml --profile p")),
    ("RayJob", _set(["spec", "runtimeEnvYAML"], "working_dir: .\n")),
    ("RayService", _set(["spec", "serveConfigV2"], "applications: []\n")),
    ("RayService", _set(["spec", "serveConfigV2"],
                        "applications:\n  - name: s\n    import_path: services.separation\n"
                        "    route_prefix: /\n")),
    ("RayService", _set(["spec", "rayClusterConfig", "workerGroupSpecs", 0, "replicas"], 9)),
    ("Deployment", _set(["spec", "template", "metadata", "labels"], {"app": "other"})),
    ("Deployment", _delete(["spec", "template", "spec", "containers", 0, "readinessProbe"])),
    ("Service", _set(["spec", "ports", 0, "targetPort"], "web")),
])
def test_manifest_check_catches(docs, kind, change):
    assert _mutated(docs, kind, change) != []


def test_secret_check_catches_an_undocumented_secret(docs):
    docs = copy.deepcopy(docs)
    cluster = next(d for d in docs if d["kind"] == "RayCluster")
    cluster["spec"]["authOptions"]["secretName"] = "some-other-token"
    assert not checks.secret_refs(docs) <= checks.documented_secrets(README)


def test_strict_schema_keeps_open_objects_open():
    """Fields KubeRay leaves open (rayStartParams, labels) take any key; listed objects do not."""
    validator = checks.crd_validator("RayCluster")
    doc = {"apiVersion": "ray.io/v1", "kind": "RayCluster", "metadata": {"name": "x"},
           "spec": {"headGroupSpec": {"rayStartParams": {"anything-goes": "1"},
                                      "template": {"metadata": {"labels": {"a": "b"}},
                                                   "spec": {"containers": []}}}}}
    assert list(validator.iter_errors(doc)) == []
    doc["spec"]["headGroupSpec"]["template"]["spec"]["containerz"] = []
    assert list(validator.iter_errors(doc)) != []


@pytest.fixture(scope="module")
def kustomize():
    cmd = checks.kustomize_command()
    if cmd is None:
        pytest.skip("neither kubectl nor kustomize is installed")
    return cmd


def test_kustomize_renders_a_valid_platform(kustomize):
    rendered = checks.render()
    kinds = sorted(d["kind"] for d in rendered)
    assert kinds == sorted(["Namespace", "ConfigMap", "PersistentVolumeClaim", "Deployment",
                            "Service", "RayCluster", "RayJob", "RayService"])
    for doc in rendered:
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "sepcore", doc["kind"]
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "sepcore"
    kust = yaml.safe_load((checks.K8S / "kustomization.yaml").read_text())
    wanted = {f"{i['newName']}:{i['newTag']}" for i in kust["images"]}
    for doc in rendered:
        for pod in checks._pod_specs(doc):
            for c in pod["containers"]:
                assert c["image"] in wanted, (doc["kind"], c["image"])
    # the rendered CRs pass the same schema and rule checks (images are now registry names)
    kust_images = {i["newName"] for i in kust["images"]}
    problems = [p for p in checks.manifest_problems(rendered)
                if not any(name in p for name in kust_images)]
    assert problems == []
    config_map = next(d for d in rendered if d["kind"] == "ConfigMap")
    assert config_map["metadata"]["name"] == "sepcore-platform"   # no hash: KubeRay pods name it


def test_kustomize_check_catches_a_broken_kustomization(kustomize, tmp_path):
    shutil.copytree(checks.K8S, tmp_path / "k8s")
    kust = tmp_path / "k8s" / "kustomization.yaml"
    kust.write_text(kust.read_text().replace("  - rayjob-bands.yaml", "  - rayjob-missing.yaml"))
    with pytest.raises(RuntimeError):
        checks.render(tmp_path / "k8s")


def test_rayjob_sweep_loads_with_its_profile_and_overrides(docs):
    """The RayJob's command line, given to the sweep loader: file, profile and every override
    must be accepted before the job would reach the cluster."""
    import shlex

    from sweeps.spec import load_sweep

    argv = shlex.split(_one(docs, "RayJob")["spec"]["entrypoint"])
    assert argv[:4] == ["python", "-m", "sweeps", "run"]
    file = checks.ROOT / argv[4].removeprefix("/home/ray/sepcore/")
    profile = argv[argv.index("--profile") + 1]
    overrides = [a for a in argv[5:] if "=" in a and not a.startswith("-")]
    sweep = load_sweep(str(file), profile=profile, overrides=overrides)
    # a cluster run keeps nothing on one node's disk
    assert sweep.tune.storage_path.startswith("s3://")
    assert sweep.artifacts.uri.startswith("s3://")
    # the code's path in the image is where the Ray Dockerfile puts the repository
    workdirs = [i["value"] for i in checks.dockerfile_instructions(checks.DOCKER / "ray.Dockerfile")
                if i["instruction"] == "WORKDIR"]
    assert argv[4].startswith(workdirs[-1].rstrip("/") + "/")
