"""OCR image preparation: colour dropped, background flattened, contrast, resampling."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from digitize import imaging
from digitize.errors import DigitizeError
from tests.pages import DPI, noise, render_text_page, shadow


def test_colour_mode():
    assert imaging.colour_mode(np.zeros((4, 4, 3), np.uint8)) == "colour"
    assert imaging.colour_mode(np.array([[0, 255], [255, 0]], np.uint8)) == "bilevel"
    assert imaging.colour_mode(np.zeros((4, 4), bool)) == "bilevel"
    assert imaging.colour_mode(np.array([[0, 128], [255, 0]], np.uint8)) == "grey"


def test_as_uint8_maps_bool_to_black_and_white():
    out = imaging.as_uint8(np.array([[True, False]]))
    assert out.dtype == np.uint8 and out.tolist() == [[255, 0]]


def test_drop_colour_whitens_seal_and_signature_keeps_black_text():
    page = render_text_page(["Độc lập - Tự do"], size=(600, 300), colour=True)
    page[10:40, 10:40] = (255, 0, 0)  # pure red seal ink
    page[10:40, 50:80] = (0, 0, 255)  # pure blue signature ink
    page[10:40, 90:120] = (0, 0, 0)  # black text
    grey = imaging.drop_colour(page)
    assert grey.shape == page.shape[:2] and grey.dtype == np.uint8
    assert (grey[10:40, 10:40] == 255).all()
    assert (grey[10:40, 50:80] == 255).all()
    assert (grey[10:40, 90:120] == 0).all()
    black_text = (page == 0).all(axis=2)
    assert black_text.sum() > 500 and (grey[black_text] == 0).all()
    assert imaging.drop_colour(grey) is grey


def test_paper_colour_is_the_bright_end():
    page = render_text_page(size=(400, 400), colour=True)
    page[:] = np.minimum(page, np.array([240, 230, 200], np.uint8))  # yellowed paper
    assert imaging.paper_colour(page) == (240, 230, 200)
    assert imaging.paper_colour(page[..., 1]) == 230


def test_per_label_is_numpys_lookup_across_bands_of_rows():
    """Looked up a band of rows at a time: every pixel's flag as flags[labels] gives it, on images
    taller and shorter than a band and with a last band cut short."""
    rng = np.random.default_rng(3)
    for shape in ((imaging.LOOKUP_ROWS * 3 + 17, 41), (5, 300), (imaging.LOOKUP_ROWS, 8)):
        labels = rng.integers(0, 900, shape).astype(np.uint16)
        flags = rng.random(900) < 0.3
        got = imaging._per_label(flags, labels)
        assert got.dtype == bool and got.shape == shape and np.array_equal(got, flags[labels])


def test_components_are_opencvs_default_labelling():
    """Spaghetti labelling for speed: the same count, labels and stats as OpenCV's default algorithm,
    on a page's ink and on noise (thousands of components of every shape)."""
    rng = np.random.default_rng(5)
    page = render_text_page(["Độc lập - Tự do - Hạnh phúc", "Số: 123/QĐ-UBND"], size=(900, 400))
    for ink in (imaging.otsu_ink(page), (rng.random((500, 700)) < 0.45).astype(np.uint8) * 255):
        count, labels, stats = imaging.components(ink)
        want = cv2.connectedComponentsWithStatsWithAlgorithm(ink, 8, cv2.CV_16U, cv2.CCL_DEFAULT)[:3]
        assert count == want[0] > 1 and np.array_equal(labels, want[1]) and np.array_equal(stats, want[2])


def test_remove_specks_whitens_dust_but_keeps_diacritics_and_full_stops():
    page = render_text_page(["Đặng Thị Ngọc Trâm. Hộ tịch ấp Mỹ Thạnh.", "Phước Lộc, xã Hòa Phước."],
                            size=(1240, 400))
    assert np.array_equal(imaging.remove_specks(page, DPI), page)  # every small mark sits by a letter
    dusty = page.copy()
    rng = np.random.default_rng(1)
    ys, xs = rng.integers(250, 390, 300), rng.integers(10, 1230, 300)  # below the text: far from letters
    dusty[ys, xs] = 0
    out = imaging.remove_specks(dusty, DPI)
    assert (out[ys, xs] == 255).all()
    assert np.array_equal(out[:220], page[:220])


def test_flatten_background_removes_a_shadow_gradient():
    page = render_text_page(size=(800, 800))
    shaded = shadow(page, darkest=0.45)
    paper = page == 255
    before = np.ptp(shaded[paper])
    flat = imaging.flatten_background(shaded, DPI)
    assert flat.shape == page.shape
    assert np.percentile(flat[paper], 99) - np.percentile(flat[paper], 1) < 0.25 * before
    assert np.median(flat[page == 0]) < 100  # text stays dark


def test_stretch_contrast_makes_faded_ink_black():
    page = render_text_page(size=(600, 400))
    faded = (110 + page.astype(np.float32) * (145 / 255)).astype(np.uint8)  # ink 110, paper 255
    out = imaging.stretch_contrast(faded)
    assert out[page == 0].max() < 20 and out[page == 255].min() > 240
    assert imaging.stretch_contrast(page) is page  # already black: untouched
    blank = np.full((50, 50), 255, np.uint8)
    assert imaging.stretch_contrast(blank) is blank


@pytest.mark.parametrize("letter_px,factor", [(16, 1.0), (17.7, 1.0), (14.6, 1.0), (29, 16 / 29), (8, 2.0),
                                              (14, 16 / 14), (200, 0.25), (2, 4.0), (0, 4.0)])
def test_ocr_scale_brings_letters_to_the_ocr_size(letter_px, factor):
    assert imaging.ocr_scale(letter_px) == pytest.approx(factor)


def test_measure_letter_height_follows_the_text_not_the_dpi():
    page = render_text_page(font_px=40)
    big = imaging.measure_letter_height(page, 300)
    assert 15 < big < 30  # glyphs of a 40 px font: x-height to cap height
    half = cv2.resize(page, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    assert imaging.measure_letter_height(half, 150) == pytest.approx(big / 2, rel=0.15)
    small_print = render_text_page(font_px=20)  # measured somewhat large (dust must not count), never larger
    assert big / 2 <= imaging.measure_letter_height(small_print, 300) < 0.65 * big
    assert imaging.measure_letter_height(noise(page, 0.02), 300) == pytest.approx(big, rel=0.1)


def test_measure_letter_height_of_a_blank_page_is_the_usual_text_size():
    blank = np.full((1754, 1240), 250, np.uint8)
    assert imaging.measure_letter_height(blank, 150) == pytest.approx(imaging.LETTER_PX / 2)


def test_prepare_for_ocr_shrinks_large_print_and_enlarges_small_print():
    large, factor = imaging.prepare_for_ocr(render_text_page(font_px=48), DPI)
    assert factor < 0.9 and large.shape == (round(1748 * factor), round(1240 * factor))
    small, factor = imaging.prepare_for_ocr(render_text_page(font_px=14), DPI)
    assert factor > 1.1 and small.shape == (round(1748 * factor), round(1240 * factor))


def test_prepare_for_ocr_cleans_a_soiled_colour_scan():
    page = render_text_page(size=(800, 600), font_px=16, colour=True)  # ~150 dpi scan: small letters
    soiled = noise(shadow(page, 0.5), 0.01)
    out, factor = imaging.prepare_for_ocr(soiled, 150)
    assert factor == pytest.approx(imaging.ocr_scale(imaging.measure_letter_height(imaging.drop_colour(soiled), 150)))
    assert factor > 1.1 and out.shape == (round(600 * factor), round(800 * factor)) and out.dtype == np.uint8
    up = cv2.resize((page == 0).all(axis=2).astype(np.uint8), out.shape[::-1], interpolation=cv2.INTER_NEAREST) > 0
    seal = cv2.resize((page == (220, 30, 30)).all(axis=2).astype(np.uint8), out.shape[::-1],
                      interpolation=cv2.INTER_NEAREST) > 0
    assert np.median(out[up]) < 80
    assert np.median(out[seal]) > 200


def test_prepare_for_ocr_keeps_bilevel_pixels_untouched():
    page = np.where(render_text_page(size=(1240, 600), font_px=28) > 127, 255, 0).astype(np.uint8)
    assert imaging.ocr_scale(imaging.measure_letter_height(page, DPI)) == 1.0  # letters of OCR size
    out, factor = imaging.prepare_for_ocr(page, DPI)
    assert factor == 1.0 and set(np.unique(out)) <= {0, 255}  # not blurred to grey
    assert np.array_equal(out, page)


def test_prepare_for_ocr_keeps_the_fragments_of_a_broken_bilevel_page(monkeypatch):
    """A fax's thin strokes break into dots that the dust rule took for specks: bilevel pages
    keep them (Tesseract reads the dust of a bilevel page no worse)."""
    page = np.where(render_text_page(size=(1240, 600), font_px=36) > 127, 255, 0).astype(np.uint8)
    rng = np.random.default_rng(3)
    broken = page.copy()
    broken[rng.random(page.shape) < 0.25] = 255  # strokes worn into fragments
    ys, xs = rng.integers(0, 600, 400), rng.integers(0, 1240, 400)
    broken[ys, xs] = 0  # and dust all over: a "dusty" page
    monkeypatch.setattr(imaging, "ocr_scale", lambda letter_px: 1.0)  # fragments measure a little small
    out, factor = imaging.prepare_for_ocr(broken, DPI)
    assert factor == 1.0 and np.array_equal(out, broken)


def test_rebinarise():
    assert imaging.rebinarise(np.array([[0, 127, 128, 255]], np.uint8)).tolist() == [[0, 0, 255, 255]]


def test_blank_page_survives_preparation():
    out, factor = imaging.prepare_for_ocr(np.full((400, 300), 250, np.uint8), DPI)
    assert factor == imaging.ocr_scale(imaging.LETTER_PX)  # no text to measure: read as 13-14 pt
    assert out.min() >= 240


@pytest.mark.parametrize("shape", [(1, 500), (500, 1)])
def test_one_pixel_thin_image_does_not_raise_raw_errors(shape):
    try:
        out, _ = imaging.prepare_for_ocr(np.full(shape, 100, np.uint8), DPI)
    except DigitizeError:
        return
    assert min(out.shape) == 1 and max(out.shape) > 100


def test_show_through_is_a_second_ink_and_clean_pages_have_one():
    """Bleed-through (issue 13): the back's mirrored text, far lighter than the front's."""
    from tests.pages import DEJAVU_SANS, DEJAVU_SERIF, LEDGER_LINES, REGISTER_LINES, render_with, show_through

    front, back = render_with(REGISTER_LINES, DEJAVU_SERIF), render_with(LEDGER_LINES, DEJAVU_SANS)
    assert imaging.faint_ink_level(front) is None
    clean = imaging.prepare_for_ocr(front, 300)[0]
    assert imaging.faint_ink_level(clean) is None
    for strength in (0.25, 0.4, 0.55):
        page = imaging.prepare_for_ocr(show_through(front, back, strength), 300)[0]
        level = imaging.faint_ink_level(page)
        assert level is not None, strength
        dropped = imaging.drop_faint_ink(page, level)
        same = cv2.resize(front, (page.shape[1], page.shape[0]), interpolation=cv2.INTER_AREA)
        paper = cv2.erode(same, np.ones((5, 5), np.uint8)) > 250  # away from the front's strokes
        assert (dropped[paper] > 200).mean() > 0.999  # the back's text is gone
        assert (dropped[same < 50] < 128).mean() > 0.95  # the front's strokes stay


def test_faint_carbon_copy_is_lifted_and_ordinary_pages_are_not():
    from tests.pages import DEJAVU_SANS, LEDGER_LINES, carbon_copy, render_with

    page = render_with(LEDGER_LINES, DEJAVU_SANS)
    flat = imaging.flatten_background(carbon_copy(page), DPI)
    lifted = imaging.lift_faint(flat, DPI)
    text = page < 100
    assert np.median(lifted[text]) < 100 < np.median(flat[text])  # strokes dark now
    paper = cv2.erode(page, np.ones((7, 7), np.uint8)) == 255
    assert (lifted[paper] > 128).mean() > 0.999  # grain did not become ink
    clean = imaging.flatten_background(page, DPI)
    assert imaging.lift_faint(clean, DPI) is clean
    blank = imaging.flatten_background(carbon_copy(np.full_like(page, 255)), DPI)
    assert (imaging.lift_faint(blank, DPI) > 128).mean() > 0.999  # a blank page stays blank


def test_percentiles_from_the_histogram_equal_numpys():
    rng = np.random.default_rng(5)
    for shape in [(1, 1), (3, 5), (101, 99), (600, 401)]:
        grey = rng.integers(0, 256, shape, dtype=np.uint8)
        got = imaging.percentiles(grey, 0, 0.5, 50, 90, 100)
        assert got == pytest.approx([float(np.percentile(grey, q)) for q in (0, 0.5, 50, 90, 100)])


@pytest.mark.parametrize("shape,factor", [((2481, 1753), 0.5), ((2481, 1753, 3), 1 / 6), ((2481, 1753), 0.4),
                                          ((999, 701), 0.75), ((3, 3), 0.5), ((1, 40), 0.25)])
def test_shrink_for_analysis_keeps_size_and_values(shape, factor):
    rng = np.random.default_rng(6)
    pixels = cv2.GaussianBlur(rng.integers(0, 256, shape, dtype=np.uint8), (0, 0), 3)
    got = imaging.shrink_for_analysis(pixels, factor)
    want = imaging.resize_at_least_1px(pixels, factor, cv2.INTER_AREA)
    assert got.ndim == want.ndim
    assert abs(got.shape[0] - want.shape[0]) <= 1 and abs(got.shape[1] - want.shape[1]) <= 1
    if min(want.shape[:2]) < 64:
        assert got.shape == want.shape
    h, w = min(got.shape[0], want.shape[0]), min(got.shape[1], want.shape[1])
    assert np.abs(got[:h, :w].astype(int) - want[:h, :w]).mean() < 3


def test_a_low_resolution_bilevel_page_is_smoothed_without_paling_its_strokes(monkeypatch):
    """Faxes: smoothed against jagged edges, and their thin strokes keep their weight (the
    Gaussian alone turned a 2-pixel stroke to mid-grey, and Tesseract lost broken letters)."""
    page = np.full((400, 600), 255, np.uint8)
    for x in range(40, 560, 24):
        page[60:340, x:x + 2] = 0  # 2-px vertical strokes, as a fine-mode fax draws 12 pt serif
    monkeypatch.setattr(imaging, "ocr_scale", lambda letter_px: 1.0)
    out, factor = imaging.prepare_for_ocr(page, 204)
    assert factor == 1.0 and out.shape == page.shape
    assert np.count_nonzero(out < 128) >= np.count_nonzero(page < 128)  # as much ink as the fax drew
    assert 0 < np.count_nonzero((out > 0) & (out < 255))  # still smoothed: grey edges



def test_letter_height_of_fragmented_strokes_is_measured_on_the_smoothed_copy():
    """A worn cloth ribbon's mottled ink falls apart at the threshold: the fragments' heights
    made the median (10-12 px for ~25 px letters), and the page was enlarged for OCR instead of
    shrunk (generated fabric-ribbon pages, dev seeds 1-4: CER 0.32 -> 0.096)."""
    from tests.degraded import generate, typewriter_page

    clean = typewriter_page(4)
    true = imaging.measure_letter_height(clean.pixels, clean.dpi)
    small = imaging.resize_at_least_1px(clean.pixels, imaging.MEASURE_DPI / clean.dpi, cv2.INTER_AREA)
    flat = imaging.flatten_background(small, imaging.MEASURE_DPI)
    assert imaging.fragmented_letter_height(flat, imaging.MEASURE_DPI, true / 2) is None  # ordinary print
    worn = generate("fabric", 4)  # the same page, mottled, at 250 dpi
    expected = true * worn.dpi / clean.dpi
    scale = imaging.MEASURE_DPI / worn.dpi
    plain = imaging._letter_height_at(imaging.resize_at_least_1px(worn.pixels, scale, cv2.INTER_AREA),
                                      imaging.MEASURE_DPI) / scale
    assert plain < 0.6 * expected  # what the measure saw before
    assert abs(imaging.measure_letter_height(worn.pixels, worn.dpi) - expected) <= 0.2 * expected


@pytest.mark.parametrize("leading", [1.3, 1.6, 2.4])
def test_line_pitch_is_the_spacing_of_the_text_lines_not_a_multiple(leading):
    page = render_text_page(font_px=30, leading=leading)
    flat = imaging.flatten_background(page, DPI)
    assert imaging.line_pitch(flat, DPI) == pytest.approx(int(30 * leading), abs=2)
    assert imaging.line_pitch(np.full((400, 300), 255, np.uint8), DPI) is None  # a blank page has no lines


def _measures(page) -> tuple[float, float, float | None]:
    """(letter height as the plain measure sees it, as measured, line pitch), in the page's pixels."""
    grey = imaging.drop_colour(page.pixels)
    scale = imaging.MEASURE_DPI / page.dpi
    flat = imaging.flatten_background(imaging.resize_at_least_1px(grey, scale, cv2.INTER_AREA), imaging.MEASURE_DPI)
    plain = imaging._flat_letter_height(flat, imaging.MEASURE_DPI) / scale
    if plain * scale < imaging.SMALL_LETTERS_PX:
        plain = imaging._letter_height_at(grey, page.dpi)
    pitch = imaging.line_pitch(flat, imaging.MEASURE_DPI)
    return plain, imaging.measure_letter_height(grey, page.dpi), pitch and pitch / scale


def test_strokes_in_pieces_are_told_by_the_line_pitch_when_smoothing_rises_less_than_1_75x():
    """A fabric-ribbon page whose smoothed copy reads only 1.73x taller (generated, 225 dpi, JPEG)
    has letters measured at under a fifth of its line pitch: measured smoothed, near its true
    size (the typewriter font at 225 dpi: ~22 px). Ordinary pages that smoothing raises as much
    (tone marks joined to their letters: a red seal's, a ruled table's) measure a quarter of their
    pitch or more and keep their measure."""
    from tests.degraded import generate

    plain, measured, pitch = _measures(generate("fabric", 9))
    assert plain < 0.22 * pitch and 19 <= measured <= 25
    for fault, seed in [("seal", 6), ("table", 1), ("bleed", 3)]:
        plain, measured, pitch = _measures(generate(fault, seed))
        assert measured == plain and plain >= 0.24 * pitch, (fault, seed)


@pytest.mark.parametrize("seed", [4, 18])
def test_letter_height_of_grainy_broken_typewriter_strokes_is_near_the_unworn_pages(seed):
    """A worn ribbon's grainy, broken strokes (holes through every stroke, pale bands, uneven
    strikes: tests/degraded.py's "holey" pages, 200-250 dpi, FreeMono / Liberation Mono) fall into
    fragments that make the plain median: it reads little more than half the letters' height. The
    measure must still give about what the same page, unworn, measures (the OCR scale hangs on
    it: half the height enlarges the page ~2x for Tesseract)."""
    from tests.degraded import holey_typewriter_page

    worn, clean = holey_typewriter_page(seed), holey_typewriter_page(seed, clean=True)
    true = imaging.measure_letter_height(clean.pixels, clean.dpi)
    plain, measured, pitch = _measures(worn)
    assert plain < 0.8 * true  # the fragments' heights made the plain median
    assert 0.85 * true <= measured <= 1.2 * true


def test_a_page_in_pieces_is_smoothed_for_ocr_and_a_whole_one_is_not(monkeypatch):
    """The OCR image of a page whose strokes are in pieces is made from the page smoothed: fewer
    stray pieces for Tesseract to read as marks or lines of their own; the same page unworn is
    measured whole and prepared as before."""
    from tests.degraded import holey_typewriter_page

    worn, clean = holey_typewriter_page(4), holey_typewriter_page(4, clean=True)
    assert imaging.measure_letters(worn.pixels, worn.dpi)[1]
    assert not imaging.measure_letters(clean.pixels, clean.dpi)[1]

    def pieces(image):
        _, ink = cv2.threshold(image, 0, 255, cv2.THRESH_BINARY_INV | cv2.THRESH_OTSU)
        return int(np.sum(imaging.components(ink)[2][1:, cv2.CC_STAT_AREA] < 30))

    joined, _ = imaging.prepare_for_ocr(worn.pixels, worn.dpi)
    whole, _ = imaging.prepare_for_ocr(clean.pixels, clean.dpi)
    monkeypatch.setattr(imaging, "join_fragments", lambda grey, dpi: grey)
    assert pieces(joined) < 0.8 * pieces(imaging.prepare_for_ocr(worn.pixels, worn.dpi)[0])
    assert np.array_equal(whole, imaging.prepare_for_ocr(clean.pixels, clean.dpi)[0])


def test_a_faint_carbon_copy_measured_in_pieces_is_not_smoothed():
    """A carbon copy's strokes fall apart for want of contrast, not for a worn ribbon's holes:
    smoothing faded them further (the archive-pages test's carbon copy: CER 0.003 -> 0.012)."""
    from tests.pages import DEJAVU_SANS, DPI, LEDGER_LINES, carbon_copy, render_with

    grey = imaging.drop_colour(imaging.as_uint8(carbon_copy(render_with(LEDGER_LINES, DEJAVU_SANS, font_px=32),
                                                             seed=15)))
    assert imaging.measure_letters(grey, DPI)[1]  # measured in pieces, as before
    assert imaging.faint_strokes(grey)
    assert not imaging.faint_strokes(np.where(grey < 215, grey - 80, grey).astype(np.uint8))


def test_opened_is_opencvs_opening_with_or_without_lines_to_keep():
    """imaging.opened skips the dilation only when the erosion left nothing: the same pixels as
    cv2.morphologyEx's MORPH_OPEN, on a page with long lines, one without, and at the borders."""
    rng = np.random.default_rng(7)
    ink = (rng.random((300, 400)) < 0.3).astype(np.uint8) * 255
    ink[40, 10:390] = 255  # a long horizontal line
    ink[:, 0] = 255  # a vertical one along the border
    for kernel in (np.ones((1, 60), np.uint8), np.ones((60, 1), np.uint8), np.ones((1, 500), np.uint8)):
        expected = cv2.morphologyEx(ink, cv2.MORPH_OPEN, kernel)
        assert np.array_equal(imaging.opened(ink, kernel), expected)
    assert not imaging.opened(ink, np.ones((1, 500), np.uint8)).any()  # nothing that long


def test_colour_mode_of_views_and_near_bilevel_pages():
    """One grey pixel makes a page grey, in any memory layout OpenCV is given (slices, Fortran order)."""
    page = np.full((50, 40), 255, np.uint8)
    page[::7, ::3] = 0
    assert imaging.colour_mode(page) == imaging.colour_mode(page[::2, 1:]) == "bilevel"
    page[-1, -1] = 254
    assert imaging.colour_mode(page) == imaging.colour_mode(np.asfortranarray(page)) == "grey"
    assert imaging.colour_mode(page[::2]) == "bilevel"  # the grey pixel is not in this view
    assert imaging.colour_mode(np.zeros((0, 4), np.uint8)) == "bilevel"
    assert imaging.colour_mode(np.array([[0, 300]], np.uint16)) == "grey"


def test_a_page_measured_at_full_size_is_thresholded_and_labelled_once_for_specks(monkeypatch):
    """prepare_for_ocr's speck removal reuses the threshold and components the letter measure made
    of the same flattened page (a page at MEASURE_DPI is measured at full size), and its output is
    what a fresh remove_specks gives."""
    page = noise(render_text_page(size=(1000, 1300), font_px=35, margin=60), 0.002, seed=3)
    dpi = imaging.MEASURE_DPI
    labelled = []
    components = imaging.components
    monkeypatch.setattr(imaging, "components", lambda ink: labelled.append(ink.shape) or components(ink))
    prepared, factor = imaging.prepare_for_ocr(page, dpi)
    assert factor == 1.0
    assert labelled.count(page.shape) == 2  # the measure's, its smoothed copy's (fragments); none for specks
    flat = imaging.flatten_background(page, dpi)
    assert np.array_equal(prepared, imaging.remove_specks(imaging.stretch_contrast(imaging.lift_faint(flat, dpi)), dpi))


def hard_typewriter_draw(seed: int) -> np.ndarray:
    """A fresh draw (not the committed file) of the hard set's faint, broken typewriter page, 250 dpi, grey."""
    import io
    import zlib

    from PIL import Image

    from tests.test_hard_samples import _generator

    made = _generator().typewriter(np.random.default_rng([seed, zlib.crc32(b"h05_typewriter.jpg")]))
    return np.asarray(Image.open(io.BytesIO(made.data)).convert("L")), "\n".join(made.pages[0])


def test_a_page_on_the_border_of_strokes_in_pieces_is_prepared_both_ways():
    """Letters within one measuring pixel of PIECES_OF_PITCH (a fresh draw of the hard set's typewriter
    page: 9 px in a 38 px pitch, 0.237 against 0.22) are prepared as measured and the other way, the
    one at the smaller scale first (the cheaper reading, prepare_for_ocr's image): in pieces
    (smoothed, measured on the smoothed copy: taller, so a smaller scale), then as measured (whole,
    enlarged). Pages clearly whole or clearly in pieces get one."""
    from tests.degraded import generate, holey_typewriter_page

    assert imaging.pieces_border(9, 38.0) and imaging.pieces_border(8, 38.0)
    assert not imaging.pieces_border(10, 38.0) and not imaging.pieces_border(7, 38.0)
    page, _ = hard_typewriter_draw(12)
    first, other = imaging.prepare_readings(page, 250.0)
    (joined, joined_scale), (whole, whole_scale) = first(), other()
    assert whole_scale > 1.0 > joined_scale
    assert joined.size < whole.size
    assert np.array_equal(joined, imaging.prepare_for_ocr(page, 250.0)[0])
    for worn in (generate("seal", 6), generate("table", 1), generate("bleed", 3), holey_typewriter_page(4)):
        assert len(imaging.prepare_readings(worn.pixels, worn.dpi)) == 1
