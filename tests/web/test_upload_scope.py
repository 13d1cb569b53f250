"""An upload's parts stay inside its sender's agencies: a separator sheet or QR code inside the scan that names
another agency's case is refused before anything is stored (the worker process's job, real converter)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pipelines"))

from scans import page, write_pdf  # noqa: E402

from digitize.config import Settings  # noqa: E402
from pipelines.jobs import close_archives  # noqa: E402
from pipelines.separators import render_sheet  # noqa: E402
from storage import access  # noqa: E402
from storage.access import Principal, UploadScope  # noqa: E402
from storage.archive import Archive  # noqa: E402
from web.uploads import UploadJob, convert_upload  # noqa: E402

pytestmark = pytest.mark.integration
AGENCY_A = "000.00.31.H56"
CASE_A = f"{AGENCY_A}-241015-0027"
CASE_B = "000.00.12.H29-241016-0003"  # another agency
SCANNER_A = UploadScope(Principal("lan", "scanner", (AGENCY_A,)))


@pytest.fixture
def settings(tmp_path) -> Settings:
    settings = Settings(data_dir=str(tmp_path / "data"))
    settings.convert.validate = False
    settings.convert.jobs = 1
    with Archive.open(settings) as archive:  # the senders' accounts: an upload is filed with their current rights
        access.add_user(archive.index, "lan", "scanner", [AGENCY_A], None)
        access.add_user(archive.index, "b", "scanner", ["000.00.12.H29"], None)
    yield settings
    close_archives()


def stored(settings) -> list[tuple[str | None, str]]:
    with Archive.open(settings) as archive:
        return sorted((r.case_id, r.source_pages) for r in archive.index.stored_documents())


def test_a_separator_sheet_naming_another_agencys_case_is_refused_before_storing(tmp_path, settings):
    sheet_b = render_sheet(CASE_B).resize((620, 877))
    scan = write_pdf([page(["Đơn đề nghị"]), sheet_b, page(["Tờ khai"])], tmp_path / "stack.pdf")
    status, reason, _ = convert_upload(str(scan), settings, {"case_id": CASE_A}, SCANNER_A)
    assert status == "failed" and CASE_B in reason and "outside" in reason
    assert (CASE_B, "3") not in stored(settings) and all(case != CASE_B for case, _ in stored(settings))


def test_an_unmatched_upload_whose_qr_code_names_another_agencys_case_stores_nothing(tmp_path, settings):
    scan = write_pdf([page(["GIẤY TIẾP NHẬN HỒ SƠ"], qr=CASE_B)], tmp_path / "receipt.pdf")
    status, reason, documents = convert_upload(str(scan), settings, {}, SCANNER_A)
    assert (status, documents) == ("failed", []) and CASE_B in reason
    assert stored(settings) == []
    status, _, documents = convert_upload(str(scan), settings, {}, UploadScope(Principal("b", "scanner",
                                                                                          ("000.00.12.H29",))))
    assert status == "done" and [d["case_id"] for d in documents] == [CASE_B]


def test_a_job_remembers_its_sender_and_one_saved_without_may_file_nothing():
    job = UploadJob("0" * 32, "user:lan", CASE_A, "scan.pdf", 1, "0" * 64, sender={
        "name": "lan", "role": "scanner", "agencies": [AGENCY_A], "kind": "user"})
    assert job.scope()(CASE_A) and job.scope()(None) and not job.scope()(CASE_B)
    bare = UploadJob("1" * 32, "user:old", CASE_A, "scan.pdf", 1, "0" * 64)
    assert not bare.scope()(CASE_A) and not bare.scope()(None)


def test_an_unmatched_part_whose_clues_name_another_agency_is_refused(tmp_path, settings):
    """No case ID anywhere, but a sidecar names agency B: stored unmatched it would be listed to B's desk."""
    scan = write_pdf([page(["Tờ khai"])], tmp_path / "form.pdf")
    (tmp_path / "form.json").write_text('{"agency": "000.00.12.H29", "title": "Tờ khai"}', encoding="utf-8")
    status, reason, documents = convert_upload(str(scan), settings, {}, SCANNER_A)
    assert (status, documents) == ("failed", []) and "000.00.12.H29" in reason and "outside" in reason
    assert stored(settings) == []
    (tmp_path / "form.json").write_text('{"agency": "UBND xã Tân Lập"}', encoding="utf-8")  # not a code: not hers
    assert convert_upload(str(scan), settings, {}, SCANNER_A)[0] == "failed" and stored(settings) == []
    (tmp_path / "form.json").write_text('{"agency": "000.00.31.h56"}', encoding="utf-8")  # her own agency
    status, _, documents = convert_upload(str(scan), settings, {}, SCANNER_A)
    assert status == "unmatched" and [d["case_id"] for d in documents] == [None]


def test_the_scope_checks_an_unmatched_parts_agency():
    assert SCANNER_A(None) and SCANNER_A(None, "") and SCANNER_A(None, AGENCY_A)
    assert not SCANNER_A(None, "000.00.12.H29") and not SCANNER_A(None, "Sở Tư pháp")
    assert UploadScope(Principal("root", "archivist"))(None, "000.00.12.H29")


def test_an_unmatched_upload_of_a_scan_stored_in_another_agencys_case_does_not_name_that_case(tmp_path, settings):
    scan = write_pdf([page(["Bản sao căn cước"])], tmp_path / "id.pdf")
    scanner_b = UploadScope(Principal("b", "scanner", ("000.00.12.H29",)))
    assert convert_upload(str(scan), settings, {"case_id": CASE_B}, scanner_b)[0] == "done"
    # unmatched, into the sender's own case (it would share B's document and metadata there), or naming
    # B's case itself: neither its id nor its case nor that it is stored comes back, and nothing is filed
    for values in ({}, {"case_id": CASE_A}, {"case_id": CASE_B}):
        status, reason, documents = convert_upload(str(scan), settings, values, SCANNER_A)
        assert (status, documents) == ("failed", []), values
        assert CASE_B not in reason and "already" not in reason and "archivist" in reason
    with Archive.open(settings) as archive:
        assert archive.index.documents(CASE_A) == []


def test_an_upload_of_a_scan_another_agency_left_unmatched_gets_nothing_of_it(tmp_path, settings):
    scan = write_pdf([page(["Giấy ủy quyền"])], tmp_path / "loose.pdf")
    scanner_b = UploadScope(Principal("b", "scanner", ("000.00.12.H29",)))
    assert convert_upload(str(scan), settings, {"agency": "000.00.12.H29"}, scanner_b)[0] == "unmatched"
    status, reason, documents = convert_upload(str(scan), settings, {}, SCANNER_A)
    assert (status, documents) == ("failed", []) and "archivist" in reason
