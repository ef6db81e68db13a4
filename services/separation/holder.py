"""The served model and its hot swap.

:class:`ModelHolder` keeps one :class:`ServedModel` (a loaded separator and what the registry says
about it). A request takes the reference once, at its start, and uses it to the end, so a swap
never changes the model under a request: requests in flight finish on the old model while new
ones get the new. A poller thread asks the registry every ``poll`` seconds which version the
alias names; when it moved, the version is fetched, verified (SHA-256), loaded, and only then
swapped in, under a lock. A version that fails to fetch, verify or load is logged and the
current model stays.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sepcore.separate import Separator, load_separator
from services.separation.source import RegistrySource, ResolvedModel

log = logging.getLogger(__name__)

VOCALS = "vocals"
ACCOMPANIMENT = "accompaniment"


def served_stems(sources: list[str]) -> list[str]:
    """The stems a model can return: its sources, plus ``accompaniment`` (the sum of every source
    but vocals) when it has vocals, more than one source and no accompaniment of its own."""
    stems = list(sources)
    if VOCALS in stems and len(stems) > 1 and ACCOMPANIMENT not in stems:
        stems.append(ACCOMPANIMENT)
    return stems


@dataclass(frozen=True)
class ServedModel:
    """A loaded separator and its registry identity (what ``GET /v1/model`` shows)."""

    separator: Separator
    resolved: ResolvedModel
    loaded_at: str

    @property
    def version(self) -> str:
        return self.resolved.version

    @property
    def stems(self) -> list[str]:
        return served_stems(self.separator.sources)

    def info(self) -> dict:
        return {"name": self.resolved.name, "version": self.resolved.version,
                "alias": self.resolved.alias, "sha256": self.resolved.sha256,
                "sources": self.separator.sources, "stems": self.stems,
                "sample_rate": self.separator.sample_rate, "loaded_at": self.loaded_at}


class ModelHolder:
    """The current :class:`ServedModel`, swapped atomically when the registry alias moves.

    Args:
        source: the registry URI to follow.
        device: where the model runs (``auto``, ``cpu``, ``cuda:N``).
        poll: seconds between alias checks; 0 never re-checks.
        loader: ``loader(resolved, device) -> Separator`` (default: the checkpoint's separator).
    """

    def __init__(self, source: RegistrySource, device: str = "auto", poll: float = 10.0,
                 loader: Callable[[ResolvedModel, str], Separator] | None = None):
        self.source = source
        self.device = device
        self.poll = poll
        self._loader = loader or (lambda resolved, dev: load_separator(resolved.path, device=dev))
        self._lock = threading.Lock()
        self._current: ServedModel | None = None
        self._failed: str | None = None  # the last version that could not be served
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def current(self) -> ServedModel:
        """The model to use for one request (take it once and keep it)."""
        with self._lock:
            if self._current is None:
                raise RuntimeError("no model loaded yet: call load() first")
            return self._current

    def load(self) -> ServedModel:
        """Load the version the URI names now (at start-up: errors propagate)."""
        served = self._load(self.source.current_version())
        self._swap(served)
        return served

    def _load(self, version: str) -> ServedModel:
        resolved = self.source.fetch(version)
        separator = self._loader(resolved, self.device)
        return ServedModel(separator=separator, resolved=resolved,
                           loaded_at=datetime.now(UTC).isoformat(timespec="seconds"))

    def _swap(self, served: ServedModel) -> None:
        with self._lock:
            old, self._current = self._current, served
        if old is None:
            log.info("serving %s v%s (%s)", served.resolved.name, served.version,
                     served.resolved.sha256[:12])
        else:
            log.info("swapped %s v%s -> v%s (%s)", served.resolved.name, old.version,
                     served.version, served.resolved.sha256[:12])

    def check(self) -> bool:
        """One poll: swap in the version the alias names when it changed; True when swapped.

        Registry, download, verification and load failures are logged (once per version) and
        leave the current model in place.
        """
        try:
            version = self.source.current_version()
            if version == self.current.version:
                return False
            served = self._load(version)
        except Exception as exc:  # any failure keeps the current model serving
            key = f"{exc}"
            level = logging.DEBUG if key == self._failed else logging.WARNING
            log.log(level, "keeping %s v%s: %s", self.source.uri, self.current.version, exc)
            self._failed = key
            return False
        self._failed = None
        self._swap(served)
        return True

    def start(self) -> None:
        """Start the poller thread (not for a pinned version or ``poll`` 0)."""
        if self.poll <= 0 or self.source.alias is None or self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="sepcore-model-poller",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.poll):
            self.check()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
