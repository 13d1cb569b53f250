"""Vietnamese normalisation: NFC, accent folding (đ -> d), search keys."""

from __future__ import annotations

import unicodedata

import pytest

from digitize import text


def test_nfc_composes_decomposed_vietnamese():
    nfd = unicodedata.normalize("NFD", "Nguyễn Thị Ánh Tuyết")
    assert nfd != "Nguyễn Thị Ánh Tuyết"
    assert text.nfc(nfd) == "Nguyễn Thị Ánh Tuyết"
    assert len(text.nfc("e\u0302\u0301")) == 1  # e + circumflex + acute = ế


@pytest.mark.parametrize("given,folded", [
    ("Quyền sử dụng đất", "Quyen su dung dat"),
    ("ĐƠN ĐỀ NGHỊ", "DON DE NGHI"),
    ("Đà Nẵng", "Da Nang"),
    ("Ủy ban nhân dân tỉnh Thừa Thiên Huế", "Uy ban nhan dan tinh Thua Thien Hue"),
    ("Số 127/QĐ-UBND", "So 127/QD-UBND"),
    ("plain ascii 123", "plain ascii 123"),
    ("", ""),
])
def test_fold_accents(given, folded):
    assert text.fold_accents(given) == folded
    assert text.fold_accents(unicodedata.normalize("NFD", given)) == folded


def test_fold_accents_only_strips_marks():
    assert text.fold_accents("Ƣ ơ ư") == "Ƣ o u"  # a letter without decomposition stays
    assert text.fold_accents("₫ 50%") == "₫ 50%"


def test_search_key_ignores_case_and_marks():
    assert text.search_key("QUYẾT ĐỊNH") == text.search_key("quyết định") == text.search_key("Quyet dinh") == "quyet dinh"
    assert text.search_key("ĐẤT") == "dat" and text.search_key("Straße") == "strasse"


def test_squash_whitespace():
    assert text.squash_whitespace("  Điều\t1.\n\n Giao\u00a0đất  ") == "Điều 1. Giao đất"


def test_the_fold_table_keeps_only_the_scripts_met_in_dossiers():
    """A query may hold any code point: folding them all must not grow the per-process table without end."""
    from digitize import text

    before = len(text._FOLD)
    rare = "".join(chr(c) for c in range(0x20000, 0x22000))  # CJK extension B: 8 192 code points
    assert text.fold_accents(rare) == rare
    assert len(text._FOLD) - before < 100
    assert text.fold_accents("Quyền sử dụng đất") == "Quyen su dung dat"


def test_recorded_keeps_valid_text_and_writes_a_names_odd_bytes_as_escapes() -> None:
    import os

    from digitize.text import recorded

    assert recorded("Đơn xin cấp phép.pdf") == "Đơn xin cấp phép.pdf"
    assert recorded(os.fsdecode(b"h\xe9 \xff.png")) == "h\\xe9 \\xff.png"
    assert recorded("a\ud800b") == "a\\xed\\xa0\\x80b"  # a lone surrogate from elsewhere, not a file name
    recorded(os.fsdecode(b"\xe9" * 10)).encode("utf-8")  # always writable


def test_recorded_values_makes_what_json_dumps_valid_text() -> None:
    import json
    import os

    from digitize.text import recorded_values

    data = {"path": os.fsdecode(b"h\xe9.pdf"), "n": 3, "warnings": [os.fsdecode(b"\xff x")], "ok": True}
    text = json.dumps(recorded_values(data), ensure_ascii=False)
    assert json.loads(text.encode("utf-8")) == {"path": "h\\xe9.pdf", "n": 3, "warnings": ["\\xff x"], "ok": True}
