"""Invisible text layer: glyphless font, ToUnicode, CID encoding, word placement."""

from __future__ import annotations

import io
import re
import subprocess
import unicodedata

import numpy as np
import pytest
from fontTools.ttLib import TTFont

from digitize import encode, pdfa, textlayer
from digitize.records import Word

SCALE = 72 / 300
HEIGHT_PX = 1748
TJ = re.compile(r"([\d.]+) Tz 1 0 0 1 ([\d.]+) ([\d.]+) Tm <([0-9a-f]*)> Tj")
SPACE = re.compile(r"([\d.]+) Tz <0020> Tj")


def word(text, left, top, right, bottom, conf=95.0) -> Word:
    return Word(text, left, top, right, bottom, conf)


def shown(stream: bytes) -> list[tuple[float, float, float, str]]:
    """(Tz, x, y, text) for every word drawn by a content stream."""
    out = []
    for tz, x, y, hexcids in TJ.findall(stream.decode("ascii")):
        cids = bytes.fromhex(hexcids)
        text = "".join(chr(int.from_bytes(cids[i:i + 2], "big")) for i in range(0, len(cids), 2))
        out.append((float(tz), float(x), float(y), text))
    return out


def test_decomposed_input_becomes_nfc_cids():
    nfd = unicodedata.normalize("NFD", "Nguyễn Đức Thắng")
    assert len(nfd) > len("Nguyễn Đức Thắng")
    cids = textlayer.encode_text(nfd)
    assert cids == "Nguyễn Đức Thắng".encode("utf-16-be")
    assert textlayer.encode_text("e\u0302\u0303") == b"\x1e\xc5"  # e + circumflex + tilde -> U+1EC5 ễ


def test_characters_outside_the_bmp_become_replacement_char():
    assert textlayer.encode_text("a\U0001d400b") == b"\x00a\xff\xfd\x00b"


def test_font_parses_with_advance_500():
    font = TTFont(io.BytesIO(textlayer.glyphless_truetype()))
    assert font.getGlyphOrder() == [".notdef", "blank"]
    assert font["head"].unitsPerEm == textlayer.UNITS_PER_EM
    assert {g: font["hmtx"][g][0] for g in font.getGlyphOrder()} == {".notdef": 500, "blank": 500}
    assert font["hhea"].ascent == textlayer.ASCENT and font["hhea"].descent == textlayer.DESCENT
    assert font["glyf"]["blank"].numberOfContours == 0
    assert len(textlayer.glyphless_truetype()) < 2000


def test_cid_to_gid_map_sends_every_cid_to_the_blank_glyph():
    m = textlayer.cid_to_gid_map()
    assert len(m) == 2 * 65536
    assert set(np.frombuffer(m, ">u2").tolist()) == {1}


def test_cid_to_gid_map_ends_at_the_highest_cid_used():
    ops = textlayer.content_stream(textlayer.group_lines([(1, word("Nẵng", 10, 10, 90, 40)), (1, word("ỹ", 100, 10, 120, 40))]),
                                   HEIGHT_PX, SCALE)
    assert textlayer.highest_cid(ops) == ord("ỹ")  # U+1EF9, the highest Vietnamese letter
    m = textlayer.cid_to_gid_map(textlayer.highest_cid(ops))
    assert len(m) == 2 * (0x1EF9 + 1) and set(np.frombuffer(m, ">u2").tolist()) == {1}
    assert textlayer.highest_cid(b"BT ET") == 0 and len(textlayer.cid_to_gid_map(0)) == 2
    assert textlayer.highest_cid(textlayer.content_stream(
        textlayer.group_lines([(1, word("\U0001F600", 10, 10, 40, 40))]), HEIGHT_PX, SCALE)) == 0xFFFD


def test_to_unicode_ranges_never_cross_a_high_byte():
    cmap = textlayer.to_unicode_cmap().decode("ascii")
    blocks = re.findall(r"(\d+) beginbfrange\n(.*?)\nendbfrange", cmap, re.S)
    assert blocks
    covered = set()
    for count, body in blocks:
        rows = re.findall(r"<([0-9A-F]{4})> <([0-9A-F]{4})> <([0-9A-F]{4})>", body)
        assert int(count) == len(rows) <= 100  # PDF limit per block
        for lo, hi, dst in rows:
            lo, hi, dst = int(lo, 16), int(hi, 16), int(dst, 16)
            assert lo >> 8 == hi >> 8 and lo <= hi  # same high byte
            assert dst == lo and (dst & 0xFF) + (hi - lo) <= 0xFF  # destination's last byte does not overflow
            covered.update(range(lo, hi + 1))
    assert {ord(c) for c in "Đặng Thị Ngọc Trâm ₫"} <= covered
    assert not covered & set(range(0xD800, 0xE000))  # no surrogates
    assert "<0000> <FFFF>" in cmap  # 2-byte codespace


def test_group_lines_keeps_order_and_drops_blank_words():
    a, b, c = word("Điều", 10, 10, 80, 40), word("1.", 90, 10, 110, 40), word("Giao", 10, 60, 80, 90)
    lines = textlayer.group_lines([(1, a), (1, word("  ", 85, 10, 88, 40)), (1, b), (2, c), (3, word("", 0, 0, 1, 1))])
    assert [line.words for line in lines] == [(a, b), (c,)]
    assert (lines[0].top, lines[0].bottom) == (10, 40)


def test_tz_stretches_each_word_over_its_box_and_the_gap_but_a_narrow_space():
    words = [word("Quyết", 100, 200, 220, 250), word("định", 228, 205, 330, 248), word("số", 420, 205, 470, 248)]
    stream = textlayer.content_stream(textlayer.group_lines([(1, w) for w in words]), HEIGHT_PX, SCALE)
    size = 50 * SCALE  # line height
    assert float(re.search(r"/FDgtz ([\d.]+) Tf", stream.decode()).group(1)) == pytest.approx(size, abs=0.01)
    (tz1, x1, y1, t1), (tz2, x2, y2, t2), (tz3, x3, _, t3) = shown(stream)
    assert (t1, t2, t3) == ("Quyết", "định", "số")
    advance = size * textlayer.ADVANCE / textlayer.UNITS_PER_EM
    spaces = [float(tz) * advance / 100 for tz in SPACE.findall(stream.decode())]
    # a space after every word but the line's last gives extraction its word breaks: WORD_GAP
    # line heights (10 px) whether the real gap is narrower (8 px) or wider (90 px)
    assert spaces == pytest.approx([textlayer.WORD_GAP * 50 * SCALE] * 2, abs=0.02)
    assert len(t1) * advance * tz1 / 100 == pytest.approx((228 - 10 - 100) * SCALE, abs=0.02)  # up to the space
    assert len(t2) * advance * tz2 / 100 == pytest.approx((420 - 10 - 228) * SCALE, abs=0.02)  # over the gap
    assert len(t3) * advance * tz3 / 100 == pytest.approx((470 - 420) * SCALE, abs=0.02)  # its own box
    assert (x1, x2, x3) == pytest.approx((100 * SCALE, 228 * SCALE, 420 * SCALE), abs=0.01)
    # PDF's y axis points up: glyph box [baseline - 0.2 size, baseline + 0.8 size] = the line's pixel rows
    assert y1 == y2 == pytest.approx((HEIGHT_PX - 250) * SCALE + 0.2 * size, abs=0.01)
    assert y1 + 0.8 * size == pytest.approx((HEIGHT_PX - 200) * SCALE, abs=0.01)


def test_touching_or_misordered_words_keep_a_space():
    words = [word("ab", 100, 200, 160, 250), word("cd", 150, 200, 200, 250), word("ef", 10, 200, 60, 250)]
    stream = textlayer.content_stream(textlayer.group_lines([(1, w) for w in words]), HEIGHT_PX, SCALE)
    assert [t for *_, t in shown(stream)] == ["ab", "cd", "ef"]
    assert len(SPACE.findall(stream.decode())) == 2


def _extracted(tmp_path, words, height, width) -> list[str]:
    ops = textlayer.content_stream(textlayer.group_lines(words), height, SCALE)
    path = tmp_path / "page.pdf"
    pdfa.write_page_pdf(path, encode.encode_jpeg(np.full((height, width), 255, np.uint8), 50),
                        width * SCALE, height * SCALE, ops)
    out = subprocess.run(["pdftotext", str(path), "-"], capture_output=True, check=True, timeout=60)
    return [" ".join(line.split()) for line in out.stdout.decode("utf-8").splitlines() if line.strip()]


def test_table_rows_extract_row_by_row(tmp_path):
    """A table row read by the OCR as one line stays one line for pdftotext: its cells' gaps,
    the same down every row, no longer look like column gutters (it read such a table column
    by column: a generated ruled table's CER 0.091 -> 0.006)."""
    columns = [(240, 4), (420, 12), (900, 9), (1300, 6)]  # cell x, letters
    rows = [["TT", "Chủ hộ", "Ấp", "Số ký"], ["1", "Trần Văn Bảy", "Phước Hòa", "120"],
            ["2", "Lý Thị Sen", "Tân Lập", "80"], ["3", "Võ Minh Khoa", "Bình Đông", "200"]]
    words = []
    for r, cells in enumerate(rows):
        top = 300 + r * 90
        for (x, _), cell in zip(columns, cells):
            for token in cell.split():
                words.append((r + 1, word(token, x, top, x + 22 * len(token), top + 40)))
                x += 22 * len(token) + 14
    assert _extracted(tmp_path, words, 900, 1700) == [" ".join(cells) for cells in rows]


def test_invisible_render_mode_and_balanced_text_object():
    stream = textlayer.content_stream(textlayer.group_lines([(1, word("a", 0, 0, 10, 10))]), 100, 1.0)
    ops = stream.decode().split("\n")
    assert ops[:2] == ["BT", "3 Tr"] and ops[-2:] == ["ET", ""]


def test_empty_ocr_gives_an_empty_text_object():
    assert textlayer.content_stream([], HEIGHT_PX, SCALE) == b"BT\n3 Tr\nET\n"


def test_degenerate_boxes_do_not_break_the_stream():
    lines = textlayer.group_lines([
        (1, word("ạ", 50, 100, 60, 101)),  # 1 pixel high: font size floored at 1 pt
        (2, word("x", 70, 200, 70, 230)),  # zero width: skipped
        (3, word("(a)\\", 80, 300, 120, 330)),  # PDF string delimiters are safe in hex
    ])
    stream = textlayer.content_stream(lines, HEIGHT_PX, SCALE)
    assert "/FDgtz 1 Tf" in stream.decode()
    assert [t for *_, t in shown(stream)] == ["ạ", "(a)\\"]


def test_text_layer_extracts_as_nfc_vietnamese(tmp_path):
    """ToUnicode + font through a real extractor: exact NFC text with word breaks."""
    page = np.full((400, 1240), 255, np.uint8)
    text = [("Cộng", 90, 90, 200, 135), ("hòa", 215, 90, 300, 135), ("Đà", 90, 200, 150, 245),
            ("Nẵng", 165, 200, 280, 245)]
    words = [(1 if top < 150 else 2, word(unicodedata.normalize("NFD", t), l, top, r, b)) for t, l, top, r, b in text]
    ops = textlayer.content_stream(textlayer.group_lines(words), page.shape[0], SCALE)
    path = tmp_path / "page.pdf"
    pdfa.write_page_pdf(path, encode.encode_jpeg(page, 50), 1240 * SCALE, 400 * SCALE, ops)
    out = subprocess.run(["pdftotext", "-layout", str(path), "-"], capture_output=True, check=True, timeout=60)
    lines = [" ".join(line.split()) for line in out.stdout.decode("utf-8").splitlines() if line.strip()]
    assert lines == ["Cộng hòa", "Đà Nẵng"]
    assert all(unicodedata.is_normalized("NFC", line) for line in lines)


def test_touching_words_extract_apart(tmp_path):
    """Words whose boxes touch or overlap (a hooked "ở" before "riêng") keep a space wide
    enough for pdftotext's word break."""
    words = [(1, word("nhà", 100, 100, 170, 140)), (1, word("ở", 172, 100, 200, 140)),
             (1, word("riêng", 199, 100, 300, 140)), (1, word("lẻ", 312, 100, 350, 140))]
    assert _extracted(tmp_path, words, 400, 600) == ["nhà ở riêng lẻ"]
