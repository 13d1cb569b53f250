"""storage/access.py's search cache: a cached page never outlives a write that changes the answer
(from this connection or another one, as another process's would be), and never crosses scopes; on SQLite
(the generation file) and on PostgreSQL (the search_generation row, migration 9) alike."""

from __future__ import annotations

import pytest

from digitize.config import Settings
from storage import access
from storage.access import Principal, SearchFilters
from storage.archive import Archive
from storage.models import CaseRecord, Event

CASE_A = "000.00.31.H56-241015-0027"
CASE_B = "000.00.12.H29-241016-0003"
OFFICER_A = Principal("an", "officer", ("000.00.31.H56",))
OFFICER_B = Principal("binh", "officer", ("000.00.12.H29",))


@pytest.fixture
def sqlite_archive(tmp_path):
    access.SEARCH_CACHE.clear()
    settings = Settings(data_dir=str(tmp_path / "data"))
    with Archive.open(settings) as first, Archive.open(settings) as second:
        yield first, second  # two connections to one index: the second plays another process


@pytest.fixture(params=["sqlite", "postgresql"])
def two_archives(request, tmp_path):
    """Two connections to one index (the second plays another process), on each backend."""
    access.SEARCH_CACHE.clear()
    settings = Settings(data_dir=str(tmp_path / "data"))
    if request.param == "postgresql":
        settings.index.dsn = request.getfixturevalue("postgres_dsn")
    with Archive.open(settings) as first, Archive.open(settings) as second:
        yield first, second


def cases(archive, principal, text="quyen su dung dat", **filters):
    return sorted(h.case_id or "-" for h in archive.gate(principal).search(text, SearchFilters(**filters)).hits)


def test_repeated_searches_are_served_from_the_cache(two_archives, make_document):
    archive, _ = two_archives
    archive.index.upsert_case(CaseRecord(CASE_A))
    doc = make_document(pages=("quyền sử dụng đất thửa 12",), case_id=CASE_A)
    archive.store(doc.original, doc.pdfa, doc.report, doc.meta)
    assert cases(archive, OFFICER_A) == [CASE_A]
    hits = access.SEARCH_CACHE.hits
    assert cases(archive, OFFICER_A) == [CASE_A]
    assert access.SEARCH_CACHE.hits == hits + 1
    # the access log does not change answers: recording views keeps the cached page
    archive.index.add_events([Event("retrieved", "success", "user:an", "test", case_id=CASE_A, time=access.now_iso(),
                                    detail="viewed")])
    assert cases(archive, OFFICER_A) == [CASE_A] and access.SEARCH_CACHE.hits == hits + 2


def test_a_write_from_another_connection_is_seen_at_once(two_archives, make_document):
    archive, other = two_archives
    archive.index.upsert_case(CaseRecord(CASE_A))
    assert cases(archive, OFFICER_A) == []
    doc = make_document(pages=("quyền sử dụng đất thửa 12",), case_id=CASE_A)
    stored = other.store(doc.original, doc.pdfa, doc.report, doc.meta)  # stored elsewhere: found here
    assert cases(archive, OFFICER_A) == [CASE_A]
    other.index.upsert_case(CaseRecord(CASE_A, status="Đã trả kết quả"))  # a filter's field changes
    assert cases(archive, OFFICER_A, status="đã trả kết quả") == [CASE_A]
    other.index.upsert_case(CaseRecord(CASE_A, status="Đang xử lý"))
    assert cases(archive, OFFICER_A, status="đã trả kết quả") == []
    assert stored is not None


def test_cached_pages_never_cross_scopes_and_follow_links(two_archives, make_document):
    archive, other = two_archives
    for case_id in (CASE_A, CASE_B):
        archive.index.upsert_case(CaseRecord(case_id))
    unmatched = make_document(pages=("quyền sử dụng đất không rõ hồ sơ",), case_id=None)
    got = archive.store(unmatched.original, unmatched.pdfa, unmatched.report, unmatched.meta)
    assert cases(archive, OFFICER_A) == [] and cases(archive, OFFICER_B) == []
    other.link(got.doc_id, CASE_B)  # linked into agency B's case by another process
    assert cases(archive, OFFICER_A) == []  # same query, A's scope: its own (empty) page, not B's
    assert cases(archive, OFFICER_B) == [CASE_B]
    assert cases(archive, OFFICER_A) == []
    other.share(got.doc_id, CASE_A)
    assert cases(archive, OFFICER_A) == [CASE_A]
    assert cases(archive, Principal("arch", "archivist")) == sorted([CASE_A, CASE_B])


def test_an_entry_ages_out_when_a_generation_bump_was_lost(sqlite_archive, make_document, monkeypatch):
    archive, other = sqlite_archive
    archive.index.upsert_case(CaseRecord(CASE_A))
    assert cases(archive, OFFICER_A) == []
    monkeypatch.setattr(type(other.index), "_bump_search_generation", lambda self: None)  # e.g. a read-only file
    doc = make_document(pages=("quyền sử dụng đất thửa 12",), case_id=CASE_A)
    other.store(doc.original, doc.pdfa, doc.report, doc.meta)
    assert cases(archive, OFFICER_A) == []  # stale, within max_age
    monkeypatch.setattr(access.SEARCH_CACHE, "max_age", 0.0)
    assert cases(archive, OFFICER_A) == [CASE_A]


def test_a_query_without_words_is_refused_before_the_cache(two_archives):
    archive, _ = two_archives
    with pytest.raises(access.BadArgsError):
        archive.gate(OFFICER_A).search("  ?! ")


def test_the_generation_moves_on_writes_that_can_change_answers_only(two_archives):
    archive, other = two_archives
    index = archive.index
    before = index.search_generation()
    assert before is not None and other.index.search_generation() == before
    index.add_events([Event("retrieved", "success", "user:an", "test", case_id=CASE_A, time=access.now_iso())])
    access.create_token(index, "onestop", "officer", ["000.00.31.H56"])
    assert index.search_generation() == before
    with index.transaction():
        index.upsert_case(CaseRecord(CASE_A))
        assert other.index.search_generation() == before  # not before the COMMIT: a reader would cache old rows
    after = index.search_generation()
    assert after != before and other.index.search_generation() == after
    with pytest.raises(RuntimeError), index.transaction():  # rolled back: nothing changed
        index.upsert_case(CaseRecord(CASE_B))
        raise RuntimeError
    assert index.search_generation() == after


# -- second reader's review of the cache (2026-12-01) -------------------------------------------------------------
def test_a_generation_file_this_process_cannot_bump_turns_caching_off(sqlite_archive, make_document, monkeypatch):
    """A generation file the service could not append to (made by root, or read-only) kept its value for
    ever, so every process served pages up to 60 s stale after every write: now nobody caches then."""
    import os
    import stat as stat_module

    from storage import index_sqlite

    archive, other = sqlite_archive
    archive.index.upsert_case(CaseRecord(CASE_A))
    path = archive.index._generation_path
    assert archive.index.search_generation() is not None
    os.chmod(path, 0o400)
    monkeypatch.setattr(os, "geteuid", lambda: 4242)  # not root, not the owner: cannot write it
    monkeypatch.setattr(index_sqlite.os, "geteuid", lambda: 4242)
    assert archive.index.search_generation() is None
    assert cases(archive, OFFICER_A) == []
    doc = make_document(pages=("quyền sử dụng đất thửa 12",), case_id=CASE_A)
    other.store(doc.original, doc.pdfa, doc.report, doc.meta)
    assert cases(archive, OFFICER_A) == [CASE_A]  # no stale page served
    assert stat_module.S_IMODE(os.stat(path).st_mode) == 0o400


def test_a_failed_bump_removes_the_generation_so_no_process_caches(sqlite_archive, make_document, monkeypatch):
    """A bump that fails (the file replaced by a directory, a full disk) left the old value in place."""
    import os

    archive, other = sqlite_archive
    archive.index.upsert_case(CaseRecord(CASE_A))
    assert cases(archive, OFFICER_A) == []  # cached, empty
    path = other.index._generation_path
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: (_ for _ in ()).throw(OSError(28, "No space left on device"))
                        if os.path.realpath(f"/proc/self/fd/{fd}") == os.path.realpath(path) else real_write(fd, data))
    doc = make_document(pages=("quyền sử dụng đất thửa 12",), case_id=CASE_A)
    other.store(doc.original, doc.pdfa, doc.report, doc.meta)
    monkeypatch.setattr(os, "write", real_write)
    assert not os.path.lexists(path)
    assert archive.index.search_generation() is None
    assert cases(archive, OFFICER_A) == [CASE_A]


def test_the_cache_is_bounded_in_bytes_and_keeps_no_huge_page():
    """Entries only were bounded: 512 pages of 1 MB sidecar titles would have been held for a minute."""
    from types import SimpleNamespace

    from storage.index_accounts import SearchPage
    from storage.models import SearchHit

    cache = access.SearchCache(size=100, max_bytes=10_000, page_bytes=4_000)
    index = SimpleNamespace(where="x", search_generation=lambda: (1,))

    def page(title_len):
        return SearchPage([SearchHit(CASE_A, 1, 1, "t" * title_len, 1, "s", True)], 1, False)
    cache.page(index, ("huge",), lambda: page(5_000))
    assert cache.held == 0 and not cache._pages  # over page_bytes: built, not kept
    for n in range(10):
        cache.page(index, (n,), lambda: page(2_000))
    assert cache.held <= 10_000 and len(cache._pages) == 4  # the oldest went
    assert (9,) in [k[2:] for k in cache._pages] and (0,) not in [k[2:] for k in cache._pages]


def test_the_byte_bound_counts_the_keys_too():
    """Review 11b L3: the key holds the filters as typed (a request line may carry ~80 KB of them): 512
    tiny pages under 50 KB keys were ~25 MB held beyond the bound, counted as nothing."""
    from types import SimpleNamespace

    from storage.index_accounts import SearchPage

    cache = access.SearchCache(size=100, max_bytes=20_000, page_bytes=8_000)
    index = SimpleNamespace(where="x", search_generation=lambda: (1,))
    for n in range(10):
        cache.page(index, (n, "p" * 5_000), lambda: SearchPage([], 0, False))
    assert 10_000 <= cache.held <= 20_000 and len(cache._pages) == 3
    cache.page(index, ("huge", "p" * 9_000), lambda: SearchPage([], 0, False))
    assert ("huge", "p" * 9_000) not in [k[2:] for k in cache._pages]  # over page_bytes: not kept


def test_a_refreshed_entry_leaves_no_stale_page_id_behind():
    """Review pool15 L1: a refresh stores a new, equal key tuple; the drop compared the old page's id entry
    with `is`, so every refresh of a hot query left an uncounted id -> key entry behind."""
    from types import SimpleNamespace

    from storage.index_accounts import SearchPage

    cache = access.SearchCache(max_age=-1)  # every lookup a miss: each one refreshes the entry
    index = SimpleNamespace(where="x", search_generation=lambda: (1,))
    pages = [cache.page(index, ("q", "filters"), lambda: SearchPage([], 0, False)) for _ in range(50)]
    assert len(pages) == 50 and len(cache._pages) == 1
    assert len(cache._keys) == 1


@pytest.mark.skipif(__import__("os").geteuid() != 0, reason="root re-making the generation file")
def test_a_generation_file_re_made_by_root_is_the_index_owners(tmp_path, caplog):
    """Review 11b L4: root's write (a CLI run as root) re-made a missing generation file as root's, so the
    service (the index's owner) could not bump it and stopped caching; the file now gets the database's
    owner, as the one made at open does. One that stays unwritable is said once, at warning."""
    import logging
    import os
    import pwd

    from storage.index import open_index

    service = pwd.getpwnam("nobody")
    path = tmp_path / "idx" / "index.sqlite3"
    open_index(f"sqlite:///{path}").close()
    for name in [path.parent, *path.parent.iterdir()]:
        os.chown(name, service.pw_uid, service.pw_gid)
    generation = f"{path}.search-generation"
    index = open_index(f"sqlite:///{path}")
    try:
        for roll in (False, True):
            os.unlink(generation)  # removed by a failed bump, or by hand
            if roll:  # and the roll to a fresh file
                index._bump_search_generation()
                os.truncate(generation, 1 << 20 + 1)
            index.upsert_case(CaseRecord(CASE_A))  # root's write bumps it
            assert os.stat(generation).st_uid == service.pw_uid, roll
        os.chown(generation, 0, 0)
        os.chmod(generation, 0o600)
        real = os.geteuid
        try:
            os.geteuid = lambda: service.pw_uid  # as the service process: not root, not the owner
            with caplog.at_level(logging.WARNING, logger="storage.index_sqlite"):
                assert index.search_generation() is None and index.search_generation() is None
        finally:
            os.geteuid = real
        assert len([r for r in caplog.records if "not cached" in r.getMessage()]) == 1
    finally:
        index.close()


def test_the_api_answers_kept_with_pages_count_in_the_byte_bound(monkeypatch):
    """Review_lows11 L3: the search JSON kept on a cached page (web/api.py search_body) was weighed before it
    was added, so the pages' answers were held beyond max_bytes (up to about as much again)."""
    from types import SimpleNamespace

    from storage.index_accounts import SearchPage
    from storage.models import SearchHit
    from web import api

    cache = access.SearchCache(size=100, max_bytes=20_000, page_bytes=8_000)
    index = SimpleNamespace(where="x", search_generation=lambda: (1,))

    def page():
        return SearchPage([SearchHit(CASE_A, 1, 1, "t" * 1_500, 1, "s", True)], 1, False)
    monkeypatch.setattr(api, "SEARCH_CACHE", cache, raising=False)
    for n in range(30):
        api.search_body(cache.page(index, (n,), page), 0, 20)
        held = [entry[1] for entry in cache._pages.values()]
        real = sum(cache.weight(p) + sum(len(v) for v in p.derived.values()) for p in held)
        assert real <= cache.held <= 20_000  # what is held, answers too, is counted and bounded
        assert all(p.derived for p in held)  # and each page keeps its answer
    again = cache.page(index, (29,), page)
    assert api.search_body(again, 0, 20) is again.derived[("json", 0, 20)]  # a hit: the same bytes
    before = cache.held
    api.search_body(again, 0, 20)
    assert cache.held == before  # counted once
    cache.clear()
    assert cache.held == 0 and not cache._keys


# -- PostgreSQL's generation row (migration 9): a page cached there never outlives a commit -------------------------
@pytest.fixture
def pg_archives(request, tmp_path):
    access.SEARCH_CACHE.clear()
    settings = Settings(data_dir=str(tmp_path / "data"))
    settings.index.dsn = request.getfixturevalue("postgres_dsn")
    with Archive.open(settings) as first, Archive.open(settings) as second:
        yield first, second


def moved(before, after, by=1):
    """The generation moved ``by`` commits, each with a fresh epoch (migration 10): no later move repeats a key."""
    return after is not None and after[0] != before[0] and after[1] == before[1] + by


def test_postgresql_any_writer_moves_the_generation_at_its_commit(pg_archives):
    """The database's triggers move it, so a write this code does not make (an older version still running
    during an upgrade, psql) is never missed, and a write outside any transaction moves it in its own commit."""
    import psycopg

    archive, other = pg_archives
    archive.index.upsert_case(CaseRecord(CASE_A, applicant="quyền sử dụng đất"))
    assert cases(archive, OFFICER_A) == [CASE_A] and cases(archive, OFFICER_A, status="đã trả kết quả") == []
    before = archive.index.search_generation()
    with psycopg.connect(other.index._dsn, autocommit=True) as raw:  # not through storage/index.py at all
        raw.execute("UPDATE cases SET status = %s WHERE case_id = %s", ("Đã trả kết quả", CASE_A))
    assert moved(before, archive.index.search_generation())
    assert cases(archive, OFFICER_A, status="đã trả kết quả") == [CASE_A]
    with psycopg.connect(other.index._dsn) as raw:  # one transaction of many rows: moved once, at its COMMIT
        raw.execute("UPDATE cases SET status = 'x'")
        raw.execute("DELETE FROM search_entries")
        assert moved(before, archive.index.search_generation())
    assert moved(before, archive.index.search_generation(), by=2)
    assert cases(archive, OFFICER_A) == []
    with psycopg.connect(other.index._dsn, autocommit=True) as raw:  # no row trigger fires for it
        raw.execute("TRUNCATE case_links")
    assert moved(before, archive.index.search_generation(), by=3)


def test_postgresql_a_restored_database_never_repeats_a_cached_key(pg_archives, postgres_server, make_document,
                                                                  tmp_path):
    """The generation row is data: a restore (or a standby promoted without the last commits) brings back an
    older (epoch, value). Were the value only counted on, the next unrelated commit would repeat a key whose
    page came from the other timeline: agency B would see a document the restored database gives to no agency
    (review r2pg H1). Each move draws a fresh epoch, so it cannot."""
    import subprocess

    archive, other = pg_archives
    for case_id in (CASE_A, CASE_B):
        archive.index.upsert_case(CaseRecord(case_id))
    unmatched = make_document(pages=("quyền sử dụng đất không rõ hồ sơ",), case_id=None)
    got = archive.store(unmatched.original, unmatched.pdfa, unmatched.report, unmatched.meta)
    dump = tmp_path / "index.dump"
    dsn = other.index._dsn
    subprocess.run([str(postgres_server.bin_dir / "pg_dump"), "-Fc", "-f", str(dump), "-d", dsn], check=True,
                   capture_output=True)
    other.link(got.doc_id, CASE_B)
    assert cases(archive, OFFICER_B) == [CASE_B]  # cached under the linked timeline's key
    subprocess.run([str(postgres_server.bin_dir / "pg_restore"), "--clean", "--if-exists", "-d", dsn, str(dump)],
                   check=True, capture_output=True)
    assert archive.index.document(got.doc_id).case_id is None  # the link is gone again
    other.index.upsert_case(CaseRecord("000.00.31.H56-241015-0099"))  # an unrelated write: the count goes on
    assert cases(archive, OFFICER_B) == []


def test_postgresql_replica_role_writers_move_the_generation(pg_archives):
    """Logical replication's apply workers and pg_restore --disable-triggers's session run with
    session_replication_role = replica, where ordinary triggers do not fire: theirs are ENABLE ALWAYS, so a
    portal reading a subscriber sees those writes at once, not after the pages' 10 minutes (review r2pg M1)."""
    import psycopg

    archive, other = pg_archives
    archive.index.upsert_case(CaseRecord(CASE_A))
    before = archive.index.search_generation()
    with psycopg.connect(other.index._dsn, autocommit=True) as raw:
        raw.execute("SET session_replication_role = replica")
        raw.execute("UPDATE cases SET status = 'x'")
        raw.execute("TRUNCATE case_links")
    assert moved(before, archive.index.search_generation(), by=2)


def test_postgresql_no_page_is_cached_inside_a_transaction(pg_archives, make_document):
    """Inside a transaction the connection sees its own uncommitted rows: a page built there and cached under
    the committed value would outlive a rollback."""
    archive, _ = pg_archives
    archive.index.upsert_case(CaseRecord(CASE_A))
    with pytest.raises(RuntimeError), archive.index.transaction():
        archive.index.upsert_case(CaseRecord(CASE_B, applicant="quyền sử dụng đất"))
        assert archive.index.search_generation() is None
        assert cases(archive, Principal("arch", "archivist")) == [CASE_B]  # its own uncommitted row
        raise RuntimeError
    assert cases(archive, Principal("arch", "archivist")) == []


def test_postgresql_concurrent_writers_each_move_the_generation(pg_archives):
    """Two transactions that commit together both bump the one row: the second, reaching its COMMIT while the
    first holds the row's lock, waits for it, then adds its own move: no commit goes unseen (review r2pg L2:
    the first holds the lock from SET CONSTRAINTS ALL IMMEDIATE, and the second is seen waiting)."""
    import threading
    import time

    import psycopg

    archive, other = pg_archives
    before = archive.index.search_generation()
    holding, release = threading.Event(), threading.Event()

    def holder():
        with other.index.transaction():
            other.index.upsert_case(CaseRecord(CASE_B))
            other.index._execute("SET CONSTRAINTS ALL IMMEDIATE")  # the deferred bump runs now: the row is held
            holding.set()
            release.wait(10)

    first = threading.Thread(target=holder)
    first.start()
    assert holding.wait(10)
    second = threading.Thread(target=archive.index.upsert_case, args=(CaseRecord(CASE_A),))
    second.start()
    waiting, deadline = 0, time.monotonic() + 10
    with psycopg.connect(other.index._dsn, autocommit=True) as watch:
        while not waiting and time.monotonic() < deadline:
            waiting = watch.execute("SELECT count(*) FROM pg_locks WHERE NOT granted").fetchone()[0]
            time.sleep(0.02)
    release.set()
    first.join(10)
    second.join(10)
    assert waiting == 1  # the second writer really queued on the first's lock
    assert moved(before, archive.index.search_generation(), by=2)
    assert archive.index.get_case(CASE_A) and archive.index.get_case(CASE_B)


def test_postgresql_a_portal_write_behind_a_held_generation_row_fails_in_one_line(postgres_dsn, tmp_path):
    """Every search-changing commit takes its turn on the one row (README Known limits, review r2pg M2): a
    commit that holds it past the portal's db_timeout (a stuck sync standby, an idle psql transaction that
    wrote) makes the portal's write a one-line StorageError (a 503), rolled back whole: nothing half-stored.
    This documents the cost; the behaviour is the same on integ."""
    import psycopg

    from digitize.errors import StorageError

    settings = Settings(data_dir=str(tmp_path / "data"))
    settings.index.dsn = postgres_dsn
    with Archive.open(settings, wait_timeout=0.3) as portal, psycopg.connect(postgres_dsn) as holder:
        holder.execute("UPDATE search_generation SET value = value")  # the row held, its transaction open
        with pytest.raises(StorageError) as failed:
            portal.index.upsert_case(CaseRecord(CASE_A))
        holder.rollback()
        assert "lock timeout" in str(failed.value) and "\n" not in str(failed.value)
        assert portal.index.get_case(CASE_A) is None
        portal.index.upsert_case(CaseRecord(CASE_A))  # the row free again: the retry lands
        assert portal.index.get_case(CASE_A) is not None


def test_pages_age_out_after_max_age_only_where_a_bump_may_be_lost(two_archives, make_document, monkeypatch):
    """SQLite's bump follows the COMMIT (a crash between them loses it): its pages age out after max_age.
    PostgreSQL's commits with the writes, so its pages are kept for atomic_max_age: at 60 s every popular
    page was rebuilt once a minute in every server process (~8 % of a desk's searches in the portal bench,
    each ~50 ms of PostgreSQL CPU at 100 000 documents)."""
    archive, _ = two_archives
    archive.index.upsert_case(CaseRecord(CASE_A))
    doc = make_document(pages=("quyền sử dụng đất thửa 12",), case_id=CASE_A)
    archive.store(doc.original, doc.pdfa, doc.report, doc.meta)
    assert cases(archive, OFFICER_A) == [CASE_A]
    monkeypatch.setattr(access.SEARCH_CACHE, "max_age", 0.0)
    hits = access.SEARCH_CACHE.hits
    assert cases(archive, OFFICER_A) == [CASE_A]
    assert access.SEARCH_CACHE.hits == hits + (archive.index.dialect == "postgresql")
    monkeypatch.setattr(access.SEARCH_CACHE, "atomic_max_age", 0.0)
    assert cases(archive, OFFICER_A) == [CASE_A]
    assert access.SEARCH_CACHE.hits == hits + (archive.index.dialect == "postgresql")
