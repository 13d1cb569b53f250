"""The portal's archive pool: a request waits a bounded time for an archive, then gets a 503."""

from __future__ import annotations

import threading

import pytest

from digitize.config import Settings
from digitize.errors import StorageError
from web.context import ArchivePool


def test_a_request_waits_a_bounded_time_for_an_archive(tmp_path):
    """With every archive held, an endless wait would hold a worker thread for good; the threads all
    waiting, the holders could never finish (the portal hangs)."""
    pool = ArchivePool(Settings(data_dir=str(tmp_path / "data")), size=1)
    pool.take_timeout = 0.2
    held = pool.take()
    outcome: list[object] = []

    def second() -> None:
        try:
            outcome.append(pool.take())
        except StorageError as e:
            outcome.append(e)

    waiter = threading.Thread(target=second, daemon=True)
    waiter.start()
    waiter.join(5)
    assert not waiter.is_alive(), "take() waited without a bound"
    assert isinstance(outcome[0], StorageError) and "busy" in str(outcome[0])
    pool.give(held)
    assert pool.take() is held
    pool.close()
