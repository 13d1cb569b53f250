"""A whole download's access event is sent ahead of the object's read (storage/access.py Download.read,
Gate.record_ahead), so that its group commit overlaps the read and the SHA-256 check; the answer still
waits for it. A read that fails its check records its failure, and the success is taken back in the SAME
commit, which the 500 waits for (web/events.py EventWriter.replace; review rev2_dl16 L2), shown as one row
(L3). Real SQLite index; the app in process; each commit's events are logged by the writer's index.

Against the old code: the first test fails on main (it recorded the success only after the read) and the
third on dl16 (its compensation came in a commit of its own, after the 500); the others are guards of
what main already did right (a failed or refused download never shown as done), which the event sent
ahead must keep."""

from __future__ import annotations

import hashlib
import os
import stat
import threading
import time

import pytest

from portal_data import CASE_A
from storage import access
from storage.index import open_index
from storage.models import Event
from storage.objects import FolderStore

from test_events import recorded, served  # noqa: F401 - served is a fixture

DETAIL = "downloaded pdfa of document 1"
CHECK_FAILED = getattr(access, "CHECK_FAILED", "check failed")  # (not in the old code: its tests fail on asserts)
COMPENSATIONS = (access.WITHHELD, access.CUT_OFF, CHECK_FAILED)


def compensates(detail: str) -> bool:
    return detail.startswith(COMPENSATIONS)
PATH = f"/api/v1/cases/{CASE_A}/documents/1/pdfa"


def shown(settings) -> list[tuple[str, str, str | None]]:
    """The log's downloads of document 1 as the case page and the API show them (compensations folded)."""
    return [(e.outcome, e.detail, e.checksum) for e in access.fold_withheld(recorded(settings, "pdfa of document 1"))]


def raw(settings) -> list[tuple[str, str]]:
    return [(e.outcome, e.detail) for e in recorded(settings, "pdfa of document 1")]


@pytest.fixture()
def commits(served):
    """The writer's commits, each the list of its events' details (a wrapper of the real index), and a
    switch that makes commits fail ("disk full") and one that holds them (a database that answers late)."""
    client, settings, _pdfa = served
    writer = client.app.state.events
    log: list[list[str]] = []
    failing, go = threading.Event(), threading.Event()
    go.set()

    def opener():
        index = open_index(settings.index_dsn)
        real = index.add_events

        def add_events(events):
            go.wait(20)
            if failing.is_set():
                raise OSError("disk full")
            real(events)
            log.append([e.detail for e in events])

        index.add_events = add_events
        return index

    writer.open_index = opener
    return log, failing, go


def corrupt(settings, pdfa: bytes) -> None:
    from storage.archive import Archive

    with Archive.open(settings) as archive:
        path = archive.objects.root / archive.documents(CASE_A)[0].pdfa_key
    data = bytearray(pdfa)
    data[len(data) // 2] ^= 0xFF  # bit rot: same length, other bytes
    os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)
    path.write_bytes(bytes(data))


def on_read(monkeypatch, action) -> None:
    """``action()`` when the download's object is about to be read."""
    real_read = FolderStore.read_chunks

    def read_chunks(store, key):
        action()
        yield from real_read(store, key)

    monkeypatch.setattr(FolderStore, "read_chunks", read_chunks)


def test_a_downloads_success_is_committed_while_its_object_is_read(served, commits, monkeypatch):
    client, settings, pdfa = served
    writer, seen = client.app.state.events, []
    on_read(monkeypatch, lambda: seen.append(writer.flush(5) and raw(settings)))
    answer = client.get(PATH)
    assert answer.status_code == 200 and answer.content == pdfa
    assert seen == [[("success", DETAIL)]]  # in the log before the read (main: [], it was recorded after)
    assert shown(settings) == [("success", DETAIL, hashlib.sha256(pdfa).hexdigest())]  # once, the bytes sent
    assert commits[0] == [[DETAIL]]


def test_a_download_that_fails_its_check_before_its_success_was_taken_is_one_failure(served, commits,
                                                                                      monkeypatch):
    """The writer still commits another request's event when the check fails: the success sent ahead is
    dropped, never written, and the failure goes alone (main: the same row, recorded after the check)."""
    client, settings, pdfa = served
    log, _failing, go = commits
    writer = client.app.state.events
    corrupt(settings, pdfa)
    go.clear()  # the writer's next commit waits
    writer.submit(Event("retrieved", "success", "other", "web", detail="blocker", time="t"))
    deadline = time.monotonic() + 10
    while writer._committing is None or writer._committing.done:  # the writer is in the blocker's commit
        assert time.monotonic() < deadline
        time.sleep(0.01)
    answers: list = []
    request = threading.Thread(target=lambda: answers.append(client.get(PATH)))
    request.start()
    try:
        while not any(e.outcome == "failure" for e in writer._batch.events):  # queued, not yet taken
            assert time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        go.set()
        request.join(20)
    assert answers[0].status_code == 500 and answers[0].json()["error"] == "fixity-failed"
    assert pdfa[:64] not in answers[0].content
    assert raw(settings) == [("failure", DETAIL)]  # committed before the 500; the success never written
    assert shown(settings)[0][2] != hashlib.sha256(pdfa).hexdigest()  # the SHA-256 actually read
    assert log[1] == [DETAIL]


def test_a_download_that_fails_its_check_after_its_success_was_committed_is_taken_back_before_the_500(
        served, commits, monkeypatch):
    """Review rev2_dl16 L2/L3: the success was committed while the object was read; the check fails. Its
    compensation ("check failed") is committed IN THE SAME COMMIT as the failure's event, before the 500
    (dl16: in a commit of its own, after the 500, which a crash or a failing commit could lose), and the
    attempt is shown as ONE row: the failure, with the SHA-256 read (dl16: two, one saying "answer
    withheld (not sent: a 503 ...)", which never happened)."""
    client, settings, pdfa = served
    log, _failing, _go = commits
    writer = client.app.state.events
    corrupt(settings, pdfa)
    on_read(monkeypatch, lambda: writer.flush(5))  # the success sent ahead is committed before the read
    answer = client.get(PATH)
    assert answer.status_code == 500 and answer.json()["error"] == "fixity-failed"
    rows = raw(settings)  # as the 500 arrives: no flush
    successes = [r for r in rows if r == ("success", DETAIL)]
    compensations = [r for r in rows if compensates(r[1])]
    assert len(compensations) == len(successes), rows  # every success sent is taken back before the 500
    for commit in log:  # the compensation is in the failure's own commit
        assert DETAIL in commit or not any(compensates(d) for d in commit), log
    assert [(o, d) for o, d, _sha in shown(settings)] == [("failure", DETAIL)]  # one row for one attempt
    assert shown(settings)[0][2] != hashlib.sha256(pdfa).hexdigest()


def test_a_check_failure_whose_commit_fails_is_a_503_and_its_success_is_still_taken_back(served, commits,
                                                                                        monkeypatch):
    """The failure's commit (with the compensation) fails: the request is a 503, and the compensation is
    kept and tried again like any other (else the success sent ahead would stay recorded as done)."""
    client, settings, pdfa = served
    log, failing, _go = commits
    writer = client.app.state.events
    corrupt(settings, pdfa)
    on_read(monkeypatch, lambda: writer.flush(5) and failing.set())
    answer = client.get(PATH)
    assert answer.status_code == 503
    failing.clear()
    assert writer.flush(10)
    deadline = time.monotonic() + 10
    while [row for row in shown(settings) if row[0] == "success"]:  # its compensation is tried again
        assert time.monotonic() < deadline, log  # (after RETRY[0]): never left recorded as done
        time.sleep(0.05)


def test_a_download_whose_success_sent_ahead_fails_to_commit_is_a_503_recorded_as_nothing(served, commits):
    """The success sent ahead cannot be committed (review rev2_dl16 L4's gap): the answer is a 503, and
    nothing says the download was done (as on main, where the event came after the read)."""
    client, settings, _pdfa = served
    _log, failing, _go = commits
    failing.set()
    answer = client.get(PATH)
    failing.clear()
    assert answer.status_code == 503
    client.app.state.events.flush(5)
    assert raw(settings) == []
