"""The same scan in two case folders belongs to both dossiers, converted and stored once (issue 10, finding 7)."""

from __future__ import annotations

import shutil

import pytest
from pipeline_support import stored_rows
from scans import page, write_pdf

from pipelines.jobs import Status, close_archives, process_file
from storage.archive import Archive

pytestmark = pytest.mark.integration

CASE_A = "000.00.31.H56-241015-0027"
CASE_B = "000.00.31.H56-241016-0003"


@pytest.fixture(autouse=True)
def _fresh_archives():
    yield
    close_archives()


def test_a_scan_in_two_case_folders_is_in_both_dossiers_once_each(tmp_path, folder_settings):
    inbox = tmp_path / "inbox"
    (inbox / CASE_A).mkdir(parents=True)
    (inbox / CASE_B).mkdir()
    id_copy = write_pdf([page(["CĂN CƯỚC CÔNG DÂN"])], inbox / CASE_A / "1-can-cuoc.pdf")
    shutil.copy(id_copy, inbox / CASE_B / "3-can-cuoc.pdf")
    first = process_file(inbox / CASE_A / "1-can-cuoc.pdf", folder_settings, None, root=inbox)
    second = process_file(inbox / CASE_B / "3-can-cuoc.pdf", folder_settings, None, root=inbox)
    assert first.status is Status.done and second.status is Status.done, second.reason
    assert second.pages == 0  # not converted again
    assert [(d.case_id, d.doc_id) for d in second.documents] == [(CASE_B, first.documents[0].doc_id)]
    assert len(stored_rows(folder_settings)) == 1  # one document, one copy of its bytes
    with Archive.open(folder_settings) as archive:
        assert [(d.case_id, d.sequence) for d in archive.documents(CASE_A)] == [(CASE_A, 1)]
        assert [(d.case_id, d.sequence) for d in archive.documents(CASE_B)] == [(CASE_B, 3)]
        assert archive.verify().ok
    again = process_file(inbox / CASE_B / "3-can-cuoc.pdf", folder_settings, None, root=inbox)
    assert again.status is Status.skipped
