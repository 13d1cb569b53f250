"""web/events.py when the database does not answer: a stuck writer refuses new events at once with a
bounded queue; a request answered 503 withdraws its access events (dropped if not yet sent to the database,
else compensated), ZIPs included; a shutdown that gives events up says how many (review dl11 M2)."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time

import pytest
from fastapi.testclient import TestClient

from digitize.config import Settings
from digitize.errors import StorageError
from portal_data import CASE_A
from storage import access
from storage.index import open_index
from storage.models import Event
from web import events as events_module
from web.app import create_app
from web.events import EventWriter, RequestEvents

from test_events import failing_commits, held_index, served  # noqa: F401 - served is a fixture


def run_then_release(writer: EventWriter, release: threading.Event, requests) -> None:
    """Run the ``requests`` coroutine while commits hang, then let the database answer and the writer
    commit what is left (twice: the compensating events follow their batch)."""
    asyncio.run(requests)
    release.set()
    assert writer.flush(5) and writer.flush(5)


def view(detail: str, actor: str = "user:an") -> Event:
    return Event("retrieved", "success", actor, "t", case_id=CASE_A, detail=detail)


def logged(settings) -> list[Event]:
    index = open_index(settings.index_dsn)
    try:
        return index.events(case_id=CASE_A)
    finally:
        index.close()


def held_writer(settings, release: threading.Event) -> EventWriter:
    """A writer whose commits hang until ``release``, with a wait no loaded machine outlasts while the test
    queues behind the hung commit; the test then shortens it (:func:`gives_up`)."""
    writer = EventWriter(held_index(settings, release), wait=60)
    writer.start()
    return writer


def gives_up(writer: EventWriter, wait: float = 0.3) -> None:
    """From now on the hung commit has run longer than ``wait``: the writer is stuck, its waits are over."""
    writer.wait = wait
    while time.monotonic() - writer._committing.started <= wait:
        time.sleep(0.05)


@pytest.fixture()
def empty(tmp_path):
    settings = Settings(data_dir=str(tmp_path / "data"))
    open_index(settings.index_dsn).close()
    return settings


def test_a_stuck_writer_refuses_new_events_at_once_and_its_queue_stays_bounded(empty, monkeypatch):
    monkeypatch.setattr(events_module, "MAX_QUEUED", 50, raising=False)  # (absent before the bound)
    release = threading.Event()
    writer = held_writer(empty, release)
    try:
        writer.submit(view("first"))  # taken by the writer, whose commit hangs
        while writer._committing is None:
            time.sleep(0.01)
        refused = 0
        for i in range(200):  # within the wait: queued up to the bound, the rest refused
            try:
                writer.submit(view(f"queued {i}"))
            except StorageError:
                refused += 1
        assert len(writer._batch.events) == 50 and refused == 150
        gives_up(writer)  # the commit has now run longer than a request waits: stuck
        queued = len(writer._batch.events)
        with pytest.raises(StorageError, match="refused at once"):
            writer.add(view("late"))
        assert len(writer._batch.events) == queued  # not queued
    finally:
        release.set()
        writer.close()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the thread it kills
def test_a_dead_writer_refuses_events_at_once(empty):
    def dies():
        raise SystemExit("the writer thread ends")  # not an Exception: nothing in the writer catches it

    writer = EventWriter(dies, wait=5)
    writer.start()
    try:
        with pytest.raises(StorageError):  # waited for in vain, or refused if the thread had died already
            writer.add(view("its batch dies with the thread"))
    finally:
        writer._thread.join(5)
    try:
        with pytest.raises(StorageError, match="writer has stopped"):
            writer.submit(view("after"))
    finally:
        writer.close()


def test_requests_that_gave_up_withdraw_their_events_dropped_or_compensated(empty):
    """First request: its batch was being committed when it gave up, so the log gets a compensating event;
    second: its batch was still queued, so its event is never written. Only accesses are withdrawn."""
    release = threading.Event()
    writer = held_writer(empty, release)
    try:
        first, second = RequestEvents(writer), RequestEvents(writer)

        async def requests():
            first.add(view("first, being committed"))
            while writer._committing is None:
                await asyncio.sleep(0.01)
            second.add(view("second, still queued"))
            second.add(Event("ingested", "success", "user:an", "t", case_id=CASE_A, detail="upload received"))
            gives_up(writer)
            for events in (first, second):
                with pytest.raises(StorageError, match="not committed within"):
                    await events.committed()
                events.withdraw()  # what CommitBeforeAnswer does before its 503

        run_then_release(writer, release, requests())
    finally:
        release.set()
        writer.close()
    log = logged(empty)
    details = [(e.outcome, e.detail) for e in log]
    assert ("success", "first, being committed") in details and ("success", "upload received") in details
    assert not any("second" in d for _, d in details)
    compensations = [e for e in log if e.detail.startswith(access.WITHHELD)]
    assert len(compensations) == 1 and compensations[0].outcome == "failure"
    assert compensations[0].detail.endswith(" first, being committed")
    shown = access.fold_withheld(log)  # as the case page and the API list it
    assert [(e.outcome, e.detail) for e in shown] == [
        ("failure", "first, being committed (answer withheld: not sent)"), ("success", "upload received")]


def test_a_shutdown_that_gives_events_up_says_how_many(empty, caplog):
    release = threading.Event()
    writer = held_writer(empty, release)
    try:
        writer.submit(view("being committed"))
        while writer._committing is None:
            time.sleep(0.01)
        writer.submit(view("queued 1"))
        writer.submit(view("queued 2"))
        writer.wait = 0.3
        with caplog.at_level(logging.WARNING, logger="digitize.web"):
            writer.close()  # returns after its wait: the commit hangs
        lines = [r.getMessage() for r in caplog.records if "stopping without it" in r.getMessage()]
        assert len(lines) == 1 and "3 access events not recorded" in lines[0]
    finally:
        release.set()


# -- through the app (test_events.served: an officer's token of agency A) ----------------------------------
def in_thread(call) -> tuple[threading.Thread, list]:
    out: list = []
    thread = threading.Thread(target=lambda: out.append(call()))
    thread.start()
    return thread, out


def test_answers_refused_while_the_database_hangs_are_never_listed_as_accesses(served):
    client, settings, _ = served
    writer = client.app.state.events
    real_open, release = writer.open_index, threading.Event()
    writer.wait = 1.0
    writer.open_index = held_index(settings, release)
    try:
        a, got_a = in_thread(lambda: client.get(f"/api/v1/cases/{CASE_A}"))  # its commit hangs
        while writer._committing is None:
            time.sleep(0.01)
        time.sleep(0.2)
        b, got_b = in_thread(lambda: client.get(f"/api/v1/cases/{CASE_A}/documents/1/pdfa"))  # queued behind
        zip_, got_zip = in_thread(lambda: client.get(f"/api/v1/cases/{CASE_A}/dossier.zip"))
        for thread in (a, b, zip_):
            thread.join(10)
        assert [r.status_code for r in (got_a + got_b + got_zip)] == [503, 503, 503]
        late = client.get(f"/api/v1/cases/{CASE_A}/documents/1/original")  # the writer is stuck now
        assert late.status_code == 503 and late.json()["error"] == "storage-unavailable"
        assert len(writer._batch.events) == len(getattr(writer._batch, "dropped", ()))  # the refused: nothing queued
    finally:
        release.set()
    assert writer.flush(10) and writer.flush(10)
    writer.open_index = real_open
    raw = [e for e in logged(settings) if e.event_type == "retrieved"]
    assert not any(e.outcome == "success" and e.detail.startswith(("downloaded", "pdfa of", "downloading"))
                   for e in raw), raw  # nothing queued behind the hung commit was written as done
    shown = client.get(f"/api/v1/cases/{CASE_A}/events").json()["events"]
    before = [e for e in shown if e["event_type"] == "retrieved" and "listed" not in e["detail"]]
    assert [(e["outcome"], e["detail"]) for e in before] == [
        ("failure", "viewed the case record and its document list (answer withheld: not sent)")]


def test_a_real_sqlite_write_lock_held_elsewhere_gives_503s_and_no_false_access(served):
    """Integration: another connection holds SQLite's write lock (as a long migration or a stuck process
    would) longer than a request waits; the writer's commit waits in SQLite's busy handler."""
    client, settings, _ = served
    writer = client.app.state.events
    writer.wait = 1.0
    real_open = writer.open_index
    writer.open_index = lambda: open_index(settings.index_dsn, wait_timeout=30)
    holder = sqlite3.connect(settings.index_dsn[len("sqlite:///"):], isolation_level=None, timeout=5)
    holder.execute("BEGIN IMMEDIATE")
    try:
        first = client.get(f"/api/v1/cases/{CASE_A}/documents/1/pdfa")
        assert first.status_code == 503
        time.sleep(0.1)
        again = [client.get(f"/api/v1/cases/{CASE_A}/documents/1/pdfa").status_code for _ in range(20)]
        assert again == [503] * 20 and len(writer._batch.events) == 0  # refused at once, nothing queued
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert writer.flush(30) and writer.flush(30)
    writer.open_index = real_open
    raw = logged(settings)
    done = [e for e in raw if e.outcome == "success" and "pdfa of document 1" in e.detail]
    withheld = [e for e in raw if e.detail.startswith(access.WITHHELD)]
    assert len(done) == len(withheld) == 1  # committed once the lock went, then withdrawn
    shown = [e for e in client.get(f"/api/v1/cases/{CASE_A}/events").json()["events"]
             if "pdfa of document 1" in e["detail"]]
    assert [e["outcome"] for e in shown] == ["failure"]


def test_a_zip_answered_503_leaves_none_of_its_documents_recorded_as_retrieved(served):
    """The ZIP's per-document events go with its request's (they were written straight to the index, so a
    ZIP whose own event could not be committed, answered 503, still listed every document as retrieved)."""
    client, settings, _ = served
    with failing_commits(client.app.state.events):
        answer = client.get(f"/api/v1/cases/{CASE_A}/dossier.zip")
        assert answer.status_code == 503 and not answer.content.startswith(b"PK")
    assert [e for e in logged(settings) if e.event_type == "retrieved"] == []
    assert client.get(f"/api/v1/cases/{CASE_A}/dossier.zip").status_code == 200  # the index is back
    assert len([e for e in logged(settings) if e.detail.startswith("pdfa of document")]) == 2


def test_the_case_page_lists_a_withheld_download_as_withheld(seeded):
    """The page's event list (event, actor, detail) says the refused download was withheld, once."""
    from test_pages import login

    settings = Settings(data_dir=str(seeded[0]))
    settings.web.secure_cookies = False
    app = create_app(settings)
    with TestClient(app):  # lifespan: the writer runs
        client, answer = login(app)
        assert answer.status_code == 303
        writer, release = app.state.events, threading.Event()
        real_open = writer.open_index
        writer.wait = 0.5
        writer.open_index = held_index(settings, release)
        try:
            refused = client.get(f"/cases/{CASE_A}/documents/1/original")
            assert refused.status_code == 503
        finally:
            release.set()
        assert writer.flush(10) and writer.flush(10)
        writer.open_index = real_open
        page = client.get(f"/cases/{CASE_A}").text
    assert page.count("downloaded original of document 1") == 1
    assert "downloaded original of document 1 (answer withheld: not sent)" in page
    assert access.WITHHELD not in page.replace("&#39;", "'")


def test_a_request_cancelled_while_its_commit_waits_withdraws_its_events(empty):
    """A request cancelled before its answer started (its client gone, the server stopping) gave no
    answer: its access must not stay recorded as done once the held commit ends."""
    from web.events import SCOPE_KEY, CommitBeforeAnswer

    release = threading.Event()
    writer = EventWriter(held_index(empty, release), wait=10)
    writer.start()
    sent: list[dict] = []

    async def app(scope, receive, send):
        scope[SCOPE_KEY].add(view("viewed, then cancelled"))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"case data"})

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request", "body": b""}

    async def main():
        middleware = CommitBeforeAnswer(app, lambda: writer, lambda scope: None)
        task = asyncio.create_task(middleware({"type": "http", "method": "GET", "path": "/x"}, receive, send))
        while writer._committing is None:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    try:
        run_then_release(writer, release, main())
    finally:
        release.set()
        writer.close()
    assert sent == []
    shown = access.fold_withheld(logged(empty)) if hasattr(access, "fold_withheld") else logged(empty)
    assert [(e.outcome, e.detail) for e in shown] == [("failure", "viewed, then cancelled (answer withheld: not sent)")]


def test_a_streamed_download_answered_503_stops_and_is_never_logged_as_done(served, monkeypatch):
    """Review hard11b M1: a download streamed from the store (over WHOLE_MAX) whose announce could not be
    committed is answered 503; the app must stop there (the object not read on, for nobody) and no closing
    'downloaded …' success may be committed later (it was, once the index was back)."""
    from storage.archive import Archive
    from web import files

    client, settings, _ = served
    monkeypatch.setattr(files, "WHOLE_MAX", 0)  # every object streamed
    with Archive.open(settings) as archive:
        store = type(archive.objects)
    pieces: list[int] = []
    real_chunks = store.read_chunks

    def counted(self, key):
        for block in real_chunks(self, key):
            pieces.append(len(block))
            yield block

    monkeypatch.setattr(store, "read_chunks", counted)
    writer = client.app.state.events
    real_open, fails = writer.open_index, [1]

    def fails_once():  # the announce's commit fails ("database is locked"); the next ones succeed
        index = real_open()
        if fails:
            fails.pop()
            index.add_events = lambda events: (_ for _ in ()).throw(OSError("database is locked"))
        return index

    writer.open_index = fails_once
    stack = client.app.middleware_stack  # built by the lifespan

    async def spec_2_4(scope, receive, send):  # a server that does not listen for a disconnect while
        scope["asgi"] = {"version": "3.0", "spec_version": "2.4"}  # streaming (TestClient's stops the stream)
        await stack(scope, receive, send)

    monkeypatch.setattr(client.app, "middleware_stack", spec_2_4)
    answer = client.get(f"/api/v1/cases/{CASE_A}/documents/1/pdfa")
    assert answer.status_code == 503 and answer.json()["error"] == "storage-unavailable"
    assert client.get(f"/api/v1/cases/{CASE_A}").status_code == 200  # a later commit succeeds
    assert writer.flush(10) and writer.flush(10)
    assert len(pieces) <= 1  # the stream stopped with the 503
    rows = [(e.outcome, e.detail) for e in logged(settings) if "pdfa of document 1" in e.detail]
    assert ("success", "downloaded pdfa of document 1") not in rows and rows == [], rows


def test_a_compensating_event_marks_one_original_only():
    """Review hard11b M2: two identical requests in the same millisecond, one withheld and one served: the
    served one stays done (the fold marked every twin)."""
    at = "2026-12-02T02:50:00.123+00:00"

    def twin(client: str = "10.0.0.1") -> Event:
        return Event("retrieved", "success", "token:a", "t", doc_id=1, case_id=CASE_A, client=client,
                     detail="downloading pdfa of document 1", time=at)

    a, b = twin(), twin()
    assert [e.outcome for e in access.fold_withheld([a, b, access.withheld(b)])] == ["failure", "success"]
    both = access.fold_withheld([a, b, access.withheld(a), access.withheld(b)])
    assert [e.outcome for e in both] == ["failure", "failure"]
    other = twin("10.0.0.2")  # another client's access is not the withheld one
    assert [e.outcome for e in access.fold_withheld([other, b, access.withheld(b)])] == ["success", "failure"]


class ScriptedIndex:
    """A fake index whose commits follow a script: "slow" (succeeds once ``late`` is set: after the request
    waiting for it gave up), "ok", "fail", "die" (a BaseException that ends the writer thread); then "ok"."""

    def __init__(self, script: list[str]):
        self.script, self.stored, self.late = script, [], threading.Event()

    def add_events(self, events):
        step = self.script.pop(0) if self.script else "ok"
        if step == "fail":
            raise OSError("database is locked")
        if step == "die":
            raise SystemExit("the writer thread ends")
        if step == "slow":
            self.late.wait(20)
        self.stored.extend(events)

    def close(self):
        pass


def a_late_commit(script: list[str], monkeypatch, record=None) -> tuple[EventWriter, ScriptedIndex]:
    """A download whose commit succeeds after its request gave up (its 503), then ``script``'s commits;
    ``record(writer)`` gives what records it (default: writer.add)."""
    monkeypatch.setattr(events_module, "RETRY", (0.05, 0.1), raising=False)
    index = ScriptedIndex(["slow", *script])
    writer = EventWriter(lambda: index, wait=0.2)
    writer.start()
    with pytest.raises(StorageError, match="not committed within"):
        (record(writer) if record else writer.add)(view("downloaded pdfa of document 1"))
    index.late.set()
    return writer, index


def stored_after(writer: EventWriter, index: ScriptedIndex, rows: int) -> list[Event]:
    try:
        for _ in range(400):  # 20 s: a loaded machine's retries
            if len(index.stored) >= rows:
                break
            time.sleep(0.05)
    finally:
        writer.close()
    return index.stored


def test_a_compensating_event_whose_commit_fails_is_tried_again(monkeypatch):
    """Review hard11b M3: the compensation's own commit failed and it was lost silently, leaving the
    refused download recorded as done."""
    writer, index = a_late_commit(["fail", "fail"], monkeypatch)
    stored_after(writer, index, 2)
    assert [e.outcome for e in index.stored] == ["success", "failure"]
    assert index.stored[1].detail.startswith(access.WITHHELD)
    assert [(e.outcome, e.detail) for e in access.fold_withheld(index.stored)] == [
        ("failure", "downloaded pdfa of document 1 (answer withheld: not sent)")]


def test_compensating_events_never_written_are_counted_at_shutdown(monkeypatch, caplog):
    writer, index = a_late_commit(["fail"] * 100, monkeypatch)
    while len(index.script) == 100:  # its first try failed
        time.sleep(0.02)
    with caplog.at_level(logging.WARNING, logger="digitize.web"):
        writer.close()  # tries them once more, in vain
    lines = [r.getMessage() for r in caplog.records if "compensating events not written" in r.getMessage()]
    assert lines == ["access events: 1 compensating events not written (their withdrawn accesses stay "
                     "recorded as done)"]


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the thread it kills
def test_a_dead_writer_makes_readers_wait_no_more(monkeypatch):
    """Review hard11b L2: the writer died with a compensation queued; each read of the log (flush) waited
    its full timeout for a commit that would never come."""
    writer, index = a_late_commit(["die"], monkeypatch)
    writer._thread.join(5)
    done: list[bool] = []
    reader = threading.Thread(target=lambda: done.append(writer.flush(timeout=60)))
    reader.start()
    reader.join(10)  # not its 60 s
    assert done == [False]
    writer.close()


def test_a_streams_closing_event_committed_late_says_the_answer_was_cut_off(monkeypatch):
    """Review hard11b L1: the client of a stream whose closing event came too late holds every piece but
    the last; its compensation said "not sent"."""
    def closing_event(writer):  # as Download.__iter__ records it, in its worker thread, after the start
        events = RequestEvents(writer)
        events.started = True
        return events.add

    writer, index = a_late_commit([], monkeypatch, record=closing_event)
    stored = stored_after(writer, index, 2)
    assert [(e.outcome, e.detail) for e in access.fold_withheld(stored)] == [
        ("failure", "downloaded pdfa of document 1 (answer cut off: its last piece not sent)")]


def test_a_zip_answered_503_leaves_no_temporary_copy(served, monkeypatch):
    """The app stopped by the 503 (review hard11b M1) never runs the ZIP's clean-up task: its temporary
    folder (the case's documents) must still go."""
    import gc

    from web import files

    client, _, _ = served
    made, real_temp = [], files._temp

    def temp():
        stack, path = real_temp()
        made.append(path)
        return stack, path

    monkeypatch.setattr(files, "_temp", temp)
    with failing_commits(client.app.state.events):
        assert client.get(f"/api/v1/cases/{CASE_A}/dossier.zip").status_code == 503
    gc.collect()
    assert made and not any(path.exists() for path in made)


class HungIndex:
    """A fake index whose commits do not answer until ``release`` (a database behind a lock)."""

    def __init__(self, release: threading.Event):
        self.release = release

    def add_events(self, events) -> None:
        self.release.wait(20)

    def close(self) -> None:
        pass


def test_a_requests_wait_for_its_commit_is_bounded_by_db_timeout(tmp_path, monkeypatch):
    """Review hard11b: the wait for an event's commit was a fixed 30 s, so a site that bounds its database
    waits ([web] db_timeout) still had requests held for 30 s by a hung commit; it is now derived from
    db_timeout (2 x db_timeout + 1 s, at least WAIT_FLOOR; 30 s when db_timeout is 0, unbounded)."""
    from web.events import WAIT, WAIT_FLOOR, commit_wait

    assert commit_wait(10) == 21.0 and commit_wait(0.5) == WAIT_FLOOR and commit_wait(0) == WAIT
    settings = Settings(data_dir=str(tmp_path / "data"))
    assert create_app(settings).state.events.wait == 21.0  # the default db_timeout = 10
    monkeypatch.setattr(events_module, "WAIT_FLOOR", 0.0)  # so that the test waits 1.2 s, not 5
    settings.web.db_timeout = 0.1
    writer = create_app(settings).state.events
    assert writer.wait == pytest.approx(1.2)
    release = threading.Event()
    writer.open_index = lambda: HungIndex(release)
    writer.start()
    try:
        with pytest.raises(StorageError, match="not committed within 1.2 s"):  # db_timeout's, not the fixed 30 s
            writer.add(view("hung"))
    finally:
        release.set()
        writer.close()


class TimedIndex:
    """A fake index whose commits take the scripted (seconds, succeeds) each, then succeed at once."""

    def __init__(self, script: list[tuple[float, bool]]):
        self.script, self.stored, self.began = script, [], threading.Event()

    def add_events(self, events) -> None:
        self.began.set()
        seconds, succeeds = self.script.pop(0) if self.script else (0.0, True)
        time.sleep(seconds)
        if not succeeds:
            raise OSError("database is locked")
        self.stored.extend(events)

    def close(self) -> None:
        pass


@pytest.mark.parametrize("on_loop", [False, True])
def test_a_request_queued_behind_a_failed_commit_waits_its_own_commits_bound(on_loop):
    """Review_lows11 L1: the wait ran from the submit, so a request queued behind a commit that failed after
    its bounded wait got a 503 (and a withheld event) although its own commit was within bounds."""
    index = TimedIndex([(2.0, False), (1.0, True)])  # 3 s from the submit; its own commit 1.5 s within bounds
    writer = EventWriter(lambda: index, wait=2.5)
    writer.start()
    try:
        writer.submit(view("before"))  # its commit fails after 2 s
        assert index.began.wait(5)
        if on_loop:
            async def request() -> None:
                events = RequestEvents(writer)
                assert events.add(view("queued"))
                await events.committed()
            asyncio.run(request())
        else:
            assert writer.add(view("queued"))
        assert [e.detail for e in index.stored] == ["queued"]  # committed, and no compensating event
    finally:
        writer.close()


def test_a_request_queued_behind_a_hung_commit_still_waits_a_bounded_time():
    release = threading.Event()
    writer = EventWriter(lambda: HungIndex(release), wait=0.5)
    writer.start()
    try:
        writer.submit(view("hung"))
        with pytest.raises(StorageError, match="not committed within 0.5 s"):  # while the commit still hangs
            writer.add(view("queued"))
    finally:
        release.set()
        writer.close()


def test_a_hung_compensating_commit_refuses_new_requests_at_once(served, caplog):
    """Review of the merged pool (open item): a commit of compensating events that hangs did not make the
    writer refuse: each new request queued behind it and waited its full wait for a 503. Now, once that
    commit has run longer than ``wait``, a new event is refused at once (nothing queued), as behind a hung
    batch, and the portal answers 503 with one log line."""
    client, _, _ = served
    release, hung = threading.Event(), threading.Event()

    class LateThenHung(ScriptedIndex):
        def add_events(self, events):
            if any(e.detail.startswith(access.WITHHELD) for e in events):  # the compensation: hangs
                hung.set()
                release.wait(20)
            super().add_events(events)

    index = LateThenHung(["slow"])
    writer = EventWriter(lambda: index, wait=0.2)
    writer.start()
    real, client.app.state.events = client.app.state.events, writer
    try:
        with pytest.raises(StorageError, match="not committed within"):
            writer.add(view("downloaded pdfa of document 1"))  # committed late: compensated
        index.late.set()
        assert hung.wait(5)
        time.sleep(0.3)  # that commit has now run longer than a request's wait
        with pytest.raises(StorageError, match="compensating events' commit has not ended for 0.2 s; refused"):
            writer.add(view("late"))
        assert writer._batch.events == []  # not queued behind it
        with caplog.at_level(logging.WARNING, logger="digitize.web"):
            answer = client.get(f"/api/v1/cases/{CASE_A}")
        assert answer.status_code == 503 and answer.json()["error"] == "storage-unavailable"
        lines = [r.getMessage() for r in caplog.records if r.name == "digitize.web"]
        assert len(lines) == 1 and "compensating events' commit has not ended" in lines[0], lines
        assert writer._batch.events == []
    finally:
        client.app.state.events = real
        release.set()
        writer.close()
    assert [e.detail for e in index.stored] == ["downloaded pdfa of document 1",
                                               access.withheld(view("downloaded pdfa of document 1")).detail]


def test_a_shutdown_commits_a_batch_queued_behind_a_slow_commit():
    """close() gave the writer ``wait`` from its own start: a batch queued behind a commit that took most of
    it was left behind mid-commit (its events lost at exit) although each commit was within bounds."""
    index = TimedIndex([(1.8, True), (1.8, True)])  # 3.6 s in all; each 1.2 s within bounds
    writer = EventWriter(lambda: index, wait=3.0)
    writer.start()
    writer.submit(view("first"))
    assert index.began.wait(5)
    writer.submit(view("second"))  # queued behind it: the stream of a client that left, say
    writer.close()
    assert [e.detail for e in index.stored] == ["first", "second"]


def test_a_streams_event_after_shutdown_is_never_written_by_its_caller(caplog):
    """Found on re-reading the writer: once it had stopped (a shutdown), a stream's closing event came back
    "not queued", so the gate wrote it itself (on the event loop, for a stream closed by the garbage
    collector) through the archive its request had given back to the pool with its answer: another
    request's connection by then, or a closed one."""
    writer = EventWriter(lambda: TimedIndex([]), wait=1.0)
    writer.start()
    writer.close()
    events = RequestEvents(writer)
    events.started = True

    async def on_loop() -> bool:
        return events.add(view("closed by gc after shutdown"))

    with caplog.at_level(logging.WARNING, logger="digitize.web"):
        assert asyncio.run(on_loop())  # handled: the caller writes nothing
    assert "closed stream not recorded: the access events' writer has stopped" in caplog.text
    with pytest.raises(StorageError, match="writer has stopped"):  # in the stream's thread: its last
        events.add(view("a stream's closing event after shutdown"))  # piece is held back, as on a failure
