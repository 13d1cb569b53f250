"""Case ID, procedure code and FileCode rules: valid forms accepted, each kind of mistake explained."""

from datetime import date

import pytest

from digitize.errors import BadArgsError
from digitize.identifiers import (
    find_case_ids,
    is_case_id,
    normalize_case_id,
    parse_case_id,
    parse_file_code,
    parse_procedure_code,
)


def test_canonical_case_id_is_split_into_agency_date_and_number():
    cid = parse_case_id("000.00.31.H56-241015-0027")
    assert cid.agency.code == "000.00.31.H56" and cid.agency.canonical
    assert cid.received == date(2024, 10, 15)
    assert cid.number == 27
    assert cid.value == "000.00.31.H56-241015-0027"


@pytest.mark.parametrize("text", ["G22.32-240101-0001", "H56.32.01-240229-9999", "000.00.00.G01-231231-0001"])
def test_shorter_local_agency_codes_are_accepted(text):
    assert parse_case_id(text).value == text


def test_case_id_is_normalised_from_lower_case_spaces_and_en_dash():
    assert normalize_case_id("  000.00.31.h56 \u2013 241015 - 0027 ") == "000.00.31.H56-241015-0027"


@pytest.mark.parametrize(
    "text, explanation",
    [
        ("000.00.31.H56-241315-0027", "date 241315 is not a real date (month 13)"),
        ("000.00.31.H56-230229-0027", "date 230229 is not a real date (day 29 of 02/2023)"),
        ("000.00.31.H56-241015-27", "running number '27' must be 4 digits"),
        ("000.00.31.H56-2410-0027", "date '2410' must be 6 digits YYMMDD"),
        ("H56-241015-0027", "must have 2 to 5 dot-separated groups"),
        ("000.00.31.H5#6-241015-0027", "group 'H5#6' must be 1 to 4 letters or digits"),
        ("hello", "must look like <agency code>-YYMMDD-NNNN"),
        ("", "case ID is empty"),
    ],
)
def test_bad_case_id_explains_what_is_wrong(text, explanation):
    with pytest.raises(BadArgsError) as err:
        parse_case_id(text)
    assert explanation in str(err.value)
    assert not is_case_id(text)


def test_leap_day_is_a_real_date():
    assert parse_case_id("000.00.31.H56-240229-0001").received == date(2024, 2, 29)


@pytest.mark.parametrize(
    "text, level, number, agency",
    [("1.004616.000.00.00.H56", 1, "004616", "000.00.00.H56"), ("2.001234", 2, "001234", None)],
)
def test_procedure_code_forms(text, level, number, agency):
    code = parse_procedure_code(text)
    assert (code.level, code.number, code.agency and code.agency.code) == (level, number, agency)
    assert code.value == text


@pytest.mark.parametrize("text", ["1.4616", "x.004616", "1.004616.", "1.004616.000.00.00.H#6"])
def test_bad_procedure_code_is_refused(text):
    with pytest.raises(BadArgsError, match="procedure code"):
        parse_procedure_code(text)


def test_find_case_ids_in_ocr_text_with_label_spaces_and_repeats():
    text = (
        "UBND TỈNH KHÁNH HÒA\nMã hồ sơ: 000.00.31.H56 - 241015 - 0027\n"
        "Giấy tiếp nhận ... mã hồ sơ:000.00.31.H56-241015-0027 (lặp lại)\n"
        "Hồ sơ khác: G22.32-240101-0001; số sai 000.00.31.H56-241399-0001"
    )
    assert find_case_ids(text) == ["000.00.31.H56-241015-0027", "G22.32-240101-0001"]


def test_find_case_ids_ignores_phone_numbers_and_longer_digit_runs():
    assert find_case_ids("ĐT 0258-3822-123, số 000.00.31.H56-241015-00271") == []


def test_file_code_joins_parts_and_checks_lengths():
    assert parse_file_code("000.00.31.H56", "2024", "HS-0027").value == "000.00.31.H56.2024.HS-0027"
    with pytest.raises(BadArgsError, match="OrganId"):
        parse_file_code("000.000.31.H56", 2024, "x")
    assert parse_file_code("000.00.31.H56", "01", "x").value == "000.00.31.H56.0001.x"  # a catalogue number
    for bad in ("20245", "2k24", ""):
        with pytest.raises(BadArgsError, match="FileCatalog"):
            parse_file_code("000.00.31.H56", bad, "x")
    with pytest.raises(BadArgsError, match="FileNotation"):
        parse_file_code("000.00.31.H56", 2024, "x" * 21)
