"""Access events by group commit: a request's answer waits until its event is committed, durably.

Every view and download is an event in the append-only log, and the answer (the file, the case page)
is sent only after that event is committed: a request whose event cannot be written fails (503) instead
of handing out a record unrecorded. Committed one by one (SQLite: an fsync each, under one write lock
shared with every other process) they were slow; so each server process has one writer thread, to
which a request's gates hand their events (:class:`RequestEvents`), and :class:`CommitBeforeAnswer`
holds the answer until they are committed (awaiting on the event loop, no thread held); a caller
without a request waits in :meth:`EventWriter.add`. The writer commits whatever has queued up in one
transaction (one fsync; on SQLite one autocommit INSERT), at once: while it commits, the next requests' events gather for the next
commit, so under load one commit serves many requests and when idle an event waits for one commit,
with no timer. A failed commit fails every request of that batch (:class:`~digitize.errors.StorageError`,
the portal's 503) and the next batch opens the index afresh; a closed writer (a clean shutdown) commits
what is queued first, and afterwards :meth:`EventWriter.add` says so, and the caller writes the event
itself. Durability is the index's: SQLite commits with ``synchronous = FULL`` (the WAL is fsynced at
every commit), so an event whose answer was sent survives a crash and a power loss.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from typing import Callable

from digitize.errors import StorageError
from storage.models import Event

log = logging.getLogger("digitize.web")
WAIT = 30.0  # seconds a request waits for its commit before a 503 (the index's own waits are shorter)


class _Batch:
    """The events of one commit and its outcome, shared by the requests waiting for it. Each batch has
    its own condition (on the writer's one lock): a commit wakes only its own requests, and a new event
    wakes only the writer (one condition for all woke every waiting request thread at every event)."""

    __slots__ = ("events", "done", "error", "cond", "futures")

    def __init__(self, lock: threading.Lock) -> None:
        self.events: list[Event] = []
        self.done = False
        self.error: str | None = None
        self.cond = threading.Condition(lock)
        self.futures: list[tuple[asyncio.AbstractEventLoop, asyncio.Future]] = []  # waiters on event loops

    def outcome(self) -> None:
        if self.error is not None:
            raise StorageError(f"the access event could not be recorded: {self.error}")


class EventWriter:
    def __init__(self, open_index: Callable[[], object], wait: float = WAIT):
        self.open_index = open_index
        self.wait = wait
        self._lock = threading.Lock()
        self._batch = _Batch(self._lock)  # the batch that new events join
        self._cond = threading.Condition(self._lock)  # the writer's: events queued, or closing
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._committing: _Batch | None = None  # the batch the writer has taken and is committing
        self.commits = 0  # commits made (for tests and benchmarks)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="digitize-events", daemon=True)
        self._thread.start()

    def add(self, event: Event) -> bool:
        """Queue ``event`` and wait until it is committed (True); False if the writer is not running (not
        started, or closed): write it yourself. A failed commit, or none within ``wait`` seconds, is a
        StorageError: the caller must not answer as if the access were recorded."""
        batch = self.submit(event)
        if batch is None:
            return False
        with self._cond:
            if not batch.cond.wait_for(lambda: batch.done, self.wait):
                raise StorageError(f"the access event was not committed within {self.wait:g} s")
        batch.outcome()
        return True

    def submit(self, event: Event) -> _Batch | None:
        """Queue ``event`` without waiting: its batch, to :meth:`committed` before answering; None if the
        writer is not running."""
        with self._cond:
            if self._thread is None or self._stopping:
                return None
            batch = self._batch
            batch.events.append(event)
            if len(batch.events) == 1:
                self._cond.notify()
            return batch

    async def committed(self, batch: _Batch) -> None:
        """On an event loop: wait (without holding a thread) until ``batch`` is committed; StorageError if
        its commit failed or took more than ``wait`` seconds."""
        with self._cond:
            if not batch.done:
                future = asyncio.get_running_loop().create_future()
                batch.futures.append((future.get_loop(), future))
            else:
                future = None
        if future is not None:
            try:
                await asyncio.wait_for(future, self.wait)
            except asyncio.TimeoutError:
                raise StorageError(f"the access event was not committed within {self.wait:g} s") from None
        batch.outcome()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every event added so far is committed or failed (True), or ``timeout`` passes (False).
        Each :meth:`add` waits for its own commit already; this is for readers of the log."""
        with self._cond:  # the queued batch, else the one being committed (review dl11 L2: it was skipped)
            batch = self._batch if self._batch.events else self._committing
            if batch is None or batch.done:
                return True
            return batch.cond.wait_for(lambda: batch.done or self._thread is None, timeout)

    def close(self) -> None:
        """Commit what is still queued, then stop (a clean shutdown loses no event); a writer still stuck
        in a commit after ``wait`` seconds (a hung database) is left behind, so the server can stop: the
        requests whose events it held were not answered with their data (they waited for that commit)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(self.wait)
            if self._thread.is_alive():
                log.warning("access events: the writer's commit did not end within %g s; stopping without it",
                            self.wait)
        with self._cond:
            self._thread = None
            self._batch.cond.notify_all()

    def _run(self) -> None:
        index = None
        try:
            while True:
                with self._cond:
                    self._cond.wait_for(lambda: self._batch.events or self._stopping)
                    batch, self._batch = self._batch, _Batch(self._lock)
                    self._committing = batch
                if batch.events:
                    try:
                        index = index or self.open_index()
                        index.add_events(batch.events)
                    except Exception as e:  # noqa: BLE001 - their requests fail; the next batch reopens
                        log.warning("could not record %d access events: %s", len(batch.events), e)
                        batch.error = str(e) or type(e).__name__
                        if index is not None:
                            try:
                                index.close()
                            except Exception:  # noqa: BLE001 - a broken connection may fail to close too
                                pass
                            index = None
                    with self._cond:
                        batch.done = True
                        self.commits += batch.error is None
                        batch.cond.notify_all()
                        waiting, batch.futures = batch.futures, []
                    for loop, future in waiting:
                        with contextlib.suppress(RuntimeError):  # that loop has closed: nobody waits
                            loop.call_soon_threadsafe(_resolve, future)
                with self._cond:
                    if self._stopping and not self._batch.events:
                        return
        finally:
            if index is not None:
                index.close()


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _resolve(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


class RequestEvents:
    """The event sink of one request's gates: events are queued at once (the route's thread and its
    archive are not held while they commit) and :class:`CommitBeforeAnswer` waits for their commit, on
    the event loop, before the answer starts. Once it has started (a streamed download), an event is
    committed and waited for where it happens, before the stream's last piece."""

    def __init__(self, writer: EventWriter):
        self.writer = writer
        self.batches: list[_Batch] = []
        self.started = False

    def add(self, event: Event) -> bool:
        if self.started:
            if _on_event_loop():  # a stream the client left, closed by the garbage collector on the loop:
                return self.writer.submit(event) is not None  # queue it; never block every request on a commit
            return self.writer.add(event)
        batch = self.writer.submit(event)
        if batch is None:
            return False
        if not self.batches or self.batches[-1] is not batch:
            self.batches.append(batch)
        return True

    def flush(self) -> bool:
        return self.writer.flush()

    async def committed(self) -> None:
        while self.batches:
            await self.writer.committed(self.batches.pop(0))


SCOPE_KEY = "digitize.events"


class CommitBeforeAnswer:
    """ASGI middleware: gives each HTTP request a :class:`RequestEvents` (``scope[SCOPE_KEY]``) and holds
    its answer's start until the request's access events are committed. If that commit fails, the answer
    is replaced by ``unavailable(scope)`` (a 503) and the original one (the file, the case) is dropped:
    nothing is handed out unrecorded."""

    def __init__(self, app, writer: Callable[[], EventWriter], unavailable: Callable[[dict], object]):
        self.app = app
        self.writer = writer
        self.unavailable = unavailable

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        events = scope[SCOPE_KEY] = RequestEvents(self.writer())
        replaced = False

        async def send_after_commit(message):
            nonlocal replaced
            if replaced:
                return
            if message["type"] == "http.response.start":
                try:
                    await events.committed()
                except StorageError as e:
                    log.warning("%s %s: %s", scope.get("method"), scope.get("path"), e)
                    replaced = True
                    await self.unavailable(scope)(scope, receive, send)
                    return
                finally:
                    events.started = True
            await send(message)

        await self.app(scope, receive, send_after_commit)
