"""Per-app state shared by the API and the pages: settings, a pool of archives, the upload queue.

An :class:`~storage.archive.Archive` (index connection) is used by one request at a time: request
handlers run in a thread pool, and a connection's transaction state must not be shared between threads.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections import deque
from typing import Iterator

from storage.archive import Archive
from digitize.errors import StorageError

TAKE_TIMEOUT = 10.0  # seconds a request waits for a free archive before a 503
_OPEN = object()  # handed to a waiter in place of an archive: the slot of an open that failed; open one


class Handoff:
    """An archive (with what came with it) taken in a worker thread for a coroutine that awaits it. A
    coroutine cancelled meanwhile (asyncio cancels the await at once; the thread goes on and takes the
    archive) never received it, and the archive was lost to the pool for good: now it goes back,
    whichever of the two ends first."""

    __slots__ = ("pool", "lock", "taken", "gone")

    def __init__(self, pool: "ArchivePool"):
        self.pool, self.lock, self.taken, self.gone = pool, threading.Lock(), None, False

    def run(self, take, *args):
        """In the worker thread: ``take(*args)``, a tuple whose first item is a taken archive."""
        taken = take(*args)
        with self.lock:
            if not self.gone:
                self.taken = taken
                return taken
        self.pool.give(taken[0])
        raise StorageError("the request went away while it waited for an archive")

    def abandon(self) -> None:
        """In the coroutine, when its await ended by an exception (a cancellation)."""
        with self.lock:
            self.gone, taken, self.taken = True, self.taken, None
        if taken is not None:
            self.pool.give(taken[0])


class ArchivePool:
    def __init__(self, settings, size: int = 16):
        self.settings = settings
        self._free: queue.LifoQueue[Archive] = queue.LifoQueue()
        self._all: list[Archive] = []
        self._lock = threading.Lock()
        self._size = size
        self._opening = 0  # archives being opened now (outside the lock)
        # threads blocked in take(), oldest first: give() hands an archive to the oldest directly, so a
        # newcomer never takes one ahead of them (each: its wake-up and the archive handed to it)
        self._waiters: deque[tuple[threading.Event, list[Archive]]] = deque()
        self._closed = False  # close() ran: take() refuses, give() closes
        self.take_timeout = TAKE_TIMEOUT
        # every statement of the portal's index connections is bounded ([web] db_timeout): a stalled
        # database answers 503 after that, rather than holding worker threads (and their archives) for good
        self.wait_timeout = settings.web.db_timeout or None

    @contextlib.contextmanager
    def archive(self) -> Iterator[Archive]:
        archive = self.take()
        try:
            yield archive
        finally:
            self.give(archive)

    def take_nowait(self) -> Archive | None:
        """A free archive at once, or None (then :meth:`take` it in a worker thread: it may open or wait)."""
        try:
            return self._free.get_nowait()
        except queue.Empty:
            return None

    @property
    def _waiting(self) -> int:
        return len(self._waiters)

    def take_if_none_waits(self) -> Archive | None:
        """For the event loop's fast path (web/app.py): a free archive only while no thread is waiting in
        :meth:`take`, else None (take it in a worker thread). The loop would otherwise snatch every archive
        that comes free ahead of requests already waiting: their wait grew to the tail of the latencies."""
        if self._waiting:
            return None
        return self.take_nowait()

    def take(self) -> Archive:
        """A free archive (none while others wait: they go first, in order), else a new one while the
        pool is not full, else the oldest waiter's turn after those before it (bounded: then a 503)."""
        with self._lock:  # a slot is reserved under the lock; the archive is opened outside it (that may wait)
            if self._closed:
                raise StorageError("the portal is stopping")
            archive = None if self._waiters else self.take_nowait()
            if archive is not None:
                return archive
            # a slot to open only while nobody waits (a waiter gets the slot of an open that failed)
            opening = not self._waiters and self._opening + len(self._all) < self._size
            self._opening += opening
            if not opening:
                turn: tuple[threading.Event, list[Archive]] = (threading.Event(), [])
                self._waiters.append(turn)
        if not opening:
            archive = self._wait(turn)
            if archive is not _OPEN:
                return archive
        return self._open()

    def _open(self) -> Archive:
        """Open an archive in the slot reserved for it. One that fails (also in map_for_reads, whose
        archive kept its slot for good) frees the slot: to the oldest waiter, else to anyone."""
        archive = None
        try:
            archive = Archive.open(self.settings, self.wait_timeout)
            if archive.index.dialect == "sqlite":  # long-lived readers: see SqliteIndex.map_for_reads
                archive.index.map_for_reads()
        except BaseException:
            with self._lock:
                self._free_slot()
            if archive is not None:
                archive.close()
            raise
        with self._lock:
            self._opening -= 1
            if not self._closed:
                self._all.append(archive)
                return archive
        archive.close()  # close() ran meanwhile
        raise StorageError("the portal is stopping")

    def _wait(self, turn: tuple[threading.Event, list[Archive]]) -> Archive:
        """Wait for ``turn``: an archive or _OPEN handed to it; bounded (a waiter holds a worker thread,
        and the archives' holders may need threads to finish), then a 503, at once if the pool closed."""
        try:
            turn[0].wait(self.take_timeout)
        except BaseException:  # (review_lows11 L5) what was handed to it would be lost: passed on
            with self._lock:
                if not turn[1]:
                    self._waiters.remove(turn)
                elif turn[1][0] is _OPEN:
                    self._free_slot()
                else:
                    self._give(turn[1][0])
            raise
        with self._lock:
            if turn[1]:  # handed over (also just as the wait timed out)
                return turn[1][0]
            self._waiters.remove(turn)
            if self._closed:
                raise StorageError("the portal is stopping")
        raise StorageError(f"the portal is busy: no archive came free within {self.take_timeout:g} s")

    def _free_slot(self) -> None:
        """Under the lock: an open failed. Its slot goes to the oldest waiter, which opens an archive itself
        (review_lows11 L4: it waited out take_timeout for a slot that was free), else back to the pool."""
        if self._waiters and not self._closed:
            self._hand(_OPEN)
        else:
            self._opening -= 1

    def _hand(self, archive) -> None:
        event, handed = self._waiters.popleft()
        handed.append(archive)
        event.set()

    def give(self, archive: Archive) -> None:
        """To the oldest waiting request, else back to the free ones (so while anyone waits, none is free:
        the event loop's fast path, which takes without the lock, cannot overtake them either). After
        :meth:`close`, closed instead (review_lows11 L6: it went back to the free ones, or to a waiter)."""
        with self._lock:
            if not self._closed:
                self._give(archive)
                return
        archive.close()

    def _give(self, archive: Archive) -> None:
        if self._waiters:
            self._hand(archive)
        else:
            self._free.put(archive)

    def close(self) -> None:
        """Close every archive (those in use too, as before) and stop: waiting requests leave at once (a
        503) rather than at take_timeout, and archives given back later are closed."""
        with self._lock:
            self._closed = True
            for event, _handed in self._waiters:
                event.set()
            archives, self._all = self._all, []
        with contextlib.suppress(queue.Empty):
            while True:
                self._free.get_nowait()
        for archive in archives:
            archive.close()
