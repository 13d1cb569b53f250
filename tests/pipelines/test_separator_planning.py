"""Splitting a stack at separator sheets (pure planning) and the printed sheet itself."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pikepdf

from digitize.sources import open_source
from pipelines.codes import read_codes
from pipelines.separators import Separator, parse_separator, plan_parts

SEP = Separator(None)


def test_no_separator_keeps_the_file_whole():
    [part] = plan_parts([None, None, None])
    assert part.whole and part.pages == (0, 1, 2) and part.source_pages == ""


def test_two_separators_make_three_parts_and_are_dropped():
    parts = plan_parts([None, None, Separator("A"), None, None, None, SEP, None])
    assert [p.pages for p in parts] == [(0, 1), (3, 4, 5), (7,)]
    assert [p.case_id for p in parts] == [None, "A", None]
    assert [p.source_pages for p in parts] == ["1-2", "4-6", "8"]


def test_leading_trailing_and_doubled_separators_leave_no_empty_part():
    parts = plan_parts([SEP, None, SEP, SEP, None, SEP])
    assert [p.pages for p in parts] == [(1,), (4,)]


def test_separator_payloads_are_recognised_loosely_and_only_them():
    assert parse_separator(["digitize-sep"]) == Separator(None)
    assert parse_separator(["x", " DIGITIZE-SEP: 000.00.31.H56-241015-0027 "]) == Separator("000.00.31.H56-241015-0027")
    assert parse_separator(["000.00.31.H56-241015-0027", "DIGITIZE-SEPARATE"]) is None


def test_separator_command_prints_a_one_page_pdf_whose_qr_names_the_case(tmp_path):
    out = tmp_path / "sheet.pdf"
    done = subprocess.run([sys.executable, "-m", "digitize.cli", "separator", "000.00.31.h56-241015-0027",
                           "-o", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    with pikepdf.open(out) as pdf:
        assert len(pdf.pages) == 1
        width = float(pdf.pages[0].mediabox[2]) / 72 * 25.4
        assert 209 < width < 211  # A4
    with open_source(out) as src:
        assert read_codes(src.page(0).image, quick=True) == ["DIGITIZE-SEP:000.00.31.H56-241015-0027"]


def test_separator_command_refuses_a_bad_case_id_in_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "digitize.cli", "separator", "H56.32-991301-0001",
                           "-o", str(tmp_path / "s.pdf")], capture_output=True, text=True)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "month 13" in done.stderr
    assert not (tmp_path / "s.pdf").exists()
