"""Case export parsing: Vietnamese or English headers, dates in both orders, per-field explanations."""

import pytest

from digitize.errors import BadArgsError, InputError
from storage.cases_import import parse_case_row, parse_date, read_case_rows

CASE = "000.00.31.H56-241015-0027"


def test_vietnamese_headers_map_to_fields_and_archive_fields_are_kept():
    case = parse_case_row({"Mã hồ sơ": CASE.lower(), "Mã TTHC": "2.001234", "Ngày hẹn trả": "20/10/2024",
                           "Trạng thái": "Đang xử lý", "organid": "000.00.31.H56", "Cột lạ": "x"})
    assert (case.case_id, case.procedure_code, case.due_date, case.status) == (CASE, "2.001234", "2024-10-20",
                                                                              "Đang xử lý")
    assert case.archive == {"OrganId": "000.00.31.H56"}


@pytest.mark.parametrize("text, iso", [("2024-10-15", "2024-10-15"), ("15/10/2024", "2024-10-15"),
                                       ("2024-10-15T08:30:00", "2024-10-15"), ("15.10.2024", "2024-10-15")])
def test_dates(text, iso):
    assert parse_date(text, "received date") == iso


@pytest.mark.parametrize("row, message", [
    ({"applicant": "x"}, "no case ID"),
    ({"case_id": CASE, "received_date": "31/02/2024"}, "received date '31/02/2024' is not a date"),
    ({"case_id": CASE, "OrganId": "000.00.31.H56", "FileCatalog": "20245", "FileNotation": "x"}, "FileCatalog"),
])
def test_bad_rows_say_which_field(row, message):
    with pytest.raises(BadArgsError, match=message):
        parse_case_row(row)


def test_two_headers_of_one_field_must_agree():
    """Review rev17desk H1: the last alias won, so a later "Case ID" column overrode "case_id"."""
    with pytest.raises(BadArgsError, match="columns 'case_id' and 'Case ID' disagree"):
        parse_case_row({"case_id": CASE, "Case ID": "000.00.12.H29-241016-0003"})
    assert parse_case_row({"case_id": CASE, "Mã hồ sơ": CASE.lower(), "applicant": "A"}).case_id == CASE


@pytest.mark.parametrize("row, message", [
    ({"case_id": CASE, "applicant": "x" * (2 << 20)}, "applicant is longer than 1000 characters"),
    ({"case_id": CASE, "Người nộp": "Nguyễn\x00Văn A"}, "applicant contains a NUL character"),
    ({"case_id": CASE, "Description": "y" * 4001}, "Description is longer than 4000 characters"),
    ({"case_id": CASE, "procedure_name": {"nested": "x" * 10}}, "procedure_name must be a text"),
    ({"case_id": CASE, "status": ["a", "b"]}, "status must be a text"),
])
def test_oversized_and_nul_fields_are_row_errors(row, message):
    """Review rev17desk M3: any length was stored (and copied into every search hit and filed document's
    metadata), nested JSON stored as its repr, and a NUL was a 503 "storage unavailable" on PostgreSQL."""
    with pytest.raises(BadArgsError, match=message):
        parse_case_row(row)


def test_field_controls_are_removed_and_unknown_columns_ignored():
    case = parse_case_row({"case_id": CASE, "applicant": " Lê\tVăn\u202e  Tám\r\n", "Cột lạ": ["x"] * 9})
    assert case.applicant == "Lê Văn Tám"


def test_a_json_export_too_large_to_read_whole_is_one_line(tmp_path, monkeypatch):
    from storage import cases_import

    path = tmp_path / "x.json"
    path.write_text('[{"case_id": "%s"}]' % CASE + " " * 100)
    monkeypatch.setattr(cases_import, "JSON_MAX_BYTES", 100)
    with pytest.raises(InputError, match="larger than"):
        list(read_case_rows(path))


def test_csv_with_bom_and_semicolons(tmp_path):
    path = tmp_path / "x.csv"
    path.write_bytes("\ufeffMã hồ sơ;Người nộp\n".encode() + f"{CASE};Lê Văn Tám\n".encode())
    assert list(read_case_rows(path)) == [(1, {"Mã hồ sơ": CASE, "Người nộp": "Lê Văn Tám"})]


def test_bad_files_are_input_errors(tmp_path):
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(InputError, match="not valid UTF-8 JSON"):
        list(read_case_rows(tmp_path / "x.json"))
    (tmp_path / "y.json").write_text('{"cases": 3}')
    with pytest.raises(InputError, match="expected a list"):
        list(read_case_rows(tmp_path / "y.json"))
    with pytest.raises(BadArgsError, match=".csv or .json"):
        list(read_case_rows(tmp_path / "z.xlsx"))


def test_excel_unicode_text_export_is_read_and_a_legacy_code_page_is_explained(tmp_path):
    """Excel's "Unicode Text" is UTF-16 with tabs: it was refused as "not UTF-8 text". A cp1258 CSV
    (Excel's plain "CSV" on Vietnamese Windows) stays refused, now with what to do."""
    unicode_text = tmp_path / "motcua.csv"
    unicode_text.write_bytes(f"Mã hồ sơ\tNgười nộp\r\n{CASE}\tLê Văn Tám\r\n".encode("utf-16"))
    assert list(read_case_rows(unicode_text)) == [(1, {"Mã hồ sơ": CASE, "Người nộp": "Lê Văn Tám"})]
    legacy = tmp_path / "ansi.csv"
    legacy.write_bytes(f"Mã hồ sơ,Người nộp\r\n{CASE},Lê Văn Tám\r\n".encode("cp1258", "replace"))
    with pytest.raises(InputError, match='not UTF-8 text: in Excel, save it as "CSV UTF-8'):
        list(read_case_rows(legacy))
