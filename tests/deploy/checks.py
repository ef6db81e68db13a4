"""Static checks of ``docker/`` and ``infra/k8s/``: images, compose stack and KubeRay manifests.

Nothing here builds an image or talks to a cluster (there is no registry to pull from): each check
reads the files and returns a list of one-line problems, empty when all is well, so that the tests
can run it on the real files and on broken copies alike.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
K8S = ROOT / "infra" / "k8s"
SCHEMAS = Path(__file__).resolve().parent / "schemas"

# names of variables and keys that hold credentials
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY|PRIVATE_KEY|CREDENTIAL", re.I)
# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error}, ${VAR:+alt}; $$ escapes
INTERPOLATION = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}")
ROOT_USERS = {"root", "0", "0:0", "root:root"}
# (module, sub-command) of `python -m module sub-command` entry points that the separation service
# adds (`python -m services serve`): checked as soon as the repository declares them
PENDING_ENTRY_POINTS = {("services", "serve")}
# ports the third-party images listen on without being told
IMAGE_PORTS = {"postgres": {5432}, "minio/minio": {9000, 9001}}


# --- helpers ------------------------------------------------------------------------------------

def module_exists(module: str, root: Path = ROOT) -> bool:
    """Whether ``python -m module`` (or ``import module``) finds it in the repository."""
    path = root / Path(*module.split("."))
    return (path / "__init__.py").is_file() or path.with_suffix(".py").is_file()


def runnable_module_exists(module: str, root: Path = ROOT) -> bool:
    path = root / Path(*module.split("."))
    return (path / "__main__.py").is_file() or path.with_suffix(".py").is_file()


@functools.cache
def services_cli_commands(root: Path = ROOT) -> frozenset[str]:
    """Sub-commands of ``python -m services``, from its own ``--help`` ({a,b} in the usage)."""
    if not (root / "services" / "__main__.py").is_file():
        return frozenset()
    out = subprocess.run([sys.executable, "-m", "services", "--help"], cwd=root,
                         env={**os.environ, "PYTHONPATH": str(root)}, capture_output=True,
                         text=True, timeout=120)
    match = re.search(r"\{([\w,-]+)\}", out.stdout)
    return frozenset(match.group(1).split(",")) if out.returncode == 0 and match else frozenset()


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines of a dotenv file (comments and blank lines skipped)."""
    env = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise ValueError(f"{path}:{number}: not a KEY=VALUE line")
        env[key] = value.strip().strip("'\"")
    return env


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's variable interpolation of ``text`` with ``env`` (missing required → KeyError)."""
    def one(match: re.Match) -> str:
        name, op, arg = match.group(1), match.group(2) or "", match.group(3) or ""
        value = env.get(name)
        empty = value is None or (":" in op and value == "")
        if op.endswith("-"):
            return arg if empty else value
        if op.endswith("?"):
            if empty:
                raise KeyError(f"{name}: {arg}")
            return value
        if op.endswith("+"):
            return "" if empty else arg
        return value or ""
    return INTERPOLATION.sub(one, text).replace("$$", "$")


@functools.cache
def _json(path: Path) -> dict:
    return json.loads(path.read_text())


# --- Dockerfiles --------------------------------------------------------------------------------

def dockerfile_instructions(path: Path) -> list[dict]:
    """Parsed instructions ([] for a missing file: the callers report that themselves)."""
    from dockerfile_parse import DockerfileParser

    if not path.is_file():
        return []
    return DockerfileParser(path=str(path)).structure


def _copy_sources(value: str) -> tuple[list[str], dict[str, str]]:
    """(sources, flags) of a COPY/ADD line (shell or JSON form)."""
    value = value.strip()
    words = json.loads(value) if value.startswith("[") else shlex.split(value)
    flags = {}
    while words and words[0].startswith("--"):
        key, _, val = words.pop(0)[2:].partition("=")
        flags[key] = val
    return words[:-1], flags


def dockerfile_problems(path: Path, context: Path = ROOT) -> list[str]:
    """Base images pinned, a non-root final USER, no secret in ENV/ARG, COPY sources present."""
    problems = []
    user = None
    stages = set()
    for ins in dockerfile_instructions(path):
        where = f"{path.name}:{ins['startline'] + 1}"
        name, value = ins["instruction"], ins["value"].strip()
        if name == "FROM":
            image, *rest = value.split()
            if len(rest) >= 2 and rest[0].upper() == "AS":
                stages.add(rest[1])
            if image in stages or image == "scratch":
                continue
            repo, _, tag = image.rpartition(":") if ":" in image.split("/")[-1] else (image, "", "")
            if "@sha256:" not in image and (not tag or tag == "latest" or "$" in tag):
                problems.append(f"{where}: base image {image} is not pinned to a version tag")
            user = None  # a new stage starts as the image's user
        elif name == "USER":
            user = value.split()[0]
        elif name in ("ENV", "ARG"):
            for key, val in re.findall(r"([A-Za-z_][A-Za-z0-9_]*)(?:=(\"[^\"]*\"|\S*))?",
                                        value):
                if SECRET_NAME.search(key) and val not in ("", '""'):
                    problems.append(f"{where}: {name} {key} bakes a secret into the image")
        elif name in ("COPY", "ADD"):
            sources, flags = _copy_sources(value)
            if "from" in flags:
                continue
            for src in sources:
                if re.match(r"https?://", src):
                    problems.append(f"{where}: {name} {src} downloads at build time")
                elif not list(context.glob(src)):
                    problems.append(f"{where}: {name} source {src} does not exist in the "
                                    f"build context (the repository root)")
    if user is None or user in ROOT_USERS:
        problems.append(f"{path.name}: the final stage runs as root (add a non-root USER)")
    return problems


def dockerfile_entrypoint(path: Path) -> list[str]:
    """The exec-form ENTRYPOINT of the last stage, or []."""
    entry: list[str] = []
    for ins in dockerfile_instructions(path):
        if ins["instruction"] == "FROM":
            entry = []
        elif ins["instruction"] == "ENTRYPOINT":
            entry = json.loads(ins["value"])
    return entry


def dockerfile_exposed(path: Path) -> set[int]:
    return {int(p.split("/")[0]) for ins in dockerfile_instructions(path)
            if ins["instruction"] == "EXPOSE" for p in ins["value"].split()}


# --- compose ------------------------------------------------------------------------------------

def placeholder_env(env_example: Path) -> dict[str, str]:
    """The example's values with every empty secret given a dummy, as a user's .env would be."""
    env = read_env_file(env_example)
    return {k: (v or ("placeholder-" + k.lower()) if SECRET_NAME.search(k) else v)
            for k, v in env.items()}


def _strings(node):
    if isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)
    elif isinstance(node, str):
        yield node


def _interpolate_tree(node, env: dict[str, str]):
    """Compose parses the YAML first and interpolates the values (comments are left alone)."""
    if isinstance(node, dict):
        return {k: _interpolate_tree(v, env) for k, v in node.items()}
    if isinstance(node, list):
        return [_interpolate_tree(v, env) for v in node]
    if isinstance(node, str):
        return interpolate(node, env)
    return node


def compose_interpolations(compose: Path) -> list[tuple[str, str, str]]:
    """(name, operator, argument) of every ``${…}`` in the compose file's values."""
    return [m for value in _strings(yaml.safe_load(compose.read_text()))
            for m in INTERPOLATION.findall(value)]


def load_compose(compose: Path, env_example: Path) -> dict:
    return _interpolate_tree(yaml.safe_load(compose.read_text()), placeholder_env(env_example))


def env_example_problems(env_example: Path, compose: Path) -> list[str]:
    """Every secret empty in the example, and required (``${VAR:?…}``) wherever compose uses it."""
    problems = []
    env = read_env_file(env_example)
    uses = compose_interpolations(compose)
    for key, value in env.items():
        if SECRET_NAME.search(key):
            if value:
                problems.append(f"{env_example.name}: {key} has a value; secrets stay empty there")
            if not any(name == key and op == ":?" for name, op, _ in uses):
                problems.append(f"{compose.name}: secret {key} is never required with "
                                f"${{{key}:?…}}, so compose would start with it empty")
    return problems


def _service_argv(name: str, service: dict, compose_dir: Path) -> list[str] | None:
    command = service.get("command")
    if isinstance(command, str):
        command = shlex.split(command)
    entry = service.get("entrypoint")
    build = service.get("build")
    if entry is None and isinstance(build, dict):
        entry = dockerfile_entrypoint(compose_dir / build["context"] / build["dockerfile"])
    if isinstance(entry, str):
        entry = shlex.split(entry)
    argv = list(entry or []) + list(command or [])
    return argv or None


def _listening_ports(service: dict, argv: list[str] | None, compose_dir: Path) -> set[int]:
    ports = set()
    for spec in service.get("ports", []):
        target = spec.get("target") if isinstance(spec, dict) else str(spec).rsplit(":", 1)[-1]
        ports.add(int(str(target).split("/")[0]))
    build = service.get("build")
    if isinstance(build, dict):
        ports |= dockerfile_exposed(compose_dir / build["context"] / build["dockerfile"])
    image = str(service.get("image", "")).split(":")[0]
    ports |= IMAGE_PORTS.get(image, set())
    for arg in argv or []:
        if m := re.fullmatch(r"--(?:port|dashboard-port)=(\d+)", arg):
            ports.add(int(m.group(1)))
    if argv and "--port" in argv:
        ports.add(int(argv[argv.index("--port") + 1]))
    if argv and argv[:2] == ["ray", "start"] and "--head" in argv:
        ports |= {6379, 8265, 10001}
    return ports


def compose_problems(compose: Path, env_example: Path, root: Path = ROOT) -> list[str]:
    """The compose file against the compose specification and against the repository."""
    import jsonschema

    problems = []
    raw = yaml.safe_load(compose.read_text())  # before interpolation: where ${…} stands
    env = read_env_file(env_example)
    used = {name for name, _, _ in compose_interpolations(compose)}
    for name in sorted(used - env.keys()):
        problems.append(f"{compose.name}: ${{{name}}} is not in {env_example.name}")
    for name in sorted(env.keys() - used):
        problems.append(f"{env_example.name}: {name} is not used by {compose.name}")
    try:
        doc = load_compose(compose, env_example)
    except KeyError as err:
        return problems + [f"{compose.name}: {err}"]
    validator = jsonschema.Draft7Validator(_json(SCHEMAS / "compose-spec.json"))
    for err in validator.iter_errors(doc):
        where = "/".join(str(p) for p in err.absolute_path)
        problems.append(f"{compose.name}: {where}: {err.message}")
    services = doc.get("services") or {}
    compose_dir = compose.parent
    argvs = {name: _service_argv(name, svc, compose_dir) for name, svc in services.items()}
    listening = {name: _listening_ports(svc, argvs[name], compose_dir)
                 for name, svc in services.items()}
    one_shot = {dep for svc in services.values() for dep, cond in
                (svc.get("depends_on") or {}).items()
                if isinstance(cond, dict) and cond.get("condition") ==
                "service_completed_successfully"}
    for name, svc in services.items():
        where = f"{compose.name}: services.{name}"
        for dep in svc.get("depends_on") or {}:
            if dep not in services:
                problems.append(f"{where}: depends on unknown service {dep}")
        if name not in one_shot and not (svc.get("healthcheck") or {}).get("test"):
            problems.append(f"{where}: no healthcheck")
        image = svc.get("image", "")
        if "build" in svc:
            build = svc["build"]
            context = (compose_dir / build["context"]).resolve()
            dockerfile = context / build["dockerfile"]
            if context != root.resolve():
                problems.append(f"{where}: build context {build['context']} is not the "
                                f"repository root")
            if not dockerfile.is_file():
                problems.append(f"{where}: {build['dockerfile']} does not exist")
        elif not re.search(r":[\w][\w.-]*$", image) or image.endswith(":latest"):
            problems.append(f"{where}: image {image!r} is not pinned to a version tag")
        argv = argvs[name]
        if argv and argv[0] == "python" and argv[1:2] == ["-m"]:
            pending = (tuple(argv[2:4]) in PENDING_ENTRY_POINTS
                       and argv[3] not in services_cli_commands(root))
            if not pending and not runnable_module_exists(argv[2], root):
                problems.append(f"{where}: python -m {argv[2]} names no module in the "
                                f"repository")
        if argv and argv[0] == "ray":
            problems += [f"{where}: {p}" for p in cli_problems("ray", argv[1:])]
        raw_env = raw["services"][name].get("environment") or {}
        for key in svc.get("environment") or {}:
            if SECRET_NAME.search(key) and "${" not in str(raw_env.get(key, "")):
                problems.append(f"{where}: environment {key} is written in the file; take it "
                                f"from .env")
        # every http://SERVICE:PORT it is given must be a port that service listens on
        blob = json.dumps([svc.get("environment"), svc.get("command"), svc.get("entrypoint")])
        for host, port in re.findall(r"(?:https?://|[@\s=])([a-z][\w-]*):(\d{2,5})\b", blob):
            if host in services and int(port) not in listening[host]:
                problems.append(f"{where}: talks to {host}:{port} but {host} listens on "
                                f"{sorted(listening[host])}")
        test = (svc.get("healthcheck") or {}).get("test") or []
        for port in re.findall(r"https?://(?:127\.0\.0\.1|localhost):(\d+)", " ".join(test)):
            own = listening[name] | ({52365} if argv and argv[:2] == ["ray", "start"] else set())
            if int(port) not in own:
                problems.append(f"{where}: healthcheck probes port {port}, which it does not "
                                f"listen on {sorted(listening[name])}")
    return problems


# --- command lines ------------------------------------------------------------------------------

@functools.cache
def _click_command(program: str, sub: str):
    if program == "ray":
        from ray.scripts.scripts import cli
    elif program == "mlflow":
        from mlflow.cli import cli
    else:
        raise ValueError(program)
    return cli.commands.get(sub)


def cli_problems(program: str, args: list[str]) -> list[str]:
    """Parses ``program args`` with the installed CLI's own parser (nothing is run)."""
    import click

    command = _click_command(program, args[0]) if args else None
    if command is None:
        return [f"{program} has no command {args[:1]}"]
    try:
        command.make_context(args[0], list(args[1:]), resilient_parsing=False)
    except click.ClickException as err:
        return [f"{program} {args[0]}: {err.format_message()}"]
    return []


def mlflow_entrypoint_args(script: Path) -> list[str]:
    """The arguments the entrypoint script passes to ``mlflow server`` (variables filled in)."""
    text = script.read_text().replace("\\\n", " ")
    line = next(ln for ln in text.splitlines() if ln.strip().startswith("exec mlflow server"))
    line = re.sub(r"\$\{[A-Za-z_]\w*:-([^}]*)\}", r"\1", line)
    line = re.sub(r"\$\{[A-Za-z_]\w*(:\?[^}]*)?\}", "x", line).replace('"$@"', "")
    return shlex.split(line)[3:]


def script_required_env(script: Path) -> set[str]:
    return set(re.findall(r"\$\{([A-Za-z_]\w*):\?", script.read_text()))


# --- Kubernetes ---------------------------------------------------------------------------------

CRD_SCHEMAS = {"RayCluster": "rayclusters.v1.json", "RayJob": "rayjobs.v1.json",
               "RayService": "rayservices.v1.json"}


def _strict(node):
    """The schema with unknown fields refused where the CRD lists the fields (as
    ``kubectl apply --validate=strict`` does); open objects stay open."""
    if isinstance(node, dict):
        out = {k: _strict(v) for k, v in node.items()}
        if ("properties" in out and "additionalProperties" not in out
                and not out.get("x-kubernetes-preserve-unknown-fields")):
            out["additionalProperties"] = False
        return out
    if isinstance(node, list):
        return [_strict(v) for v in node]
    return node


@functools.cache
def crd_validator(kind: str, schemas: Path = K8S / "schemas"):
    import jsonschema

    schema = _strict(copy.deepcopy(_json(schemas / CRD_SCHEMAS[kind])))
    return jsonschema.Draft7Validator(schema)


def load_manifests(k8s: Path = K8S) -> list[dict]:
    """Every document of every file the kustomization lists, with ``_file`` set."""
    kust = yaml.safe_load((k8s / "kustomization.yaml").read_text())
    docs = []
    for rel in kust["resources"]:
        for doc in yaml.safe_load_all((k8s / rel).read_text()):
            if doc:
                doc["_file"] = rel
                docs.append(doc)
    return docs


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", text)[:3])


def _cluster_spec_problems(where: str, spec: dict) -> list[str]:
    """KubeRay's own checks (ray-operator/controllers/ray/utils/validation.go) that the schema
    cannot express, and the platform's expectations of a cluster."""
    problems = []
    auth = spec.get("authOptions") or {}
    if auth.get("mode") != "token":
        problems.append(f"{where}: authOptions.mode is not 'token'")
    elif not spec.get("rayVersion") or _version(spec["rayVersion"]) < (2, 52):
        problems.append(f"{where}: token auth needs rayVersion >= 2.52.0")
    if not spec.get("enableInTreeAutoscaling"):
        problems.append(f"{where}: enableInTreeAutoscaling is not true")
    head = spec.get("headGroupSpec") or {}
    if (head.get("rayStartParams") or {}).get("dashboard-host") != "0.0.0.0":
        problems.append(f"{where}: head rayStartParams.dashboard-host is not 0.0.0.0")
    for params in [head.get("rayStartParams") or {}] + [
            g.get("rayStartParams") or {} for g in spec.get("workerGroupSpecs") or []]:
        args = [f"--{k}={v}" for k, v in params.items()]
        problems += [f"{where}: rayStartParams: {p}" for p in cli_problems("ray", ["start",
                                                                                  *args])]
    gpu_groups = []
    for group in spec.get("workerGroupSpecs") or []:
        name = group.get("groupName")
        low, high = group.get("minReplicas", 0), group.get("maxReplicas", 2**31)
        counts = (low, group.get("replicas", low), high)
        if all(isinstance(n, int) for n in counts) and not counts[0] <= counts[1] <= counts[2]:
            problems.append(f"{where}: worker group {name}: replicas outside "
                            f"[minReplicas, maxReplicas]")
        for c in group["template"]["spec"]["containers"]:
            limits = (c.get("resources") or {}).get("limits") or {}
            if "nvidia.com/gpu" in limits:
                gpu_groups.append(group)
    if not gpu_groups:
        problems.append(f"{where}: no worker group asks for nvidia.com/gpu in its limits")
    return problems


def manifest_problems(docs: list[dict], k8s: Path = K8S, root: Path = ROOT) -> list[str]:
    problems = []
    kust = yaml.safe_load((k8s / "kustomization.yaml").read_text())
    config_maps = {g["name"] for g in kust.get("configMapGenerator") or []}
    images = {i["name"] for i in kust.get("images") or []}
    clusters = {d["metadata"]["name"] for d in docs if d.get("kind") == "RayCluster"}
    for doc in docs:
        kind, name = doc.get("kind"), (doc.get("metadata") or {}).get("name")
        where = f"{doc.get('_file', '?')}: {kind} {name}"
        body = {k: v for k, v in doc.items() if k != "_file"}
        if kind in CRD_SCHEMAS:
            if body.get("apiVersion") != "ray.io/v1":
                problems.append(f"{where}: apiVersion is not ray.io/v1")
            for err in crd_validator(kind).iter_errors(body):
                path = ".".join(str(p) for p in err.absolute_path)
                problems.append(f"{where}: {path}: {err.message}")
        spec = body.get("spec") or {}
        if kind == "RayCluster":
            problems += _cluster_spec_problems(where, spec)
            for group in spec.get("workerGroupSpecs") or []:
                if group.get("minReplicas") != 0:
                    problems.append(f"{where}: worker group {group.get('groupName')} does not "
                                    f"scale down to 0 (minReplicas)")
        if kind == "RayService":
            problems += _cluster_spec_problems(where, spec.get("rayClusterConfig") or {})
            problems += serve_config_problems(where, spec.get("serveConfigV2", ""), root)
        if kind == "RayJob":
            problems += rayjob_problems(where, spec, clusters, root)
        for pod in _pod_specs(body):
            for c in pod.get("containers", []) + pod.get("initContainers", []):
                if c.get("image", "").split(":")[0] not in images:
                    problems.append(f"{where}: container {c.get('name')} image "
                                    f"{c.get('image')} is not in kustomization images")
                for ref in c.get("envFrom") or []:
                    cm = (ref.get("configMapRef") or {}).get("name")
                    if cm and cm not in config_maps:
                        problems.append(f"{where}: envFrom config map {cm} is not generated")
        if kind == "Deployment":
            problems += _deployment_problems(where, body, docs)
    return problems


def _pod_specs(doc: dict) -> list[dict]:
    spec = doc.get("spec") or {}
    kind = doc.get("kind")
    if kind == "Deployment":
        return [spec["template"]["spec"]]
    cluster = {"RayCluster": spec, "RayService": spec.get("rayClusterConfig"),
               "RayJob": spec.get("rayClusterSpec")}.get(kind)
    if not cluster:
        return []
    groups = [cluster.get("headGroupSpec") or {}] + list(cluster.get("workerGroupSpecs") or [])
    return [g["template"]["spec"] for g in groups if g.get("template")]


def _deployment_problems(where: str, dep: dict, docs: list[dict]) -> list[str]:
    problems = []
    labels = dep["spec"]["template"]["metadata"].get("labels") or {}
    if not set(dep["spec"]["selector"]["matchLabels"].items()) <= set(labels.items()):
        problems.append(f"{where}: selector does not match the pod labels")
    containers = dep["spec"]["template"]["spec"]["containers"]
    port_names = {p.get("name") for c in containers for p in c.get("ports", [])}
    port_numbers = {p["containerPort"] for c in containers for p in c.get("ports", [])}
    for c in containers:
        for probe in ("readinessProbe", "livenessProbe"):
            if not (c.get(probe) or {}).get("httpGet"):
                problems.append(f"{where}: container {c['name']} has no {probe} httpGet")
    services = [d for d in docs if d.get("kind") == "Service"
                and set((d["spec"].get("selector") or {}).items()) <= set(labels.items())]
    if not services:
        problems.append(f"{where}: no Service selects its pods")
    for svc in services:
        for port in svc["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            if target not in port_names and target not in port_numbers:
                problems.append(f"Service {svc['metadata']['name']}: targetPort {target} is no "
                                f"container port of {dep['metadata']['name']}")
    return problems


def serve_config_problems(where: str, text: str, root: Path = ROOT) -> list[str]:
    problems = []
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as err:
        return [f"{where}: serveConfigV2 is not YAML: {err}"]
    apps = (config or {}).get("applications")
    if not apps:
        return [f"{where}: serveConfigV2 has no applications"]
    for app in apps:
        for key in ("name", "import_path", "route_prefix"):
            if key not in app:
                problems.append(f"{where}: serveConfigV2 application lacks {key}")
        module, _, attr = app.get("import_path", "").partition(":")
        if not module or not attr:
            problems.append(f"{where}: import_path {app.get('import_path')!r} is not "
                            f"module:attribute")
        if "working_dir" in (app.get("runtime_env") or {}):
            problems.append(f"{where}: runtime_env.working_dir: the code is in the image")
        for key, value in ((app.get("runtime_env") or {}).get("env_vars") or {}).items():
            if SECRET_NAME.search(key):
                problems.append(f"{where}: env var {key} written in serveConfigV2; use a "
                                f"secretKeyRef")
            if not isinstance(value, str):
                problems.append(f"{where}: env var {key} is not a string")
    try:
        from ray.serve.schema import ServeDeploySchema
    except ImportError:  # ray[serve] not installed here: the structural checks above stand
        return problems
    try:
        ServeDeploySchema.parse_obj(config)
    except Exception as err:  # pydantic's ValidationError (v1 or v2 through Ray's compat layer)
        problems.append(f"{where}: serveConfigV2: {str(err).splitlines()[0]}")
    return problems


# ray-operator/apis/ray/v1/rayjob_types.go (the CRD leaves the field a free string)
SUBMISSION_MODES = ("K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode")


def rayjob_problems(where: str, spec: dict, clusters: set[str], root: Path = ROOT) -> list[str]:
    problems = []
    selector = spec.get("clusterSelector") or {}
    if bool(selector) == bool(spec.get("rayClusterSpec")):
        problems.append(f"{where}: set exactly one of clusterSelector and rayClusterSpec")
    if selector and selector.get("ray.io/cluster") not in clusters:
        problems.append(f"{where}: clusterSelector names no RayCluster here "
                        f"({selector.get('ray.io/cluster')})")
    mode = spec.get("submissionMode", "K8sJobMode")
    if mode not in SUBMISSION_MODES:
        problems.append(f"{where}: submissionMode {mode!r} is not one of {SUBMISSION_MODES}")
    if selector and mode == "SidecarMode":
        problems.append(f"{where}: clusterSelector is not supported in SidecarMode")
    if selector and spec.get("backoffLimit"):
        problems.append(f"{where}: backoffLimit is incompatible with clusterSelector")
    if spec.get("ttlSecondsAfterFinished", 0) > 0 and not spec.get("shutdownAfterJobFinishes"):
        problems.append(f"{where}: ttlSecondsAfterFinished needs shutdownAfterJobFinishes")
    if spec.get("shutdownAfterJobFinishes") and selector:
        problems.append(f"{where}: shutdownAfterJobFinishes would not stop a selected cluster")
    try:
        runtime_env = yaml.safe_load(spec.get("runtimeEnvYAML") or "{}") or {}
    except yaml.YAMLError as err:
        runtime_env = {}
        problems.append(f"{where}: runtimeEnvYAML is not YAML: {err}")
    if "working_dir" in runtime_env:
        problems.append(f"{where}: a RayJob cannot upload a working_dir; the code is in the image")
    for key in runtime_env.get("env_vars") or {}:
        if SECRET_NAME.search(key):
            problems.append(f"{where}: runtimeEnvYAML env var {key} would hold a secret")
    argv = shlex.split(spec.get("entrypoint", ""))
    if argv[:3] != ["python", "-m", "sweeps"] or len(argv) < 5:
        return problems + [f"{where}: entrypoint is not `python -m sweeps run FILE …`"]
    if not runnable_module_exists("sweeps", root):
        problems.append(f"{where}: module sweeps is not in the repository")
    sweep = root / re.sub(r"^/home/ray/sepcore/", "", argv[4])
    if argv[3] != "run":
        problems.append(f"{where}: entrypoint runs `sweeps {argv[3]}`, not `sweeps run`")
    if not sweep.is_file():
        return problems + [f"{where}: sweep file {argv[4]} is not in the image's copy of the "
                           f"repository"]
    profiles = (yaml.safe_load(sweep.read_text()) or {}).get("profiles") or {}
    if "--profile" in argv and argv[argv.index("--profile") + 1] not in profiles:
        problems.append(f"{where}: {sweep.name} has no profile "
                        f"{argv[argv.index('--profile') + 1]}")
    return problems


def secret_refs(docs: list[dict]) -> set[tuple[str, str]]:
    """(secret name, key) pairs the manifests read (secretKeyRef, and authOptions.secretName)."""
    refs = set()

    def walk(node):
        if isinstance(node, dict):
            ref = node.get("secretKeyRef")
            if isinstance(ref, dict):
                refs.add((ref["name"], ref["key"]))
            auth = node.get("authOptions")
            if isinstance(auth, dict) and auth.get("secretName"):
                refs.add((auth["secretName"], "auth_token"))  # KubeRay's key for the token
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)
    walk(docs)
    return refs


def documented_secrets(readme: Path) -> set[tuple[str, str]]:
    """(secret, key) pairs that ``kubectl create secret generic NAME --from-literal=KEY=…``
    commands in the README create."""
    text = readme.read_text().replace("\\\n", " ")
    out = set()
    for line in text.splitlines():
        m = re.search(r"kubectl\b.*\bcreate secret generic\s+([\w.-]+)(.*)", line)
        if m:
            for key in re.findall(r"--from-(?:literal|file)=([\w.-]+)=", m.group(2)):
                out.add((m.group(1), key))
    return out


def kustomize_command() -> list[str] | None:
    """``kubectl kustomize`` or ``kustomize build`` when one is installed, else None."""
    if shutil.which("kubectl"):
        probe = subprocess.run(["kubectl", "kustomize", "--help"], capture_output=True,
                               timeout=60)
        if probe.returncode == 0:
            return ["kubectl", "kustomize"]
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    return None


def render(k8s: Path = K8S) -> list[dict]:
    cmd = kustomize_command()
    if cmd is None:
        raise FileNotFoundError("neither kubectl nor kustomize is installed")
    out = subprocess.run([*cmd, str(k8s)], capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} {k8s}: {out.stderr.strip().splitlines()[-1:]}")
    return [d for d in yaml.safe_load_all(out.stdout) if d]
