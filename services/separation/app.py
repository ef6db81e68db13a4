"""The separation service's HTTP interface (FastAPI), the same under uvicorn and Ray Serve.

Routes: ``GET /healthz`` (always 200, no auth), ``GET /`` (the web page), ``GET /v1/model``,
``POST /v1/separate`` (stems in the response), ``POST /v1/separations`` (queued, 202) with
``GET /v1/separations/{id}`` and ``GET /v1/separations/{id}/stems/{name}``. With a token set,
every route but ``/healthz`` and the page needs ``Authorization: Bearer <token>`` (401).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import tempfile
import threading
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from pydantic import BaseModel
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from services.separation.audio import (
    FIELD,
    UploadError,
    media_type,
    receive_upload,
    remove,
    zip_files,
)
from services.separation.jobs import DONE, FAILED, QueueFull
from services.separation.service import SeparationService

log = logging.getLogger(__name__)

OPEN_PATHS = frozenset({"/healthz", "/"})
Format = Literal["wav", "flac"]
StemsQuery = Annotated[str | None, Query(
    description="comma-separated stems (default: the model's sources), e.g. vocals,accompaniment",
    max_length=1000)]
FormatQuery = Annotated[Format, Query(description="wav (32-bit float) or flac (24-bit PCM)")]

_ERROR = {"content": {"application/json": {"schema": {
    "type": "object", "properties": {"detail": {"type": "string"}}}}}}
_BINARY = {"schema": {"type": "string", "format": "binary"}}
_UPLOAD_BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": [FIELD],
    "properties": {FIELD: {"type": "string", "format": "binary",
                           "description": "the song (any format libsndfile reads)"}}}}}}}
_UPLOAD_ERRORS = {400: {"description": "bad audio or body", **_ERROR},
                  401: {"description": "missing or wrong bearer token", **_ERROR},
                  413: {"description": "upload too large", **_ERROR},
                  415: {"description": "not multipart/form-data", **_ERROR},
                  422: {"description": "unknown stem or bad parameter", **_ERROR}}


class ModelInfo(BaseModel):
    name: str
    version: str
    alias: str | None
    sha256: str
    sources: list[str]
    stems: list[str]
    sample_rate: int
    loaded_at: str


class Submitted(BaseModel):
    id: str


class SeparationStatus(BaseModel):
    id: str
    status: Literal["queued", "running", "done", "failed"]
    progress: float
    stems: list[str]
    format: str
    model: str
    model_version: str
    error: str | None = None


class BearerAuth:
    """ASGI middleware: ``Authorization: Bearer <token>`` on every path but ``OPEN_PATHS``,
    compared in constant time (digests of equal length, ``hmac.compare_digest``)."""

    def __init__(self, app: ASGIApp, token: str | None):
        self.app = app
        self.digest = hashlib.sha256(token.encode()).digest() if token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.digest is None or scope["type"] != "http" or self._open(scope):
            await self.app(scope, receive, send)
            return
        scheme, _, given = Headers(scope=scope).get("authorization", "").partition(" ")
        digest = hashlib.sha256(given.strip().encode()).digest()
        if scheme.lower() != "bearer" or not hmac.compare_digest(digest, self.digest):
            response = JSONResponse({"detail": "missing or wrong bearer token"}, status_code=401,
                                    headers={"WWW-Authenticate": "Bearer"})
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    @staticmethod
    def _open(scope: Scope) -> bool:
        path, root = scope["path"], scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root):] or "/"
        return path in OPEN_PATHS


def _error(exc: UploadError | QueueFull) -> HTTPException:
    if isinstance(exc, QueueFull):
        return HTTPException(503, str(exc), headers={"Retry-After": str(exc.retry_after)})
    return HTTPException(exc.status, exc.reason)


def create_app(service: SeparationService) -> FastAPI:
    """The FastAPI app over ``service``; its lifespan starts and stops the poller and workers."""

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        service.start()
        try:
            yield
        finally:
            await run_in_threadpool(service.stop)

    app = FastAPI(title="sepcore separation service", version="1", lifespan=lifespan,
                  description="Separate songs into stems with the registry's model.")
    app.add_middleware(BearerAuth, token=service.settings.token)
    limit = service.settings.max_upload_bytes
    # synchronous separations run in the request's thread: at most max_sync at once (each holds
    # a song and its stems in memory); one more is told to come back, as a full queue is
    sync_slots = threading.BoundedSemaphore(service.settings.max_sync)

    @app.get("/healthz", tags=["service"])
    def healthz() -> dict[str, str]:
        """Always 200 while the process serves (no authentication)."""
        return {"status": "ok"}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        html = resources.files("services.separation").joinpath("static/index.html").read_text()
        return HTMLResponse(html)

    @app.get("/v1/model", response_model=ModelInfo, tags=["model"],
             responses={401: _UPLOAD_ERRORS[401]})
    def model() -> dict:
        """The model being served: registry name, version, alias, SHA-256, sources, stems."""
        return service.holder.current.info()

    @app.post("/v1/separate", tags=["separation"], openapi_extra=_UPLOAD_BODY,
              response_class=FileResponse,
              responses={200: {"description": "one stem as audio, several as a zip",
                               "content": {"audio/wav": _BINARY, "audio/flac": _BINARY,
                                           "application/zip": _BINARY}},
                         **_UPLOAD_ERRORS,
                         503: {"description": "max_sync separations running (Retry-After)",
                               **_ERROR}})
    async def separate(request: Request, stems: StemsQuery = None,
                       format: FormatQuery = "wav") -> FileResponse:
        """Separate the uploaded song and return the stems: ``audio/wav`` (or ``audio/flac``)
        for one stem, else ``application/zip`` of ``<stem>.wav`` files."""
        served = service.holder.current  # this request's model, whatever swaps meanwhile
        try:
            wanted = service.check_stems(served, stems)
        except UploadError as exc:
            raise _error(exc) from None
        if not sync_slots.acquire(blocking=False):
            raise HTTPException(503, f"{service.settings.max_sync} synchronous separation(s) "
                                     f"already running; retry later or queue it with "
                                     f"POST /v1/separations", headers={"Retry-After": "5"})
        folder = Path(tempfile.mkdtemp(prefix="sync-", dir=service.scratch))
        try:
            upload = await receive_upload(request.headers, request.stream(), limit, folder)
            files = await run_in_threadpool(service.separate, served, upload, wanted, format,
                                            folder)
        except UploadError as exc:
            remove(folder)
            raise _error(exc) from None
        except BaseException:
            remove(folder)
            raise
        finally:
            sync_slots.release()
        headers = {"X-Model-Name": served.resolved.name, "X-Model-Version": served.version}
        cleanup = BackgroundTask(remove, folder)
        if len(files) == 1:
            ((stem, path),) = files.items()
            return FileResponse(path, media_type=media_type(format), filename=path.name,
                                headers=headers, background=cleanup)
        archive = zip_files(folder / "stems.zip", files)
        return FileResponse(archive, media_type="application/zip", filename="stems.zip",
                            headers=headers, background=cleanup)

    @app.post("/v1/separations", status_code=202, response_model=Submitted, tags=["separation"],
              openapi_extra=_UPLOAD_BODY,
              responses={**_UPLOAD_ERRORS, 503: {"description": "queue full (Retry-After)",
                                                 **_ERROR}})
    async def submit(request: Request, stems: StemsQuery = None,
                     format: FormatQuery = "wav") -> dict:
        """Queue a separation (for long songs); poll ``/v1/separations/{id}``."""
        served = service.holder.current
        folder = None
        try:
            wanted = service.check_stems(served, stems)
            service.jobs.check_room()
            folder = service.jobs.new_folder()
            upload = await receive_upload(request.headers, request.stream(), limit, folder)
            await run_in_threadpool(service.check_upload, served, upload)
            job = service.submit(served, upload, wanted, format)
        except (UploadError, QueueFull) as exc:
            if folder is not None:
                remove(folder)
            raise _error(exc) from None
        except BaseException:
            if folder is not None:
                remove(folder)
            raise
        return {"id": job.id}

    def _job(job_id: str):
        job = service.jobs.get(job_id)
        if job is None:
            raise HTTPException(404, f"no separation {job_id!r} (unknown or expired)")
        return job

    @app.get("/v1/separations/{job_id}", response_model=SeparationStatus, tags=["separation"],
             responses={401: _UPLOAD_ERRORS[401],
                        404: {"description": "unknown or expired", **_ERROR}})
    def status(job_id: str) -> dict:
        """Status (queued, running, done, failed) and progress in [0, 1]."""
        job = _job(job_id)
        return {"id": job.id, "status": job.status, "progress": round(job.progress, 4),
                "error": job.error, **job.info}

    @app.get("/v1/separations/{job_id}/stems/{name}", tags=["separation"],
             response_class=FileResponse,
             responses={200: {"description": "the stem",
                              "content": {"audio/wav": _BINARY, "audio/flac": _BINARY}},
                        401: _UPLOAD_ERRORS[401],
                        404: {"description": "unknown or expired separation, or a stem it "
                                             "does not have", **_ERROR},
                        409: {"description": "not done (queued, running or failed)", **_ERROR}})
    def stem(job_id: str, name: str) -> FileResponse:
        """One stem of a finished separation."""
        job = _job(job_id)
        if job.status == FAILED:
            raise HTTPException(409, f"separation {job_id} failed: {job.error}")
        if job.status != DONE:
            raise HTTPException(409, f"separation {job_id} is {job.status}, not done")
        path = job.files.get(name)
        if path is None:
            raise HTTPException(404, f"separation {job_id} has no stem {name!r}; it has: "
                                     f"{', '.join(job.files)}")
        return FileResponse(path, media_type=media_type(job.info["format"]), filename=path.name)

    _document_bearer(app, enabled=service.settings.token is not None)
    return app


def _document_bearer(app: FastAPI, enabled: bool) -> None:
    """Declare the bearer scheme in the OpenAPI schema on every operation but /healthz."""
    if not enabled:
        return
    base = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = base()
            schema.setdefault("components", {})["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer"}}
            for path, operations in schema["paths"].items():
                if path not in OPEN_PATHS:
                    for operation in operations.values():
                        operation["security"] = [{"bearer": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi
