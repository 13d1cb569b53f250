"""storage/index_sqlite.py: access events in one autocommit statement (the portal's group commit), in
order, inside a caller's transaction when there is one, and without touching the search generation."""

from __future__ import annotations

import os

import pytest

from digitize.config import Settings
from storage import index_sqlite
from storage.index import open_index
from storage.models import Event


@pytest.fixture()
def index(tmp_path):
    ix = open_index(Settings(data_dir=str(tmp_path / "data")).index_dsn)
    yield ix
    ix.close()


def views(prefix: str, n: int) -> list[Event]:
    return [Event("retrieved", "success", "token:a", "t", case_id="000.00.31.H56-241015-0027", detail=f"{prefix}{i}")
            for i in range(n)]


def test_a_batch_is_one_statement_in_order_and_leaves_the_search_generation(index, monkeypatch):
    statements: list[str] = []
    real = index._cursor_execute
    monkeypatch.setattr(index, "_cursor_execute", lambda sql, params: statements.append(sql) or real(sql, params))
    generation = os.stat(index.where + index_sqlite.GENERATION_SUFFIX).st_size
    index.add_events(views("v", 7))
    assert len(statements) == 1 and statements[0].startswith("INSERT INTO events")
    assert [e.detail for e in index.events() if e.event_type == "retrieved"] == [f"v{i}" for i in range(7)]
    assert all(e.time for e in index.events())
    assert os.stat(index.where + index_sqlite.GENERATION_SUFFIX).st_size == generation


def test_a_batch_over_the_statement_limit_and_one_inside_a_transaction_are_kept_whole(index, monkeypatch):
    monkeypatch.setattr(index_sqlite, "EVENTS_MAX_VARIABLES", 30)  # 5 events of 10 columns: one transaction
    index.add_events(views("big", 5))
    with pytest.raises(RuntimeError):
        with index.transaction():
            index.add_events(views("rolled back", 2))
            raise RuntimeError("the caller's transaction fails")
    assert [e.detail for e in index.events() if e.event_type == "retrieved"] == [f"big{i}" for i in range(5)]


def test_a_polling_writer_takes_the_lock_soon_after_its_release_and_no_later_than_its_wait(tmp_path, monkeypatch):
    """poll_write_lock (the portal's event writers): the lock is tried again in ~1 ms steps until the
    connection's whole wait, not by SQLite's growing sleeps; past the wait "locked" as before; a big batch
    (one transaction) polls too."""
    import sqlite3
    import threading
    import time

    from digitize.errors import StorageError

    dsn = Settings(data_dir=str(tmp_path / "data")).index_dsn
    writer = open_index(dsn, wait_timeout=5.0)
    writer.poll_write_lock()
    holder = sqlite3.connect(writer.where, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    threading.Timer(0.3, holder.execute, ["COMMIT"]).start()
    t = time.monotonic()
    writer.add_events(views("after", 2))  # the single statement: retried while locked
    assert 0.25 < time.monotonic() - t < 3
    holder.execute("BEGIN IMMEDIATE")
    threading.Timer(0.3, holder.execute, ["COMMIT"]).start()
    monkeypatch.setattr(index_sqlite, "EVENTS_MAX_VARIABLES", 10)  # the one-transaction path
    writer.add_events(views("big", 3))
    assert {e.detail for e in writer.events()} >= {"after0", "after1", "big0", "big1", "big2"}
    writer.close()

    bounded = open_index(dsn, wait_timeout=0.3)
    bounded.poll_write_lock()
    holder.execute("BEGIN IMMEDIATE")
    t = time.monotonic()
    with pytest.raises(StorageError, match="locked"):
        bounded.add_events(views("never", 1))
    assert time.monotonic() - t < 2
    holder.execute("ROLLBACK")
    holder.close()
    assert not any(e.detail == "never0" for e in bounded.events())
    bounded.close()
