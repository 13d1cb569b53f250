"""The portal's archive pool: a request waits a bounded time for an archive, then gets a 503."""

from __future__ import annotations

import threading
import time

import pytest

from digitize.config import Settings
from digitize.errors import StorageError
from web.context import ArchivePool


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


def test_a_request_on_the_event_loop_waits_for_an_archive_in_turn_without_a_thread(tmp_path):
    """A full pool: requests on the event loop wait there (no worker thread held) and get freed archives
    in arrival order, a thread waiting in take() before them included; one that gives up (cancelled) or
    waits too long leaves its turn, and an archive handed to a request cancelled meanwhile goes back."""
    import asyncio

    pool = ArchivePool(Settings(data_dir=str(tmp_path / "data")), size=2)
    first, second = pool.take(), pool.take()

    async def scenario():
        threads_before = threading.active_count()
        a = asyncio.ensure_future(pool.take_waiting())
        b = asyncio.ensure_future(pool.take_waiting())
        cancelled = asyncio.ensure_future(pool.take_waiting())
        await asyncio.sleep(0.01)
        assert not (a.done() or b.done()) and pool._waiting == 3
        assert threading.active_count() == threads_before  # nobody waits in a thread
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
