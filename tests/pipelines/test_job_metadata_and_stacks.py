"""process_file end to end (real converter, Tesseract, store and index): who a scan belongs to, and stacks.

The job function is what watch, batch and future workers run, so these prove the metadata order
and the separator split where it matters: on the stored, indexed documents.
"""

from __future__ import annotations

import pytest
from pipeline_support import stored_rows
from scans import page, rotated_noisy, write_pdf

from pipelines.jobs import Status, close_archives, process_file
from pipelines.separators import render_sheet

pytestmark = pytest.mark.integration

CASE_A = "000.00.31.H56-241015-0027"
CASE_B = "000.00.31.H56-241016-0003"
CASE_C = "000.00.31.H56-241017-0011"


@pytest.fixture(autouse=True)
def _fresh_archives():
    yield
    close_archives()  # each test has its own data dir; do not keep connections across tests


def test_rotated_noisy_receipt_page_qr_code_gives_the_case_id(tmp_path, folder_settings):
    receipt = rotated_noisy(page(["GIẤY TIẾP NHẬN HỒ SƠ", "VÀ HẸN TRẢ KẾT QUẢ"], qr=CASE_A), 97, noise=0.05)
    scan = write_pdf([receipt, page(["Đơn đề nghị"])], tmp_path / "scan0001.pdf")
    result = process_file(scan, folder_settings, None, root=tmp_path)
    assert result.status is Status.done, result.reason
    [doc] = result.documents
    assert (doc.case_id, doc.case_source, doc.pages) == (CASE_A, "qr", 2)
    [row] = stored_rows(folder_settings)
    assert row.case_id == CASE_A and row.source_name == "scan0001.pdf"


def test_case_id_is_read_from_the_ocr_text_when_no_code_is_printed(tmp_path, folder_settings):
    scan = write_pdf([page(["GIẤY TIẾP NHẬN", f"Mã hồ sơ: {CASE_B}"], font_px=30)], tmp_path / "scan0002.pdf")
    result = process_file(scan, folder_settings, None, root=tmp_path)
    assert [(d.case_id, d.case_source) for d in result.documents] == [(CASE_B, "ocr")]


def test_folder_convention_and_sidecar_win_over_codes_and_text(tmp_path, folder_settings):
    folder = tmp_path / CASE_C
    folder.mkdir()
    scan = write_pdf([page(["Bản sao"], qr=CASE_A)], folder / "03-Ban_sao_CCCD.pdf")
    (folder / "03-Ban_sao_CCCD.json").write_text('{"scanned_by": "Nguyễn Thị Lan", "doc_type": "CCCD"}',
                                                  encoding="utf-8")
    result = process_file(scan, folder_settings, None, root=tmp_path)
    assert [(d.case_id, d.case_source) for d in result.documents] == [(CASE_C, "folder")]
    [row] = stored_rows(folder_settings)
    assert (row.sequence, row.title, row.scanned_by, row.doc_type) == (3, "Ban sao CCCD", "Nguyễn Thị Lan", "CCCD")


def test_scan_without_any_clue_is_stored_unmatched_and_listed_for_linking(tmp_path, folder_settings):
    from storage.archive import Archive

    scan = write_pdf([page(["Tờ khai"])], tmp_path / "scan0003.pdf")
    result = process_file(scan, folder_settings, None, root=tmp_path)
    assert result.status is Status.unmatched and "no case ID" in result.reason
    with Archive.open(folder_settings) as archive:
        assert [r.source_name for r in archive.unmatched()] == ["scan0003.pdf"]


def test_stack_with_two_separator_sheets_is_stored_as_three_documents(tmp_path, backend_settings):
    sheet_b, sheet_plain = render_sheet(CASE_B).resize((620, 877)), render_sheet(None).resize((620, 877))
    pages = [page(["Đơn đề nghị"], qr=CASE_A), page(["Bản sao"]),
             sheet_b, page(["Tờ khai"]), page(["Giấy ủy quyền"]), page(["Bản vẽ"]),
             sheet_plain, rotated_noisy(page(["Biên nhận"], qr=CASE_C), 180, noise=0.02)]
    stack = write_pdf(pages, tmp_path / "stack.pdf")
    result = process_file(stack, backend_settings, None, root=tmp_path)
    assert result.status is Status.done, result.reason
    got = [(d.source_pages, d.pages, d.case_id, d.case_source) for d in result.documents]
    assert got == [("1-2", 2, CASE_A, "qr"), ("4-6", 3, CASE_B, "separator"), ("8", 1, CASE_C, "qr")]
    assert result.pages == 6  # the two sheets were dropped, not converted

    again = process_file(stack, backend_settings, None, root=tmp_path)
    assert again.status is Status.skipped and again.pages == 0
    rows = stored_rows(backend_settings)
    assert sorted((r.source_pages, r.pages) for r in rows) == [("1-2", 2), ("4-6", 3), ("8", 1)]


def test_a_source_swapped_for_a_link_after_hashing_is_not_what_gets_converted(tmp_path, folder_settings, monkeypatch):
    """The job reads the bytes it hashed (a private copy), never the clerk-writable name again: a scan
    swapped for a link to a root-only file between the hash and the conversion stores the scan it hashed."""
    import hashlib

    from pipelines import jobs

    inbox, private = tmp_path / "inbox", tmp_path / "private"
    inbox.mkdir()
    private.mkdir(mode=0o700)
    secret = write_pdf([page(["Bí mật"], qr=CASE_B)], private / "secret.pdf")
    scan = write_pdf([page(["Đơn đề nghị"], qr=CASE_A)], inbox / "scan.pdf")
    hashed = hashlib.sha256(scan.read_bytes()).hexdigest()
    real_scan_pages = jobs.scan_pages

    def swap_then_scan(path, opts):
        scan.unlink()
        scan.symlink_to(secret)  # the clerk's swap, after the no-follow hash
        return real_scan_pages(path, opts)

    monkeypatch.setattr(jobs, "scan_pages", swap_then_scan)
    result = process_file(scan, folder_settings, None, root=inbox)
    assert result.status is Status.done and result.sha256 == hashed, result.reason
    assert [d.case_id for d in result.documents] == [CASE_A]
    [row] = stored_rows(folder_settings)
    assert row.original_sha256 == hashed and row.case_id == CASE_A


def test_a_conversion_of_other_bytes_than_those_hashed_is_not_stored(tmp_path, folder_settings, monkeypatch):
    import digitize.convert

    real_convert = digitize.convert.convert_file

    def convert_other_bytes(*args, **kwargs):
        report = real_convert(*args, **kwargs)
        report.input_sha256 = "0" * 64  # as if the file had changed between the hash and the pages
        return report

    monkeypatch.setattr(digitize.convert, "convert_file", convert_other_bytes)
    scan = write_pdf([page(["Đơn đề nghị"], qr=CASE_A)], tmp_path / "scan.pdf")
    result = process_file(scan, folder_settings, None, root=tmp_path)
    assert result.status is Status.failed and "changed while it was converted" in result.reason, result.reason
    assert "InputError" in result.error_kinds
    assert stored_rows(folder_settings) == []
