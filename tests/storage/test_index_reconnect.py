"""A PostgreSQL restart under an open archive costs seconds, not a process restart (issue 10, finding 1).

A real server, started for this test alone, is restarted (fast shutdown: every connection is cut) while
an Archive keeps its index connection, as a watcher or a batch worker does.
"""

from __future__ import annotations

import pytest

from digitize.config import Settings
from digitize.errors import StorageError
from storage.archive import Archive

pytestmark = pytest.mark.integration
CASE = "000.00.31.H56-241015-0027"


@pytest.fixture
def archive(own_postgres, tmp_path):
    settings = Settings(data_dir=str(tmp_path / "data"))
    settings.index.dsn = own_postgres.create_database("records")
    with Archive.open(settings) as archive:
        yield archive


def store(archive, doc):
    return archive.store(doc.original, doc.pdfa, doc.report, doc.meta)


def test_stores_after_a_restart_succeed_at_once(archive, own_postgres, make_document):
    store(archive, make_document())
    own_postgres.restart(down_seconds=5)
    second = store(archive, make_document())  # the old code failed until the process restarted
    assert second.sequence == 2
    assert [d.sequence for d in archive.documents(CASE)] == [1, 2]
    assert archive.search("quyen su dung dat") and archive.verify().ok


def test_while_the_server_is_down_a_store_fails_cleanly_and_the_next_attempt_succeeds(archive, own_postgres,
                                                                                     make_document):
    store(archive, make_document())
    own_postgres._run(str(own_postgres.bin_dir / "pg_ctl"), "-D", str(own_postgres.data_dir), "-m", "fast", "-w",
                      "stop")
    doc = make_document()
    with pytest.raises(StorageError, match="cannot connect to index|index"):
        store(archive, doc)
    own_postgres._pg_ctl_start()
    again = store(archive, doc)  # the watcher's next attempt: the interrupted store is resumed
    assert again.already_stored is False and [d.doc_id for d in archive.documents(CASE)][-1] == again.doc_id
    assert archive.verify().ok
