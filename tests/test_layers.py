"""The layer rule (README "Architecture / layers"): the research library never imports the
orchestration stack."""

from __future__ import annotations

import subprocess
import sys


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
