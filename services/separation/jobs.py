"""Asynchronous separations for long songs: a bounded queue, worker threads, expiring results.

``submit`` puts a job in the queue or, when ``size`` jobs already wait, refuses it with
:class:`QueueFull` (the service answers 503 with ``Retry-After``). A worker runs the job's task
with a progress callback; the task writes the stems into the job's own folder. A finished job
(done or failed) and its folder are deleted ``ttl`` seconds after it finished.
"""

from __future__ import annotations

import logging
import math
import queue
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"
# task(job, progress) -> {stem: file}; progress(fraction in [0, 1])
Task = Callable[["Job", Callable[[float], None]], dict[str, Path]]


class QueueFull(Exception):
    """Every queue slot is taken; ``retry_after`` is a guess in whole seconds."""

    def __init__(self, retry_after: int):
        super().__init__(f"the separation queue is full; retry in {retry_after} s")
        self.retry_after = retry_after


@dataclass
class Job:
    """One asynchronous separation; ``files`` maps each stem to its file once done."""

    id: str
    folder: Path
    task: Task | None
    info: dict = field(default_factory=dict)
    status: str = QUEUED
    progress: float = 0.0
    error: str | None = None
    files: dict[str, Path] = field(default_factory=dict)
    finished_at: float | None = None


class JobQueue:
    """Bounded job queue with ``workers`` threads; results live ``ttl`` seconds after finishing.

    Args:
        size: jobs that may wait (not counting the ones running).
        ttl: seconds a finished job stays readable.
        workers: threads running jobs.
        root: parent folder of the job folders (default: a new temporary folder).
    """

    def __init__(self, size: int, ttl: float, workers: int = 1, root: str | Path | None = None):
        self.size = size
        self.ttl = ttl
        self.workers = workers
        self.root = Path(root) if root is not None else Path(
            tempfile.mkdtemp(prefix="sepcore-separations-"))
        self._queue: queue.Queue[Job | None] = queue.Queue(maxsize=size)
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._mean_seconds: float | None = None  # running mean of job durations

    def start(self) -> None:
        if self._threads:
            return
        self._stop.clear()
        for i in range(self.workers):
            self._threads.append(threading.Thread(target=self._work, daemon=True,
                                                  name=f"sepcore-separation-{i}"))
        self._threads.append(threading.Thread(target=self._reap, daemon=True,
                                              name="sepcore-separation-expiry"))
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Stop the threads (a running job finishes first) and delete every job's files."""
        self._stop.set()
        for _ in range(self.workers):
            try:
                self._queue.put_nowait(None)
            except queue.Full:
                self._drain()
                self._queue.put_nowait(None)
        for thread in self._threads:
            thread.join(timeout=60)
        self._threads = []
        with self._lock:
            self._jobs.clear()
        shutil.rmtree(self.root, ignore_errors=True)

    def _drain(self) -> None:
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                return

    def new_folder(self) -> Path:
        """A folder for a job about to be submitted (the upload goes there first)."""
        self.root.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix="job-", dir=self.root))

    def retry_after(self) -> int:
        """Seconds until a slot is likely free: the mean job time × waiting jobs / workers."""
        mean = self._mean_seconds if self._mean_seconds is not None else 10.0
        return max(1, min(3600, math.ceil(mean * max(1, self._queue.qsize()) / self.workers)))

    def check_room(self) -> None:
        """Raise :class:`QueueFull` when no slot is free (before a client uploads a song)."""
        if self._queue.full():
            raise QueueFull(self.retry_after())

    def submit(self, folder: Path, task: Task, info: dict | None = None) -> Job:
        """Queue ``task`` for the job folder ``folder``; raises :class:`QueueFull`."""
        job = Job(id=uuid.uuid4().hex, folder=folder, task=task, info=dict(info or {}))
        with self._lock:
            self._jobs[job.id] = job
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            with self._lock:
                del self._jobs[job.id]
            raise QueueFull(self.retry_after()) from None
        log.info("separation %s queued (%d waiting)", job.id, self._queue.qsize())
        return job

    def get(self, job_id: str) -> Job | None:
        """The job, or None when unknown or expired."""
        with self._lock:
            job = self._jobs.get(job_id)
        if job is not None and self._expired(job, time.monotonic()):
            self._delete(job)
            return None
        return job

    def _expired(self, job: Job, now: float) -> bool:
        return job.finished_at is not None and now - job.finished_at >= self.ttl

    def _delete(self, job: Job) -> None:
        with self._lock:
            if self._jobs.pop(job.id, None) is None:
                return
        shutil.rmtree(job.folder, ignore_errors=True)
        log.info("separation %s expired", job.id)

    def _reap(self) -> None:
        interval = min(30.0, max(0.05, self.ttl / 4))
        while not self._stop.wait(interval):
            now = time.monotonic()
            with self._lock:
                expired = [job for job in self._jobs.values() if self._expired(job, now)]
            for job in expired:
                self._delete(job)

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None or self._stop.is_set():
                return
            self._run(job)

    def _run(self, job: Job) -> None:
        start = time.monotonic()
        job.status = RUNNING

        def progress(fraction: float) -> None:
            job.progress = min(1.0, max(job.progress, float(fraction)))

        try:
            job.files = job.task(job, progress)
            job.progress = 1.0
            job.status = DONE
            log.info("separation %s done in %.1f s", job.id, time.monotonic() - start)
        except Exception as exc:  # the job fails, the worker goes on
            job.error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            job.status = FAILED
            log.warning("separation %s failed: %s", job.id, job.error)
        finally:
            job.task = None  # drop the model and audio the task held
            job.finished_at = time.monotonic()
            took = job.finished_at - start
            self._mean_seconds = took if self._mean_seconds is None else (
                0.7 * self._mean_seconds + 0.3 * took)
