"""A whole download's access event is sent ahead of the object's read (storage/access.py Download.read,
Gate.record_ahead), so that its group commit overlaps the read and the SHA-256 check; the answer still
waits for it; a read that fails its check takes the event back, so no failed download is ever shown as
done (real SQLite index; the app in process)."""

from __future__ import annotations

import hashlib
import os
import stat
import threading

from portal_data import CASE_A
from storage import access
from storage.objects import FolderStore

from test_events import recorded, served  # noqa: F401 - served is a fixture


def downloads(settings) -> list[tuple[str, str]]:
    """The log's downloads of document 1 as the case page and the API show them (withheld ones folded)."""
    events = recorded(settings, "pdfa of document 1")
    return [(e.outcome, e.detail) for e in access.fold_withheld(events)]


def test_a_downloads_event_is_sent_before_its_object_is_read_and_committed_before_the_answer(served,
                                                                                              monkeypatch):
    client, settings, pdfa = served
    writer = client.app.state.events
    order: list[str] = []
    real_submit, real_read = writer.submit, FolderStore.read_chunks

    def submit(event):
        order.append(f"queued: {event.detail}")
        return real_submit(event)

    def read_chunks(store, key):
        order.append("read")
        yield from real_read(store, key)

    monkeypatch.setattr(writer, "submit", submit)
    monkeypatch.setattr(FolderStore, "read_chunks", read_chunks)
    answer = client.get(f"/api/v1/cases/{CASE_A}/documents/1/pdfa")
    assert answer.status_code == 200 and answer.content == pdfa
    assert order == ["queued: downloaded pdfa of document 1", "read"]  # the old code read first
    assert downloads(settings) == [("success", "downloaded pdfa of document 1")]  # committed before the answer
    got = recorded(settings, "downloaded pdfa of document 1")[0]
    assert got.checksum == hashlib.sha256(pdfa).hexdigest()  # the SHA-256 the read matched


def corrupt(settings, pdfa: bytes) -> None:
    from storage.archive import Archive

    with Archive.open(settings) as archive:
        path = archive.objects.root / archive.documents(CASE_A)[0].pdfa_key
    data = bytearray(pdfa)
    data[len(data) // 2] ^= 0xFF  # bit rot: same length, other bytes
    os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)
    path.write_bytes(bytes(data))


def test_a_download_that_fails_its_check_takes_back_the_event_sent_ahead(served):
    """Dropped if the writer has not taken it yet, else compensated (which one depends on the writer's
    timing): either way the log shows the failure with the SHA-256 read, and no download as done."""
    client, settings, pdfa = served
    corrupt(settings, pdfa)
    answer = client.get(f"/api/v1/cases/{CASE_A}/documents/1/pdfa")
    assert answer.status_code == 500 and answer.json()["error"] == "fixity-failed"
    assert pdfa[:64] not in answer.content
    client.app.state.events.flush(5)
    shown = downloads(settings)
    assert ("failure", "downloaded pdfa of document 1") in shown
    assert shown and all(outcome == "failure" for outcome, _ in shown), shown
    failed = [e for e in recorded(settings, "downloaded pdfa of document 1") if e.detail.startswith("downloaded")
              and e.outcome == "failure"]
    assert len(failed) == 1 and failed[0].checksum != hashlib.sha256(pdfa).hexdigest()


def test_a_download_whose_event_was_committed_before_its_check_failed_is_shown_as_not_sent(served,
                                                                                            monkeypatch):
    """Its event sent ahead was already committed when the check failed: a compensating event follows, so
    the log never shows that download as done."""
    client, settings, pdfa = served
    writer = client.app.state.events
    corrupt(settings, pdfa)
    real_read = FolderStore.read_chunks
    flushed = threading.Event()

    def read_chunks(store, key):
        flushed.set() if writer.flush(5) else None  # the event sent ahead is committed before the read
        yield from real_read(store, key)

    monkeypatch.setattr(FolderStore, "read_chunks", read_chunks)
    answer = client.get(f"/api/v1/cases/{CASE_A}/documents/1/pdfa")
    assert answer.status_code == 500 and flushed.is_set()
    writer.flush(5)
    assert len(recorded(settings, access.WITHHELD)) == 1  # the committed one is compensated
    shown = downloads(settings)
    assert shown and all(outcome == "failure" for outcome, _ in shown), shown
