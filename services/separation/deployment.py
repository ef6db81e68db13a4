"""The separation service as a Ray Serve deployment: the FastAPI app of
:mod:`services.separation.app`, built on each replica around its own
:class:`~services.separation.service.SeparationService` (model, poller, job queue).

Each replica reads its settings itself (``SEPCORE_SERVE_*``, ``MLFLOW_TRACKING_URI``, with the
builder's arguments on top), so the bearer token never travels in the deployment's arguments,
which Ray keeps in its controller.
"""

from __future__ import annotations

import os
from typing import Any

from ray import serve
from ray.serve import Application

from sepcore.errors import ConfigError
from services.separation.settings import ServeSettings

# builder arguments that size the deployment rather than configure the service
DEPLOYMENT_ARGS = ("num_gpus", "num_cpus", "num_replicas")


@serve.deployment(name="Separation")
@serve.ingress()
class Separation:
    """One replica: loads the model at start (a replica without its model does not start)."""

    def __init__(self, overrides: dict[str, Any]):
        from services.separation.service import SeparationService

        self.service = SeparationService(ServeSettings.from_env(**overrides))

    def __serve_build_asgi_app__(self):
        from services.separation.app import create_app

        return create_app(self.service)


def build_app(args: dict[str, Any]) -> Application:
    """The bound application. ``args`` override the environment's settings (checked here, so a
    bad value fails ``serve run`` at once); ``num_gpus`` (default ``SEPCORE_SERVE_GPUS`` or 0),
    ``num_cpus`` and ``num_replicas`` size the deployment."""
    args = {key: str(value) for key, value in (args or {}).items()}
    if "token" in args:
        raise ConfigError("the bearer token is read from SEPCORE_SERVE_TOKEN only, not from an "
                          "application argument", key="token")
    sizing = {key: args.pop(key) for key in DEPLOYMENT_ARGS if key in args}
    ServeSettings.from_env(**args)  # fail now, not in every replica
    actor = {"num_gpus": float(sizing.get("num_gpus", os.environ.get("SEPCORE_SERVE_GPUS") or 0))}
    if "num_cpus" in sizing:
        actor["num_cpus"] = float(sizing["num_cpus"])
    options: dict[str, Any] = {"ray_actor_options": actor}
    if "num_replicas" in sizing:
        options["num_replicas"] = int(sizing["num_replicas"])
    return Separation.options(**options).bind(args)
