"""OCR image preparation: colour dropped, background flattened, contrast, resampling."""

from __future__ import annotations

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


@pytest.mark.parametrize("dpi,factor", [(300, 1.0), (400, 1.0), (250, 1.0), (150, 2.0), (600, 0.5)])
def test_resample_for_ocr(dpi, factor):
    grey = np.full((100, 80), 255, np.uint8)
    out, f = imaging.resample_for_ocr(grey, dpi)
    assert f == pytest.approx(factor)
    assert out.shape == (round(100 * factor), round(80 * factor))


def test_prepare_for_ocr_cleans_a_soiled_colour_scan():
    page = render_text_page(size=(800, 600), colour=True)
    soiled = noise(shadow(page, 0.5), 0.01)
    out, factor = imaging.prepare_for_ocr(soiled, 150)
    assert factor == 2.0 and out.shape == (1200, 1600) and out.dtype == np.uint8
    text = np.kron((page == 0).all(axis=2), np.ones((2, 2), bool))
    seal = np.kron((page == (220, 30, 30)).all(axis=2), np.ones((2, 2), bool))
    assert np.median(out[text]) < 80
    assert np.median(out[seal]) > 200


def test_prepare_for_ocr_keeps_bilevel_pixels_untouched():
    page = np.where(render_text_page(size=(300, 200)) > 127, 255, 0).astype(np.uint8)
    out, factor = imaging.prepare_for_ocr(page, DPI)
    assert factor == 1.0 and np.array_equal(out, page)


def test_rebinarise():
    assert imaging.rebinarise(np.array([[0, 127, 128, 255]], np.uint8)).tolist() == [[0, 0, 255, 255]]


def test_blank_page_survives_preparation():
    out, factor = imaging.prepare_for_ocr(np.full((400, 300), 250, np.uint8), DPI)
    assert factor == 1.0 and out.min() >= 240


@pytest.mark.parametrize("shape", [(1, 500), (500, 1)])
def test_one_pixel_thin_image_does_not_raise_raw_errors(shape):
    try:
        out, _ = imaging.prepare_for_ocr(np.full(shape, 100, np.uint8), DPI)
    except DigitizeError:
        return
    assert out.shape == shape
