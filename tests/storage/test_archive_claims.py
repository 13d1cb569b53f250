"""Two writers storing one original at once (review rev16batch M1), on (folder + SQLite) and (MinIO + PostgreSQL).

Writer B enters ``store`` while writer A has only inserted its pending row. B must not take that live row
for an interrupted store: it waits for A's claim, then finds the document stored. Before the claim, B
resumed A's row: a second PDF/A and sidecar in the store that no index row names, and a second event set.
"""

from __future__ import annotations

import signal
import threading
import time

import pytest
from store_job import start_paused

from storage.archive import Archive

try:
    from tests.logwatch import LogSeen
except ModuleNotFoundError:
    from logwatch import LogSeen

pytestmark = pytest.mark.integration


def _said() -> LogSeen:
    """Seen once a writer finds the original claimed by another (storage/claims.py)."""
    return LogSeen("digitize.storage", lambda record: "being stored by another writer" in record.getMessage())


def test_second_writer_waits_for_a_live_pending_row_instead_of_resuming_it(settings, make_document):
    first = make_document(name="register")
    second = make_document(name="register", pdfa_salt="-b")  # same original, converted again: other PDF/A bytes
    results = {}
    with _said() as said, Archive.open(settings) as a, Archive.open(settings) as b:
        real = a.index.insert_pending

        def b_stores():
            results["b"] = b.store(second.original, second.pdfa, second.report, second.meta, actor="b")

        def insert_then_b_enters(row):
            doc_id = real(row)
            thread = threading.Thread(target=b_stores)
            thread.start()
            deadline = time.monotonic() + 60
            while thread.is_alive() and not said.seen.is_set() and time.monotonic() < deadline:
                time.sleep(0.01)  # until B waits for A's claim (fixed) or has resumed A's row (old code)
            results["thread"] = thread
            return doc_id

        a.index.insert_pending = insert_then_b_enters
        try:
            results["a"] = a.store(first.original, first.pdfa, first.report, first.meta, actor="a")
        finally:
            a.index.insert_pending = real
        results["thread"].join(60)
        stored, again = results["a"], results["b"]
        rows = a.index.stored_documents() + a.index.pending_documents()
        assert [(r.doc_id, r.status) for r in rows] == [(stored.doc_id, "stored")]
        assert sorted(a.objects.list_keys()) == sorted([stored.original_key, stored.pdfa_key, stored.meta_key])
        assert [e.event_type for e in a.index.events(doc_id=stored.doc_id)] == \
            ["ingested", "converted", "stored", "verified"]
        assert again.already_stored is True and again.doc_id == stored.doc_id and again.pdfa_key == stored.pdfa_key


def test_a_pending_row_whose_writer_is_gone_is_resumed(settings, make_document):
    """The claim is released with its writer: a pending row left by a store that failed is resumed."""
    doc = make_document(name="interrupted")
    with Archive.open(settings) as a:
        real = a.objects.put

        def storage_fails(key, *args, **kwargs):
            if "/pdfa-" in key:
                raise OSError("disk gone")
            return real(key, *args, **kwargs)

        a.objects.put = storage_fails
        with pytest.raises(OSError):
            a.store(doc.original, doc.pdfa, doc.report, doc.meta)
        a.objects.put = real
    with Archive.open(settings) as b:
        assert [r.status for r in b.index.pending_documents()] == ["pending"]
        resumed = b.store(doc.original, doc.pdfa, doc.report, doc.meta)
        assert resumed.already_stored is False
        assert b.index.pending_documents() == [] and len(b.index.stored_documents()) == 1


def test_a_writer_in_another_process_is_waited_for_while_alive_and_resumed_once_killed(settings, make_document,
                                                                                      tmp_path):
    """Two processes: A (a real store_job.py child) stops with its objects written and its row pending; B waits
    for it rather than resuming its live row; A is killed -9, its claim goes with it, B resumes the row."""
    doc = make_document(name="two-processes")
    results = {}
    child = start_paused(settings, doc, tmp_path)
    try:
        with _said() as said, Archive.open(settings) as b:
            thread = threading.Thread(target=lambda: results.update(
                b=b.store(doc.original, doc.pdfa, doc.report, doc.meta, actor="b")))
            thread.start()
            assert said.seen.wait(60), "B did not wait for A's live store"
            assert thread.is_alive() and "b" not in results
            child.send_signal(signal.SIGKILL)
            child.wait()
            thread.join(60)
            [row] = b.index.stored_documents()
            assert b.index.pending_documents() == []
            assert (results["b"].doc_id, results["b"].already_stored) == (row.doc_id, False)  # resumed A's row
            assert sorted(b.objects.list_keys()) == sorted(row.keys())
            assert len(b.index.events(doc_id=row.doc_id)) == 4
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_verify_leaves_a_pending_row_to_its_live_writer_and_repairs_it_once_that_writer_is_gone(settings,
                                                                                                make_document):
    from datetime import timedelta

    from storage.claims import claim

    doc = make_document(name="slow-store")
    with Archive.open(settings) as a, Archive.open(settings) as checker:
        real = a.index.finalize
        held_claim = {}

        def stop_before_commit(row, *args, **kwargs):  # A has written its objects; its row is still pending
            raise RuntimeError("stopped before the index commit")

        a.index.finalize = stop_before_commit
        with pytest.raises(RuntimeError):
            a.store(doc.original, doc.pdfa, doc.report, doc.meta)
        a.index.finalize = real
        [pending] = checker.index.pending_documents()
        with claim(a.index, pending.original_sha256, pending.source_pages):  # a writer still at work on it
            held_claim["report"] = checker.verify(stale_after=timedelta(0))
            assert checker.index.pending_documents() != []
        assert held_claim["report"].repaired == []  # was: completed under its live writer
        assert [p.kind for p in checker.verify(stale_after=timedelta(0)).repaired] == ["completed"]
