"""Sweeps: a YAML sweep file becomes a Ray Tune run whose trials log to MLflow.

Needs the ``sweeps`` extra (``pip install 'sepcore[sweeps]'``: Ray Tune, Optuna, MLflow, boto3);
the research library ``sepcore`` works without it.
"""

import importlib.util


def _absent(module: str) -> bool:
    try:
        spec = importlib.util.find_spec(module)
    except ImportError:
        return True
    return spec is None or not spec.has_location  # a bare directory (namespace) is no package


_MISSING = [m for m in ("ray", "optuna", "mlflow", "boto3") if _absent(m)]
if _MISSING:
    raise ImportError(f"sweeps needs {', '.join(_MISSING)}: pip install 'sepcore[sweeps]'")
