"""Where the visible signature mark goes: on a blank part of page 1's top band, nearest the top-right
corner, never over ink; the top-right inset when the band has no blank place of its size. Pages are
generated at one cell per pt (the grid page_grey hands to place)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image, ImageDraw

from digitize import encode, pdfa, signmark

try:
    from tests.pages import VIETNAMESE_LINES, _font
except ModuleNotFoundError:
    from pages import VIETNAMESE_LINES, _font

A4 = (595, 842)  # pt
LINES = ("Nguyễn Thị Lan", "2026-12-01T09:30:00+07:00")


@pytest.fixture(scope="module")
def font():
    return signmark.find_font()


def page(size=A4, top=72, left=72, right=72, text_px=11, leading=1.5) -> Image.Image:
    """A page of justified-looking text (one cell per pt, every line the full measure) from ``top``
    down, between the given margins."""
    img = Image.new("L", size, 255)
    draw = ImageDraw.Draw(img)
    y, words = top, " ".join(VIETNAMESE_LINES).split() * 50
    while y < size[1] - 72:
        line = " ".join(words[:40])
        words = words[5:]
        while line and draw.textlength(line, font=_font(text_px)) > size[0] - left - right:
            line = line[:-1]
        draw.text((left, y), line, font=_font(text_px), fill=0)
        y += int(text_px * leading)
    return img


def grey(img: Image.Image) -> np.ndarray:
    return np.asarray(img).copy()


def ink_under(img: Image.Image, mark: signmark.Mark) -> int:
    """Dark cells under the mark's box (PDF box, origin at the bottom left) on the page image."""
    x1, y1, x2, y2 = mark.box
    height = img.size[1]
    return int((np.asarray(img)[height - y2:height - y1, x1:x2] < 128).sum())


def test_a_page_with_a_top_margin_gets_the_mark_in_the_corner(font):
    img = page(top=90)
    mark = signmark.place(*A4, LINES, font, None, grey(img))
    x1, y1, x2, y2 = mark.box
    assert (x2, y2) == (A4[0] - signmark.INSET, A4[1] - signmark.INSET)
    assert mark.where.startswith("blank top margin")
    assert ink_under(img, mark) == 0


def test_an_empty_page_gets_the_mark_in_the_corner(font):
    mark = signmark.place(*A4, LINES, font, None, grey(Image.new("L", A4, 250)))
    assert mark.box[2:] == (A4[0] - signmark.INSET, A4[1] - signmark.INSET)
    assert mark.where.startswith("blank top margin")


def test_text_filling_the_top_band_leaves_the_mark_at_the_inset_and_says_so(font):
    img = page(top=4, left=4, right=4, text_px=12, leading=1.2)
    inset = signmark.place(*A4, LINES, font, None)  # what it was before: the corner inset
    mark = signmark.place(*A4, LINES, font, None, grey(img))
    assert mark.box == inset.box
    assert mark.where.startswith("top-right inset (no blank")
    assert inset.where == "top-right inset (no page image to look at)"


def test_a_letterhead_at_the_top_right_moves_the_mark_to_blank_paper(font):
    img = page(top=150)
    ImageDraw.Draw(img).rectangle((380, 10, 590, 110), fill=40)  # a logo and address block, top right
    mark = signmark.place(*A4, LINES, font, None, grey(img))
    x1, y1, x2, y2 = mark.box
    assert mark.where.startswith("blank top margin")
    assert ink_under(img, mark) == 0
    assert A4[1] - y2 <= A4[1] * signmark.TOP_BAND, "still in the top band"
    assert (x2 <= 380 - signmark.CLEARANCE) or (A4[1] - y1 >= 110 + signmark.CLEARANCE), "beside or below it"
    assert x2 > A4[0] / 2, "as near the top-right corner as the page allows"


def test_a_seal_that_does_not_fit_beside_the_letterhead_goes_below_it(font, tmp_path):
    img = page(top=260)
    ImageDraw.Draw(img).rectangle((40, 10, 590, 60), fill=0)  # a letterhead right across the top
    seal = signmark.Seal(tmp_path / "seal.png", 113.0, 113.0)
    mark = signmark.place(*A4, LINES, font, seal, grey(img))
    x1, y1, x2, y2 = mark.box
    assert mark.where.startswith("blank top margin") and ink_under(img, mark) == 0
    assert A4[1] - y2 >= 60 + signmark.CLEARANCE and y2 - y1 >= 113
    assert x2 == A4[0] - signmark.INSET


def test_a_landscape_page_gets_the_mark_at_its_own_top_right(font):
    size = (842, 595)
    img = page(size=size, top=30, left=40, right=420)  # text on the left half, from near the top
    mark = signmark.place(*size, LINES, font, None, grey(img))
    assert mark.box[2:] == (size[0] - signmark.INSET, size[1] - signmark.INSET)
    assert ink_under(img, mark) == 0


def test_the_mark_keeps_clear_of_a_thin_rule_but_not_of_a_speck_of_dust(font):
    img = Image.new("L", A4, 255)
    draw = ImageDraw.Draw(img)
    draw.line((0, 40, 595, 40), fill=0, width=1)  # a hairline rule right across, 40 pt down
    draw.point((500, 20), fill=0)  # dust, alone
    mark = signmark.place(*A4, LINES, font, None, grey(img))
    top = A4[1] - mark.box[3]
    assert top >= 40 + signmark.CLEARANCE + 1, "the rule is ink: the mark goes below it"
    ink = signmark.ink_mask(grey(img))
    assert not ink[20, 500] and ink[40, 300]


def test_a_grey_toned_scan_still_has_ink_and_paper():
    img = Image.new("L", (200, 100), 190)  # yellowed paper scanned grey
    ImageDraw.Draw(img).text((10, 10), "Số 12/QĐ-UBND", font=_font(12), fill=60)
    ink = signmark.ink_mask(grey(img))
    assert ink[:, :10].sum() == 0 and ink[10:30, 10:100].any()


def test_blank_spot_is_nearest_the_top_right_corner():
    ink = np.zeros((200, 300), dtype=bool)
    ink[:, 250:] = True  # a dark strip down the right edge
    left, top = signmark.blank_spot(ink, 100, 20, band=200, inset=10, clearance=2)
    assert (left, top) == (250 - 2 - 100, 10)
    ink[:] = True
    assert signmark.blank_spot(ink, 100, 20, band=200) is None


def test_paper_level_is_numpys_90th_percentile():
    rng = np.random.default_rng(12)
    for shape in [(1, 1), (1, 2), (3, 7), (213, 595), (50, 40)]:
        for spread in (1, 30, 256):
            band = rng.integers(max(0, 255 - spread), 256, size=shape, dtype=np.uint8)
            assert signmark.paper_level(band) == pytest.approx(np.percentile(band, 90), abs=1e-9)


def test_ink_mask_counts_neighbours_as_numpys_shifted_sums_do():
    """ink_mask's OpenCV box filter gives what the shifted sums over a zero-padded copy gave."""
    rng = np.random.default_rng(3)
    for shape in [(1, 1), (1, 5), (2, 2), (9, 13), (213, 595)]:
        for spread in (1, 120, 256):
            grey = rng.integers(max(0, 255 - spread), 256, size=shape, dtype=np.uint8)
            dark = grey.astype(np.int16) < int(signmark.paper_level(grey)) - signmark.INK_DELTA
            assert np.array_equal(signmark.ink_mask(grey), dark & (signmark._neighbours(dark) > 1))


def _nearest_by_sorting(inked: np.ndarray) -> tuple[int, int] | None:
    """The former selection (sort every free place) that blank_spot's single argmin must match."""
    free_rows, free_cols = np.nonzero(inked == 0)
    if free_rows.size == 0:
        return None
    distance = free_rows + (inked.shape[1] - 1 - free_cols)
    best = np.lexsort((free_rows, distance))[0]
    return int(free_cols[best]), int(free_rows[best])


def test_blank_spot_picks_the_place_sorting_would_pick():
    rng = np.random.default_rng(7)
    for _ in range(40):
        ink = np.zeros((90, 160), dtype=bool)
        for _ in range(rng.integers(0, 12)):  # blobs of ink: letterheads, stamps, words
            y, x = rng.integers(0, 90), rng.integers(0, 160)
            ink[y:y + rng.integers(1, 30), x:x + rng.integers(1, 60)] = True
        width, height, inset, clearance = int(rng.integers(5, 60)), int(rng.integers(5, 30)), 6, 2
        spot = signmark.blank_spot(ink, width, height, band=80, inset=inset, clearance=clearance)
        # the same windows counted directly: no ink within clearance of the place
        last_top, last_left = min(80 - height, 90 - height - clearance), 160 - inset - width
        inked = np.array([[ink[t - clearance:t + height + clearance, x - clearance:x + width + clearance].sum()
                           for x in range(inset, last_left + 1)] for t in range(inset, last_top + 1)])
        expected = _nearest_by_sorting(inked)
        assert spot == (None if expected is None else (inset + expected[0], inset + expected[1]))


@pytest.mark.parametrize("colour_mode", ["colour", "bilevel"])
def test_page_grey_reads_the_archival_image_of_page_one(tmp_path, colour_mode):
    """The grid page_grey makes from a page PDF (JPEG or CCITT G4, 300 dpi) has the ink where the
    image has it, one cell per pt."""
    px = np.full((3508, 2480, 3) if colour_mode == "colour" else (3508, 2480), 255, dtype=np.uint8)
    px[300:420, 1800:2300] = 0  # 72-101 pt down, 432-552 pt from the left
    mode = "colour" if colour_mode == "colour" else "bilevel"
    image = encode.encode_archival(px if mode == "colour" else (px > 128).astype(np.uint8) * 255, mode, 80)
    path = tmp_path / "page.pdf"
    pdfa.write_page_pdf(path, image, 595.2, 841.92, b"")
    grid = signmark.page_grey(path, 595.2, 841.92)
    assert grid is not None and grid.shape == (841 // 4 + signmark.CLEARANCE, 595)
    ink = signmark.ink_mask(grid)
    assert ink[75:98, 435:550].all() and not ink[:60].any() and not ink[110:].any()
    page_pixels = px if mode == "colour" else px > 128
    assert np.abs(signmark.top_band_grey(page_pixels, 595.2, 841.92).astype(int) - grid).max() < 40, \
        "the page worker's band (from the pixels) and the one read back from the PDF agree"


def test_the_top_band_goes_to_the_signer_but_never_into_a_report():
    from digitize.records import DocumentReport, PageReport

    page = PageReport(1, 2480, 3508, 300.0, "file", "grey", 0, 0.0, "ocr", 90.0, 10, "jpeg", 1000,
                      top_band=np.zeros((370, 595), dtype=np.uint8))
    doc = DocumentReport("in.png", "0" * 64, "png", pages=[page])
    assert "top_band" not in doc.to_dict()["pages"][0]
    assert DocumentReport.from_dict(doc.to_dict()).pages[0].top_band is None
    assert page.top_band is not None, "the report's own page is left as it was"


def test_the_marks_font_keeps_its_glyph_names(font, tmp_path, monkeypatch):
    """The cut keeps a format 2 post table: fontTools then reads glyph names instead of building them
    from the Adobe Glyph List, which it would parse first at a batch's first signature."""
    from fontTools.ttLib import TTFont

    from digitize import resident

    monkeypatch.setattr(resident, "cache_dir", lambda: tmp_path)
    cut = signmark.pdf_font(font, LINES[0])
    with TTFont(str(cut)) as tt:
        assert tt["post"].formatType == 2.0
        assert tt["head"].unitsPerEm == 1000
        cmap = tt.getBestCmap()
        assert all(ord(c) in cmap for c in "".join(LINES) if c != " ")
        assert cmap[ord("N")] == "N" and not cmap[ord("ễ")].startswith("glyph")


@pytest.mark.parametrize("dpi", [300, 400, 600])
def test_the_band_keeps_faint_small_ink(dpi):
    """Page 1's band is OpenCV's one-step area average of the page's top: faint dots, hairlines and
    thin strokes near the ink threshold are ink in it wherever they are in that average, on clean
    and on noisy paper (a 2 x 2 pre-step lost ~18 % of such cells, whole dots with them, so the mark
    could be placed over them: review2 of sign16, MEDIUM 2)."""
    import cv2

    rng = np.random.default_rng(dpi)
    w, h = round(595.0 * dpi / 72), round(842.0 * dpi / 72)
    for noise in (0, 4):
        page = np.full((h, w), 245, np.int16)
        for _ in range(150):  # within the band's top 160 pt; levels from clear ink to just under the threshold
            x, y, level = int(rng.integers(20, w - 80)), int(rng.integers(20, h // 5)), int(rng.integers(60, 175))
            kind = rng.integers(3)

            def px(low: int, high: int) -> int:  # pixels at 300 dpi, as many at this dpi (1 at least)
                return max(1, round(int(rng.integers(low, high)) * dpi / 300))

            if kind == 0:  # a dot, 1-5 px at 300 dpi
                page[y:y + px(1, 6), x:x + px(1, 6)] = level
            elif kind == 1:  # a hairline
                page[y:y + px(1, 2), x:x + px(10, 60)] = level
            else:  # a thin vertical stroke
                page[y:y + px(10, 40), x:x + px(1, 3)] = level
        if noise:
            page += rng.normal(0, noise, page.shape).round().astype(np.int16)
        page = np.clip(page, 0, 255).astype(np.uint8)
        band = signmark.top_band_grey(page, 595.0, 842.0)
        keep = band.shape[0]
        one_step = cv2.resize(page[:math.ceil(keep * h / 842.0)], (595, keep), interpolation=cv2.INTER_AREA)
        ink = signmark.ink_mask(one_step)
        assert ink.sum() > 30, "the features make ink"
        assert not (ink & ~signmark.ink_mask(band)).any(), "an ink cell lost"
        assert np.array_equal(band, one_step)


def _seal(mode: str, size: int = 472) -> Image.Image:
    img = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    ImageDraw.Draw(img).ellipse((10, 10, size - 10, size - 10), outline=(220, 20, 20, 255), width=18)
    if mode == "RGBA":
        return img
    white = Image.new("RGB", img.size, "white")
    white.paste(img, mask=img.split()[3])
    return white.convert(mode)


@pytest.mark.parametrize("mode", ["RGB", "L", "P"])
def test_an_opaque_seal_hides_nothing_and_looks_the_same_on_white(mode) -> None:
    """A seal scanned on white, saved without transparency, covered the page's words under it."""
    seal = _seal(mode)
    drawn = np.asarray(signmark.seal_rgba(seal), dtype=np.float32)
    assert drawn[0, 0, 3] == 0 and drawn[236, 236, 3] == 0  # its white: see-through
    alpha = drawn[..., 3:] / 255.0
    on_white = drawn[..., :3] * alpha + 255.0 * (1 - alpha)
    assert np.abs(on_white - np.asarray(seal.convert("RGB"), dtype=np.float32)).max() <= 1.5
    assert drawn[236, 15, 3] > 150  # the ring still covers (grey: its darkness)


def test_a_transparent_seal_is_drawn_as_it_is() -> None:
    seal = _seal("RGBA")
    assert np.array_equal(np.asarray(signmark.seal_rgba(seal)), np.asarray(seal))


@pytest.mark.parametrize("pixels, dpi, ok", [(472, 300, True), (4720, 300, False), (472, 20, False), (945, 600, True)])
def test_a_seal_bigger_than_any_seal_is_a_config_error(tmp_path, pixels, dpi, ok) -> None:
    """A seal drawn at 'actual size' from a wrong or missing dpi covered the whole page (400 mm)."""
    from digitize.errors import ConfigError

    path = tmp_path / f"seal-{pixels}-{dpi}.png"
    _seal("RGBA", pixels).save(path, dpi=(dpi, dpi))
    if ok:
        assert signmark.load_seal(str(path)).width_pt == pytest.approx(pixels / dpi * 72, rel=0.01)
    else:
        with pytest.raises(ConfigError, match=r"mm across, no seal's actual size"):
            signmark.load_seal(str(path))
