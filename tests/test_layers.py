"""The layer rule (README "Architecture / layers"): the research library ``sepcore`` never
imports the orchestration stack (Ray, MLflow, Optuna, boto3) or the service stack, so
``pip install sepcore`` (no extras) is a complete research library; the extras bring the rest."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLATFORM = ("ray", "mlflow", "optuna", "boto3", "fastapi", "uvicorn")

# Makes the platform packages unimportable, as in a venv where only `pip install sepcore` ran.
_BLOCK = (
    "import sys\n"
    "class _Absent:\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    f"        if name.split('.')[0] in {PLATFORM!r}:\n"
    "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
    "sys.meta_path.insert(0, _Absent())\n"
)


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _BLOCK + code], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)


def test_sepcore_never_imports_ray_mlflow_optuna_boto3():
    code = (
        "import sys, sepcore, sepcore.train, sepcore.evaluate, sepcore.separate, sepcore.cli, "
        "sepcore.data, sepcore.models, sepcore.demo; "
        "sepcore.models.available_models(); "
        "bad = [m for m in ('ray', 'mlflow', 'optuna', 'boto3') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_sep_info_runs_without_the_platform_packages():
    done = _python("from sepcore.cli import main\nsys.exit(main(['info', 'paper/m1.yaml']))\n")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "6,595,120" in done.stdout


def test_sweeps_without_its_extra_names_the_extra():
    done = _python("import sweeps\n")
    assert done.returncode != 0
    assert "pip install 'sepcore[sweeps]'" in done.stderr


def test_core_dependencies_exclude_the_platform():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = {dep.split("[")[0].split(">")[0].split("<")[0].split("=")[0].strip().lower()
            for dep in project["dependencies"]}
    assert not core & set(PLATFORM), core & set(PLATFORM)
    extras = project["optional-dependencies"]
    for extra, needs in {"sweeps": ("ray", "optuna", "mlflow", "boto3"),
                         "serve": ("fastapi", "uvicorn")}.items():
        assert all(any(dep.startswith(n) for dep in extras[extra]) for n in needs), extra


def test_services_never_import_sweeps():
    """sweeps → services → sepcore: the registry and store clients stand without the sweeps."""
    code = (
        "import sys, importlib, pkgutil, services\n"
        "for m in pkgutil.walk_packages(services.__path__, 'services.'):\n"
        "    if m.name.split('.')[1] in ('__main__',):\n"
        "        continue\n"
        "    importlib.import_module(m.name)\n"
        "bad = sorted(m for m in sys.modules if m == 'sweeps' or m.startswith('sweeps.'))\n"
        "print(bad); sys.exit(1 if bad else 0)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
