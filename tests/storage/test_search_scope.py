"""An officer's search candidates are its agencies' (migration 0005): the full-text query itself is limited to
the entries of the cases (and shared dossiers) of the reader's agencies, kept right by every re-filing."""

from __future__ import annotations

import pytest

from storage import index as index_module
from digitize.errors import StorageError
from storage.access import Principal, SearchFilters
from storage.index import open_index
from storage.index_accounts import SEARCH_CAP
from storage.index_sqlite import SqliteIndex
from storage.models import CaseRecord, DocumentRow, Event, PageText
from storage.search import parse_query

OWN = "000.00.31.H56"
OTHER = "000.00.12.H29"
CASE_OWN = f"{OWN}-241015-0027"
CASE_OTHER = f"{OTHER}-241016-0003"


def add_document(index, case_id: str | None, text: str, n: int) -> int:
    """A stored document straight in the index (no objects: search reads only the index)."""
    sha = f"{n:064x}"
    doc = DocumentRow(case_id, index.next_sequence(case_id), sha, sha, "", f"o/{sha}", f"p/{sha}", "")
    doc.doc_id = index.insert_pending(doc)
    index.finalize(doc, [PageText(1, text)], [])
    return doc.doc_id


def candidates(index, text: str, agencies: tuple[str, ...] | None) -> list[int]:
    """The entries the agency-filtered full-text query finds (search uses it above RANK_CAP matches)."""
    return index._match_ids(parse_query(text), False, SEARCH_CAP, "newest", agencies)


def test_an_officer_finds_its_documents_beyond_every_agencys_first_candidates(archive):
    """1 100 newer documents of another agency share the word: the officer's 3 were past the first 1 000."""
    index = archive.index
    for case_id in (CASE_OWN, CASE_OTHER):
        index.upsert_case(CaseRecord(case_id, status="done"))
    with index.transaction():
        for n in range(3):
            add_document(index, CASE_OWN, f"hợp đồng chuyển nhượng số {n}", n + 1)
        for n in range(SEARCH_CAP + 100):
            add_document(index, CASE_OTHER, f"hợp đồng thuê nhà số {n}", n + 100)
    officer = archive.gate(Principal("an", "officer", (OWN,))).search("hop dong", limit=20)
    assert [h.case_id for h in officer.hits] == [CASE_OWN] * 3 and officer.total == 3
    everyone = archive.gate(Principal("arch", "archivist")).search("hop dong", limit=20)
    assert {h.case_id for h in everyone.hits} == {CASE_OTHER} and everyone.capped  # all agencies: as before
    other = archive.gate(Principal("bo", "officer", (OTHER,))).search("hop dong", limit=20)
    assert {h.case_id for h in other.hits} == {CASE_OTHER}
    # the officer's first few candidates refused by a filter: the search goes on to all SEARCH_CAP of its own
    open_case = f"{OWN}-241017-0001"
    index.upsert_case(CaseRecord(open_case, status="open"))
    with index.transaction():
        for n in range(60):
            add_document(index, open_case, f"hợp đồng mua bán số {n}", 5000 + n)
    gate = archive.gate(Principal("an2", "officer", (OWN,)))
    # its 63 matches alone decide the order (by relevance: below RANK_CAP), not everyone's 1 163 (review 11b H1)
    first = gate.search("hop dong", limit=20)
    assert len(first.hits) == 20 and {h.case_id for h in first.hits} <= {open_case, CASE_OWN}
    closed = gate.search("hop dong", SearchFilters(status="done"), limit=20)
    assert [h.case_id for h in closed.hits] == [CASE_OWN] * 3 and closed.total == 3 and not closed.capped


def test_an_officers_page_does_not_depend_on_other_agencies_matches(archive):
    """Review 11b H1: the officer's results, count and "more" flag are the same whether another agency holds
    0, 10 or over RANK_CAP entries with the words (before, the first slice of everyone's candidates was judged,
    so other agencies' matches showed as a smaller count and a "more" flag)."""
    from storage.access import SEARCH_CACHE

    index = archive.index
    officer = archive.gate(Principal("an", "officer", (OWN,)))
    for n in range(45):  # long entries, so bm25 ranks them below the other agency's short ones
        officer.upsert_case(f"{OWN}-241015-{n + 1:04d}", {"applicant": "nguyen thi hoa 001190012345 " + "x " * 300})
    seen, held = [], 0
    for planted in (0, 10, index_module.RANK_CAP + 100):
        with index.transaction():
            for n in range(held, planted):
                case_id = f"{OTHER}-241016-{n + 1:04d}"
                index.upsert_case(CaseRecord(case_id))
                add_document(index, case_id, "Nguyễn Thị Hoa CCCD 001190012345", n + 1)
        held = planted
        SEARCH_CACHE.clear()
        pages = [officer.search("nguyen thi hoa 001190012345", limit=20, offset=offset) for offset in (0, 20, 40)]
        seen.append([([(h.case_id, h.page) for h in p.hits], p.total, p.capped) for p in pages])
    assert {case_id[:13] for hits, _, _ in seen[0] for case_id, _ in hits} == {OWN}
    assert [(len(hits), total, more) for hits, total, more in seen[0]] == [(20, 45, False), (20, 45, False),
                                                                         (5, 45, False)]  # all 45, paged
    assert seen[1] == seen[0] and seen[2] == seen[0]


def test_other_agencies_exact_matches_do_not_crowd_out_an_officers_folded_ones(archive):
    """Review 11b L1: a query typed with accents; another agency's 900 exact matches took the officer's
    candidate budget, so only 100 of its 300 folded-only matches (accents lost in OCR) were reachable."""
    index = archive.index
    for case_id in (CASE_OWN, CASE_OTHER):
        index.upsert_case(CaseRecord(case_id))
    with index.transaction():
        for n in range(300):
            add_document(index, CASE_OWN, f"hop dong so {n}", n + 1)
        for n in range(900):
            add_document(index, CASE_OTHER, f"hợp đồng thuê số {n}", n + 1000)
    gate = archive.gate(Principal("an", "officer", (OWN,)))
    pages = [gate.search("hợp đồng", limit=100, offset=offset) for offset in range(0, 400, 100)]
    assert [len(p.hits) for p in pages] == [100, 100, 100, 0]
    assert len({(h.doc_id, h.page) for p in pages for h in p.hits}) == 300 and pages[2].total == 300


def test_filing_linking_and_sharing_move_a_documents_candidates_to_its_readers(archive):
    index = archive.index
    unmatched = add_document(index, None, "biên bản bàn giao", 1)
    assert candidates(index, "bien ban", (OWN,)) == [] and candidates(index, "bien ban", None)
    event = Event("linked", "success", "test", "test", unmatched, CASE_OWN)
    index.link(unmatched, CASE_OWN, event)  # filed: its page entries (not only page 0) are the agency's
    own = candidates(index, "bien ban", (OWN,))
    assert own and own == candidates(index, "bien ban", None) and candidates(index, "bien ban", (OTHER,)) == []
    index.share(unmatched, CASE_OTHER, None, Event("linked", "success", "test", "test", unmatched, CASE_OTHER))
    assert candidates(index, "bien ban", (OTHER,)) == own == candidates(index, "bien ban", (OTHER, OWN))
    assert candidates(index, "bien ban", ()) == []
    # a link taken away, a document moved by hand (no such calls yet: the triggers cover any write)
    index._execute("DELETE FROM case_links WHERE doc_id = ?", (unmatched,))
    assert candidates(index, "bien ban", (OTHER,)) == [] and candidates(index, "bien ban", (OWN,)) == own
    index._execute("UPDATE documents SET case_id = ? WHERE doc_id = ?", (CASE_OTHER, unmatched))
    assert candidates(index, "bien ban", (OWN,)) == [] and candidates(index, "bien ban", (OTHER,)) == own


def test_case_records_are_their_agencys_candidates(archive):
    archive.index.upsert_case(CaseRecord(CASE_OWN, applicant="Trần Thị Bích"))
    assert candidates(archive.index, "bich", (OWN,)) and not candidates(archive.index, "bich", (OTHER,))


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_the_migration_fills_the_agencies_of_an_existing_index(backend, request, tmp_path, monkeypatch):
    dsn = f"sqlite:///{tmp_path / 'index.sqlite3'}" if backend == "sqlite" else request.getfixturevalue("postgres_dsn")
    every = index_module._migration_scripts
    monkeypatch.setattr(index_module, "_migration_scripts", lambda: [p for p in every() if p.name[:4] < "0005"])

    def insert_before_0005(self, case_id, doc_id, page, text):  # as index_sqlite.py wrote entries then
        entry_id = self._scalar("INSERT INTO search_entries (case_id, doc_id, page, text) VALUES (?, ?, ?, ?) "
                                "RETURNING entry_id", (case_id, doc_id, page, text))
        self._execute("INSERT INTO search_fts (rowid, exact, folded) VALUES (?, ?, ?)",
                      (entry_id, *index_module.search_tokens(text)))

    monkeypatch.setattr(SqliteIndex, "_insert_search_entry", insert_before_0005)
    old = open_index(dsn)
    old.upsert_case(CaseRecord(CASE_OWN))
    filed = old.insert_pending(DocumentRow(CASE_OWN, 1, "a" * 64, "a" * 64, "", "o/a", "p/a", ""))
    old.finalize(old.document(filed), [PageText(1, "tờ khai đăng ký")], [])
    loose = old.insert_pending(DocumentRow(None, 1, "b" * 64, "b" * 64, "", "o/b", "p/b", ""))
    old.finalize(old.document(loose), [PageText(1, "tờ khai đăng ký")], [])
    old.close()
    monkeypatch.undo()
    new = open_index(dsn)
    try:
        assert new.schema_version() >= 5
        assert len(candidates(new, "to khai", None)) == 2  # the two documents' pages
        assert len(candidates(new, "to khai", (OWN,))) == 1 and candidates(new, "to khai", (OTHER,)) == []
    finally:
        new.close()


def insert_as_before_0005(index, case_id, doc_id, page, text) -> None:
    """The search entry as SQLite code older than migration 5 wrote it (no agencies column): what a watcher
    or batch worker started before an upgrade keeps doing (review 11b M1)."""
    entry_id = index._scalar("INSERT INTO search_entries (case_id, doc_id, page, text) VALUES (?, ?, ?, ?) "
                             "RETURNING entry_id", (case_id, doc_id, page, text))
    index._execute("INSERT INTO search_fts (rowid, exact, folded) VALUES (?, ?, ?)",
                   (entry_id, *index_module.search_tokens(text)))


def test_entries_an_older_writer_left_without_agencies_are_repaired(tmp_path, monkeypatch):
    """An index at migration 5 where an old-code writer stored a document (agencies NULL): its officer did
    not find it; migration 6 fills it in."""
    dsn = f"sqlite:///{tmp_path / 'index.sqlite3'}"
    every = index_module._migration_scripts
    monkeypatch.setattr(index_module, "_migration_scripts", lambda: [p for p in every() if p.name[:4] < "0006"])
    monkeypatch.setattr(SqliteIndex, "_insert_search_entry", insert_as_before_0005)
    old = open_index(dsn)
    old.upsert_case(CaseRecord(CASE_OWN))
    filed = old.insert_pending(DocumentRow(CASE_OWN, 1, "a" * 64, "a" * 64, "", "o/a", "p/a", ""))
    old.finalize(old.document(filed), [PageText(1, "tờ khai đăng ký")], [])
    assert old._scalar("SELECT count(*) FROM search_fts WHERE agencies IS NULL") == 3  # the case, pages 0 and 1
    old.close()
    monkeypatch.undo()
    new = open_index(dsn)
    try:
        assert new._scalar("SELECT count(*) FROM search_fts WHERE agencies IS NULL") == 0
        assert len(candidates(new, "to khai", (OWN,))) == 1 and candidates(new, "to khai", (OTHER,)) == []
    finally:
        new.close()


def test_an_older_writer_cannot_store_an_entry_without_agencies(archive, make_document):
    """After migration 6 an old writer's full-text insert fails, so its whole store rolls back (the scan stays
    for a retry by the upgraded process) instead of a document its officers never find."""
    index = archive.index
    if not isinstance(index, SqliteIndex):
        pytest.skip("PostgreSQL fills the agencies of any insert (a BEFORE INSERT trigger)")
    index.upsert_case(CaseRecord(CASE_OWN))
    doc = DocumentRow(CASE_OWN, 1, "c" * 64, "c" * 64, "", "o/c", "p/c", "")
    doc.doc_id = index.insert_pending(doc)
    with pytest.raises(StorageError, match="constraint failed"):
        with index.transaction():
            insert_as_before_0005(index, None, doc.doc_id, 1, "biên bản bàn giao")
    assert index._scalar("SELECT count(*) FROM search_entries WHERE doc_id = ?", (doc.doc_id,)) == 0
    assert index._scalar("SELECT count(*) FROM search_fts WHERE agencies IS NULL") == 0
    index.finalize(index.document(doc.doc_id), [PageText(1, "biên bản bàn giao")], [])  # the new code's write
    assert len(candidates(index, "bien ban", (OWN,))) == 1 and candidates(index, "bien ban", (OTHER,)) == []
    assert archive.gate(Principal("an", "officer", (OWN,))).search("bien ban").total == 1


@pytest.mark.parametrize("code", [OWN, "H56", "000.00.00.A00"])
def test_the_python_token_is_the_sql_one(code):
    from storage.search import agency_token

    index = open_index("sqlite:///")
    try:
        assert index._scalar("SELECT 'g' || hex(?)", (code,)).lower() == agency_token(code)
    finally:
        index.close()


@pytest.mark.parametrize("order", ["refile-first", "share-first", "two-shares"])
def test_concurrent_share_and_refiling_leave_right_agencies_on_postgresql(postgres_dsn, order):
    """Review 11b M2: two READ COMMITTED transactions, one re-filing a document (documents.case_id) and one
    sharing it into another agency's dossier (case_links), the second waiting for the first's locks: every
    entry of the document must end with the agencies recomputed from the committed state."""
    import threading
    import time

    import psycopg

    index = open_index(postgres_dsn)
    try:
        doc = DocumentRow(f"{OWN}-241015-0001", 1, "ab" * 32, "ab" * 32, "", "o/x", "p/x", "")  # case not imported
        doc.doc_id = index.insert_pending(doc)
        index.finalize(doc, [PageText(1, "hợp đồng")], [])

        def share(conn, case_id=f"{OTHER}-241015-0002"):
            conn.execute("INSERT INTO case_links (doc_id, case_id, sequence, created_at) VALUES (%s, %s, 1, 'x')",
                         (doc.doc_id, case_id))

        def refile(conn):
            conn.execute("UPDATE documents SET case_id = %s, sequence = 1 WHERE doc_id = %s",
                         ("000.00.77.H77-241015-0003", doc.doc_id))

        first, second = {"refile-first": (refile, share), "share-first": (share, refile),
                         "two-shares": (share, lambda c: share(c, "000.00.88.H88-241015-0004"))}[order]
        with psycopg.connect(postgres_dsn) as t1, psycopg.connect(postgres_dsn) as t2:
            first(t1)
            waiter = t2.execute("SELECT pg_backend_pid()").fetchone()[0]
            t2.commit()
            thread = threading.Thread(target=lambda: (second(t2), t2.commit()))
            thread.start()
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not index._scalar(
                    "SELECT 1 FROM pg_stat_activity WHERE pid = ? AND wait_event_type = 'Lock'", (waiter,)):
                time.sleep(0.05)
            t1.commit()
            thread.join(10)
            assert not thread.is_alive()
        rows = index._execute("SELECT page, agencies, search_entry_agencies(case_id, doc_id) FROM search_entries "
                              "WHERE doc_id = ?", (doc.doc_id,)).fetchall()
        assert len(rows) == 2 and all(sorted(stored) == sorted(now) for _, stored, now in rows), rows
    finally:
        index.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_migration_6_applies_to_an_index_at_migration_5(backend, request, tmp_path, monkeypatch):
    dsn = f"sqlite:///{tmp_path / 'index.sqlite3'}" if backend == "sqlite" else request.getfixturevalue("postgres_dsn")
    every = index_module._migration_scripts
    monkeypatch.setattr(index_module, "_migration_scripts", lambda: [p for p in every() if p.name[:4] < "0006"])

    def insert_at_0005(self, case_id, doc_id, page, text):  # as index_sqlite.py wrote entries at migration 5
        entry_id = self._scalar("INSERT INTO search_entries (case_id, doc_id, page, text) VALUES (?, ?, ?, ?) "
                                "RETURNING entry_id", (case_id, doc_id, page, text))
        self._execute("INSERT INTO search_fts (rowid, exact, folded, agencies) VALUES (?, ?, ?, coalesce("
                      "(SELECT agencies FROM search_scope WHERE entry_id = ?), ''))",
                      (entry_id, *index_module.search_tokens(text), entry_id))

    monkeypatch.setattr(SqliteIndex, "_insert_search_entry", insert_at_0005)
    old = open_index(dsn)
    old.upsert_case(CaseRecord(CASE_OWN, applicant="Trần Thị Bích"))
    assert old.schema_version() == 5
    old.close()
    monkeypatch.undo()
    new = open_index(dsn)
    try:
        assert new.schema_version() == int(every()[-1].name[:4]) >= 6 and candidates(new, "bich", (OWN,))
        if backend == "postgresql":
            assert "FOR NO KEY UPDATE" in new._scalar("SELECT pg_get_functiondef('search_document_scope'::regproc)")
        new.upsert_case(CaseRecord(CASE_OTHER, applicant="Trần Thị Bích"))
        assert len(candidates(new, "bich", None)) == 2 and len(candidates(new, "bich", (OTHER,))) == 1
    finally:
        new.close()
