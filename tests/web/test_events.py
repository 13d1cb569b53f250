"""web/events.py: a request's access event is committed before its answer (group commit shared by the
request threads of a process); a failed commit fails the request (503), never an unrecorded download
(real SQLite index; the app in process)."""

from __future__ import annotations

import contextlib
import threading
import time

import pytest
from fastapi.testclient import TestClient

from digitize.config import Settings
from digitize.errors import StorageError
from portal_data import AGENCY_A, CASE_A, seed
from storage import access
from storage.archive import Archive
from storage.index import open_index
from storage.models import Event
from web.app import create_app
from web.events import EventWriter


def counting_index(settings, commits: list[int], committed: set[str], pause: float = 0.0):
    """A real index whose commits are counted (and slowed by ``pause``, so that events gather)."""
    index = open_index(settings.index_dsn)
    real = index.add_events

    def add_events(events):
        time.sleep(pause)
        real(events)
        commits.append(len(events))
        committed.update(e.detail for e in events)

    index.add_events = add_events
    return index


def test_add_returns_once_its_event_is_committed_and_concurrent_events_share_commits(tmp_path):
    settings = Settings(data_dir=str(tmp_path / "data"))
    open_index(settings.index_dsn).close()
    commits: list[int] = []
    committed: set[str] = set()
    writer = EventWriter(lambda: counting_index(settings, commits, committed, pause=0.02))
    assert not writer.add(Event("retrieved", "success", "user:an", "t"))  # not started: the caller writes it
    writer.start()
    early: list[str] = []

    def views(n: int) -> None:
        for i in range(20):
            detail = f"u{n} view {i}"
            assert writer.add(Event("retrieved", "success", f"user:u{n}", "t", detail=detail))
            if detail not in committed:  # returned before its commit
                early.append(detail)

    threads = [threading.Thread(target=views, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    writer.close()
    assert not writer.add(Event("retrieved", "success", "user:late", "t"))  # closed: the caller writes it
    assert early == []
    index = open_index(settings.index_dsn)
    try:
        events = [e for e in index.events() if e.event_type == "retrieved"]
    finally:
        index.close()
    assert len(events) == 160 and sum(commits) == 160
    assert len(commits) < 100  # shared commits, not one per event
    for n in range(8):  # each request thread's events in the log in the order they happened
        assert [e.detail for e in events if e.actor == f"user:u{n}"] == [f"u{n} view {i}" for i in range(20)]


def test_a_failed_commit_fails_its_events_and_the_next_batch_opens_the_index_again(tmp_path):
    settings = Settings(data_dir=str(tmp_path / "data"))
    open_index(settings.index_dsn).close()
    failures = [1]

    def flaky():
        index = open_index(settings.index_dsn)
        if failures:
            failures.pop()

            def broken(events):
                raise OSError("index away")

            index.add_events = broken
        return index

    writer = EventWriter(flaky)
    writer.start()
    try:
        with pytest.raises(StorageError, match="could not be recorded"):
            writer.add(Event("retrieved", "success", "user:lost", "t", case_id=CASE_A))
        assert writer.add(Event("retrieved", "success", "user:an", "t", case_id=CASE_A))
        index = open_index(settings.index_dsn)
        try:
            assert [e.actor for e in index.events(case_id=CASE_A)] == ["user:an"]
        finally:
            index.close()
    finally:
        writer.close()


@pytest.fixture()
def served(tmp_path):
    settings = seed(tmp_path / "data", tmp_path / "work")
    with Archive.open(settings) as archive:
        token = access.create_token(archive.index, "onestop-a", "officer", [AGENCY_A])
        pdfa = b"".join(archive.objects.read_chunks(archive.documents(CASE_A)[0].pdfa_key))
    with TestClient(create_app(settings), base_url="http://127.0.0.1", client=("10.1.2.3", 50000),
                    headers={"authorization": f"Bearer {token}"}) as client:
        yield client, settings, pdfa


@contextlib.contextmanager
def failing_commits(writer: EventWriter):
    """Every commit of ``writer`` fails ("disk full") inside the block; the index is back after it."""
    real_open = writer.open_index

    def broken_index():
        index = real_open()
        index.add_events = lambda events: (_ for _ in ()).throw(OSError("disk full"))
        return index

    writer.open_index = broken_index
    try:
        yield
    finally:
        writer.open_index = real_open


def held_index(settings, release: threading.Event, committed: list[str] | None = None):
    """An opener of a real index whose commits wait for ``release`` (a database that does not answer);
    the details of what it then committed go to ``committed``."""

    def opener():
        index = open_index(settings.index_dsn)
        real = index.add_events

        def add_events(events):
            release.wait(20)
            real(events)
            if committed is not None:
                committed.extend(e.detail for e in events)

        index.add_events = add_events
        return index

    return opener


def recorded(settings, detail: str) -> list[Event]:
    """Events of CASE_A whose detail holds ``detail``, read by a connection of its own (no flush)."""
    index = open_index(settings.index_dsn)
    try:
        return [e for e in index.events(case_id=CASE_A) if detail in (e.detail or "")]
    finally:
        index.close()


def test_a_download_and_a_case_view_are_in_the_log_when_their_answer_arrives(served):
    client, settings, pdfa = served
    answer = client.get(f"/api/v1/cases/{CASE_A}/documents/1/pdfa")
    assert answer.status_code == 200 and answer.content == pdfa
    got = recorded(settings, "downloaded pdfa of document 1")
    assert len(got) == 1 and got[0].actor == "token:onestop-a" and got[0].client == "10.1.2.3"
    assert client.get(f"/api/v1/cases/{CASE_A}").status_code == 200
    assert len(recorded(settings, "viewed the case record")) == 1


def test_a_download_whose_event_cannot_be_committed_is_a_503_without_the_file(served):
    client, settings, pdfa = served
    with failing_commits(client.app.state.events):
        answer = client.get(f"/api/v1/cases/{CASE_A}/documents/1/pdfa")
        assert answer.status_code == 503 and answer.json()["error"] == "storage-unavailable"
        assert pdfa[:64] not in answer.content and "retry-after" in answer.headers
        view = client.get(f"/api/v1/cases/{CASE_A}")
        assert view.status_code == 503 and CASE_A not in view.text
    assert recorded(settings, "downloaded pdfa") == []
    assert client.get(f"/api/v1/cases/{CASE_A}/documents/1/pdfa").content == pdfa  # the index is back


def test_a_streamed_download_whose_event_cannot_be_committed_sends_no_byte(served, monkeypatch):
    """A large object streams: its access is recorded before the answer starts (review dl11 H1: it used to
    be recorded only before the last piece, so a client asking for ranges ending one byte into the next
    chunk got all but one byte of each while commits failed); a failed commit is a 503, no byte sent."""
    from web import files

    client, settings, pdfa = served
    monkeypatch.setattr(files, "WHOLE_MAX", 0)  # every download streams
    with failing_commits(client.app.state.events):
        answer = client.get(f"/api/v1/cases/{CASE_A}/documents/1/pdfa")
        assert answer.status_code == 503 and pdfa[:64] not in answer.content
        part = client.get(f"/api/v1/cases/{CASE_A}/documents/1/pdfa", headers={"range": "bytes=0-99"})
        assert part.status_code == 503 and pdfa[:64] not in part.content
    assert recorded(settings, "downloaded pdfa") == [] and recorded(settings, "downloading pdfa") == []
    answer = client.get(f"/api/v1/cases/{CASE_A}/documents/1/pdfa")  # the index is back
    assert answer.content == pdfa
    assert len(recorded(settings, "downloading pdfa")) == 1 and len(recorded(settings, "downloaded pdfa")) == 1



def test_an_event_added_on_the_event_loop_once_the_answer_started_is_queued_not_waited_for(tmp_path):
    """A streamed download the client left is closed by the garbage collector, often on the event loop:
    its closing event must be queued, not waited for there (review dl11 M1: every request of the process
    stalled for the commit, up to the writer's wait)."""
    import asyncio

    from web.events import RequestEvents

    settings = Settings(data_dir=str(tmp_path / "data"))
    open_index(settings.index_dsn).close()
    release = threading.Event()
    committed: list[str] = []
    writer = EventWriter(held_index(settings, release, committed), wait=2)
    writer.start()
    try:
        events = RequestEvents(writer)
        events.started = True

        async def on_loop() -> bool:
            return events.add(Event("retrieved", "success", "user:an", "t", detail="closed by gc"))

        assert asyncio.run(on_loop())  # returned while its commit is still held
        assert committed == []
        release.set()
        assert writer.flush(5) and committed == ["closed by gc"]
    finally:
        release.set()
        writer.close()


def test_a_request_resumes_one_loop_turn_after_its_commit_wakes_the_loop():
    """The wake-up the writer sends (call_soon_threadsafe) resumes the waiting request on the next turn of
    its loop: asyncio.wait_for took two more (a done-callback, then its own future), and each turn of a
    saturated server's loop is milliseconds (tens at p95) for every view and download."""
    import asyncio

    from web import events

    async def scenario():
        writer = EventWriter(lambda: None)
        batch = events._Batch(writer._lock)
        waiting = asyncio.ensure_future(writer.committed(batch))
        for _ in range(3):  # it registers its future and waits
            await asyncio.sleep(0)
        assert batch.futures and not waiting.done()
        with writer._cond:
            batch.done = True
            woken, batch.futures = batch.futures, []
        events._resolve_all(woken)  # as the writer thread does once the commit ended
        turns = 0
        while not waiting.done():
            await asyncio.sleep(0)
            turns += 1
        await waiting  # the batch's outcome: committed
        return turns

    assert asyncio.run(scenario()) <= 2


def test_a_commit_wait_past_its_limit_is_a_storage_error_and_leaves_the_batch():
    import asyncio

    from web import events

    async def scenario():
        writer = EventWriter(lambda: None, wait=0.05)
        batch = events._Batch(writer._lock)
        with pytest.raises(StorageError, match="not committed within"):
            await writer.committed(batch)
        assert batch.futures == []  # the writer will not wake a request that has gone

    asyncio.run(scenario())
