"""Per-app state shared by the API and the pages: settings, a pool of archives, the upload queue.

An :class:`~storage.archive.Archive` (index connection) is used by one request at a time: request
handlers run in a thread pool, and a connection's transaction state must not be shared between threads.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from typing import Iterator

from storage.archive import Archive


class ArchivePool:
    def __init__(self, settings, size: int = 16):
        self.settings = settings
        self._free: queue.LifoQueue[Archive] = queue.LifoQueue()
        self._all: list[Archive] = []
        self._lock = threading.Lock()
        self._size = size

    @contextlib.contextmanager
    def archive(self) -> Iterator[Archive]:
        try:
            archive = self._free.get_nowait()
        except queue.Empty:
            with self._lock:
                if len(self._all) < self._size:
                    archive = Archive.open(self.settings)
                    self._all.append(archive)
                else:
                    archive = None
            if archive is None:
                archive = self._free.get()
        try:
            yield archive
        finally:
            self._free.put(archive)

    def close(self) -> None:
        with self._lock:
            while self._all:
                self._all.pop().close()
