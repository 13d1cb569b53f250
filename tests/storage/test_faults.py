"""Fault tests: storage down, kill -9 between object write and index commit. Real servers, real processes."""

from __future__ import annotations

import signal
from datetime import timedelta
from pathlib import Path

import pytest

from digitize.config import Settings
from digitize.errors import StorageError
from storage.archive import Archive
from store_job import start_paused

try:
    from tests.servers import MINIO_PASSWORD, MINIO_USER, start_minio
except ModuleNotFoundError:
    from servers import MINIO_PASSWORD, MINIO_USER, start_minio

pytestmark = pytest.mark.integration
CASE = "000.00.31.H56-241015-0027"


def store_in_process_killed_after_objects(settings: Settings, doc, tmp_path: Path) -> None:
    """Run a real store in a child process, let it write every object, SIGKILL it before the index commit."""
    child = start_paused(settings, doc, tmp_path)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL


def assert_one_complete_document(archive: Archive, doc) -> None:
    """No duplicate, no orphan, nothing lost: exactly one stored document and exactly its three objects."""
    [row] = archive.documents(CASE)
    assert archive.index.pending_documents() == []
    assert sorted(archive.objects.list_keys()) == sorted(row.keys())
    assert archive.objects.sha256(row.pdfa_key) == doc.report.output_sha256
    report = archive.verify()
    assert report.ok, report.problems
    assert [h.doc_id for h in archive.search("quyen su dung dat")] == [row.doc_id]


def test_kill9_between_object_write_and_index_commit_is_repaired_by_the_next_store(settings, make_document, tmp_path):
    doc = make_document()
    store_in_process_killed_after_objects(settings, doc, tmp_path)
    with Archive.open(settings) as archive:
        assert archive.find(doc.report.input_sha256) is None  # not reported stored
        [pending] = archive.index.pending_documents()
        assert all(archive.objects.exists(k) for k in pending.keys())  # the objects did get written
        result = archive.store(doc.original, doc.pdfa, doc.report, doc.meta)
        assert (result.doc_id, result.already_stored) == (pending.doc_id, False)
        assert_one_complete_document(archive, doc)


def test_kill9_between_object_write_and_index_commit_is_repaired_by_verify(settings, make_document, tmp_path):
    doc = make_document()
    store_in_process_killed_after_objects(settings, doc, tmp_path)
    with Archive.open(settings) as archive:
        assert archive.verify(stale_after=timedelta(hours=1)).repaired == []  # too recent: may still be running
        report = archive.verify(stale_after=timedelta(0))
        assert [p.kind for p in report.repaired] == ["completed"]
        assert_one_complete_document(archive, doc)
        assert archive.store(doc.original, doc.pdfa, doc.report, doc.meta).already_stored is True


def test_store_resumed_with_reconverted_pdfa_keeps_no_stale_object(settings, make_document):
    """A crash after the original only; the rerun converts again and gets different PDF/A bytes."""
    first = make_document(name="stack")
    with Archive.open(settings) as archive:
        row = archive._insert_pending(first.meta, first.report, CASE, first.report.input_sha256,
                                      first.report.output_sha256)
        archive._put(row.original_key, first.original, row.original_sha256, {}, "application/octet-stream")
        second = make_document(name="stack", pdfa_salt="-reconverted")
        result = archive.store(second.original, second.pdfa, second.report, second.meta)
        assert result.pdfa_sha256 == second.report.output_sha256 != first.report.output_sha256
        assert_one_complete_document(archive, second)


def test_storage_down_gives_bounded_retries_then_storage_error_and_nothing_stored(make_document, tmp_path):
    server = start_minio(tmp_path / "own-minio")
    settings = Settings(data_dir=str(tmp_path / "data"))
    settings.store.url, settings.store.retries = server.url("dossiers"), 3
    settings.store.access_key, settings.store.secret_key = MINIO_USER, MINIO_PASSWORD
    doc = make_document()
    try:
        with Archive.open(settings) as archive:
            server.stop()
            with pytest.raises(StorageError, match="failed after 3 attempts"):
                archive.store(doc.original, doc.pdfa, doc.report, doc.meta)
            assert archive.find(doc.report.input_sha256) is None
            assert archive.documents(CASE) == [] and archive.search("quyen") == []
            server.start()  # same port and data: the server is back
            result = archive.store(doc.original, doc.pdfa, doc.report, doc.meta)
            assert result.already_stored is False
            assert_one_complete_document(archive, doc)
    finally:
        server.stop()
