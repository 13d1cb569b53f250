"""hOCR parsing and the rule for taking a second language's reading of an unsure word (no Tesseract run)."""

from __future__ import annotations

import unicodedata

import numpy as np
import pytest

from digitize import ocr
from digitize.errors import DigitizeError, OcrError
from digitize.records import Word

HEAD = """<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Transitional//EN"
    "http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd">
<html xmlns="http://www.w3.org/1999/xhtml" xml:lang="en" lang="en">
 <head><title></title>
  <meta http-equiv="Content-Type" content="text/html;charset=utf-8"/>
  <meta name='ocr-system' content='tesseract 5.3.0' />
 </head>
 <body>
  <div class='ocr_page' id='page_1' title='image "page.pgm"; bbox 0 0 1240 1748; ppageno 0; scan_res 300 300'>
"""
TAIL = "  </div>\n </body>\n</html>\n"


def hocr(*paragraphs: list[list[tuple]]) -> bytes:
    """Paragraphs of lines of (text, x0, y0, x1, y1, conf) words, in Tesseract's hOCR shape."""
    out, n = [HEAD, "   <div class='ocr_carea' id='block_1_1' title=\"bbox 0 0 1240 1748\">\n"], 0
    for p, lines in enumerate(paragraphs, 1):
        out.append(f"    <p class='ocr_par' id='par_1_{p}' lang='vie' title=\"bbox 0 0 1240 1748\">\n")
        for lines_i, line in enumerate(lines, 1):
            out.append(f"     <span class='ocr_line' id='line_{p}_{lines_i}' title=\"bbox 0 0 1240 60; "
                       "baseline 0 -9; x_size 34; x_descenders 6; x_ascenders 9\">\n")
            for text, x0, y0, x1, y1, conf in line:
                n += 1
                out.append(f"      <span class='ocrx_word' id='word_1_{n}' title='bbox {x0} {y0} {x1} {y1}; "
                           f"x_wconf {conf}'>{text}</span>\n")
            out.append("     </span>\n")
        out.append("    </p>\n")
    out.append("   </div>\n")
    out.append(TAIL)
    return "".join(out).encode("utf-8")


TWO_PARAGRAPHS = hocr(
    [[("CỘNG", 91, 98, 200, 132, 96), ("HÒA", 210, 98, 300, 132, 90)],
     [("Độc", 91, 150, 155, 184, 93), ("lập", 168, 150, 214, 190, 91)]],
    [[("Số", 93, 261, 131, 290, 96), ("127", 145, 264, 201, 290, 40)]],
)


def test_words_boxes_lines_and_confidence():
    r = ocr.parse_hocr(TWO_PARAGRAPHS)
    assert r.word_count == 6
    assert [line for line, _ in r.words] == [1, 1, 2, 2, 3, 3]
    assert r.words[3][1] == Word("lập", 168, 150, 214, 190, 91.0)
    assert r.confidence == pytest.approx((96 + 90 + 93 + 91 + 96 + 40) / 6)


def test_text_has_lines_and_blank_lines_between_paragraphs():
    assert ocr.parse_hocr(TWO_PARAGRAPHS).text == "CỘNG HÒA\nĐộc lập\n\nSố 127"


def test_decomposed_words_come_back_nfc():
    r = ocr.parse_hocr(hocr([[(unicodedata.normalize("NFD", "Nguyễn"), 0, 0, 90, 30, 88)]]))
    assert r.words[0][1].text == "Nguyễn" and r.text == "Nguyễn"


def test_nested_markup_escapes_and_all_line_classes():
    doc = hocr([[("<strong>Đ&amp;T</strong>", 0, 0, 50, 30, 90.5)]]).replace(b"'ocr_line'", b"'ocr_header'")
    r = ocr.parse_hocr(doc)
    assert r.words[0][1].text == "Đ&T" and r.words[0][1].confidence == 90.5


def test_empty_words_and_words_without_box_are_skipped():
    doc = hocr([[("  ", 0, 0, 10, 10, 95), ("Điều", 0, 0, 80, 30, 95)]]).replace(b"bbox 0 0 80 30; ", b"")
    r = ocr.parse_hocr(doc)
    assert r.words == [] and r.text == "" and r.confidence == 0.0


def test_blank_page_hocr():
    r = ocr.parse_hocr((HEAD + TAIL).encode())
    assert (r.words, r.text, r.confidence, r.word_count) == ([], "", 0.0, 0)


@pytest.mark.parametrize("junk", [b"", b"<html><body>", b"\x00\xff garbage"])
def test_unreadable_hocr_is_an_ocr_error(junk):
    with pytest.raises(OcrError, match="unreadable hOCR"):
        ocr.parse_hocr(junk)


# --- refine_unsure_words: a second language may replace a word only when clearly better -------------

PAGE = np.full((400, 1000), 255, np.uint8)


def refine(words: list[tuple[str, float]], rereads: list[tuple[str, float] | None], monkeypatch):
    """Run the refinement on one line of ``words``; the second language answers ``rereads`` per unsure word
    (None: nothing read). Returns the result and the languages/psm the strip was read with."""
    line = [(1, Word(t, 20 + 100 * i, 50, 100 + 100 * i, 90, c)) for i, (t, c) in enumerate(words)]
    result = ocr.OcrResult(line, sum(c for _, c in words) / len(words))
    calls = []

    def fake_hocr(strip, language, dpi, psm, timeout, what):
        calls.append((language, psm, strip.shape))
        _, rows = ocr._stack([ocr._crop(PAGE, w) for _, w in line if w.confidence < ocr.UNSURE_BELOW])
        found = [(1, Word(r[0], 30, top + 20, 90, top + 40, r[1]))
                 for r, (top, _) in zip(rereads, rows) if r is not None]
        return ocr.OcrResult(found, 0.0)

    monkeypatch.setattr(ocr, "_hocr", fake_hocr)
    replaced = ocr.refine_unsure_words(result, PAGE, "eng", 300, 10, "page 1")
    return result, replaced, calls


def test_clearly_better_different_reading_is_taken(monkeypatch):
    r, n, calls = refine([("Mã", 95), ("HS-2O19", 30)], [("HS-2019", 85)], monkeypatch)
    assert n == 1 and r.words[1][1].text == "HS-2019" and r.words[1][1].confidence == 85
    assert r.words[1][1].left == 120  # the box stays the first reading's
    assert r.text == "Mã HS-2019" and r.confidence == pytest.approx(90)
    assert [(lang, psm) for lang, psm, _ in calls] == [("eng", 6)]  # one call, one strip, block mode


def test_reading_that_only_strips_tone_marks_is_refused(monkeypatch):
    r, n, _ = refine([("ĐƠN", 40), ("Quyền", 50)], [("DON", 95), ("Quyen", 99)], monkeypatch)
    assert n == 0 and [w.text for _, w in r.words] == ["ĐƠN", "Quyền"] and r.text == "ĐƠN Quyền"


def test_reading_not_20_points_more_confident_is_refused(monkeypatch):
    r, n, _ = refine([("l0", 45)], [("10", 64)], monkeypatch)
    assert n == 0 and r.words[0][1].text == "l0"
    r, n, _ = refine([("l0", 45)], [("10", 65)], monkeypatch)
    assert n == 1 and r.words[0][1].text == "10"


def test_reading_split_into_several_words_is_refused(monkeypatch):
    r, n, _ = refine([("ab", 20)], [("a b", 90)], monkeypatch)
    assert n == 0 and r.words[0][1].text == "ab"


def test_confident_words_are_never_reread(monkeypatch):
    r, n, calls = refine([("Điều", 95), ("1.", 60)], [], monkeypatch)
    assert n == 0 and calls == []


def test_nothing_read_back_keeps_the_word(monkeypatch):
    r, n, _ = refine([("x1", 30), ("y2", 30)], [None, ("y7", 90)], monkeypatch)
    assert n == 1 and [w.text for _, w in r.words] == ["x1", "y7"]


def test_text_replacement_hits_the_refined_word_not_a_substring(monkeypatch):
    r, n, _ = refine([("Thửa", 95), ("đất", 95), ("số", 95), ("s", 30)], [("5", 90)], monkeypatch)
    assert n == 1 and r.text == "Thửa đất số 5"


def test_stack_rows_cover_each_crop():
    crops = [np.zeros((30, 80), np.uint8), np.zeros((1, 5), np.uint8), np.zeros((12, 40, 3), np.uint8)]
    strip, rows = ocr._stack(crops)
    assert strip.shape == (30 + 1 + 12 + 4 * ocr.STRIP_GAP, 80 + 2 * ocr.STRIP_GAP)
    for crop, (top, bottom) in zip(crops, rows):
        middle = (top + bottom) // 2
        assert (strip[middle, ocr.STRIP_GAP:ocr.STRIP_GAP + crop.shape[1]] == 0).all()
    assert all(b <= t2 for (_, b), (t2, _) in zip(rows, rows[1:]))


def test_crop_clips_to_the_page():
    assert ocr._crop(PAGE, Word("x", -20, -5, 10, 1, 0)).shape == (7, 16)
    assert ocr._crop(PAGE, Word("x", 990, 395, 1200, 600, 0)).shape == (11, 16)


@pytest.mark.parametrize("language", ["", "+"])
def test_empty_language_is_a_digitize_error(language, monkeypatch):
    monkeypatch.setattr(ocr, "_hocr", lambda *a: ocr.OcrResult([], 0.0))
    with pytest.raises(DigitizeError):
        ocr.recognise(PAGE, language, 300, 10)


# --- list numbers that Tesseract took for vertical text -----------------------------------------

def sideways_hocr() -> bytes:
    """Two list lines whose numbers Tesseract read as one vertical line, in its own block."""
    doc = hocr([[(".", 60, 100, 66, 130, 90), ("Họ", 80, 100, 130, 130, 96), ("tên", 140, 100, 200, 130, 95)],
                [(".", 60, 160, 66, 190, 90), ("Ngày", 80, 160, 160, 190, 96)]]).decode()
    vertical = ("   <div class='ocr_carea' id='block_1_2' title=\"bbox 30 100 55 190\">\n"
                "    <p class='ocr_par' id='par_1_9' lang='vie' title=\"bbox 30 100 55 190\">\n"
                "     <span class='ocr_line' id='line_9_1' title=\"bbox 30 100 55 190; textangle 90; x_size 20\">\n"
                "      <span class='ocrx_word' id='word_1_99' title='bbox 30 100 55 190; x_wconf 12'>(©</span>\n"
                "     </span>\n    </p>\n   </div>\n")
    return doc.replace(TAIL, vertical + TAIL).encode()


def test_vertical_lines_are_set_aside_not_read():
    r = ocr.parse_hocr(sideways_hocr())
    assert r.sideways == [((30, 100, 55, 190), [Word("(©", 30, 100, 55, 190, 12.0)])]
    assert "(©" not in r.text and r.text == ". Họ tên\n. Ngày"


def test_list_numbers_are_read_again_and_join_their_lines(monkeypatch):
    r = ocr.parse_hocr(sideways_hocr())
    calls = []

    def fake_hocr(crop, language, dpi, psm, timeout, what):
        calls.append((crop.shape, language, psm))
        top, left = 100 - 12, 30 - 12  # the crop's origin: the column padded by dpi/25
        found = [("1.", 30, 100, 66, 130, 96), ("Họ", 80, 100, 130, 130, 95),  # "Họ": context, not taken
                 ("2.", 30, 160, 66, 190, 92), ("ml", 30, 200, 50, 215, 99),  # nothing beside "ml"
                 ("#", 30, 40, 50, 60, 20)]  # unsure: the kind of thing a stamp yields
        return ocr.OcrResult([(1, Word(t, x0 - left, y0 - top, x1 - left, y1 - top, c))
                              for t, x0, y0, x1, y1, c in found], 0.0)

    monkeypatch.setattr(ocr, "_hocr", fake_hocr)
    assert ocr.reread_sideways_lines(r, PAGE, "vie", 300, 10, "page 1") == 2
    assert r.text == "1. Họ tên\n2. Ngày"
    assert r.words[0] == (1, Word("1.", 30, 100, 66, 130, 96))
    assert [(lang, psm) for _, lang, psm in calls] == [("vie", 6)]
    assert calls[0][0] == (190 + 12 - 88, min(1000, 55 + 360) - 18)  # with 1.2 inch of context to the right


def test_vertical_text_read_confidently_is_kept_when_nothing_joins_a_line(monkeypatch):
    r = ocr.parse_hocr(sideways_hocr().replace("x_wconf 12'>(©".encode(), "x_wconf 91'>Quyển".encode()))
    monkeypatch.setattr(ocr, "_hocr", lambda *a: ocr.OcrResult([(1, Word("#", 5, 5, 9, 9, 20))], 20.0))
    assert ocr.reread_sideways_lines(r, PAGE, "vie", 300, 10, "page 1") == 1
    assert r.text == ". Họ tên\n. Ngày\n\nQuyển"  # its own paragraph, as read


def test_garbage_read_sideways_is_dropped_when_nothing_joins_a_line(monkeypatch):
    r = ocr.parse_hocr(sideways_hocr())  # "(©" at 12: what a QR code yields (or "IM" at 90)
    monkeypatch.setattr(ocr, "_hocr", lambda *a: ocr.OcrResult([], 0.0))
    assert ocr.reread_sideways_lines(r, PAGE, "vie", 300, 10, "page 1") == 0
    assert r.text == ". Họ tên\n. Ngày"


def test_a_short_confident_sideways_reading_is_not_taken_for_text(monkeypatch):
    r = ocr.parse_hocr(sideways_hocr().replace("x_wconf 12'>(©".encode(), b"x_wconf 90'>IM"))
    monkeypatch.setattr(ocr, "_hocr", lambda *a: ocr.OcrResult([], 0.0))
    assert ocr.reread_sideways_lines(r, PAGE, "vie", 300, 10, "page 1") == 0 and "IM" not in r.text


def across_result(first_line: list[tuple] | None = None, other: list[tuple] = ()) -> ocr.OcrResult:
    """A line whose second half Tesseract read as one-glyph vertical lines (a typewriter page's
    rivers), as parse_hocr sets them aside: ``first_line`` (text, x0, x1) words at y 100-130 before
    them, ``other`` lines' words (text, x0, y0, x1, y1) elsewhere."""
    first_line = [("04", 20, 60), ("của", 80, 150), ("Hội", 170, 240)] if first_line is None else first_line
    words = [(1, Word(t, x0, 100, x1, 130, 95)) for t, x0, x1 in first_line]
    words += [(2 + i, Word(t, x0, y0, x1, y1, 95)) for i, (t, x0, y0, x1, y1) in enumerate(other)]
    glyphs = [((x, 98 + k % 3, x + 20, 125 + k % 2 * 8), [Word(g, x, 100, x + 20, 125, 20)])
              for k, (x, g) in enumerate(zip(range(250, 700, 45), "œ©#⁄tQ<®öa"))]
    return ocr.OcrResult(words, 95.0, sideways=glyphs)


def fake_across(calls: list):
    """The row re-read across: the cut tail of "Hội" at the crop's edge, then the line's rest."""
    def fake_hocr(crop, language, dpi, psm, timeout, what):
        calls.append((crop.shape, psm))
        left, top = 250 - 12, 98 - 12  # the merged row's box, padded by dpi/25
        found = [("lội", 225, 100, 245, 130, 90), ("đồng", 260, 100, 330, 130, 96), ("xét", 350, 100, 400, 130, 96),
                 ("Thanh;", 420, 100, 500, 130, 95), ("#", 800, 100, 820, 130, 20)]
        return ocr.OcrResult([(1, Word(t, x0 - left, y0 - top, x1 - left, y1 - top, c))
                              for t, x0, y0, x1, y1, c in found], 0.0)
    return fake_hocr


def test_a_line_read_as_one_glyph_vertical_lines_is_read_across_and_continued(monkeypatch):
    r, calls = across_result(), []
    monkeypatch.setattr(ocr, "_hocr", fake_across(calls))
    assert ocr.reread_sideways_lines(r, PAGE, "vie", 300, 10, "page 1") == 3
    assert r.text == "04 của Hội đồng xét Thanh;"  # one line; "lội" was Hội's own ink again
    assert [psm for _, psm in calls] == [6]  # the row at once, not a call per glyph


def test_a_row_read_across_between_two_pieces_of_its_line_loses_no_word(monkeypatch):
    r = across_result(other=[("Thành", 720, 100, 820, 130)])  # the line's third piece, right of the row
    monkeypatch.setattr(ocr, "_hocr", fake_across([]))
    ocr.reread_sideways_lines(r, PAGE, "vie", 300, 10, "page 1")
    assert r.text == "04 của Hội đồng xét Thanh;\nThành"  # joined to the nearer piece, none lost


def test_a_row_read_across_with_no_line_beside_it_is_a_line_of_its_own_in_reading_order(monkeypatch):
    r = across_result(first_line=[], other=[("Trên", 20, 20, 120, 50), ("Dưới", 20, 300, 600, 330)])
    monkeypatch.setattr(ocr, "_hocr", fake_across([]))
    assert ocr.reread_sideways_lines(r, PAGE, "vie", 300, 10, "page 1") == 4
    assert r.text == "Trên\nlội đồng xét Thanh;\nDưới"  # nothing covers "lội" here


def test_a_row_read_across_that_gives_nothing_back_is_dropped_not_kept_as_glyphs(monkeypatch):
    r = across_result()
    for _, words in r.sideways:
        words[0] = Word("qq", words[0].left, words[0].top, words[0].right, words[0].bottom, 90)  # "read" well
    monkeypatch.setattr(ocr, "_hocr", lambda *a: ocr.OcrResult([], 0.0))
    assert ocr.reread_sideways_lines(r, PAGE, "vie", 300, 10, "page 1") == 0 and "qq" not in r.text


def test_sideways_rows_merge_glyphs_along_a_row_but_not_a_column_or_another_row():
    glyph = lambda x, y: ((x, y, x + 20, y + 27), [Word("x", x, y, x + 20, y + 27, 10)])
    column = ((30, 100, 55, 190), [Word("(©", 30, 100, 55, 190, 12)])  # list numbers: three lines tall
    lines = {1: (80, 100, 400, 130), 2: (80, 160, 400, 190)}  # the page's lines, 30 px high
    rows = ocr._sideways_rows([glyph(100, 100), glyph(150, 102), column, glyph(400, 100), glyph(100, 300)], lines)
    boxes = sorted(box for box, _ in rows)
    assert boxes == [(30, 100, 55, 190), (100, 100, 120, 127), (100, 300, 120, 327), (150, 102, 170, 129),
                     (400, 100, 420, 127)]  # the two glyphs at 100-170 merge to 70 x 29: not across, kept apart
    assert ocr._sideways_rows([column], lines) == [column]
    # a column and a glyph beside it, two columns of a two-column form: never merged
    other = ((640, 100, 665, 190), [Word("(©", 640, 100, 665, 190, 12)])
    assert sorted(b for b, _ in ocr._sideways_rows([column, glyph(60, 120)], lines)) == [(30, 100, 55, 190), (60, 120, 80, 147)]
    assert sorted(b for b, _ in ocr._sideways_rows([column, other], lines)) == [(30, 100, 55, 190), (640, 100, 665, 190)]
    assert len(ocr._sideways_rows([glyph(100, 100), glyph(150, 100)], {})) == 2  # no lines read: nothing merged
    # a merge that would not lie across (two glyphs, 70 x 27) keeps its boxes, as before; order is the reading's
    assert ocr._sideways_rows([glyph(150, 100), column, glyph(100, 100)], lines) == [glyph(150, 100), column, glyph(100, 100)]
    row = ocr._sideways_rows([other, glyph(100, 100), glyph(145, 100), glyph(190, 100)], lines)
    assert [box for box, _ in row] == [(640, 100, 665, 190), (100, 100, 210, 127)]  # 110 x 27: across


def test_recognise_keeps_the_page_readings_confidence_before_its_rescues(monkeypatch):
    monkeypatch.setattr(ocr, "_hocr", lambda *a: _reading(ONE_COLUMN, 80.0))

    def rescue(result, *args):  # a missed line read back, at high confidence
        result.words.append((9, Word("thêm", 20, 300, 90, 330, 99.0)))
        result.update_confidence()

    monkeypatch.setattr(ocr, "reread_missed_lines", rescue)
    result = ocr.recognise(PAGE, "vie", 300, 10)
    assert result.first_confidence == 80.0 and result.confidence > 80.0
    readings = {3: _reading(CUT, 70.0), 6: _reading(ONE_COLUMN, 75.0)}  # columns: the block kept
    monkeypatch.setattr(ocr, "_hocr", lambda px, lang, dpi, psm, t, w: readings[psm])
    assert ocr.recognise(PAGE, "vie", 300, 10).first_confidence == 75.0


def test_recognise_rereads_sideways_lines_only_when_there_are_some(monkeypatch):
    seen = []
    monkeypatch.setattr(ocr, "_hocr", lambda px, lang, dpi, psm, t, w: seen.append(psm) or ocr.OcrResult([], 0.0))
    ocr.recognise(PAGE, "vie", 300, 10)
    assert seen == [3]


def test_strip_batches_stay_under_tesseracts_size_limit():
    crops = [np.zeros((70, 50), np.uint8)] * 1000 + [np.zeros((40000, 10), np.uint8)]
    batches = ocr._strip_batches(crops)
    assert [k for b in batches for k, _ in b] == list(range(1001))  # every crop, in order
    for batch in batches:
        strip, rows = ocr._stack([c for _, c in batch])
        assert strip.shape[0] <= ocr.MAX_STRIP_PX and len(rows) == len(batch)
    assert len(batches) == 5  # 1000 x 94 px in four strips, the giant crop cut down in its own
    assert ocr._strip_batches([]) == []


def _reading(lines: list[list[tuple]], confidence: float) -> ocr.OcrResult:
    words = [(n, Word(t, x0, y0, x1, y1, confidence)) for n, line in enumerate(lines, 1) for t, x0, y0, x1, y1 in line]
    return ocr.OcrResult(words, confidence)


ONE_COLUMN = [[("Thực", 100, 100, 200, 140), ("hiện", 220, 100, 320, 140)], [("chỉ", 100, 160, 180, 200)]]
# the same lines cut at a "river" of aligned spaces: two blocks side by side
CUT = [[("Thực", 100, 100, 200, 140)], [("chỉ", 100, 160, 180, 200)], [("hiện", 220, 102, 320, 138)]]


def test_side_by_side_lines():
    words = _reading(ONE_COLUMN, 90).words
    assert not ocr.side_by_side_lines(words)
    assert ocr.side_by_side_lines(_reading(CUT, 90).words)
    # lines that only touch (descenders over the next line's accents) are not side by side
    touching = [[("Thực", 100, 100, 200, 140)], [("hiện", 220, 130, 320, 170)]]
    assert not ocr.side_by_side_lines(_reading(touching, 90).words)
    assert not ocr.side_by_side_lines([])


def test_cells_with_a_ruling_between_are_not_side_by_side_lines():
    ruled = PAGE.copy()
    ruled[80:220, 209:211] = 0  # a table's vertical ruling in the gap between "Thực" and "hiện"
    assert not ocr.side_by_side_lines(_reading(CUT, 90).words, ruled)
    assert ocr.side_by_side_lines(_reading(CUT, 90).words, PAGE)  # no ruling: a typewriter's river
    short = PAGE.copy()
    short[100:110, 209:211] = 0  # a dash or a letter's stroke in the gap is no ruling
    assert ocr.side_by_side_lines(_reading(CUT, 90).words, short)


def test_a_ruled_table_is_read_once(monkeypatch):
    seen = []

    def fake_hocr(px, lang, dpi, psm, t, w):
        seen.append(psm)
        return _reading(CUT, 90.0)

    monkeypatch.setattr(ocr, "_hocr", fake_hocr)
    ruled = PAGE.copy()
    ruled[:, 210] = 0
    ocr.recognise(PAGE, "vie", 300, 10, ruled=ruled)
    assert seen == [3]


@pytest.mark.parametrize("block_confidence, kept", [(93.0, "block"), (89.0, "columns")])
def test_columns_are_read_again_as_one_block_and_the_more_confident_kept(monkeypatch, block_confidence, kept):
    seen = []

    def fake_hocr(px, lang, dpi, psm, t, w):
        seen.append(psm)
        return _reading(CUT, 90.0) if psm == 3 else _reading(ONE_COLUMN, block_confidence)

    monkeypatch.setattr(ocr, "_hocr", fake_hocr)
    result = ocr.recognise(PAGE, "vie", 300, 10)
    assert seen == [3, 6]
    assert result.text == ("Thực hiện\nchỉ" if kept == "block" else "Thực\nchỉ\nhiện")


def typed_lines(per_letter: list[float], top: int = 100, text: str = "") -> list[list[tuple]]:
    """A reading's lines of distinct 5-letter words ("anhận", "bnhận", ...; or all ``text``), each
    ``per_letter`` px a letter wide."""
    return [[(text or "abcdefghijklmnopqrstuvwxyz"[i] + "nhận", 100, top + 60 * i, 100 + round(5 * w), top + 40 + 60 * i)]
            for i, w in enumerate(per_letter)]


def test_monospaced_pages_have_one_width_per_letter():
    assert ocr.monospaced(_reading(typed_lines([21, 21.5, 20.5] * 4), 90).words)  # a typewriter's
    assert not ocr.monospaced(_reading(typed_lines([16, 21, 26] * 4), 90).words)  # "iiiii" and "mmmmm" differ
    assert not ocr.monospaced(_reading(typed_lines([21] * 9), 90).words)  # too few words to tell
    assert not ocr.monospaced(_reading(typed_lines([21] * 12, text="Không"), 90).words)  # one word, twelve times
    assert not ocr.monospaced([])


def test_a_monospaced_page_cut_at_its_rivers_keeps_the_block_reading_less_sure(monkeypatch):
    cut = _reading(CUT, 92.0)
    cut.words += [(n + 3, w) for n, w in _reading(typed_lines([25] * 12, top=300), 92.0).words]  # typed: 25 px a letter
    block = _reading(ONE_COLUMN, 88.0)
    monkeypatch.setattr(ocr, "_hocr", lambda px, lang, dpi, psm, t, w: cut if psm == 3 else block)
    assert ocr.recognise(PAGE, "vie", 300, 10).text == "Thực hiện\nchỉ"
    cut.words = cut.words[:3] + [(n + 3, w) for n, w in _reading(typed_lines([16, 25, 34] * 4, top=300), 92.0).words]
    assert ocr.recognise(PAGE, "vie", 300, 10).text.startswith("Thực\nchỉ\nhiện")  # proportional: the surer
    cut.words = cut.words[:3] + [(n + 3, w) for n, w in _reading(typed_lines([25] * 12, top=300), 92.0).words]
    block.confidence = 86.0  # typed, but the block trails by more than MONOSPACE_MARGIN: real columns
    assert ocr.recognise(PAGE, "vie", 300, 10).text.startswith("Thực\nchỉ\nhiện")


# -- lines Tesseract passed over (reread_missed_lines) --------------------------------------

MISSED_LINES = ["Điều 1. Nay cấp cho đồng chí Huỳnh Văn Tư, cán bộ", "thị xã Vị Thanh, để làm nhà ở cho gia đình.",
                "Điều 2. Người được cấp đất phải xây dựng nhà", "trong thời hạn hai năm kể từ ngày ký."]


def faint_line_page(faint: int = 170) -> np.ndarray:
    """Four typed lines, the second far fainter than the rest (a ribbon run dry), letters ~OCR size."""
    from PIL import Image, ImageDraw

    from tests.pages import _font

    img = Image.new("L", (1240, 420), 255)
    draw = ImageDraw.Draw(img)
    for i, line in enumerate(MISSED_LINES):
        draw.text((60, 40 + i * 90), line, font=_font(26), fill=faint if i == 1 else 0)
    return np.asarray(img).copy()


def test_a_faint_line_tesseract_left_out_is_read_and_put_in_its_place():
    page = faint_line_page()
    assert "Thanh" not in ocr._hocr(page, "vie", 200, 3, 60, "page 1").text  # the fault: the line is left out
    result = ocr.recognise(page, "vie", 200, 60)
    lines = [line for line in result.text.split("\n") if line]
    assert len(lines) == 4 and "Vị Thanh" in lines[1]  # back, between the lines it was typed between
    assert lines[0].startswith("Điều 1") and lines[2].startswith("Điều 2")


def test_a_missed_band_read_unsure_adds_nothing(monkeypatch):
    page = faint_line_page()
    result = ocr._hocr(page, "vie", 200, 3, 60, "page 1")
    before = result.text
    monkeypatch.setattr(ocr, "_hocr", lambda *a: ocr.OcrResult([(1, Word("ẩ|ỵ", 70, 30, 300, 60, 55.0)),
                                                                (1, Word("Thanh,", 310, 30, 400, 60, 91.0))], 0.0))
    assert ocr.reread_missed_lines(result, page, "vie", 200, 10, "page 1") == 0  # mean 73: bleed-through's kind
    assert result.text == before


def test_a_page_read_whole_pays_no_second_reading(monkeypatch):
    page = faint_line_page(faint=0)  # all four lines dark: Tesseract reads them all
    result = ocr._hocr(page, "vie", 200, 3, 60, "page 1")
    assert len([line for line in result.text.split("\n") if line]) == 4
    monkeypatch.setattr(ocr, "_hocr", lambda *a: pytest.fail("read again"))
    assert ocr.reread_missed_lines(result, page, "vie", 200, 10, "page 1") == 0


def test_specks_dot_leaders_and_ticks_are_not_lines():
    page = np.full((400, 1000), 255, np.uint8)
    page[100:104, 100:104] = 0  # a speck
    page[200:203, 100:700:12] = 0  # a dot leader: too low for a line
    page[300:330, 500:506] = 0  # a tick: too narrow
    result = ocr.OcrResult([(1, Word("Họ", 100, 20, 160, 50, 95.0))], 95.0)
    assert ocr._missed_bands(result, page, 30.0) == []
    page[260:290, 100:400] = 0  # a line-sized band of ink no word covers
    assert ocr._missed_bands(result, page, 30.0) == [(85, 245, 415, 305)]


def test_blanking_clips_boxes_to_the_image_and_its_origin():
    image = np.zeros((10, 10), np.uint8)  # its top-left corner at x 10, y 0 of the page
    boxes = [(-5, -5, 2, 2), (100, 100, 120, 120), (14, 3, 16, 4), (18, 8, 40, 30)]  # left of it, beyond, in, across
    ocr._blank(image, boxes, 1, 255, origin=(10, 0))
    assert image[2:5, 3:7].all() and image[7:, 7:].all()  # grown by 1, shifted by the origin, clipped at the edge
    assert image.sum() == 255 * (3 * 4 + 3 * 3)


def test_the_end_of_a_line_tesseract_cut_short_joins_that_line():
    words = [(1, Word("Điều", 60, 40, 140, 70, 95.0)), (1, Word("3.", 150, 40, 180, 70, 95.0)),
             (2, Word("có", 60, 130, 100, 160, 95.0))]
    result = ocr.OcrResult(list(words), 95.0)
    ocr._add_line(result, [Word("và", 700, 42, 740, 70, 90.0), Word("đồng", 750, 40, 820, 70, 90.0)])
    assert result.text == "Điều 3. và đồng\ncó"  # beside line 1, not a line of its own
    ocr._add_line(result, [Word("thị", 60, 85, 110, 115, 92.0)])
    assert result.text == "Điều 3. và đồng\nthị\ncó"  # between the lines: a new line before the one below


def noise_page(confidence: float = 30.0, words: int = 4) -> ocr.OcrResult:
    text = [(1, Word(t, 60 + 90 * i, 40, 140 + 90 * i, 70, 95.0)) for i, t in enumerate("Về việc cấp đất".split())]
    text += [(3, Word(t, 60 + 90 * i, 200, 140 + 90 * i, 230, 94.0)) for i, t in enumerate("làm nhà ở cho".split())]
    text += [(4, Word(t, 60 + 90 * i, 280, 140 + 90 * i, 310, 93.0)) for i, t in enumerate("cán bộ Ty Thủy".split())]
    noise = [(2, Word(t, 60 + 40 * i, 120, 90 + 40 * i, 150, confidence))
             for i, t in enumerate(["*", "2", "TY", "Z€"][:words])]
    result = ocr.OcrResult(text[:4] + noise + text[4:], 0.0)
    result.update_confidence()
    return result


def test_a_line_made_of_noise_on_a_well_read_page_is_dropped():
    result = noise_page()
    assert ocr.drop_noise_lines(result) == 1
    assert result.text == "Về việc cấp đất\nlàm nhà ở cho\ncán bộ Ty Thủy" and result.confidence > 93


def test_a_dropped_line_that_began_a_paragraph_hands_the_start_to_the_next_line():
    result = noise_page()
    result.paragraph_starts = {1, 2}  # the noise line began the second paragraph
    assert ocr.drop_noise_lines(result) == 1
    assert result.text == "Về việc cấp đất\n\nlàm nhà ở cho\ncán bộ Ty Thủy"
    assert result.paragraph_starts == {1, 3}


def test_short_lines_and_poor_pages_keep_their_low_readings():
    assert ocr.drop_noise_lines(noise_page(words=2)) == 0  # a page number, a name: too short to call noise
    poor = noise_page()
    poor.words = [(line, Word(w.text, w.left, w.top, w.right, w.bottom, 40.0)) for line, w in poor.words]
    poor.update_confidence()
    assert ocr.drop_noise_lines(poor) == 0  # a page read poorly throughout keeps every reading it has
    assert ocr.drop_noise_lines(noise_page(confidence=55.0)) == 0
