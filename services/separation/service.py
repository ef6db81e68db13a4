"""The separation service's state: the served model (hot-swapped), the job queue and the limits.

One :class:`SeparationService` per process (uvicorn) or per Ray Serve replica; the FastAPI app
(:mod:`services.separation.app`) is a thin HTTP layer over it.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from sepcore.errors import DataError
from sepcore.separate import check_length
from services.separation.audio import UploadError, decode, stem_arrays, write_stems
from services.separation.holder import ModelHolder, ServedModel
from services.separation.jobs import Job, JobQueue
from services.separation.settings import ServeSettings
from services.separation.source import RegistrySource

log = logging.getLogger(__name__)


class SeparationService:
    """Loads the model the settings name (errors propagate: a service never starts without a
    model) and owns the poller and the job workers (:meth:`start`/:meth:`stop`)."""

    def __init__(self, settings: ServeSettings, holder: ModelHolder | None = None,
                 jobs: JobQueue | None = None):
        self.settings = settings
        if holder is None:
            from mlflow import MlflowClient

            client = MlflowClient(tracking_uri=settings.tracking_uri,
                                  registry_uri=settings.tracking_uri)
            source = RegistrySource(client, settings.model, settings.cache_dir)
            holder = ModelHolder(source, device=settings.device, poll=settings.poll)
            holder.load()
        self.holder = holder
        self.jobs = jobs or JobQueue(size=settings.queue_size, ttl=settings.result_ttl)
        self.scratch = Path(tempfile.mkdtemp(prefix="sepcore-serve-"))

    def start(self) -> None:
        self.holder.start()
        self.jobs.start()

    def stop(self) -> None:
        self.holder.stop()
        self.jobs.stop()
        import shutil

        shutil.rmtree(self.scratch, ignore_errors=True)

    def check_stems(self, served: ServedModel, stems: str | None) -> list[str]:
        """The requested stems (comma-separated; default the model's sources), each one the
        model serves (422 naming the unknown stem and the valid ones)."""
        if stems is None:
            return served.separator.sources
        wanted = list(dict.fromkeys(s.strip() for s in stems.split(",") if s.strip()))
        if not wanted:
            raise UploadError(422, f"no stem asked; this model serves: {', '.join(served.stems)}")
        for stem in wanted:
            if stem not in served.stems:
                raise UploadError(422, f"unknown stem {stem!r}; this model serves: "
                                       f"{', '.join(served.stems)}")
        return wanted

    def _decode(self, served: ServedModel, upload: Path) -> tuple[np.ndarray, int]:
        audio, rate = decode(upload, self.settings.max_duration)
        try:
            check_length(audio.shape[1], audio.shape[0], rate, served.separator.sample_rate)
        except DataError as exc:
            raise UploadError(400, str(exc)) from None
        have, want = audio.shape[0], served.separator.model.audio_channels
        if have != want and have != 1 and want != 1:
            raise UploadError(400, f"the audio has {have} channels; this model takes {want} "
                                   f"(or mono)")
        return audio, rate

    def check_upload(self, served: ServedModel, upload: Path) -> None:
        """Decode the upload once to refuse bad audio before a job is queued (400)."""
        self._decode(served, upload)

    def separate(self, served: ServedModel, upload: Path, stems: list[str], fmt: str,
                 folder: Path, progress: Callable[[float], None] | None = None
                 ) -> dict[str, Path]:
        """Decode ``upload``, separate it with ``served`` and write ``<stem>.<fmt>`` files."""
        audio, rate = self._decode(served, upload)
        callback = None if progress is None else (lambda done, total: progress(done / total))
        estimate = served.separator.separate(audio, rate, callback=callback).numpy()
        arrays = stem_arrays(estimate, served.separator.sources, stems)
        return write_stems(folder, arrays, served.separator.sample_rate, fmt)

    def submit(self, served: ServedModel, upload: Path, stems: list[str], fmt: str) -> Job:
        """Queue an asynchronous separation of ``upload`` (in a job folder) with ``served``."""
        def task(job: Job, progress: Callable[[float], None]) -> dict[str, Path]:
            files = self.separate(served, upload, stems, fmt, job.folder, progress)
            upload.unlink(missing_ok=True)
            return files

        info = {"stems": stems, "format": fmt, "model": served.resolved.name,
                "model_version": served.version}
        return self.jobs.submit(upload.parent, task, info)
