"""The separation service: the registry's model behind an HTTP API and a web page.

``python -m services serve --model models:/NAME@ALIAS`` runs it under uvicorn; ``serve run
services.separation:app`` (or a RayService with that import path) runs the same FastAPI app on Ray
Serve. Importing this package starts nothing and imports neither Ray nor the model stack.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ray.serve import Application


def app(args: dict[str, Any]) -> Application:
    """Ray Serve application builder (``serve run services.separation:app [key=value …]``).

    Settings come from the ``SEPCORE_SERVE_*`` variables (``SEPCORE_SERVE_MODEL``,
    ``SEPCORE_SERVE_POLL``, ``SEPCORE_SERVE_TOKEN``…) and ``MLFLOW_TRACKING_URI``; ``args``
    (``model=…``, ``poll=…``, ``num_gpus=…``, ``num_replicas=…``) take precedence. From Python:
    ``serve.run(app({}))``.
    """
    from services.separation.deployment import build_app

    return build_app(args)
