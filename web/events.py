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
itself (not once its answer has started: its archive went back to the pool, see :class:`RequestEvents`).
Durability is the index's: SQLite commits with ``synchronous = FULL`` (the WAL is fsynced at
every commit), so an event whose answer was sent survives a crash and a power loss.

A stuck writer (a database that does not answer: PostgreSQL with ``db_timeout = 0`` behind a lock, a
stalled disk) is bounded: once its commit (a batch's, or the compensating events') has run longer than ``wait``, or ``MAX_QUEUED`` events wait, or
its thread has died, a new event is refused at once (StorageError, the 503) instead of queued. A request
that gave up waiting (its 503), or was cancelled before its answer started, withdraws its access events
(:meth:`EventWriter.withdraw`; uploads and case records written stay done): one not yet taken by
the writer is dropped; one already sent to the database is followed, once its commit succeeded, by a
compensating event (:func:`storage.access.withheld`: outcome failure), which the writer keeps and tries
again until a commit of it succeeds (or shutdown, which counts those left in one log line). A 503'd
answer also stops the app (the middleware's ``send`` raises): a streamed download reads no more and
records no closing event. A whole download's success event is sent ahead of its read (storage.access
Gate.record_ahead: its commit overlaps the read and the SHA-256 check); a read that then fails its check
records its failure event, and the success is taken back IN THE SAME COMMIT (:meth:`EventWriter.replace`:
dropped if not yet taken, else a compensating event, storage.access.CHECK_FAILED), which the 500 waits
for like every answer; if that commit fails, the request is a 503 and the compensation is kept and tried
again like the others. So a refused access is read as refused, not done, except: until its compensating
event is written; if that never happens before shutdown (logged); on PostgreSQL, a connection lost
during COMMIT that wrote a batch counted as failed; a server process killed (or crashed) between the
commit of a download's success sent ahead and its answer: the read, the check and the way back to the
event loop, where before it was only the way back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from typing import Callable

from digitize.errors import StorageError
from storage.access import CHECK_FAILED, CUT_OFF, WITHHELD, withheld
from storage.models import Event

log = logging.getLogger("digitize.web")
WAIT = 30.0  # seconds a request waits for its commit before a 503 when the index's waits are unbounded
WAIT_FLOOR = 5.0  # the shortest such wait however short [web] db_timeout is (a commit is an fsync under load)
MAX_QUEUED = 10_000  # events waiting for the next commit; beyond it new ones are refused (a stuck writer)
RETRY = (0.5, 30.0)  # first and longest pause before compensating events whose commit failed are tried again


def commit_wait(db_timeout: float) -> float:
    """How long a request waits for its events' commit, from ``[web] db_timeout`` (the bound on each of the
    index's waits): a commit may wait once to open the index afresh and once for the write lock and its
    INSERT, so 2 x db_timeout + 1 s, at least WAIT_FLOOR; a site that bounds its database waits bounds
    this one too. db_timeout 0 (the backends' own, unbounded on PostgreSQL): WAIT."""
    return max(WAIT_FLOOR, 2 * db_timeout + 1.0) if db_timeout > 0 else WAIT


class _Batch:
    """The events of one commit and its outcome, shared by the requests waiting for it. Each batch has
    its own condition (on the writer's one lock): a commit wakes only its own requests, and a new event
    wakes only the writer (one condition for all woke every waiting request thread at every event)."""

    __slots__ = ("events", "done", "error", "cond", "futures", "dropped", "withdrawn", "started", "guards")

    def __init__(self, lock: threading.Lock) -> None:
        self.events: list[Event] = []
        self.done = False
        self.error: str | None = None
        self.cond = threading.Condition(lock)
        self.futures: list[tuple[asyncio.AbstractEventLoop, asyncio.Future]] = []  # waiters on event loops
        self.dropped: set[int] = set()  # id() of events withdrawn before the writer took the batch
        self.withdrawn: list[tuple[Event, str]] = []  # withdrawn while being committed (with the wording
        # of their compensation): compensated if the commit succeeds
        self.started = 0.0  # time.monotonic() when the writer took it
        # id() of compensating events queued with a request's failure (EventWriter.replace), each with the
        # batch of the event it takes back: written only if that batch was (it is done when this one is taken)
        self.guards: dict[int, _Batch] = {}

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
        self._compensating = False  # the writer is in a commit of compensating events (since self._step)
        self._step = 0.0  # time.monotonic() when the writer began its latest commit (a batch, or compensations)
        self.commits = 0  # commits made (for tests and benchmarks)
        self._running = False
        # compensating events (of withdrawn accesses already committed) not yet committed themselves: kept
        # until a commit of them succeeds, tried again after a failure (pause doubling up to RETRY[1])
        self._pending: list[Event] = []
        self._retry_at = 0.0  # time.monotonic() before which they are not tried again
        self._pause = RETRY[0]
        self._pending_failed = False  # their last commit failed: readers do not wait for them
        self._settled = threading.Condition(self._lock)  # a try of the pending ended, or the writer did

    def start(self) -> None:
        self._running = True  # False once _run has ended (cheaper to read per event than Thread.is_alive)
        self._thread = threading.Thread(target=self._run, name="digitize-events", daemon=True)
        self._thread.start()

    def add(self, event: Event, late: str = WITHHELD) -> bool:
        """Queue ``event`` and wait until it is committed (True); False if the writer is not running (not
        started, or closed): write it yourself. A failed commit, or none within ``wait`` seconds of the
        writer taking it (:meth:`_deadline`), is a StorageError: the caller must not answer as if the
        access were recorded (a late commit is then compensated, saying ``late``: storage.access.WITHHELD,
        or CUT_OFF for a stream's closing event)."""
        since = time.monotonic()
        batch = self.submit(event)
        if batch is None:
            return False
        with self._cond:
            while not batch.done:
                left = self._deadline(batch, since) - time.monotonic()
                if left <= 0:
                    self._withdraw(batch, event, late)
                    raise StorageError(f"the access event was not committed within {self.wait:g} s")
                batch.cond.wait(left)
        batch.outcome()
        return True

    def _deadline(self, batch: _Batch, since: float) -> float:
        """When a request waiting since ``since`` for ``batch`` gives up: ``wait`` after the writer took the
        batch; until then, ``wait`` after the later of ``since`` and the start of the writer's current
        commit. Review_lows11 L1: counted from the submit, a request queued behind a commit that failed
        after its own bounded wait got a 503 while its own commit was still within bounds. Still bounded:
        before taking the batch the writer ends the commit it was in (refused if older than ``wait``, see
        :meth:`submit`) and may commit the compensating events once."""
        return (batch.started or max(since, self._step)) + self.wait

    def submit(self, event: Event) -> _Batch | None:
        """Queue ``event`` without waiting: its batch, to :meth:`committed` before answering; None if the
        writer is not running."""
        with self._cond:
            return self._queue([event])

    def _queue(self, events: list[Event]) -> _Batch | None:
        """Under the lock: ``events`` into the batch that gathers (so they are committed together)."""
        if self._thread is None or self._stopping:
            return None
        busy, batch = self._committing, self._batch
        if ((busy is not None and not busy.done and time.monotonic() - busy.started > self.wait)
                or (self._compensating and time.monotonic() - self._step > self.wait)
                or len(batch.events) >= MAX_QUEUED or not self._running):
            self._refuse()
        batch.events.extend(events)
        if len(batch.events) == len(events):
            self._cond.notify()
        return batch

    def replace(self, batch: _Batch, event: Event, failure: Event) -> tuple[_Batch | None, list[Event]]:
        """A download's success ``event``, sent ahead of its read (storage.access.Gate.record_ahead) into
        ``batch``, whose SHA-256 check then failed: ``failure`` (its own event) is queued, and the success is
        taken back in the same commit (review rev2_dl16 L2: compensated in a commit of its own that nothing
        waited for, a crash could leave it recorded as done): dropped if the writer has not taken it, else
        followed by a compensating event (CHECK_FAILED), written only if ``batch``'s commit succeeded, and
        kept for another try if the failure's commit fails. Returns the batch to wait for and the events
        queued; (None, events) if the writer is not running: write them yourself. Never waits."""
        with self._cond:
            guard = None
            if batch is self._batch:  # not taken yet: never written
                batch.dropped.add(id(event))
            elif not (batch.done and batch.error is not None):  # committed, or being committed
                guard = batch
            events = [failure] if guard is None else [withheld(event, CHECK_FAILED), failure]
            queued = self._queue(events)
            if queued is not None and guard is not None:
                queued.guards[id(events[0])] = guard
            return queued, events

    def _refuse(self) -> None:
        """StorageError (a 503 at once, nothing queued): the writer cannot keep up. Its commit (of a batch,
        or of the compensating events, which no request waits for but every new batch queues behind) has run
        for more than ``wait`` (every request queued behind it would time out anyway), the queue is full, or
        its thread died."""
        if not self._running:
            raise StorageError("the access events' writer has stopped")
        if len(self._batch.events) >= MAX_QUEUED:
            raise StorageError(f"{MAX_QUEUED} access events wait for the database; refused at once")
        what = "compensating events' commit" if self._compensating else "access events' commit"
        raise StorageError(f"the {what} has not ended for {self.wait:g} s; refused at once")

    async def committed(self, batch: _Batch) -> None:
        """On an event loop: wait (without holding a thread) until ``batch`` is committed; StorageError if
        its commit failed or took more than ``wait`` seconds (see :meth:`_deadline`).

        The future is awaited directly, its time limit a timer that resolves it (_expire): the request
        resumes one loop turn after the writer's wake-up ran. ``asyncio.wait_for`` put a callback and a
        second future in between, one more turn of a saturated loop (tens of ms at a busy server's p95) for
        every view and download (bench/portal_phases.py: "callback to request resumed"), and about twice
        the CPU."""
        with self._cond:
            if not batch.done:
                loop = asyncio.get_running_loop()
                future = loop.create_future()
                batch.futures.append(entry := (loop, future))
            else:
                future = None
        since = time.monotonic()
        while future is not None:
            left = self._deadline(batch, since) - time.monotonic()  # (its times are read without the lock)
            if left > 0:  # a timer that resolves the future itself: half the CPU of asyncio.wait_for
                timer = entry[0].call_later(left, _expire, future)
                try:
                    if await future is not _EXPIRED:
                        break
                finally:
                    timer.cancel()
            with self._cond:  # expired: the deadline may have moved on (the writer took the batch since)
                with contextlib.suppress(ValueError):
                    batch.futures.remove(entry)
                if batch.done:
                    break
                if self._deadline(batch, since) <= time.monotonic():
                    raise StorageError(f"the access event was not committed within {self.wait:g} s")
                future = entry[0].create_future()
                batch.futures.append(entry := (entry[0], future))
        batch.outcome()

    def withdraw(self, pairs: list[tuple[_Batch, Event]]) -> None:
        """The answer these events stood for was not given (a 503, a cancelled request): drop each one the
        writer has not taken yet; for one already sent to the database, queue a compensating failure event
        once (and only if) its commit succeeds. Never waits (it runs on the event loop)."""
        with self._cond:
            for batch, event in pairs:
                self._withdraw(batch, event)

    def _withdraw(self, batch: _Batch, event: Event, late: str = WITHHELD) -> None:
        if event.event_type != "retrieved":  # only accesses: an upload taken, a case record written, stay done
            return
        if batch is self._batch:  # not taken yet: dropped
            batch.dropped.add(id(event))
        elif not batch.done:  # being committed: compensated once that commit succeeded
            batch.withdrawn.append((event, late))
        elif batch.error is None:  # committed: compensated now
            self._compensate([(event, late)])
        # a failed batch wrote nothing (one all-or-nothing INSERT): nothing to withdraw

    def _compensate(self, withdrawn: list[tuple[Event, str]]) -> None:
        """Under the lock: keep the compensating events of committed accesses until a commit of them
        succeeds (review hard11b M3: one whose commit failed was lost); a stopped writer can only report
        them. Bounded by MAX_QUEUED (each stands for an access committed while its request gave up)."""
        stopped = self._thread is None or not self._running
        lost = len(withdrawn) if stopped else max(0, len(self._pending) + len(withdrawn) - MAX_QUEUED)
        if lost:
            log.warning("access events: %d withdrawn accesses stay recorded as done (%s)", lost,
                        "the writer has stopped" if stopped else f"{MAX_QUEUED} compensating events wait")
        self._pending.extend(withheld(e, late) for e, late in withdrawn[:len(withdrawn) - lost])
        self._cond.notify()

    def _pending_due(self) -> bool:
        return bool(self._pending) and (self._stopping or time.monotonic() >= self._retry_at)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every event added so far is committed or failed, and the compensating events are
        committed or failing (True), or ``timeout`` passes, or the writer is not running (False: a dead
        writer no longer makes each reader wait). Each :meth:`add` waits for its own commit already; this
        is for readers of the log."""
        deadline = time.monotonic() + timeout
        with self._cond:  # the queued batch, else the one being committed (review dl11 L2: it was skipped)
            batch = self._batch if len(self._batch.events) > len(self._batch.dropped) else self._committing
            if batch is not None and not batch.done:
                batch.cond.wait_for(lambda: batch.done or self._thread is None or not self._running, timeout)
            self._settled.wait_for(lambda: not self._pending or self._pending_failed or self._thread is None
                                   or not self._running, max(0.0, deadline - time.monotonic()))
            return (batch is None or batch.done) and (not self._pending or self._pending_failed)

    def close(self) -> None:
        """Commit what is still queued, then stop (a clean shutdown loses no event); a writer still stuck
        in a commit ``wait`` seconds after it began (a hung database) is left behind, so the server can
        stop: the requests whose events it held were not answered with their data (they waited for that
        commit). Bounded: once stopping, the writer makes at most the commit it is in, the queued batch's
        and the compensating events' (one try each)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            # each commit the stopping writer makes may take ``wait``: a batch queued behind a slow commit
            # was given up at ``wait`` after close() began, while it was being committed
            since = time.monotonic()
            while self._thread.is_alive():
                left = max(since, self._step) + self.wait - time.monotonic()
                if left <= 0:
                    break
                self._thread.join(left)
            if self._thread.is_alive():
                with self._cond:
                    busy = self._committing
                    lost = len(self._batch.events) - len(self._batch.dropped)
                    lost += len(busy.events) if busy is not None and not busy.done else 0
                log.warning("access events: the writer's commit did not end within %g s; stopping without it: "
                            "%d access events not recorded (their requests were answered 503 or not at all)",
                            self.wait, lost)
        with self._cond:
            self._thread = None
            self._batch.cond.notify_all()
            self._settled.notify_all()
            unwritten = len(self._pending)
        if unwritten:
            log.warning("access events: %d compensating events not written (their withdrawn accesses stay "
                        "recorded as done)", unwritten)

    def _run(self) -> None:
        index = None
        try:
            while True:
                with self._cond:
                    while not (self._batch.events or self._stopping or self._pending_due()):
                        self._cond.wait(self._retry_at - time.monotonic() if self._pending else None)
                    batch, self._batch = self._batch, _Batch(self._lock)
                    self._committing = batch
                    batch.started = self._step = time.monotonic()
                    if batch.dropped or batch.guards:  # withdrawn by requests that gave up waiting, and
                        # compensations of events whose own commit failed: never written
                        batch.events = [e for e in batch.events if id(e) not in batch.dropped
                                        and batch.guards.get(id(e), batch).error is None]
                if batch.events:
                    try:
                        index = index or self.open_index()
                        index.add_events(batch.events)
                    except Exception as e:  # noqa: BLE001 - their requests fail; the next batch reopens
                        log.warning("could not record %d access events: %s", len(batch.events), e)
                        batch.error = str(e) or type(e).__name__
                        index = _discard(index)
                with self._cond:
                    batch.done = True
                    self.commits += batch.error is None and bool(batch.events)
                    if batch.withdrawn and batch.error is None:
                        self._compensate(batch.withdrawn)
                    if batch.guards and batch.error is not None:  # its request is a 503; they stay true
                        self._pending.extend(e for e in batch.events if id(e) in batch.guards)
                    batch.cond.notify_all()
                    waiting, batch.futures = batch.futures, []
                _resolve_all(waiting)
                index = self._commit_pending(index)
                with self._cond:
                    if self._stopping and not self._batch.events and (not self._pending or self._pending_failed):
                        self._running = False  # under the lock: a later withdraw reports, not queues
                        return
        finally:
            self._stopped()
            if index is not None:
                index.close()

    def _commit_pending(self, index):
        """The compensating events, in a commit of their own (no request waits for it; one that fails
        never fails a request's batch), if due; kept for another try if it fails. Returns the index."""
        with self._cond:
            pending = self._pending[:] if self._pending_due() else []
            if pending:
                self._step = time.monotonic()
                self._compensating = True  # a hung one makes submit() refuse at once, as a hung batch does
        if not pending:
            return index
        try:
            index = index or self.open_index()
            index.add_events(pending)
        except Exception as e:  # noqa: BLE001 - tried again later (and at shutdown)
            with self._cond:
                self._compensating = False
                log.warning("could not record %d compensating access events (tried again in %g s): %s",
                            len(pending), self._pause, e)
                self._retry_at = time.monotonic() + self._pause
                self._pause = min(self._pause * 2, RETRY[1])
                self._pending_failed = True
                self._settled.notify_all()
            return _discard(index)
        with self._cond:
            self._compensating = False
            del self._pending[:len(pending)]  # only appended to meanwhile
            self._retry_at, self._pause, self._pending_failed = 0.0, RETRY[0], False
            self.commits += 1
            self._settled.notify_all()
        return index

    def _stopped(self) -> None:
        """The thread ends (closed, or died): the requests still waiting fail at once, readers stop waiting."""
        waiting = []
        with self._cond:
            self._running = False
            for batch in (self._committing, self._batch):
                if batch is not None and not batch.done:
                    batch.error = batch.error or "the access events' writer has stopped"
                    batch.done = True
                    batch.cond.notify_all()
                    waiting, batch.futures = waiting + batch.futures, []
            self._settled.notify_all()
        _resolve_all(waiting)


def _discard(index):
    """Close a failed connection (which may fail to close too): the next commit opens the index afresh."""
    if index is not None:
        with contextlib.suppress(Exception):
            index.close()
    return None


def _resolve_all(waiting: list[tuple[asyncio.AbstractEventLoop, asyncio.Future]]) -> None:
    for loop, future in waiting:
        with contextlib.suppress(RuntimeError):  # that loop has closed: nobody waits
            loop.call_soon_threadsafe(_resolve, future)


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _resolve(future: asyncio.Future) -> None:
    """On the future's loop: the commit ended (the batch holds its outcome)."""
    if not future.done():
        future.set_result(None)


_EXPIRED = object()  # a future's result when its wait's timer resolved it, not the writer


def _expire(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(_EXPIRED)


class RequestEvents:
    """The event sink of one request's gates: events are queued at once (the route's thread and its
    archive are not held while they commit) and :class:`CommitBeforeAnswer` waits for their commit, on
    the event loop, before the answer starts. Once it has started (a streamed download), an event is
    committed and waited for where it happens, before the stream's last piece."""

    def __init__(self, writer: EventWriter):
        self.writer = writer
        self.batches: list[_Batch] = []
        self.queued: list[tuple[_Batch, Event]] = []  # every event queued before the answer, to withdraw
        self.started = False
        self.withheld = False  # its answer was replaced by a 503: later accesses were not given either

    def add(self, event: Event) -> bool:
        if self.withheld and event.event_type == "retrieved":
            return True  # dropped, not written by the caller: nothing was sent
        if self.started:  # its archive went back to the pool with the answer: the caller must not write the
            # event itself through it (another request's connection by then, or a closed one)
            if _on_event_loop():  # a stream the client left, closed by the garbage collector on the loop:
                try:  # queue it; never block every request on a commit
                    if self.writer.submit(event) is None:
                        raise StorageError("the access events' writer has stopped")
                except StorageError as e:
                    log.warning("access event of a closed stream not recorded: %s", e)
                return True  # queued, or not written on the loop either
            if not self.writer.add(event, CUT_OFF):  # every piece but the held last one was sent
                raise StorageError("the access events' writer has stopped")  # so the last one is not
            return True
        try:
            batch = self.writer.submit(event)
        except StorageError:  # a stuck writer: this request is refused, so are its earlier events
            self.withdraw()
            raise
        if batch is None:
            return False
        self.queued.append((batch, event))
        if not self.batches or self.batches[-1] is not batch:
            self.batches.append(batch)
        return True

    def flush(self) -> bool:
        return self.writer.flush()

    async def committed(self) -> None:
        while self.batches:
            await self.writer.committed(self.batches.pop(0))

    def take_back(self, event: Event, failure: Event) -> list[Event]:
        """A success sent ahead of its access (Gate.record_ahead: a download's, before its read and check)
        whose access then failed: ``failure`` recorded, the success taken back in the same commit
        (:meth:`EventWriter.replace`), which the answer (the 500) waits for; the request's other events
        stay. Returns the events the caller must write itself (the writer is not running)."""
        pairs = [pair for pair in self.queued if pair[1] is event]
        if not pairs:  # not queued (a withheld request's): the failure as any other event
            return [] if self.add(failure) else [failure]
        try:
            batch, events = self.writer.replace(pairs[0][0], event, failure)
        except StorageError:  # a stuck writer: this request is refused (a 503), so are its earlier events
            self.withdraw()
            raise
        self.queued = [pair for pair in self.queued if pair[1] is not event]
        if batch is None:
            return events
        self.queued.append((batch, failure))  # the compensation is not withdrawn with the request: it stays
        if not self.batches or self.batches[-1] is not batch:
            self.batches.append(batch)
        return []

    def withdraw(self) -> None:
        """The answer is not given (a 503): none of this request's events may stay recorded as done."""
        queued, self.queued, self.batches = self.queued, [], []
        if queued:
            self.writer.withdraw(queued)


SCOPE_KEY = "digitize.events"


class _Withheld(Exception):
    """Raised by the middleware's ``send`` once a 503 has replaced the answer: the app stops there (a
    streamed download reads no more of the object, and records no closing event) instead of producing an
    answer nobody gets; :class:`CommitBeforeAnswer` swallows it."""


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

        async def send_after_commit(message):
            if events.withheld:
                raise _Withheld
            if message["type"] == "http.response.start":
                try:
                    await events.committed()
                except StorageError as e:
                    log.warning("%s %s: %s", scope.get("method"), scope.get("path"), e)
                    events.withdraw()  # a late commit must not record this refused answer's accesses as done
                    events.withheld = True
                    await self.unavailable(scope)(scope, receive, send)
                    raise _Withheld from None
                except asyncio.CancelledError:  # cancelled (client gone, server stopping) before its answer
                    events.withdraw()
                    raise
                finally:
                    events.started = True
            await send(message)

        with contextlib.suppress(_Withheld):  # the 503 is sent: the app was stopped on purpose
            await self.app(scope, receive, send_after_commit)
