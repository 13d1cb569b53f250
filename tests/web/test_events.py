"""web/events.py: access events from many request threads are committed in batches, and none is lost by a
clean shutdown (real SQLite index)."""

from __future__ import annotations

import threading

from digitize.config import Settings
from storage.index import open_index
from storage.models import Event
from web.events import EventWriter


def counting_index(settings, commits: list[int]):
    index = open_index(settings.index_dsn)
    real = index.add_events

    def add_events(events):
        commits.append(len(events))
        real(events)

    index.add_events = add_events
    return index


def test_events_of_many_threads_are_committed_in_batches_and_all_kept_at_shutdown(tmp_path):
    settings = Settings(data_dir=str(tmp_path / "data"))
    open_index(settings.index_dsn).close()
    commits: list[int] = []
    writer = EventWriter(lambda: counting_index(settings, commits), interval=0.2)
    assert not writer.add(Event("retrieved", "success", "user:an", "t"))  # not started: the caller writes it
    writer.start()

    def views(n: int) -> None:
        for i in range(50):
            assert writer.add(Event("retrieved", "success", f"user:u{n}", "t", detail=f"view {i}"))

    threads = [threading.Thread(target=views, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    writer.close()  # a clean shutdown: whatever is still queued is committed
    assert not writer.add(Event("retrieved", "success", "user:late", "t"))
    index = open_index(settings.index_dsn)
    try:
        assert len([e for e in index.events() if e.event_type == "retrieved"]) == 400
    finally:
        index.close()
    assert sum(commits) == 400 and len(commits) < 50  # batches, not one commit per event


def test_flush_waits_for_this_process_events_and_a_failed_commit_is_retried(tmp_path):
    settings = Settings(data_dir=str(tmp_path / "data"))
    open_index(settings.index_dsn).close()
    failures = [1]

    def flaky():
        index = open_index(settings.index_dsn)
        if failures:
            failures.pop()

            def broken(events):
                raise OSError("index away")

            index.add_events = broken
        return index

    writer = EventWriter(flaky, interval=0.01)
    writer.start()
    try:
        writer.add(Event("retrieved", "success", "user:an", "t", case_id="000.00.31.H56-241015-0027"))
        assert writer.flush(timeout=10)
        index = open_index(settings.index_dsn)
        try:
            assert [e.actor for e in index.events(case_id="000.00.31.H56-241015-0027")] == ["user:an"]
        finally:
            index.close()
    finally:
        writer.close()
