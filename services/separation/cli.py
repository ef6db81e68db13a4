"""``python -m services serve``: the separation service under uvicorn.

    python -m services serve --model models:/sepcore-demo@champion [--host 127.0.0.1]
        [--port 8000] [--device auto] [--poll 10]

Every flag defaults to its ``SEPCORE_SERVE_*`` variable when set; the bearer token is read from
``SEPCORE_SERVE_TOKEN`` only.
"""

from __future__ import annotations

import argparse
import logging


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="models:/NAME@ALIAS (followed when the alias moves) or "
                                        "models:/NAME/VERSION [SEPCORE_SERVE_MODEL]")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--device", help="auto (default), cpu, cuda, cuda:N "
                                         "[SEPCORE_SERVE_DEVICE]")
    parser.add_argument("--poll", help="seconds between checks of the alias; 0 never "
                                       "(default 10) [SEPCORE_SERVE_POLL]")
    parser.add_argument("--tracking-uri", help="MLflow tracking/registry URI (default "
                                               "sqlite:///mlruns.db) [MLFLOW_TRACKING_URI]")
    parser.add_argument("--cache-dir", help="where verified copies of checkpoints are kept "
                                            "[SEPCORE_SERVE_CACHE_DIR]")
    parser.add_argument("--max-upload-mb", help="largest request body in MiB (default 200) "
                                                "[SEPCORE_SERVE_MAX_UPLOAD_MB]")
    parser.add_argument("--max-duration", help="longest song in seconds (default 900) "
                                               "[SEPCORE_SERVE_MAX_DURATION]")
    parser.add_argument("--result-ttl", help="seconds a finished asynchronous separation stays "
                                             "(default 3600) [SEPCORE_SERVE_RESULT_TTL]")
    parser.add_argument("--queue-size", help="asynchronous separations that may wait "
                                             "(default 4) [SEPCORE_SERVE_QUEUE_SIZE]")
    parser.add_argument("--max-sync", help="synchronous /v1/separate requests separating at "
                                           "once (default 2) [SEPCORE_SERVE_MAX_SYNC]")
    parser.add_argument("--log-level", default="info", help="log level (this service and uvicorn)",
                        choices=["critical", "error", "warning", "info", "debug"])


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from services.separation.app import create_app
    from services.separation.service import SeparationService
    from services.separation.settings import ServeSettings

    logging.basicConfig(level=args.log_level.upper(), force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = ServeSettings.from_env(
        model=args.model, poll=args.poll, device=args.device, tracking_uri=args.tracking_uri,
        cache_dir=args.cache_dir, max_upload_mb=args.max_upload_mb,
        max_duration=args.max_duration, result_ttl=args.result_ttl, queue_size=args.queue_size)
    service = SeparationService(settings)
    uvicorn.run(create_app(service), host=args.host, port=args.port, log_level=args.log_level)
    return 0
