"""Skew and orientation from projection profiles, on rendered Vietnamese pages."""

from __future__ import annotations

import numpy as np
import pytest

from digitize import geometry
from digitize.errors import DigitizeError
from tests.pages import DPI, VIETNAMESE_LINES, noise, render_text_page, rotate, skew

SKEWS = (0.0, 3.0, -3.0, 7.0, -7.0, 12.0, -12.0)


@pytest.fixture(scope="module")
def page() -> np.ndarray:
    return render_text_page()


@pytest.mark.parametrize("turned", (0, 90, 180, 270))
def test_orientation_exact_and_skew_within_half_degree(page, turned):
    expected_orientation = (360 - turned) % 360  # tests.pages.rotate turns clockwise
    for i, degrees in enumerate(SKEWS):
        scan = noise(skew(rotate(page, turned), degrees), amount=0.01, seed=i)
        g = geometry.analyse(scan, DPI)
        assert g.orientation == expected_orientation, (turned, degrees, g)
        assert abs(g.skew - (-degrees)) <= 0.5, (turned, degrees, g)  # skew() is counter-clockwise
        assert g.confident, (turned, degrees, g)


@pytest.mark.parametrize("turned,degrees", [(90, 7.0), (180, -3.0), (270, 12.0), (0, -12.0)])
def test_turn_then_deskew_straightens_the_page(page, turned, degrees):
    scan = skew(rotate(page, turned), degrees)
    g = geometry.analyse(scan, DPI)
    fixed = geometry.deskew(geometry.turn(scan, g.orientation), g.skew, 255)
    assert fixed.shape == page.shape
    again = geometry.analyse(fixed, DPI)
    assert again.orientation == 0
    assert abs(again.skew) <= 0.3


def test_analysis_at_other_resolutions(page):
    """A 600 dpi scan of the same page gives the same answer (analysis runs at 150 dpi)."""
    import cv2

    big = cv2.resize(skew(rotate(page, 180), 5.0), None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)
    g = geometry.analyse(big, 2 * DPI)
    assert g.orientation == 180
    assert abs(g.skew + 5.0) <= 0.5


def test_blank_page_is_upright_and_straight():
    g = geometry.analyse(np.full((1748, 1240), 255, np.uint8), DPI)
    assert (g.orientation, g.skew, g.up_votes) == (0, 0.0, 0.0)


def test_up_down_votes_sign(page):
    mask = geometry.ink_mask(page, DPI)
    assert geometry.up_down_votes(mask) > 0.6
    assert geometry.up_down_votes(np.ascontiguousarray(mask[::-1, ::-1])) < -0.6
    assert geometry.up_down_votes(np.zeros((50, 50), np.uint8)) == 0.0


def test_ink_mask_is_binary_at_analysis_dpi(page):
    clean = geometry.ink_mask(page, DPI)
    noisy = geometry.ink_mask(noise(page, 0.02), DPI)
    assert noisy.shape == (page.shape[0] // 2, page.shape[1] // 2)
    assert set(np.unique(noisy)) <= {0, 1}
    assert 0.01 < clean.mean() < 0.2
    assert np.count_nonzero(noisy != clean) < 0.1 * np.count_nonzero(clean)  # specks removed


def test_turn_is_clockwise_and_lossless():
    a = np.arange(6, dtype=np.uint8).reshape(2, 3)
    assert geometry.turn(a, 90).tolist() == [[3, 0], [4, 1], [5, 2]]
    for o in (0, 90, 180, 270):
        assert np.array_equal(geometry.turn(geometry.turn(a, o), (360 - o) % 360), a)
    assert geometry.turn(a, 90).flags["C_CONTIGUOUS"]


def test_deskew_keeps_size_and_fills_corners_with_paper():
    grey = np.full((200, 300), 90, np.uint8)
    out = geometry.deskew(grey, 10.0, 250)
    assert out.shape == grey.shape and out[0, 0] == 250 and out[100, 150] == 90
    colour = np.full((200, 300, 3), 90, np.uint8)
    assert geometry.deskew(colour, -10.0, (1, 2, 3))[0, 0].tolist() == [1, 2, 3]
    assert geometry.deskew(grey, 0.01, 0) is grey  # below 0.05 degrees: untouched


@pytest.mark.parametrize("shape", [(1, 500), (500, 1)])
def test_one_pixel_thin_image_does_not_raise_raw_errors(shape):
    try:
        g = geometry.analyse(np.full(shape, 100, np.uint8), DPI)
    except DigitizeError:
        return
    assert g.orientation == 0


def _ruled_curved_leaf(page: np.ndarray) -> np.ndarray:
    """A register's leaf: full-height vertical rulings and lines bent towards the gutter."""
    import cv2

    h, w = page.shape
    xs = np.arange(w, dtype=np.float32)
    bend = (35.0 * (xs / w) ** 3)[None, :].repeat(h, 0)  # px: level at the left, 35 px down at the right
    map_y = np.arange(h, dtype=np.float32)[:, None] - bend
    curved = cv2.remap(page, xs[None, :].repeat(h, 0), map_y, cv2.INTER_LINEAR, borderValue=255)
    for x in range(60, w, 180):
        curved[:, x:x + 4] = 0
    return curved


@pytest.mark.parametrize("turned", (0, 180))
def test_ruled_leaf_with_curved_lines_is_judged_without_osd(page, turned):
    """Vertical rulings and curved lines made the whole page's measure wrong or unclear (the
    page lying on its side, or a case for OSD, ~0.7 CPU-s); without its rulings, voting in
    strips, the page's way up is clear."""
    leaf = rotate(_ruled_curved_leaf(page), turned)
    whole = geometry._analyse_mask(geometry.ink_mask(leaf, DPI))
    assert not (whole.confident and whole.orientation == (360 - turned) % 360), whole  # the old measure
    g = geometry.analyse(leaf, DPI)
    assert g.confident and g.orientation == (360 - turned) % 360, g
    assert abs(g.skew) <= 1.5, g  # curved lines have no one angle: about their mean slope


def test_a_page_voted_again_in_strips_has_its_angle_measured_once(page, monkeypatch):
    """The strip vote reads the levelled mask of the whole page's vote: searching the angles again
    (two ~60-angle searches, across and down) found the same angle for nothing."""
    from dataclasses import replace

    searches, strips = [], []
    coarse, vote = geometry._coarse_angle, geometry._vote

    def unclear_whole(*args):  # the whole page's vote made unclear, as a curved leaf's can be
        strips.append(args[3:])
        found = vote(*args)
        return found if args[3:] else replace(found, confident=False)

    monkeypatch.setattr(geometry, "_coarse_angle", lambda *a: searches.append(1) or coarse(*a))
    monkeypatch.setattr(geometry, "_vote", unclear_whole)
    g = geometry.analyse(rotate(page, 180), DPI)
    assert g.confident and g.orientation == 180, g
    assert strips == [(), (geometry.VOTE_STRIPS,)]
    assert len(searches) == 2  # across and down, once


def test_rulings_are_the_long_straight_lines_only(page):
    mask = geometry.ink_mask(_ruled_curved_leaf(page), DPI)
    lines = geometry.rulings(mask)
    assert lines[:, :].any(axis=0).sum() < 0.05 * mask.shape[1]  # a few columns: the rulings
    assert np.count_nonzero(geometry.rulings(geometry.ink_mask(page, DPI))) == 0  # text has none


def test_sample_points_are_numpys_nonzero_points_in_the_same_order() -> None:
    """OpenCV's scan replaces np.nonzero for speed: the same points, same order, same subsample."""
    rng = np.random.default_rng(7)
    for shape, share, limit in (((300, 200), 0.1, 150_000), ((400, 500), 0.5, 10_000), ((50, 60), 0.0, 150_000)):
        mask = (rng.random(shape) < share).astype(np.uint8)
        ys, xs = np.nonzero(mask)
        if len(ys) > limit:
            step = len(ys) // limit + 1
            ys, xs = ys[::step], xs[::step]
        got_ys, got_xs = geometry._sample_points(mask, limit)
        assert got_ys.dtype == got_xs.dtype == np.float64
        assert np.array_equal(got_ys, ys) and np.array_equal(got_xs, xs)


def test_profile_scores_are_the_per_angle_formulas_scores() -> None:
    """The shared buffers change the CPU, not the scores: each angle's is the plain formula's,
    the rows truncated toward zero as astype does (negative angles, fractions, a whole step)."""
    rng = np.random.default_rng(11)
    ys, xs = rng.integers(0, 900, 5000).astype(np.float64), rng.integers(0, 700, 5000).astype(np.float64)
    angles = np.concatenate([np.arange(-15, 15.01, 0.5), [0.1, -0.3, 7.25]])
    bins = int(900 * 1.5) + 2

    def plain(angle: float) -> float:
        t = np.deg2rad(angle)
        proj = ys * np.cos(t) - xs * np.sin(t)
        hist = np.bincount((proj - proj.min()).astype(np.int64), minlength=bins)
        return float(np.dot(hist, hist))

    assert geometry._profile_scores(ys, xs, angles, bins) == [plain(a) for a in angles]


def test_the_coarse_search_on_a_subsample_finds_the_full_searchs_angle() -> None:
    """COARSE_POINTS: the 0.5-degree search on a subsample of the ink points peaks at the angle the
    same search on every point peaks at, for skews across the range (an A4 page of small print at
    300 dpi: ~60 000 points measured at 150 dpi)."""
    page = render_text_page(VIETNAMESE_LINES * 8, size=(2480, 3508), font_px=30, margin=120, leading=1.3)
    for degrees in (-11.5, -4.0, -0.5, 0.0, 2.5, 8.0):
        mask = geometry.rotate_mask(geometry.ink_mask(page, DPI), degrees)
        ys, xs = geometry._sample_points(mask)
        assert len(ys) > 2 * geometry.COARSE_POINTS
        bins = int(max(mask.shape) * 1.5) + 2
        coarse = np.arange(-geometry.MAX_SKEW, geometry.MAX_SKEW + 0.01, 0.5)
        full = float(coarse[int(np.argmax(geometry._profile_scores(ys, xs, coarse, bins)))])
        assert geometry._coarse_angle(ys, xs, bins)[0] == full
