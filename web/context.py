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
from typing import Callable, Iterator

from storage.archive import Archive
from digitize.errors import StorageError

TAKE_TIMEOUT = 10.0  # seconds a request waits for a free archive before a 503
# archives (index connections) per server process, opened as needed: above the requests a busy process
# keeps in flight (50 clients on two processes: ~25), so they seldom wait for one (16 made ~55 % of them
# wait, each in a thread-pool hop of its own, for archives held mostly by requests waiting for the GIL),
# and below the thread pool's 40 (anyio's default), so requests waiting in take() cannot hold every thread
POOL_SIZE = 32
# in place of an archive: a slot reserved for the taker, who opens an archive in it (ArchivePool.open_reserved);
# handed to the oldest waiter when an open failed, returned by take_waiting while the pool is not full
OPEN = object()


class Handoff:
    """An archive (with what came with it) taken in a worker thread for a coroutine that awaits it. A
    coroutine cancelled meanwhile (asyncio cancels the await at once; the thread goes on and takes the
    archive) never received it, and the archive was lost to the pool for good: now it goes back,
    whichever of the two ends first. ``held``: what the coroutine passes to the thread (a reserved slot,
    ``pool.release``; an archive, ``partial(pool.give, it)``), let go by :meth:`abandon` if the thread has
    not begun (anyio then skips the call; once begun, ``take`` gives it back if it fails)."""

    __slots__ = ("pool", "lock", "taken", "gone", "held")

    def __init__(self, pool: "ArchivePool", held: Callable[[], None] | None = None):
        self.pool, self.lock, self.taken, self.gone, self.held = pool, threading.Lock(), None, False, held

    def run(self, take, *args):
        """In the worker thread: ``take(*args)``, a tuple whose first item is a taken archive."""
        if self.held is not None:
            with self.lock:
                if self.gone:  # abandon() let go of what it held
                    raise StorageError("the request went away while it waited for an archive")
                self.held = None  # the thread has it now
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
            self.gone, taken, self.taken, held = True, self.taken, None, self.held  # (run() clears held)
        if held is not None:
            held()
        if taken is not None:
            self.pool.give(taken[0])


class ArchivePool:
    def __init__(self, settings, size: int = POOL_SIZE):
        self.settings = settings
        self._free: queue.LifoQueue[Archive] = queue.LifoQueue()
        self._all: list[Archive] = []
        self._lock = threading.Lock()
        self._size = size
        self._opening = 0  # slots reserved (OPEN): archives being opened now (outside the lock)
        # threads blocked in take(), oldest first: give() hands an archive to the oldest directly, so a
        # newcomer never takes one ahead of them (each: its wake-up and the archive handed to it)
        # (a request on the event loop waits as a _LoopWaiter: take_waiting)
        self._waiters: deque[tuple[threading.Event | _LoopWaiter, list]] = deque()
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
        """A free archive only while no request is waiting (in :meth:`take` or :meth:`take_waiting`), else
        None. (The event loop's fast path before take_waiting: the loop would otherwise snatch every archive
        that comes free ahead of requests already waiting: their wait grew to the tail of the latencies.)"""
        if self._waiting:
            return None
        return self.take_nowait()

    async def take_waiting(self) -> Archive | object:
        """On the event loop: a free archive (none while others wait: they go first), else :data:`OPEN`
        while the pool is not full (a slot reserved for the caller: open it in a worker thread,
        :meth:`open_reserved`, under a ``Handoff(pool, pool.release)``), else wait for one in turn WITHOUT
        holding a thread (a thread-pool hop per waiting request, and threads held by waiters that the
        archives' holders need to finish). Bounded like :meth:`take` (then a 503)."""
        with self._lock:
            taken = self._take_or_queue(_LoopWaiter.here)
        if type(taken) is not tuple:  # an archive, or OPEN
            return taken
        timer = taken[0].loop.call_later(self.take_timeout, _wake, taken[0].future)
        try:
            await taken[0].future
        except BaseException:  # cancelled (client gone, server stopping): what was handed to it goes on
            self._pass_on(taken)
            raise
        finally:
            timer.cancel()
        return self._handed(taken)

    def take(self) -> Archive:
        """A free archive (none while others wait: they go first, in order), else a new one while the
        pool is not full, else the oldest waiter's turn after those before it (bounded: then a 503)."""
        with self._lock:  # a slot is reserved under the lock; the archive is opened outside it (that may wait)
            taken = self._take_or_queue(threading.Event)
        if type(taken) is tuple:
            taken = self._wait(taken)
        return self.open_reserved() if taken is OPEN else taken

    def _take_or_queue(self, waiter):
        """Under the lock: a free archive (none while anyone waits), else :data:`OPEN` (a slot reserved)
        only while nobody waits (a waiter gets the slot of an open that failed), else a turn, queued, that
        ``waiter()`` wakes; StorageError once closed."""
        if self._closed:
            raise StorageError("the portal is stopping")
        if not self._waiters:
            archive = self.take_nowait()
            if archive is not None:
                return archive
            if self._opening + len(self._all) < self._size:
                self._opening += 1
                return OPEN
        turn = (waiter(), [])
        self._waiters.append(turn)
        return turn

    def open_reserved(self) -> Archive:
        """Open an archive in the slot reserved for it (:data:`OPEN`). One that fails (also in
        map_for_reads, whose archive kept its slot for good) frees the slot: to the oldest waiter, else to
        anyone."""
        archive = None
        try:
            archive = Archive.open(self.settings, self.wait_timeout)
            if archive.index.dialect == "sqlite":  # long-lived readers: see SqliteIndex.map_for_reads
                archive.index.map_for_reads()
        except BaseException:
            self.release()
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

    def release(self) -> None:
        """A reserved slot (:data:`OPEN`) that is not opened: its open failed, or its request went away."""
        with self._lock:
            self._free_slot()

    def _wait(self, turn: tuple[threading.Event, list]) -> Archive | object:
        """Wait for ``turn``: an archive or OPEN handed to it; bounded (a waiter holds a worker thread,
        and the archives' holders may need threads to finish), then a 503, at once if the pool closed."""
        try:
            turn[0].wait(self.take_timeout)
        except BaseException:
            self._pass_on(turn)
            raise
        return self._handed(turn)

    def _handed(self, turn: tuple) -> Archive | object:
        """After ``turn``'s wait ended: what was handed to it, else a 503 (at once if the pool closed)."""
        with self._lock:
            if turn[1]:  # handed over (also just as the wait timed out)
                return turn[1][0]
            self._waiters.remove(turn)
            if self._closed:
                raise StorageError("the portal is stopping")
        raise StorageError(f"the portal is busy: no archive came free within {self.take_timeout:g} s")

    def _pass_on(self, turn: tuple) -> None:
        """``turn``'s wait ended by an exception (review_lows11 L5; a cancelled request): its turn is
        removed, or what was handed to it would be lost: passed on (an archive after close(): closed)."""
        with self._lock:
            if not turn[1]:
                self._waiters.remove(turn)
                return
            if turn[1][0] is OPEN:
                self._free_slot()
                return
        self.give(turn[1][0])

    def _free_slot(self) -> None:
        """Under the lock: a reserved slot not opened. It goes to the oldest waiter, which opens an archive
        itself (review_lows11 L4: it waited out take_timeout for a slot that was free), else to the pool."""
        if self._waiters and not self._closed:
            self._hand(OPEN)
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


class _LoopWaiter:
    """A request waiting for an archive on its event loop (ArchivePool.take_waiting): ``set`` is what
    ArchivePool.give calls, under the pool's lock, from any thread, as it sets a waiting thread's Event."""

    __slots__ = ("loop", "future")

    def __init__(self, loop: asyncio.AbstractEventLoop, future: asyncio.Future):
        self.loop, self.future = loop, future

    @classmethod
    def here(cls) -> "_LoopWaiter":
        loop = asyncio.get_running_loop()
        return cls(loop, loop.create_future())

    def set(self) -> None:
        with contextlib.suppress(RuntimeError):  # the loop has closed (shutdown): nobody waits there
            self.loop.call_soon_threadsafe(_wake, self.future)


def _wake(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)
