"""Index backends: same schema, same answers on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

from pathlib import Path

import pytest

import storage

from digitize.errors import BadArgsError, ConfigError, NotFoundError, StorageError
from storage.index import ConflictError, open_index
from storage.models import CaseRecord, DocumentRow, Event, PageText

pytestmark = pytest.mark.integration
CASE = "000.00.31.H56-241015-0027"


@pytest.fixture(params=["sqlite", "postgresql"])
def index(request, tmp_path):
    dsn = "sqlite:///" + str(tmp_path / "index.sqlite3") if request.param == "sqlite" else request.getfixturevalue("postgres_dsn")
    idx = open_index(dsn)
    yield idx
    idx.close()


def doc_row(sha: str = "a" * 64, case_id: str | None = CASE, sequence: int = 1, pages: str = "") -> DocumentRow:
    return DocumentRow(case_id=case_id, sequence=sequence, original_sha256=sha, pdfa_sha256="b" * 64,
                       meta_sha256="c" * 64, original_key=f"k/{sha[:8]}{pages}/o", pdfa_key=f"k/{sha[:8]}{pages}/p",
                       meta_key=f"k/{sha[:8]}{pages}/m", source_pages=pages, title="Đơn đề nghị", created_at="2024-10-15")


def stored(index, row: DocumentRow, pages: tuple[str, ...] = ()) -> DocumentRow:
    row.doc_id = index.insert_pending(row)
    index.finalize(row, [PageText(i + 1, t) for i, t in enumerate(pages)],
                   [Event("stored", "success", "test", "pytest", doc_id=row.doc_id, checksum=row.pdfa_sha256)])
    return row


def test_migrations_are_versioned_and_applied_once(index, tmp_path):
    latest = max(int(p.name.split("_")[0]) for p in (Path(__file__).parents[2] / "storage" / "migrations").glob("*.sql"))
    assert index.schema_version() == latest >= 2
    assert index.migrate() == []


def test_unknown_dsn_is_a_config_error():
    with pytest.raises(ConfigError, match="must start with sqlite:/// or postgresql://"):
        open_index("mysql://x")


def test_unreachable_postgresql_is_a_storage_error():
    with pytest.raises(StorageError, match="cannot connect to index"):
        open_index("postgresql://nobody:secret@127.0.0.1:1/none")


def test_case_upsert_creates_then_updates_only_the_fields_it_carries(index):
    assert index.upsert_case(CaseRecord(CASE, applicant="Nguyễn Văn A", agency="UBND", archive={"OrganId": "X"})) is True
    assert index.upsert_case(CaseRecord(CASE, applicant="Nguyễn Văn B", status="done", archive={"Rights": "1"})) is False
    case = index.get_case(CASE)
    assert (case.applicant, case.status, case.agency) == ("Nguyễn Văn B", "done", "UBND")
    assert case.archive == {"OrganId": "X", "Rights": "1"}
    assert [h.case_id for h in index.search("nguyen van b")] == [CASE]
    assert index.search("nguyen van a") == []
    assert index.case_count() == 1


def test_pending_document_is_invisible_until_finalized(index):
    row = doc_row()
    row.doc_id = index.insert_pending(row)
    assert index.documents(CASE) == [] and index.find_document("a" * 64).status == "pending"
    assert index.search("đơn") == []
    stored(index, doc_row("d" * 64, sequence=2), ["x"])
    index.finalize(row, [PageText(1, "quyền sử dụng đất")], [])
    assert [d.sequence for d in index.documents(CASE)] == [1, 2]


def test_same_original_twice_with_same_pages_is_refused_by_the_schema(index):
    stored(index, doc_row())
    with pytest.raises(ConflictError):
        index.insert_pending(doc_row(sequence=5))
    assert index.insert_pending(doc_row(sequence=5, pages="5-8"))  # a different slice of the same stack


def test_events_are_append_only(index):
    row = stored(index, doc_row(), ["trang một"])
    with pytest.raises(StorageError, match="append-only"):
        index._execute("UPDATE events SET outcome = 'failure'")
    with pytest.raises(StorageError, match="append-only"):
        index._execute("DELETE FROM events")
    assert [e.event_type for e in index.events(doc_id=row.doc_id)] == ["stored"]


def test_unmatched_lists_documents_without_a_known_case_until_linked(index):
    orphan = stored(index, doc_row("e" * 64, case_id=None), ["giấy tờ"])
    named = stored(index, doc_row("f" * 64), ["giấy tờ"])  # names a case that is not imported yet
    assert {d.doc_id for d in index.unmatched()} == {orphan.doc_id, named.doc_id}
    index.upsert_case(CaseRecord(CASE))
    assert [d.doc_id for d in index.unmatched()] == [orphan.doc_id]
    linked = index.link(orphan.doc_id, CASE, Event("linked", "success", "test", "pytest", doc_id=orphan.doc_id))
    assert (linked.case_id, linked.sequence) == (CASE, 2)
    assert index.unmatched() == []
    again = index.link(named.doc_id, CASE, Event("linked", "success", "t", "t", doc_id=named.doc_id))
    assert again.sequence == named.sequence  # already in that case: nothing moves
    with pytest.raises(NotFoundError):
        index.link(999, CASE, Event("linked", "success", "t", "t"))


def test_accentless_query_finds_accented_text_including_d_stroke(index):
    row = stored(index, doc_row(), ["Giấy chứng nhận quyền sử dụng đất", "Đơn đăng ký biến động"])
    hits = index.search("quyen su dung dat")
    assert [(h.doc_id, h.page) for h in hits] == [(row.doc_id, 1)]
    assert hits[0].snippet.startswith("Giấy chứng nhận [quyền] [sử] [dụng] [đất]")
    assert [h.page for h in index.search("DON DANG KY")] == [2]


def test_exactly_accented_matches_rank_first(index):
    accentless = stored(index, doc_row("1" * 64, sequence=1), ["dat dat dat nen nha o"])
    accented = stored(index, doc_row("2" * 64, sequence=2), ["đất ở tại nông thôn, một lần"])
    assert [h.doc_id for h in index.search("đất")][:2] == [accented.doc_id, accentless.doc_id]
    assert [h.exact for h in index.search("đất")][:2] == [True, False]
    # a query without accents has no accents to match exactly: both are found, neither is "exact"
    assert {(h.doc_id, h.exact) for h in index.search("dat")} == {(accentless.doc_id, False), (accented.doc_id, False)}


def test_a_full_exact_pass_skips_the_folded_one_and_the_folded_pass_fills_up(index, monkeypatch):
    """Candidates: exact-accent matches first, then folded ones not listed yet, ``limit`` in all; when the exact
    pass alone fills the list, the folded pass is not asked at all (it could add nothing)."""
    exact_rows = [stored(index, doc_row(str(i) * 64, sequence=i), ["đất ở"]) for i in (1, 2, 3)]
    folded_rows = [stored(index, doc_row(str(i) * 64, sequence=i), ["dat o"]) for i in (4, 5)]
    passes = []
    real = index._match_ids
    monkeypatch.setattr(index, "_match_ids", lambda q, exact, *a: passes.append(exact) or real(q, exact, *a))
    assert [h.exact for h in index.search("đất", limit=3)] == [True] * 3 and set(passes) == {True}
    passes.clear()
    hits = index.search("đất", limit=5)
    assert [h.exact for h in hits] == [True] * 3 + [False] * 2 and False in passes
    assert {h.doc_id for h in hits} == {r.doc_id for r in exact_rows + folded_rows}
    assert [h.exact for h in index.search("đất", limit=4)] == [True] * 3 + [False]


def test_metadata_and_case_records_are_searchable(index):
    index.upsert_case(CaseRecord(CASE, applicant="Trần Thị Đào", procedure_name="Cấp đổi giấy chứng nhận"))
    stored(index, doc_row(), [])
    hits = index.search("tran thi dao")
    assert [(h.case_id, h.doc_id, h.page) for h in hits] == [(CASE, None, None)]
    assert index.search("don de nghi")[0].page == 0  # the document title


def test_empty_query_is_a_bad_argument(index):
    with pytest.raises(BadArgsError, match="no words"):
        index.search(" -- ")


def test_processes_opening_a_new_archive_together_all_get_its_index(tmp_path):
    """A batch's workers start at the same instant and race to create the index; none may fail
    (SQLite answers "database is locked" at once to a second WAL switch, without waiting)."""
    import multiprocessing
    import os

    from digitize.config import load_settings
    from storage.archive import Archive

    def open_at_once(data_dir: str, barrier) -> None:
        settings = load_settings("/dev/null", env={"DIGITIZE_DATA_DIR": data_dir})
        barrier.wait()
        try:
            Archive.open(settings).close()
        except StorageError:
            os._exit(1)
        os._exit(0)

    context = multiprocessing.get_context("fork")
    for attempt in range(10):
        barrier = context.Barrier(4)
        procs = [context.Process(target=open_at_once, args=(str(tmp_path / f"data-{attempt}"), barrier))
                 for _ in range(4)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        assert [p.exitcode for p in procs] == [0] * 4, attempt


def test_a_failed_postgresql_setup_closes_its_connection(monkeypatch):
    """A migration or setting that failed in PostgresIndex.__init__ left the connection open (a server
    slot held until the collector ran)."""
    import psycopg

    from storage import index_pg

    class Connection:
        closed = broken = False

        def execute(self, *args):
            raise psycopg.OperationalError("canceling statement due to lock timeout")

        def close(self):
            self.closed = True

    conn = Connection()
    monkeypatch.setattr(index_pg, "_connect", lambda dsn: conn)
    with pytest.raises(psycopg.OperationalError):
        index_pg.PostgresIndex("postgresql://digitize@127.0.0.1/records")
    assert conn.closed


def test_opening_an_index_up_to_date_takes_no_write_lock(tmp_path):
    """Every open ran each migration's check in a BEGIN IMMEDIATE: behind a batch's write, for 30 s."""
    import sqlite3

    from storage.index import open_index

    dsn = f"sqlite:///{tmp_path / 'index.sqlite3'}"
    open_index(dsn).close()
    other = sqlite3.connect(tmp_path / "index.sqlite3", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        open_index(dsn, wait_timeout=0.2).close()  # no wait: the check only reads
    finally:
        other.execute("ROLLBACK")
        other.close()


def test_a_bounded_sqlite_statement_is_interrupted_past_its_time(tmp_path):
    """Only the wait for a lock was bounded: a statement that ran long (a huge search) held its caller."""
    import threading

    index = open_index(f"sqlite:///{tmp_path / 'index.sqlite3'}", wait_timeout=0.3)
    outcome: list = []
    endless = ("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 10000000000) "
               "SELECT count(*) FROM n")

    def run():
        try:
            outcome.append(index._scalar(endless))
        except StorageError as e:
            outcome.append(e)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(10)
    ran_on = worker.is_alive()
    if ran_on:
        index.conn.interrupt()
        worker.join(30)
    assert not ran_on, "the statement ran on past its time"
    assert outcome and isinstance(outcome[0], StorageError) and "interrupted" in str(outcome[0])
    assert index._scalar("SELECT 1") == 1  # the connection goes on
    index.close()


def test_concurrent_merges_of_one_case_on_postgresql_lose_no_field(postgres_dsn):
    """Review3 r3desk M2: under READ COMMITTED two merges of one case each read the old row and wrote every
    column from it: the later write put back the field the other had changed (a status lost), and its
    'before' (the audit event's) did not name what it overwrote. SQLite takes its write lock at BEGIN."""
    import threading
    import time

    first, second, watcher = open_index(postgres_dsn), open_index(postgres_dsn), open_index(postgres_dsn)
    try:
        first.upsert_case(CaseRecord(CASE, applicant="Trần Thị B", status="Mới"))
        real, read, go, out = first.get_case, threading.Event(), threading.Event(), {}

        def pausing(case_id, lock=False):  # the first merge stops between its read and its write
            found = real(case_id, lock)
            read.set()
            go.wait(30)
            return found

        first.get_case = pausing
        t1 = threading.Thread(target=lambda: out.setdefault(1, first.merge_case(CaseRecord(CASE,
                                                                                           applicant="Nguyễn Văn C"))))
        t1.start()
        assert read.wait(30)
        t2 = threading.Thread(target=lambda: out.setdefault(2, second.merge_case(CaseRecord(CASE,
                                                                                            status="Đã xử lý"))))
        t2.start()
        deadline = time.monotonic() + 30  # until the second merge ends (old code) or waits for the row lock
        while t2.is_alive() and time.monotonic() < deadline and not watcher._scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"):
            time.sleep(0.05)
        go.set()
        t1.join(30)
        t2.join(30)
        final = watcher.get_case(CASE)
        assert (final.applicant, final.status) == ("Nguyễn Văn C", "Đã xử lý")
        assert out[2].applicant == "Nguyễn Văn C"  # the second merge's 'before' is the first's result
    finally:
        go.set()
        for idx in (first, second, watcher):
            idx.close()
