"""The portal's archive pool: a request waits a bounded time for an archive, then gets a 503."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from digitize.config import Settings
from digitize.errors import StorageError
from web.context import OPEN, ArchivePool


def test_a_request_waits_a_bounded_time_for_an_archive(tmp_path):
    """With every archive held, an endless wait would hold a worker thread for good; the threads all
    waiting, the holders could never finish (the portal hangs)."""
    pool = ArchivePool(Settings(data_dir=str(tmp_path / "data")), size=1)
    pool.take_timeout = 0.2
    held = pool.take()
    outcome: list[object] = []

    def second() -> None:
        try:
            outcome.append(pool.take())
        except StorageError as e:
            outcome.append(e)

    waiter = threading.Thread(target=second, daemon=True)
    waiter.start()
    waiter.join(5)
    assert not waiter.is_alive(), "take() waited without a bound"
    assert isinstance(outcome[0], StorageError) and "busy" in str(outcome[0])
    pool.give(held)
    assert pool.take() is held
    pool.close()


def test_an_archive_being_opened_holds_up_no_other_request(tmp_path, monkeypatch):
    """Archive.open ran under the pool's lock: one open waiting on the index (a cold pool while a batch
    writes) made every other request wait for that lock, without a bound."""
    from types import SimpleNamespace

    from storage.archive import Archive
    from web import context

    entered, release = threading.Event(), threading.Event()

    def open_archive(settings, wait_timeout=None):
        if not entered.is_set():
            entered.set()
            assert release.wait(30)
        return Archive.open(settings, wait_timeout)

    monkeypatch.setattr(context, "Archive", SimpleNamespace(open=open_archive))
    pool = ArchivePool(Settings(data_dir=str(tmp_path / "data")), size=2)
    first = threading.Thread(target=pool.take, daemon=True)
    first.start()
    assert entered.wait(10)
    taken: list = []
    second = threading.Thread(target=lambda: taken.append(pool.take()), daemon=True)
    second.start()
    second.join(10)
    release.set()
    first.join(30)
    try:
        assert taken, "a request waited for another request's archive to open"
    finally:
        second.join(30)
        pool.close()


def test_the_pool_opens_no_more_archives_than_its_size(tmp_path):
    pool = ArchivePool(Settings(data_dir=str(tmp_path / "data")), size=2)
    pool.take_timeout = 0.2
    held = [pool.take(), pool.take()]
    with pytest.raises(StorageError, match="busy"):
        pool.take()
    for archive in held:
        pool.give(archive)
    pool.close()


def test_the_pools_sqlite_connections_read_through_a_memory_map(tmp_path):
    """Searches probe scattered rows of a large index: the pool's long-lived connections map the file."""
    from storage.index_sqlite import READ_MMAP_BYTES

    pool = ArchivePool(Settings(data_dir=str(tmp_path / "data")), size=1)
    archive = pool.take()
    try:
        mapped = archive.index.conn.execute("PRAGMA mmap_size").fetchone()[0]
        assert 0 < mapped <= READ_MMAP_BYTES
        assert archive.index.search_page("dat", lambda row: True).hits == []  # and it still reads
    finally:
        pool.give(archive)
        pool.close()


def test_the_event_loops_fast_path_never_takes_an_archive_ahead_of_a_waiting_request(tmp_path):
    """web/app.py takes a free archive on the event loop only while no worker thread waits for one: the
    loop, answering every new request, would otherwise win each archive that comes free."""
    pool = ArchivePool(Settings(data_dir=str(tmp_path / "data")), size=1)
    held = pool.take()
    assert pool.take_if_none_waits() is None  # none free
    got: list[object] = []
    waiter = threading.Thread(target=lambda: got.append(pool.take()), daemon=True)
    waiter.start()
    for _ in range(500):  # until the waiter is blocked in take()
        if pool._waiting:
            break
        time.sleep(0.01)
    assert pool._waiting == 1
    pool.give(held)  # the waiter's: the loop's fast path must not take it meanwhile
    assert pool.take_if_none_waits() is None  # the waiter has it already, or it still waits for it
    waiter.join(5)
    assert got == [held]
    pool.give(held)
    assert pool.take_if_none_waits() is held  # nobody waits: the fast path takes it
    pool.close()


def test_a_worker_thread_never_takes_an_archive_ahead_of_a_waiting_request(tmp_path):
    """Review perf11c L2: a new request in a worker thread (every page, every token-cache miss) took an
    archive that came free ahead of a request already waiting for one; now give() hands it to the
    oldest waiter, and the others wait their turn in order."""
    pool = ArchivePool(Settings(data_dir=str(tmp_path / "data")), size=1)
    held = pool.take()
    got: list[tuple[str, object]] = []

    def wait(name: str) -> threading.Thread:
        def take() -> None:
            try:
                got.append((name, pool.take()))
            except StorageError as e:
                got.append((name, e))

        thread = threading.Thread(target=take, daemon=True)
        before = pool._waiting
        thread.start()
        for _ in range(500):  # until it is blocked in take()
            if pool._waiting > before:
                break
            time.sleep(0.01)
        assert pool._waiting == before + 1
        return thread

    first, second = wait("first"), wait("second")
    pool.take_timeout = 0.2
    pool.give(held)
    with pytest.raises(StorageError, match="busy"):  # the newcomer: the waiters' archive is not free
        pool.take()
    first.join(5)
    assert got == [("first", held)]  # the oldest waiter got it
    pool.give(held)
    second.join(5)
    assert got[1] == ("second", held) and pool._waiting == 0
    pool.give(held)
    assert pool.take() is held  # nobody waits: taken at once
    pool.give(held)
    pool.close()


def test_a_waiter_that_timed_out_leaves_its_turn():
    """A request that gave up (503) is not handed an archive later: it would be lost to the pool."""
    pool = ArchivePool(Settings(data_dir="/nonexistent"), size=0)
    pool.take_timeout = 0.05
    with pytest.raises(StorageError, match="busy"):
        pool.take()
    assert pool._waiting == 0
    archive = object()
    pool.give(archive)
    assert pool.take_nowait() is archive


def test_the_fast_paths_archive_goes_back_when_its_gate_fails():
    """Review perf11c L1: the event loop's fast path took its archive before the try that gives it back,
    so a gate that raised lost the archive for good (a pool's worth of such failures: "busy" for ever)."""
    import asyncio
    from types import SimpleNamespace

    from web.app import _gate

    class FailingArchive:
        def gate(self, principal, client):
            raise RuntimeError("gate failed")

    archive = FailingArchive()
    given: list[object] = []
    async def take_waiting():
        return archive

    pool = SimpleNamespace(take_waiting=take_waiting, give=given.append)
    request = SimpleNamespace(app=SimpleNamespace(state=SimpleNamespace(pool=pool)),
                              client=SimpleNamespace(host="127.0.0.1"))

    async def enter() -> None:
        async with _gate(request, principal_of=None, cached=lambda: object()):
            pass

    with pytest.raises(RuntimeError):
        asyncio.run(enter())
    assert given == [archive]


def _catch(call, into: list) -> None:
    try:
        into.append(call())
    except StorageError as e:
        into.append(e)


def _blocked_in_take(pool: ArchivePool, got: list, waiting: int = 1) -> threading.Thread:
    """A thread in pool.take(), once it waits its turn; ``got`` receives the archive or the error."""
    thread = threading.Thread(target=_catch, args=(pool.take, got), daemon=True)
    thread.start()
    for _ in range(500):
        if pool._waiting >= waiting:
            break
        time.sleep(0.01)
    assert pool._waiting == waiting
    return thread


def _first_open_fails(tmp_path, monkeypatch):
    """A pool of one whose first open, in a thread now opening (its error into ``failed``), fails once
    ``release`` is set; later opens succeed."""
    from types import SimpleNamespace

    from storage.archive import Archive
    from web import context

    release, opened = threading.Event(), []

    def open_archive(settings, wait_timeout=None):
        opened.append(threading.current_thread().name)
        if len(opened) == 1:
            assert release.wait(30)
            raise StorageError("the index is not there yet")
        return Archive.open(settings, wait_timeout)

    monkeypatch.setattr(context, "Archive", SimpleNamespace(open=open_archive))
    pool = ArchivePool(Settings(data_dir=str(tmp_path / "data")), size=1)
    pool.take_timeout = 30
    failed: list = []
    first = threading.Thread(target=lambda: _catch(pool.take, failed), daemon=True)
    first.start()
    for _ in range(500):
        if opened:
            break
        time.sleep(0.01)
    return pool, release, opened, failed, first


def test_a_slot_whose_open_failed_goes_to_the_waiting_request(tmp_path, monkeypatch):
    """Review_lows11 L4: with size 1, A opens and B waits; A's open failed, and B waited out take_timeout
    (a 503) although the pool was empty, while a newcomer could open ahead of B."""
    pool, release, opened, failed, first = _first_open_fails(tmp_path, monkeypatch)
    got: list = []
    second = _blocked_in_take(pool, got)
    release.set()
    second.join(10)
    first.join(10)
    assert isinstance(failed[0], StorageError) and "not there" in str(failed[0])
    assert len(got) == 1 and not isinstance(got[0], Exception), "the waiter waited for a slot that was free"
    assert len(opened) == 2 and pool._opening == 0 and pool._all == [got[0]]
    pool.give(got[0])
    assert pool.take_nowait() is got[0]
    pool.close()


def test_an_archive_that_fails_its_memory_map_is_closed_and_frees_its_slot(tmp_path, monkeypatch):
    """Its open succeeded, map_for_reads raised: the archive stayed counted in the pool and never came
    back, so one such failure per slot left the portal answering "busy" for ever."""
    from types import SimpleNamespace

    from storage.archive import Archive
    from web import context

    opened = []

    def open_archive(settings, wait_timeout=None):
        archive = Archive.open(settings, wait_timeout)
        opened.append(archive)
        if len(opened) == 1:
            def fail():
                raise OSError("no memory map")
            archive.index.map_for_reads = fail
        return archive

    monkeypatch.setattr(context, "Archive", SimpleNamespace(open=open_archive))
    pool = ArchivePool(Settings(data_dir=str(tmp_path / "data")), size=1)
    pool.take_timeout = 0.2
    with pytest.raises(OSError):
        pool.take()
    archive = pool.take()  # the slot is free again
    assert archive is opened[1] and pool._all == [archive]
    with pytest.raises(Exception):
        opened[0].index.conn.execute("SELECT 1")  # the failed one was closed
    pool.give(archive)
    pool.close()


class _Interrupted(BaseException):
    pass


@pytest.mark.parametrize("handed,closed", [(False, False), (True, False), (True, True)])
def test_a_waiter_interrupted_in_its_wait_loses_no_archive(tmp_path, monkeypatch, handed, closed):
    """Review_lows11 L5: a waiter that left its wait by an exception kept its turn; the next give() handed
    that turn an archive nobody gave back (also one handed over just as the exception came). Review_pool15
    L5: one handed over, then close(), then the exception: the closed archive went back to the free ones."""
    from types import SimpleNamespace

    from web import context

    pool = ArchivePool(Settings(data_dir=str(tmp_path / "data")), size=1)
    held = pool.take()

    class InterruptedEvent:
        def set(self) -> None:
            pass

        def wait(self, timeout=None):
            if handed:
                pool.give(held)  # to this waiter, the only one
            if closed:
                pool.close()
            raise _Interrupted

    monkeypatch.setattr(context, "threading", SimpleNamespace(Event=InterruptedEvent))
    with pytest.raises(_Interrupted):
        pool.take()
    monkeypatch.undo()
    assert pool._waiting == 0
    if closed:
        assert pool.take_nowait() is None  # not handed out again, closed
        with pytest.raises(Exception):
            held.index.conn.execute("SELECT 1")
        return
    if not handed:
        pool.give(held)
    pool.take_timeout = 0.2
    assert pool.take() is held  # not lost to the interrupted turn
    pool.give(held)
    pool.close()


def test_close_wakes_the_waiters_and_closes_archives_given_back_later(tmp_path):
    """Review_lows11 L6: a waiter slept on through shutdown until take_timeout, and an archive given back
    after close() went back to the free ones (or to a waiter): a closed archive handed out again."""
    pool = ArchivePool(Settings(data_dir=str(tmp_path / "data")), size=1)
    pool.take_timeout = 30
    held = pool.take()
    got: list = []
    waiter = _blocked_in_take(pool, got)
    pool.close()
    waiter.join(10)
    assert not waiter.is_alive(), "a waiter slept through close()"
    assert isinstance(got[0], StorageError) and "stopping" in str(got[0]) and pool._waiting == 0
    pool.give(held)
    assert pool.take_nowait() is None  # not kept, closed
    with pytest.raises(Exception):
        held.index.conn.execute("SELECT 1")
    with pytest.raises(StorageError, match="stopping"):
        pool.take()  # no archive opened after close()


def test_a_request_cancelled_while_its_thread_takes_an_archive_gives_it_back():
    """Found on re-reading the pool: asyncio cancels a request's await of its worker thread at once, and
    the thread goes on and takes an archive (waited for, or opened) that nobody received: lost for good."""
    from types import SimpleNamespace

    waiting, release, given = threading.Event(), threading.Event(), []

    class Gated:
        index = None

        def gate(self, principal, client):
            return "gate"

    taken = Gated()

    def take():
        waiting.set()
        assert release.wait(30)
        return taken

    async def take_waiting():
        return OPEN  # a slot reserved: opened in the request's thread

    pool = SimpleNamespace(take_waiting=take_waiting, open_reserved=take, give=given.append, release=None)
    _cancel_in_its_hop(pool, lambda index: "principal", waiting, release, given)
    assert given == [taken]


def _cancel_in_its_hop(pool, principal_of, busy: threading.Event, release: threading.Event, given: list) -> None:
    """A request through web.app._gate cancelled once its hop is ``busy`` (nothing given back while the
    hop goes on), then the hop ``release``d: returns when ``given`` has something or after 5 s."""
    import asyncio
    from types import SimpleNamespace

    from web.app import _gate

    request = SimpleNamespace(app=SimpleNamespace(state=SimpleNamespace(pool=pool)),
                              client=SimpleNamespace(host="127.0.0.1"), scope={}, headers={})

    async def enter() -> None:
        async with _gate(request, principal_of):
            pass

    async def cancelled() -> None:
        task = asyncio.ensure_future(enter())
        while not busy.is_set():
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert given == [], "given back while its hop still used it"
        release.set()
        for _ in range(500):  # the thread ends after the request did
            if given:
                break
            await asyncio.sleep(0.01)

    asyncio.run(cancelled())


def test_a_handoff_gives_the_archive_back_whichever_side_ends_first():
    from types import SimpleNamespace

    from web.context import Handoff

    given: list = []
    pool = SimpleNamespace(give=given.append)
    first = Handoff(pool)  # the thread ended first, the coroutine never received its result
    assert first.run(lambda: ("archive 1", "gate")) == ("archive 1", "gate")
    first.abandon()
    second = Handoff(pool)  # the coroutine was cancelled first
    second.abandon()
    with pytest.raises(StorageError, match="went away"):
        second.run(lambda: ("archive 2", "gate"))
    assert given == ["archive 1", "archive 2"]
    third = Handoff(pool)  # the thread failed: nothing to give
    with pytest.raises(StorageError, match="busy"):
        third.run(lambda: (_ for _ in ()).throw(StorageError("busy")))
    third.abandon()
    assert given == ["archive 1", "archive 2"]


def test_a_request_on_the_event_loop_waits_for_an_archive_in_turn_without_a_thread(tmp_path):
    """A full pool: requests on the event loop wait there (no worker thread held) and get freed archives
    in arrival order, a thread waiting in take() before them included; one that gives up (cancelled) or
    waits too long leaves its turn, and an archive handed to a request cancelled meanwhile goes back."""
    import asyncio

    pool = ArchivePool(Settings(data_dir=str(tmp_path / "data")), size=2)
    first, second = pool.take(), pool.take()

    async def scenario():
        threads_before = set(threading.enumerate())  # another test's threads may end meanwhile: only new ones count
        a = asyncio.ensure_future(pool.take_waiting())
        b = asyncio.ensure_future(pool.take_waiting())
        cancelled = asyncio.ensure_future(pool.take_waiting())
        await asyncio.sleep(0.01)
        assert not (a.done() or b.done()) and pool._waiting == 3
        assert set(threading.enumerate()) <= threads_before  # nobody waits in a thread
        cancelled.cancel()
        await asyncio.sleep(0.01)
        assert pool._waiting == 2
        pool.give(first)
        assert await asyncio.wait_for(a, 5) is first and not b.done()
        pool.give(second)
        assert await asyncio.wait_for(b, 5) is second
        # handed over to a request cancelled before it resumed: back in the pool, not lost
        c = asyncio.ensure_future(pool.take_waiting())
        await asyncio.sleep(0.01)
        pool.give(first)
        c.cancel()
        await asyncio.sleep(0.01)
        assert pool.take_nowait() is first
        pool.take_timeout = 0.05
        with pytest.raises(StorageError, match="busy"):
            await pool.take_waiting()
        assert pool._waiting == 0

    pool.take_timeout = 10
    asyncio.run(scenario())
    pool.close()


def test_a_request_cancelled_while_its_thread_uses_its_archive_gives_it_back_once_the_thread_is_done():
    """Found merging dl15 into pool15: an archive taken on the event loop, the principal looked up with it
    in a worker thread (no cached token): a cancelled request gave the archive back at once while its
    thread still queried through it, so the next request shared that index connection with it."""
    from types import SimpleNamespace

    looking, release, given = threading.Event(), threading.Event(), []
    archive = SimpleNamespace(index="index", gate=lambda principal, client: "gate")

    def principal_of(index):
        looking.set()
        assert release.wait(30)
        return "principal"

    async def take_waiting():
        return archive

    pool = SimpleNamespace(take_waiting=take_waiting, give=given.append)
    _cancel_in_its_hop(pool, principal_of, looking, release, given)
    assert given == [archive]


def test_a_handoff_abandoned_before_its_thread_began_lets_go_of_what_it_held():
    """anyio skips a worker thread's call whose request was cancelled before it began: the slot reserved
    for it (or the archive passed to it) is let go by the request, and the thread, if it runs, takes none."""
    from types import SimpleNamespace

    from web.context import Handoff

    released, taken = [], []
    handoff = Handoff(SimpleNamespace(give=taken.append), lambda: released.append("slot"))
    handoff.abandon()
    assert released == ["slot"]
    with pytest.raises(StorageError, match="went away"):
        handoff.run(lambda: taken.append("opened") or ("archive", "gate"))
    assert taken == [] and released == ["slot"]
    began = Handoff(SimpleNamespace(give=taken.append), lambda: released.append("again"))
    assert began.run(lambda: ("archive", "gate")) == ("archive", "gate")
    began.abandon()  # the thread had it: the archive goes back, the slot is not let go twice
    assert taken == ["archive"] and released == ["slot"]


def test_a_request_waiting_on_the_loop_gets_the_slot_of_an_open_that_failed(tmp_path, monkeypatch):
    """Review_lows11 L4 for the event loop's waiters (dl15's take_waiting): size 1, a thread opens, a
    request waits on the loop; the open fails: the request gets its slot (OPEN, it opens one), not a 503
    after take_timeout, and a newcomer does not open ahead of it."""
    import asyncio

    pool, release, opened, failed, first = _first_open_fails(tmp_path, monkeypatch)

    async def scenario():
        waiting = asyncio.ensure_future(pool.take_waiting())
        await asyncio.sleep(0.01)
        assert pool._waiting == 1 and not waiting.done()
        release.set()
        assert await asyncio.wait_for(waiting, 10) is OPEN
        assert pool._waiting == 0 and pool._opening == 1  # its slot, reserved for it
        return await asyncio.to_thread(pool.open_reserved)

    archive = asyncio.run(scenario())
    first.join(10)
    assert isinstance(failed[0], StorageError) and pool._all == [archive] and pool._opening == 0
    pool.give(archive)
    pool.close()


def test_close_wakes_the_requests_waiting_on_the_loop(tmp_path):
    """pool15's close() (review_lows11 L6) for dl15's waiters on the event loop: they leave at once with a
    503, not after take_timeout, and take_waiting refuses afterwards."""
    import asyncio

    pool = ArchivePool(Settings(data_dir=str(tmp_path / "data")), size=1)
    pool.take_timeout = 30
    held = pool.take()

    async def scenario():
        waiting = asyncio.ensure_future(pool.take_waiting())
        await asyncio.sleep(0.01)
        assert pool._waiting == 1
        pool.close()
        with pytest.raises(StorageError, match="stopping"):
            await asyncio.wait_for(waiting, 5)
        assert pool._waiting == 0
        with pytest.raises(StorageError, match="stopping"):
            await pool.take_waiting()

    asyncio.run(scenario())
    pool.give(held)  # closed, not kept
    assert pool.take_nowait() is None


def test_a_request_cancelled_while_its_route_thread_uses_the_archive_keeps_it_until_the_thread_is_done(
        tmp_path, monkeypatch):
    """The merged pool's review (open item): a request task cancelled (Task.cancel: a server that cancels
    the requests of clients that left) while its route's worker thread still queried through its archive
    gave the archive back at once, so the next request could take that index connection while the thread
    used it. A real app and route (the API's case record, its thread held inside Gate.case); a pool of one
    archive: while the cancelled request's thread is inside the archive, nobody else may take it."""
    import asyncio

    from storage import access
    from storage.access import Gate
    from storage.archive import Archive
    from web.app import create_app

    settings = Settings(data_dir=str(tmp_path / "data"))
    with Archive.open(settings) as archive:
        secret = access.create_token(archive.index, "onestop", "officer", ["000.00.31.H56"])
    app = create_app(settings)
    pool = app.state.pool
    pool._size = 1
    inside, release, ended = threading.Event(), threading.Event(), threading.Event()
    real_case = Gate.case

    def held_case(gate, case_id):
        inside.set()
        try:
            assert release.wait(30)
            return real_case(gate, case_id)
        finally:
            ended.set()

    monkeypatch.setattr(Gate, "case", held_case)
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": "/api/v1/cases/000.00.31.H56-241015-0027", "raw_path": b"", "query_string": b"",
             "root_path": "", "server": ("127.0.0.1", 80), "client": ("127.0.0.1", 5000),
             "headers": [(b"authorization", f"Bearer {secret}".encode()), (b"host", b"127.0.0.1")]}

    async def receive():
        await asyncio.sleep(3600)  # (the request has no body; the client then leaves)

    async def send(message):
        pass

    async def scenario():
        request = asyncio.ensure_future(app(dict(scope), receive, send))
        while not inside.is_set():
            await asyncio.sleep(0.01)
        request.cancel()  # the client left: its route's thread is inside the archive
        await asyncio.sleep(0.2)
        assert not ended.is_set()
        assert pool.take_nowait() is None, "the archive went back to the pool while its thread still used it"
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await request
        assert ended.is_set()  # the request ended after its thread did
        assert pool.take_nowait() is not None  # and its archive came back then

    try:
        asyncio.run(scenario())
    finally:
        release.set()
        ended.wait(30)  # the route's thread out of SQLite first: closing its connection under it crashed
        pool.close()  # the interpreter instead of failing the test (review web16 L5)


def test_a_cancelled_request_whose_route_then_fails_is_logged_in_one_line(caplog):
    """Review web16 L6: on the cancel path the child's exception was never retrieved, so asyncio logged
    "Task exception was never retrieved" with a full traceback when the task was collected."""
    import asyncio
    import gc

    import anyio

    from web.app import ThreadsFinishFirst

    inside, release = threading.Event(), threading.Event()

    async def route(scope, receive, send):
        try:
            await anyio.to_thread.run_sync(lambda: inside.set() or release.wait(30))
        finally:
            raise RuntimeError("the gate's close failed")  # e.g. a lost database connection

    app = ThreadsFinishFirst(route)

    async def scenario():
        request = asyncio.ensure_future(app({"type": "http", "method": "GET", "path": "/cases/x"}, None, None))
        while not inside.is_set():
            await asyncio.sleep(0.01)
        request.cancel()
        await asyncio.sleep(0.05)
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await request

    with caplog.at_level(logging.WARNING):
        try:
            asyncio.run(scenario())
        finally:
            release.set()
        gc.collect()
    assert "never retrieved" not in caplog.text
    [line] = [r for r in caplog.records if r.name == "digitize.web"]
    assert line.getMessage() == "GET /cases/x: a cancelled request ended with RuntimeError: the gate's close failed"
    assert line.exc_info is None
