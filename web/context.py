"""Per-app state shared by the API and the pages: settings, a pool of archives, the upload queue.

An :class:`~storage.archive.Archive` (index connection) is used by one request at a time: request
handlers run in a thread pool, and a connection's transaction state must not be shared between threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections import deque
from typing import Iterator

from storage.archive import Archive
from digitize.errors import StorageError

TAKE_TIMEOUT = 10.0  # seconds a request waits for a free archive before a 503
# archives (index connections) per server process, opened as needed: above the requests a busy process
# keeps in flight (50 clients on two processes: ~25), so they seldom wait for one (16 made ~55 % of them
# wait, each in a thread-pool hop of its own, for archives held mostly by requests waiting for the GIL),
# and below the thread pool's 40 (anyio's default), so requests waiting in take() cannot hold every thread
POOL_SIZE = 32


class ArchivePool:
    def __init__(self, settings, size: int = POOL_SIZE):
        self.settings = settings
        self._free: queue.LifoQueue[Archive] = queue.LifoQueue()
        self._all: list[Archive] = []
        self._lock = threading.Lock()
        self._size = size
        self._opening = 0  # archives being opened now (outside the lock)
        # threads blocked in take(), oldest first: give() hands an archive to the oldest directly, so a
        # newcomer never takes one ahead of them (each: its wake-up and the archive handed to it)
        # (a request on the event loop waits as a _LoopWaiter: take_waiting)
        self._waiters: deque[tuple[threading.Event | _LoopWaiter, list[Archive]]] = deque()
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

    async def take_waiting(self) -> Archive | None:
        """On the event loop: a free archive (none while others wait: they go first), else, the pool being
        full, wait for one in turn WITHOUT holding a thread (a thread-pool hop per waiting request, and
        threads held by waiters that the archives' holders need to finish); None when the pool may still
        open one (open it in a worker thread: :meth:`take`). Bounded like :meth:`take` (then a 503)."""
        with self._lock:
            archive = None if self._waiters else self.take_nowait()
            if archive is not None or self._opening + len(self._all) < self._size:
                return archive
            loop = asyncio.get_running_loop()
            turn: tuple[_LoopWaiter, list[Archive]] = (_LoopWaiter(loop, loop.create_future()), [])
            self._waiters.append(turn)
        timer = loop.call_later(self.take_timeout, _wake, turn[0].future)
        try:
            await turn[0].future
        except BaseException:  # cancelled (client gone, server stopping): an archive handed over goes back
            with self._lock:
                handed = turn[1][0] if turn[1] else None
                if handed is None:
                    self._waiters.remove(turn)
            if handed is not None:
                self.give(handed)
            raise
        finally:
            timer.cancel()
        with self._lock:
            if turn[1]:  # handed over (also just as the wait timed out)
                return turn[1][0]
            self._waiters.remove(turn)
        raise StorageError(f"the portal is busy: no archive came free within {self.take_timeout:g} s")

    def take(self) -> Archive:
        """A free archive (none while others wait: they go first, in order), else a new one while the
        pool is not full, else the oldest waiter's turn after those before it (bounded: then a 503)."""
        with self._lock:  # a slot is reserved under the lock; the archive is opened outside it (that may wait)
            archive = None if self._waiters else self.take_nowait()
            if archive is not None:
                return archive
            opening = self._opening + len(self._all) < self._size
            self._opening += opening
            if not opening:
                turn: tuple[threading.Event, list[Archive]] = (threading.Event(), [])
                self._waiters.append(turn)
        if opening:
            try:
                archive = Archive.open(self.settings, self.wait_timeout)
                if archive.index.dialect == "sqlite":  # long-lived readers: see SqliteIndex.map_for_reads
                    archive.index.map_for_reads()
            finally:
                with self._lock:
                    self._opening -= 1
                    if archive is not None:
                        self._all.append(archive)
            return archive
        # bounded: a waiter holds a worker thread, and the archives' holders may need threads to finish
        turn[0].wait(self.take_timeout)
        with self._lock:
            if turn[1]:  # handed over (also just as the wait timed out)
                return turn[1][0]
            self._waiters.remove(turn)
        raise StorageError(f"the portal is busy: no archive came free within {self.take_timeout:g} s")

    def give(self, archive: Archive) -> None:
        """To the oldest waiting request, else back to the free ones (so while anyone waits, none is free:
        the event loop's fast path, which takes without the lock, cannot overtake them either)."""
        with self._lock:
            if self._waiters:
                event, handed = self._waiters.popleft()
                handed.append(archive)
                event.set()
            else:
                self._free.put(archive)

    def close(self) -> None:
        with self._lock:
            while self._all:
                self._all.pop().close()


class _LoopWaiter:
    """A request waiting for an archive on its event loop (ArchivePool.take_waiting): ``set`` is what
    ArchivePool.give calls, under the pool's lock, from any thread, as it sets a waiting thread's Event."""

    __slots__ = ("loop", "future")

    def __init__(self, loop: asyncio.AbstractEventLoop, future: asyncio.Future):
        self.loop, self.future = loop, future

    def set(self) -> None:
        with contextlib.suppress(RuntimeError):  # the loop has closed (shutdown): nobody waits there
            self.loop.call_soon_threadsafe(_wake, self.future)


def _wake(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)
