"""Paper found on dark lids, covers and desks: cut out at 100 % scale, levelled by its edges."""

from __future__ import annotations

import numpy as np
import pytest

from digitize import geometry, pagedetect
from tests.pages import (DEJAVU_SANS, DEJAVU_SERIF, DPI, LEDGER_LINES, REGISTER_LINES, on_background, photographed,
                         render_text_page, render_with, shadow, skew)


@pytest.fixture(scope="module")
def page() -> np.ndarray:
    return render_with(REGISTER_LINES, DEJAVU_SERIF)


@pytest.mark.parametrize("degrees", [0.0, 2.5, -6.0, 11.0])
def test_paper_on_a_dark_lid_is_found_levelled_and_cut_out(page, degrees):
    scan = on_background(page, degrees, seed=int(degrees * 10) % 7)
    paper = pagedetect.find_paper(scan, DPI)
    assert paper is not None and not paper.perspective
    assert abs(paper.angle - degrees) <= 0.4  # the edges' angle, text or no text
    cut = pagedetect.cut_out(scan, paper)
    h, w = page.shape
    assert abs(cut.shape[0] - h) <= 0.03 * h and abs(cut.shape[1] - w) <= 0.03 * w  # 100 % scale
    assert cut.shape[0] <= h + 2 and cut.shape[1] <= w + 2  # nothing of the lid comes along
    edge = np.concatenate([cut[:3].ravel(), cut[-3:].ravel(), cut[:, :3].ravel(), cut[:, -3:].ravel()])
    assert np.percentile(edge, 5) > 150  # no dark frame left
    assert abs(geometry.analyse(cut, DPI).skew) <= 0.5


def test_dark_background_misleads_the_text_skew_but_not_after_the_cut(page):
    """The fault reported in issue 13: the lid's straight edges dominate the projection profiles."""
    sparse = render_with(LEDGER_LINES[:3], DEJAVU_SANS)
    scan = on_background(sparse, 7.0, seed=2)
    paper = pagedetect.find_paper(scan, DPI)
    assert abs(paper.angle - 7.0) <= 0.4
    assert abs(geometry.analyse(pagedetect.cut_out(scan, paper), DPI).skew) <= 0.6


@pytest.mark.parametrize("dim", [0.5, 0.75])
def test_uneven_light_does_not_cut_off_the_dim_corner(page, dim):
    """A lamp to one side darkens paper and desk alike: the whole sheet is still found."""
    scan = on_background(page, 4.0, seed=3).astype(np.float32)
    h, w = scan.shape
    yy, xx = np.mgrid[0:h, 0:w]
    lit = np.clip(scan * (1 - dim * (xx / w) * (yy / h)), 0, 255).astype(np.uint8)
    paper = pagedetect.find_paper(lit, DPI)
    assert paper is not None and not paper.perspective and abs(paper.angle - 4.0) <= 0.4
    assert paper.width >= 0.97 * page.shape[1] and paper.height >= 0.97 * page.shape[0]


def test_colour_photo_on_a_brown_desk(page):
    scan = on_background(page, -3.0, colour=True, seed=4)
    paper = pagedetect.find_paper(scan, DPI)  # colour in, as convert.py gives it
    assert paper is not None and abs(paper.angle + 3.0) <= 0.4
    cut = pagedetect.cut_out(scan, paper)
    assert cut.ndim == 3 and cut.shape[2] == 3  # colour stays colour


def test_phone_photo_perspective_is_rectified(page):
    photo = photographed(page, tilt=0.07)
    paper = pagedetect.find_paper(photo, DPI)
    assert paper is not None and paper.perspective
    assert paper.describe()["action"] == "perspective"
    cut = pagedetect.cut_out(photo, paper)
    assert abs(cut.shape[1] - page.shape[1]) <= 0.03 * page.shape[1]
    # rectified: the text's left margin is vertical again (first and last third of the lines)
    ink = cut < 128
    rows = np.nonzero(ink[:, : cut.shape[1] // 2].any(axis=1))[0]
    top, bottom = rows[: len(rows) // 3], rows[-len(rows) // 3:]
    left = [int(np.nonzero(ink[band].any(axis=0))[0][0]) for band in (top, bottom)]
    assert abs(left[0] - left[1]) <= 12, left


@pytest.mark.parametrize("make", [
    lambda: render_text_page(),  # clean scan: paper to the edges
    lambda: skew(render_text_page(), 7.0),  # skewed scan with paper-coloured corners
    lambda: shadow(render_text_page(), 0.3),  # photocopy shadow along one side
    lambda: np.full((1754, 1240), 255, np.uint8),  # blank page
    lambda: np.full((1754, 1240), 30, np.uint8),  # all dark
])
def test_ordinary_scans_are_left_alone(make):
    assert pagedetect.find_paper(make(), DPI) is None


def test_describe_is_json_ready(page):
    import json

    d = pagedetect.find_paper(on_background(page, 4.0), DPI).describe()
    assert json.loads(json.dumps(d)) == d and d["action"] == "crop" and len(d["box"]) == 4
