"""OCR-only preparations for degraded pages (digitize/preparations.py): pure image functions."""

import cv2
import numpy as np

from digitize import imaging, preparations
from tests.pages import render_text_page, table_page


def _seal_over_text(dark: float = 0.55) -> tuple[np.ndarray, np.ndarray]:
    """A black text page with a filled red stamp multiplied over its middle; returns (page, stamp)."""
    page = render_text_page(size=(1240, 900), font_px=36, colour=False)
    rgb = np.repeat(page[..., None], 3, axis=2).astype(np.float32)
    stamp = np.zeros(page.shape, np.uint8)
    cv2.circle(stamp, (620, 300), 160, 255, 24)
    red = np.array([dark, 0.1, 0.12], np.float32)
    s = stamp[..., None].astype(np.float32) / 255
    return (rgb * (1 - s * (1 - red))).astype(np.uint8), stamp > 0


def test_coloured_marks_finds_a_seal_and_keeps_the_text_under_it():
    page, stamp = _seal_over_text()
    marks = preparations.coloured_marks(page)
    assert marks is not None
    text = page.max(axis=2) < 60
    assert marks[stamp & ~text].mean() > 0.95  # the seal's own ink
    assert not marks[text].any()  # black text multiplied by red stays black


def test_coloured_marks_is_none_for_black_pages_and_for_coloured_text():
    page = render_text_page(size=(800, 600), font_px=30)
    assert preparations.coloured_marks(page) is None  # grey
    assert preparations.coloured_marks(np.repeat(page[..., None], 3, axis=2)) is None  # black on white RGB
    violet = np.where(page[..., None] < 128, np.array([90, 40, 140], np.uint8), np.uint8(250))
    assert preparations.coloured_marks(violet.astype(np.uint8)) is None  # a violet carbon copy: the text


def test_whiten_turns_the_mask_and_its_edge_to_paper():
    grey = np.full((50, 50), 240, np.uint8)
    grey[20:30, 20:30] = 90
    grey[19, 20:30] = 180  # soft edge
    mask = np.zeros(grey.shape, bool)
    mask[20:30, 20:30] = True
    out = preparations.whiten(grey, mask)
    assert (out[20:30, 20:30] == 240).all() and out[19, 25] == 180 and grey[20, 20] == 90  # input untouched
    assert (preparations.whiten(grey, mask, grow=1)[19:31, 19:31] == 240).all()


def test_ruling_lines_of_a_table_are_found_and_letters_are_not():
    table = table_page(size=(1240, 900), rows=5, cols=3, font_px=20)
    mask = preparations.ruling_lines(table, 20.0)
    assert mask is not None
    assert mask[150, 300:900].mean() > 0.9 and mask[300:700, 120].mean() > 0.9  # a row and a column line
    text = render_text_page(size=(1240, 600), font_px=20)
    assert preparations.ruling_lines(text, 20.0) is None
    vertical = preparations.ruling_lines(table, 20.0, horizontal=False)
    assert vertical[300:700, 120].mean() > 0.9 and not vertical[150, 200:400].any()


def test_remove_rulings_keeps_the_cells_text():
    table = table_page(size=(1240, 900), rows=5, cols=3, font_px=20)
    out = preparations.remove_rulings(table, 20.0)
    assert (out[300:700, 120] > 200).all()  # a column's ruling is gone
    assert (out[150, 300:900] < 128).mean() > 0.9  # the rows' stay: Tesseract keeps a row's cells together by them
    ink_before = np.count_nonzero(table < 128)
    lines = np.count_nonzero(preparations.ruling_lines(table, 20.0))
    assert np.count_nonzero(out < 128) > 0.5 * (ink_before - lines)  # the letters stay
    plain = render_text_page(size=(600, 300), font_px=20)
    assert preparations.remove_rulings(plain, 20.0) is plain


def test_first_reading_names_what_it_removed():
    page, stamp = _seal_over_text()
    prepared, factor = imaging.prepare_for_ocr(page, 300)
    out, done = preparations.first_reading(prepared, page)
    assert done == ["colour-marks-removed"]
    ring = cv2.resize(stamp.view(np.uint8), prepared.shape[::-1], interpolation=cv2.INTER_NEAREST) > 0
    text = cv2.resize((page.max(axis=2) < 60).view(np.uint8), prepared.shape[::-1],
                      interpolation=cv2.INTER_NEAREST) > 0
    assert np.median(out[ring & ~text]) > 200
    clean = render_text_page(size=(1240, 600), font_px=36)
    prepared, _ = imaging.prepare_for_ocr(clean, 300)
    same, done = preparations.first_reading(prepared, clean)
    assert done == [] and same is prepared


def _curled(page: np.ndarray, depth: float) -> np.ndarray:
    """``page`` with its lines bending down into a gutter at the right: the last third of the
    columns lowered by up to ``depth`` pixels (quadratically), as a bound book's page."""
    h, w = page.shape
    x = np.arange(w, dtype=np.float32)
    drop = depth * np.clip((x - 2 * w / 3) / (w / 3), 0, 1) ** 2
    map_x = np.tile(x, (h, 1))
    map_y = np.arange(h, dtype=np.float32)[:, None] - drop[None, :]
    return cv2.remap(page, map_x, map_y, cv2.INTER_LINEAR, borderValue=255)


def test_curled_lines_are_levelled_and_straight_ones_left_alone():
    page = _lines_across()
    w = page.shape[1]
    letter = imaging.OCR_LETTER_PX
    assert preparations.line_curl(page, letter) is None  # straight lines
    curled = _curled(page, 18)
    curl = preparations.line_curl(curled, letter)
    assert curl is not None
    assert abs(curl[w - 40] - curl[40] - 18 * ((w / 3 - 40) / (w / 3)) ** 2) < 5  # about the bend put in
    flat = preparations.uncurl(curled, curl)
    _, ink = cv2.threshold(flat, 0, 1, cv2.THRESH_BINARY_INV | cv2.THRESH_OTSU)
    _, ink0 = cv2.threshold(page, 0, 1, cv2.THRESH_BINARY_INV | cv2.THRESH_OTSU)
    # the rows of ink near the right edge are back where the page had them
    _, ink1 = cv2.threshold(curled, 0, 1, cv2.THRESH_BINARY_INV | cv2.THRESH_OTSU)
    edge = slice(w - 90, w - 10)
    rows, rows0, rows1 = (i[:, edge].sum(axis=1).astype(float) for i in (ink, ink0, ink1))
    levelled, before = np.corrcoef(rows, rows0)[0, 1], np.corrcoef(rows1, rows0)[0, 1]
    assert levelled > 0.7 and levelled > before + 0.15  # nearer level again (0.77 against 0.57)


def test_line_curl_profiles_are_each_strips_row_counts_blurred_alone():
    """The strips' row counts, summed in one pass, give the very floats each strip summed and blurred
    on its own gave (the curl measured is the same, to the pixel)."""
    curled = _curled(_lines_across(), 18)
    letter = imaging.OCR_LETTER_PX
    ink = imaging.otsu_ink(curled)
    h, w = curled.shape
    edges = np.linspace(0, w, preparations.CURL_STRIPS + 1).astype(int)
    one_by_one = [cv2.GaussianBlur((ink // 255)[:, a:b].sum(axis=1, dtype=np.float32).reshape(-1, 1), (1, 0),
                                   letter / 4).ravel() for a, b in zip(edges[:-1], edges[1:])]
    got = []
    real_blur = cv2.GaussianBlur

    def blur(src, *args, **kwargs):
        got.append(src.ravel().copy())
        return real_blur(src, *args, **kwargs)

    preparations.cv2.GaussianBlur = blur
    try:
        preparations.line_curl(curled, letter, ink)
    finally:
        preparations.cv2.GaussianBlur = real_blur
    assert len(got) == preparations.CURL_STRIPS
    assert all(np.array_equal(real_blur(g.reshape(-1, 1), (1, 0), letter / 4).ravel(), want)
               for g, want in zip(got, one_by_one))


def _lines_across() -> np.ndarray:
    """A text page whose lines run right across it (so every strip has text)."""
    return render_text_page(size=(320, 1200), font_px=20, margin=10, leading=1.5)  # lines overrun it


def test_first_reading_uncurls_only_curled_pages():
    page = _lines_across()
    assert "lines-uncurled" not in preparations.first_reading(page, page)[1]
    curled = _curled(page, 18)
    assert "lines-uncurled" in preparations.first_reading(curled, curled)[1]


def _struck(page: np.ndarray, rows: list[int], thick: int = 2) -> np.ndarray:
    """``page`` with rows gone black across it, as a fax's or scanner's streaks."""
    out = page.copy()
    for r in rows:
        out[r:r + thick, 5:] = 0
    return out


def _text_rows(page: np.ndarray) -> list[tuple[int, int]]:
    ink = cv2.dilate(((page < 128).sum(axis=1) > 0).astype(np.uint8).reshape(-1, 1), np.ones((7, 1), np.uint8)).ravel()
    edges = np.flatnonzero(np.diff(ink.astype(np.int8)))  # a line with its marks, 3 rows of slack each side
    return [(int(a) + 4, int(b) - 2) for a, b in zip(edges[::2], edges[1::2])]


def test_text_streaks_are_found_through_letters_and_the_strokes_they_cross_stay():
    page = render_text_page(size=(1240, 600), font_px=20)
    (top, bottom), (top2, bottom2) = _text_rows(page)[:2]
    middle, gap = (top + bottom) // 2, (bottom + top2) // 2
    struck = _struck(page, [middle])
    mask = preparations.text_streaks(struck, 20.0)
    assert mask is not None
    blank = page[middle, 5:] > 200  # the streak where no letter was
    assert mask[middle, 5:][blank].mean() > 0.85  # (inside a bowl it looks like a stroke and stays)
    crossing = (page[middle - 4, :] < 128) & (page[middle + 5, :] < 128) & (page[middle, :] < 128)
    assert crossing.any() and not mask[middle, crossing].any()  # a letter's stem through the streak stays
    assert preparations.text_streaks(_struck(page, [gap]), 20.0) is None  # between the lines: a ruling's place
    assert preparations.text_streaks(page, 20.0) is None


def test_remove_streaks_keeps_a_tables_rulings_and_clears_a_struck_line():
    table = table_page(size=(1240, 900), rows=5, cols=3, font_px=20)
    assert preparations.remove_streaks(table, 20.0) is table  # rulings clear of the letters: kept
    page = render_text_page(size=(1240, 600), font_px=20)
    top, bottom = _text_rows(page)[0]
    middle = (top + bottom) // 2
    out = preparations.remove_streaks(_struck(page, [middle]), 20.0)
    assert (out[middle, 5:] < 128).mean() < 2 * (page[middle, 5:] < 128).mean()  # the letters and their bowls, not the streak
    assert (out < 128).sum() > 0.9 * (page < 128).sum()  # and the letters themselves


def test_first_reading_removes_streaks_from_a_struck_fax():
    page = np.where(render_text_page(size=(1240, 600), font_px=20) < 128, 0, 255).astype(np.uint8)
    top, bottom = _text_rows(page)[1]
    fax = _struck(page, [(top + bottom) // 2], thick=1)  # one scan row
    prepared, _ = imaging.prepare_for_ocr(fax, 204)  # bilevel, small print: enlarged and smoothed
    _, done = preparations.first_reading(prepared, fax)
    assert "streaks-removed" in done
