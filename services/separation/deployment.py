"""The separation service as a Ray Serve deployment: the FastAPI app of
:mod:`services.separation.app`, built on each replica around its own
:class:`~services.separation.service.SeparationService` (model, poller, job queue)."""

from __future__ import annotations

import os
from typing import Any

from ray import serve
from ray.serve import Application

from services.separation.settings import ServeSettings

# builder arguments that size the deployment rather than the service
DEPLOYMENT_ARGS = ("num_gpus", "num_cpus", "num_replicas")


@serve.deployment(name="Separation")
@serve.ingress()
class Separation:
    """One replica: loads the model at start (a replica without its model does not start)."""

    def __init__(self, settings: ServeSettings):
        from services.separation.service import SeparationService

        self.service = SeparationService(settings)

    def __serve_build_asgi_app__(self):
        from services.separation.app import create_app

        return create_app(self.service)


def build_app(args: dict[str, Any]) -> Application:
    """The bound application: settings from ``args`` over the environment; ``num_gpus``
    (``SEPCORE_SERVE_GPUS``), ``num_cpus`` and ``num_replicas`` size the deployment."""
    args = dict(args or {})
    sizing = {key: args.pop(key) for key in DEPLOYMENT_ARGS if key in args}
    settings = ServeSettings.from_env(**args)
    gpus = float(sizing.get("num_gpus", os.environ.get("SEPCORE_SERVE_GPUS") or 0))
    actor = {"num_gpus": gpus}
    if "num_cpus" in sizing:
        actor["num_cpus"] = float(sizing["num_cpus"])
    options: dict[str, Any] = {"ray_actor_options": actor}
    if "num_replicas" in sizing:
        options["num_replicas"] = int(sizing["num_replicas"])
    return Separation.options(**options).bind(settings)
