"""Opening an index while another process migrates it (review 11b M3): with a ``wait_timeout`` (the portal's
[web] db_timeout) the open gives up within about that long with a one-line StorageError (a 503), instead of
SQLite's 30 s busy wait or PostgreSQL's unbounded wait for the migrators' lock; a failing migration script is
a StorageError too, not the driver's own exception (a 500)."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from digitize.errors import StorageError
from storage import index as index_module
from storage.index import open_index
from storage.index_pg import MIGRATION_LOCK

WAIT = 1.0


def index_dsn(backend: str, request, tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'index.sqlite3'}" if backend == "sqlite" else request.getfixturevalue("postgres_dsn")


def open_in_thread(dsn: str, out: dict) -> threading.Thread:
    def run() -> None:
        try:
            open_index(dsn, wait_timeout=WAIT).close()
            out["result"] = "opened"
        except BaseException as e:  # noqa: BLE001 - asserted by the caller
            out["result"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_opening_during_another_process_migration_is_bounded_by_wait_timeout(backend, request, tmp_path):
    dsn = index_dsn(backend, request, tmp_path)
    index = open_index(dsn)
    latest = index.schema_version()
    index._execute("DELETE FROM schema_migrations WHERE version = ?", (latest,))  # as before an upgrade
    index.close()
    if backend == "sqlite":  # the migrator holds the write lock for its whole run
        migrator = sqlite3.connect(dsn[len("sqlite:///"):], isolation_level=None)
        migrator.execute("BEGIN IMMEDIATE")
    else:  # the migrator holds the migrators' session lock
        import psycopg

        migrator = psycopg.connect(dsn, autocommit=True)
        migrator.execute(f"SELECT pg_advisory_lock({MIGRATION_LOCK})")
    out: dict = {}
    try:
        opener = open_in_thread(dsn, out)
        opener.join(WAIT + 20)  # the old code: 30 s (SQLite), never (PostgreSQL)
        assert not opener.is_alive(), "the open still waits for the migration"
    finally:
        migrator.close()  # lets an old code's opener go on
    assert isinstance(out["result"], StorageError), out["result"]
    assert "upgrading its schema" in str(out["result"]) and "\n" not in str(out["result"])
    index = open_index(dsn, wait_timeout=WAIT)  # the migrator gone: this open applies it
    try:
        assert index.schema_version() == latest
    finally:
        index.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_failing_migration_is_a_storage_error(backend, request, tmp_path, monkeypatch):
    dsn = index_dsn(backend, request, tmp_path)
    broken = tmp_path / "0999_broken.sql"
    broken.write_text("CREATE TABLE search_entries (x INTEGER);\n", encoding="utf-8")  # exists already
    every = index_module._migration_scripts
    monkeypatch.setattr(index_module, "_migration_scripts", lambda: [*every(), broken])
    with pytest.raises(StorageError, match="migration 0999_broken.sql failed"):
        open_index(dsn)
    monkeypatch.undo()
    index = open_index(dsn)  # the failed migration changed nothing: the index opens at its real version
    try:
        assert index.schema_version() == int(every()[-1].name[:4])
    finally:
        index.close()


def test_a_migration_queued_behind_a_long_write_gives_up_and_says_to_start_again(request, tmp_path, monkeypatch):
    """Migration 9 adds triggers to the tables every write touches: queued behind a long write (a batch, an idle
    psql transaction) with no lock_timeout, it held the tables it had already locked and so blocked every portal
    write for as long (review r2pg L1). Its lock waits are bounded, it is tried again, then fails with one line;
    once the write has ended it applies."""
    import psycopg

    from storage import index_pg

    dsn = index_dsn("postgresql", request, tmp_path)
    every = index_module._migration_scripts
    monkeypatch.setattr(index_module, "_migration_scripts", lambda: [p for p in every() if p.name[:4] < "0009"])
    open_index(dsn).close()  # an index as before the upgrade
    monkeypatch.setattr(index_module, "_migration_scripts", every)
    monkeypatch.setattr(index_pg, "MIGRATION_LOCK_WAIT", 0.2, raising=False)
    monkeypatch.setattr(index_pg, "MIGRATION_ATTEMPTS", 2, raising=False)  # tried again once, a second later
    writer = psycopg.connect(dsn)  # a long write: its open transaction holds its write lock on documents
    writer.execute("DELETE FROM documents WHERE false")
    out: dict = {}
    try:
        opener = open_in_thread(dsn, out)
        opener.join(10)  # the old code: until the write ends
        assert not opener.is_alive(), "the migration still waits for the write"
    finally:
        writer.close()
    assert isinstance(out["result"], StorageError), out["result"]
    assert "start again shortly" in str(out["result"]) and "\n" not in str(out["result"])
    index = open_index(dsn)
    try:
        assert index.schema_version() == int(every()[-1].name[:4])
    finally:
        index.close()
