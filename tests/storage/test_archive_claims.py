"""Two writers storing one original at once (review rev16batch M1), on (folder + SQLite) and (MinIO + PostgreSQL).

Writer B enters ``store`` while writer A has only inserted its pending row. B must not take that live row
for an interrupted store: it waits for A's claim, then finds the document stored. Before the claim, B
resumed A's row: a second PDF/A and sidecar in the store that no index row names, and a second event set.
"""

from __future__ import annotations

import dataclasses
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


def _cut_claim(a: Archive, other: Archive) -> None:
    """What takes a live writer's claim from it: its PostgreSQL session ended (a server restart, a firewall
    dropping an idle connection during a long upload, an admin's pg_terminate_backend), or, on SQLite, its
    lock file removed by someone tidying the data folder."""
    from pathlib import Path

    from storage.claims import CLAIMS_SUFFIX

    if a.index.dialect == "postgresql":
        pid = a.index._scalar("SELECT pg_backend_pid()")
        assert other.index._scalar("SELECT pg_terminate_backend(?)", (pid,))
        deadline = time.monotonic() + 30
        while other.index._scalar("SELECT count(*) FROM pg_stat_activity WHERE pid = ?", (pid,)):
            assert time.monotonic() < deadline, "the terminated session did not end"
            time.sleep(0.05)
    else:
        for lock in Path(a.index.where + CLAIMS_SUFFIX).iterdir():
            lock.unlink()


def test_a_writer_that_lost_its_claim_stops_instead_of_storing_over_the_one_that_took_it(settings, make_document):
    """Review rev2_batch16b R1: A's claim goes mid-store (PostgreSQL: its session, which the index replaces
    silently at the next statement); B takes the claim, resumes A's row and stores it. A used to go on
    without a claim: its own PDF/A and sidecar written, B's keys overwritten, a second event set. Now A
    stops with a retryable StorageError before its next write, and B's store is the only one."""
    from digitize.errors import StorageError
    from storage.claims import ClaimLost

    first = make_document(name="register")
    second = make_document(name="register", pdfa_salt="-b")  # converted again by B: other PDF/A bytes
    results = {}
    with Archive.open(settings) as a, Archive.open(settings) as b:
        real = a.index.insert_pending

        def insert_then_lose_the_claim(row):
            doc_id = real(row)
            _cut_claim(a, b)
            results["b"] = b.store(second.original, second.pdfa, second.report, second.meta, actor="b")
            return doc_id

        a.index.insert_pending = insert_then_lose_the_claim
        try:
            with pytest.raises(ClaimLost, match="claim was lost") as lost:
                a.store(first.original, first.pdfa, first.report, first.meta, actor="a")
        finally:
            a.index.insert_pending = real
        assert isinstance(lost.value, StorageError)  # retryable: the next attempt finds it stored
        [row] = b.index.stored_documents()
        assert b.index.pending_documents() == []
        assert (results["b"].doc_id, results["b"].pdfa_key) == (row.doc_id, row.pdfa_key)
        assert row.pdfa_sha256 == second.report.output_sha256
        assert sorted(b.objects.list_keys()) == sorted(row.keys())
        assert [e.event_type for e in b.index.events(doc_id=row.doc_id)] == ["ingested", "converted", "stored",
                                                                              "verified"]
        again = a.store(first.original, first.pdfa, first.report, first.meta, actor="a")  # the retry
        assert (again.doc_id, again.already_stored) == (row.doc_id, True)


def test_finalize_refuses_a_row_stored_or_re_planned_by_another_writer(settings, make_document):
    """Review rev2_batch16b R2: whatever hole a claim may have (a shared folder's flock, a pooler), a second
    finalize of one row, or one with keys another writer re-planned, is refused: no second event set."""
    from storage.index import ConflictError

    doc = make_document(name="finalized-once")
    with Archive.open(settings) as a:
        real = a.index.finalize
        a.index.finalize = lambda row, *args, **kwargs: (_ for _ in ()).throw(RuntimeError("stopped before commit"))
        try:
            with pytest.raises(RuntimeError):
                a.store(doc.original, doc.pdfa, doc.report, doc.meta)
        finally:
            a.index.finalize = real
        [mine] = a.index.pending_documents()
        theirs = dataclasses.replace(mine, pdfa_key=mine.pdfa_key + ".replanned")
        a.index.update_document(theirs)  # another writer's re-plan of the row
        with pytest.raises(ConflictError, match="another writer"):
            a.index.finalize(mine, [], a._store_events(mine, doc.report, "a"))
        assert a.index.events(doc_id=mine.doc_id) == [] and a.index.pending_documents() != []
        a.index.finalize(theirs, [], a._store_events(theirs, doc.report, "b"))
        with pytest.raises(ConflictError, match="another writer"):
            a.index.finalize(theirs, [], a._store_events(theirs, doc.report, "b"))  # stored already
        assert len(a.index.events(doc_id=mine.doc_id)) == 4


def test_verify_only_tries_a_claim_and_never_says_it_waits(settings, make_document):
    """Review rev2_batch16b R7: a zero wait (verify) logged "waiting for it", then did not wait."""
    from storage.claims import ClaimBusy, claim

    doc = make_document(name="busy")
    sha = doc.report.input_sha256
    with _said() as said, Archive.open(settings) as a, Archive.open(settings) as checker:
        with claim(a.index, sha, ""):
            with pytest.raises(ClaimBusy):
                with claim(checker.index, sha, "", wait=0):
                    pass
        assert not said.seen.is_set()
