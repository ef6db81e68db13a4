"""sepcore: the research library of the sepcore platform.

Paper models (``sepcore.models``), data (``sepcore.data``), losses, metrics, the one training loop
(``sepcore.train``) and long-audio inference (``sepcore.separate``). Never imports ray, optuna,
mlflow or boto3: those belong to ``sweeps/``.
"""

__version__ = "0.1.0"
