"""Metadata resolution order and the parsing of each clue (pure functions, no servers)."""

from __future__ import annotations

import json
from pathlib import Path, PurePath

import pytest

from digitize.errors import InputError
from pipelines import metadata
from pipelines.metadata import Clue

CASE_A = "000.00.31.H56-241015-0027"
CASE_B = "000.00.31.H56-241016-0001"
CASE_C = "H56.32-241017-0042"


def test_folder_convention_gives_case_sequence_and_title():
    clue = metadata.folder_clue(PurePath(f"{CASE_A}/02-Ban_sao_so_do.pdf"))
    assert clue.values == {"case_id": CASE_A, "sequence": 2, "title": "Ban sao so do"}


def test_folder_that_is_not_a_case_id_gives_nothing():
    assert metadata.folder_clue(PurePath("2024-scans/02-don.pdf")) is None
    assert metadata.folder_clue(PurePath("02-don.pdf")) is None


def test_case_id_found_in_file_name_with_other_words():
    assert metadata.filename_clue(PurePath(f"scan {CASE_B} cmnd.pdf")).values == {"case_id": CASE_B}


def test_qr_payload_that_is_a_url_still_yields_the_case_id():
    clue = metadata.code_clue(["https://dichvucong.example/tra-cuu?maHoSo=" + CASE_A])
    assert clue.values["case_id"] == CASE_A


def test_ocr_clue_reads_the_labelled_line_on_first_pages_only():
    texts = ["GIẤY TIẾP NHẬN HỒ SƠ\nMã hồ sơ: 000.00.31.H56 - 241015 - 0027", "", "", f"cites {CASE_B}"]
    assert metadata.ocr_clue(texts).values["case_id"] == CASE_A
    assert metadata.ocr_clue(["", "", "", f"cites {CASE_B}"]) is None


def test_labelled_case_id_whose_dots_ocr_lost_is_repaired():
    assert metadata.ocr_clue(["GIẤY TIẾP NHÂN\nMã hồ sơ: 000 00 31 H56-241016-0003"]).values["case_id"] == \
        "000.00.31.H56-241016-0003"
    assert metadata.labelled_case_ids("MÃ SỐ HỒ SƠ 000,00.31 H56 - 241016 - 0003") == ["000.00.31.H56-241016-0003"]
    assert metadata.labelled_case_ids("Số điện thoại 000 00 31 H56-241016-0003") == []


def test_resolution_order_first_clue_wins_field_by_field():
    resolution = metadata.resolve([
        None,
        Clue("sidecar", {"title": "Đơn đề nghị"}),
        Clue("manifest", {"case_id": CASE_A, "archive": {"OrganId": "H56.32", "Rights": "Công khai"}}),
        Clue("folder", {"case_id": CASE_B, "sequence": 3, "archive": {"Rights": "Hạn chế"}}),
        Clue("qr", {"case_id": CASE_C}),
    ])
    assert resolution.case_id == CASE_A and resolution.case_source == "manifest"
    assert resolution.values["title"] == "Đơn đề nghị" and resolution.values["sequence"] == 3
    assert resolution.values["archive"] == {"OrganId": "H56.32", "Rights": "Công khai"}


def test_separator_case_id_beats_file_level_clues_for_its_part():
    resolution = metadata.resolve([metadata.separator_clue(CASE_C), Clue("filename", {"case_id": CASE_A})])
    assert resolution.case_id == CASE_C and resolution.case_source == "separator"


def test_malformed_separator_case_id_is_ignored_not_trusted():
    assert metadata.separator_clue("000.00.31.H56-241399-0001") is None


def test_nothing_found_leaves_the_document_unmatched():
    assert metadata.resolve([None, None]).case_id is None


def test_case_record_overrides_procedure_and_agency_from_files():
    resolution = metadata.resolve([Clue("manifest", {"case_id": CASE_A, "procedure_code": "2.001234"})])
    record = {"procedure_code": "1.004616.000.00.00.H56", "procedure_name": "Cấp đổi sổ đỏ", "agency": "UBND"}
    merged = metadata.apply_case_record(resolution, record)
    assert merged.values["procedure_code"] == "1.004616.000.00.00.H56"
    assert merged.sources["procedure_name"] == "case-record"
    assert resolution.values["procedure_code"] == "2.001234"  # the input is not mutated


def test_mapping_collects_every_problem_at_once():
    clue, problems = metadata.clue_from_mapping("manifest", {
        "case_id": "000.00.31.H56-241315-0027", "procedure_code": "1.23", "sequence": "x",
        "colour": "red", "organ_id": "H56.32", "file_catalog": "98x", "file_notation": "HS-01"})
    assert len(problems) == 5, problems
    assert any("month 13" in p for p in problems) and any("colour" in p for p in problems)
    assert any("FileCatalog" in p for p in problems)


def test_mapping_fills_archive_fields_and_title(tmp_path):
    clue, problems = metadata.clue_from_mapping("manifest", {
        "path": "a.pdf", "case_id": CASE_A.lower(), "title": "Hồ sơ đất", "organ_id": "H56.32",
        "file_catalog": "1998", "file_notation": "HS-01", "maintenance": "Vĩnh viễn", "rights": ""})
    assert problems == []
    assert clue.values["case_id"] == CASE_A and clue.values["title"] == "Hồ sơ đất"
    assert clue.values["archive"] == {"OrganId": "H56.32", "FileCatalog": "1998", "FileNotation": "HS-01",
                                      "Title": "Hồ sơ đất", "Maintenance": "Vĩnh viễn"}


def test_sidecar_json_beside_the_scan_is_read(tmp_path):
    scan = tmp_path / "scan.pdf"
    scan.write_bytes(b"%PDF-")
    (tmp_path / "scan.json").write_text(json.dumps({"case_id": CASE_B, "scanned_by": "Lan"}), encoding="utf-8")
    assert metadata.sidecar_clue(scan).values == {"case_id": CASE_B, "scanned_by": "Lan"}


def test_broken_sidecar_is_an_input_error_naming_the_file(tmp_path):
    scan = tmp_path / "scan.pdf"
    scan.write_bytes(b"%PDF-")
    (tmp_path / "scan.pdf.json").write_text('{"case_id": "nonsense"}', encoding="utf-8")
    with pytest.raises(InputError, match="scan.pdf.json"):  # SidecarError: an InputError for the CLI
        metadata.sidecar_clue(scan)


def test_meta_kwargs_default_title_and_source():
    kwargs = metadata.meta_kwargs(metadata.resolve([]), "stack.pdf", "3-5", "stack (trang 3-5)")
    assert kwargs == {"title": "stack (trang 3-5)", "archive": {}, "source_name": "stack.pdf", "source_pages": "3-5"}


def test_a_symlinked_sidecar_is_refused_and_its_target_never_read(tmp_path):
    """A clerk's ``a.json -> /root-only/secret.json`` must not leak the secret's keys nor feed the index."""
    secret = tmp_path / "private" / "secret.json"
    secret.parent.mkdir()
    secret.write_text(json.dumps({"case_id": CASE_B, "db_password_key": "x"}), encoding="utf-8")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    scan = inbox / "a.pdf"
    scan.write_bytes(b"%PDF-")
    (inbox / "a.json").symlink_to(secret)
    with pytest.raises(InputError, match="a.json: a symbolic link") as refused:
        metadata.sidecar_clue(scan, inbox)
    assert "db_password_key" not in str(refused.value) and CASE_B not in str(refused.value)


def test_a_sidecar_under_a_symlinked_folder_or_too_big_is_refused(tmp_path):
    inbox, elsewhere = tmp_path / "inbox", tmp_path / "elsewhere"
    elsewhere.mkdir()
    inbox.mkdir()
    (elsewhere / "a.pdf").write_bytes(b"%PDF-")
    (elsewhere / "a.json").write_text(json.dumps({"case_id": CASE_B}), encoding="utf-8")
    (inbox / "case").symlink_to(elsewhere)  # a folder swapped for a link to one the clerk may not write
    with pytest.raises(InputError, match="a.json"):
        metadata.sidecar_clue(inbox / "case" / "a.pdf", inbox)
    assert metadata.sidecar_clue(elsewhere / "a.pdf", elsewhere).values == {"case_id": CASE_B}
    (elsewhere / "a.json").write_text(json.dumps({"case_id": CASE_B, "pad": "x" * metadata.SIDECAR_MAX_BYTES}))
    with pytest.raises(InputError, match="larger than"):
        metadata.sidecar_clue(elsewhere / "a.pdf", elsewhere)


def test_control_and_bidi_characters_never_reach_stored_free_text_fields():
    clue, problems = metadata.clue_from_mapping("sidecar", {"title": "a\u202eb\x1b", "doc_type": "CCCD\n\u2066x",
                                                           "scanned_by": "x\ny", "agency": "\u202e"})
    assert problems == [] and clue.values == {"title": "ab", "doc_type": "CCCD x", "scanned_by": "x y",
                                              "archive": {"Title": "ab"}}


def test_a_title_taken_from_the_file_name_is_stored_without_control_characters():
    kwargs = metadata.meta_kwargs(metadata.Resolution(), "01-Giay to\u202egpj.exe\x1b[2J\nfake.pdf", "",
                                  "01-Giay to\u202egpj.exe\x1b[2J\nfake")
    assert kwargs["title"] == "01-Giay togpj.exe[2J fake"
    assert kwargs["source_name"] == "01-Giay togpj.exe[2J fake.pdf"


def test_a_shared_inbox_sidecar_cannot_name_the_digitizer(tmp_path):
    scan = tmp_path / "scan.pdf"
    scan.write_bytes(b"%PDF-")
    (tmp_path / "scan.json").write_text(json.dumps({"case_id": CASE_B, "scanned_by": "Lan"}), encoding="utf-8")
    assert metadata.sidecar_clue(scan, shared=True).values == {"case_id": CASE_B}
    assert metadata.sidecar_clue(scan).values["scanned_by"] == "Lan"  # batch: an archivist's own folder
