"""Workers starting together on a fresh PostgreSQL database all migrate it: exactly one applies each
migration, the others wait and find it applied (queue mode starts N workers at once; before, the
others re-ran the script and failed with "relation already exists")."""

from __future__ import annotations

import threading

import pytest

from storage.index import open_index

pytestmark = pytest.mark.integration
OPENERS = 6


def test_concurrent_first_opens_of_a_fresh_database_all_succeed(postgres_dsn):
    barrier = threading.Barrier(OPENERS)
    errors: list[BaseException] = []

    def open_one() -> None:
        barrier.wait()
        try:
            open_index(postgres_dsn).close()
        except BaseException as e:  # noqa: BLE001 - collected and asserted below
            errors.append(e)

    threads = [threading.Thread(target=open_one) for _ in range(OPENERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, [f"{type(e).__name__}: {e}" for e in errors]
    index = open_index(postgres_dsn)
    try:
        assert index.schema_version() >= 4
    finally:
        index.close()
