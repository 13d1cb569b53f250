"""Access events written in batches: one commit every ~50 ms for all requests of a server process.

Every view and download is an event in the append-only log. Committed one by one (SQLite: an fsync each,
under one write lock shared with every other process), they were the portal's bottleneck. Requests now
hand their events to this process's writer thread, which commits whatever has queued up every
``interval`` seconds in one transaction; reads of a case's log first wait for this process's queue
(:meth:`EventWriter.flush`). A commit that fails (index briefly away) is retried with the next batch, in
order; closing the writer (a clean shutdown) commits everything still queued. The crash window: events of
the last ~50 ms (plus one commit) are lost if the process is killed or the machine loses power.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable

from storage.models import Event

log = logging.getLogger("digitize.web")
INTERVAL = 0.05
RETRY = 1.0


class EventWriter:
    def __init__(self, open_index: Callable[[], object], interval: float = INTERVAL):
        self.open_index = open_index
        self.interval = interval
        self._pending: list[Event] = []
        self._queued = 0  # events ever added
        self._written = 0  # events ever committed
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="digitize-events", daemon=True)
        self._thread.start()

    def add(self, event: Event) -> bool:
        """Queue an event; False if the writer is not running (not started, or stopping): write it yourself."""
        with self._cond:
            if self._thread is None or self._stopping:
                return False
            self._pending.append(event)
            self._queued += 1
            return True

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every event added so far is committed (True), or ``timeout`` passes (False)."""
        with self._cond:
            target = self._queued
            self._cond.notify_all()
            return self._cond.wait_for(lambda: self._written >= target or self._thread is None, timeout)

    def close(self) -> None:
        """Commit what is still queued, then stop (a clean shutdown loses no event)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()
        with self._cond:
            self._thread = None
            self._cond.notify_all()

    def _run(self) -> None:
        index = None
        try:
            while True:
                with self._cond:
                    if not self._stopping:
                        self._cond.wait(self.interval)
                    batch, stopping = self._pending, self._stopping
                    self._pending = []
                if batch:
                    try:
                        index = index or self.open_index()
                        index.add_events(batch)
                    except Exception:  # noqa: BLE001 - keep them; the next round tries again
                        log.exception("could not record %d access events; retrying", len(batch))
                        with self._cond:
                            self._pending[:0] = batch
                        if index is not None:
                            try:
                                index.close()
                            finally:
                                index = None
                        if stopping:
                            threading.Event().wait(RETRY)
                        else:
                            with self._cond:
                                self._cond.wait(RETRY)
                        continue
                    with self._cond:
                        self._written += len(batch)
                        self._cond.notify_all()
                if stopping and not self._pending:
                    return
        finally:
            if index is not None:
                index.close()
