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
