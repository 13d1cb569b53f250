"""Book spreads split into their two leaves; landscape pages (tables, letters) stay whole."""

from __future__ import annotations

import numpy as np
import pytest

from digitize import pagedetect, spreads
from tests.pages import (DEJAVU_SANS, DEJAVU_SERIF, DPI, LEDGER_LINES, REGISTER_LINES, book_spread, on_background,
                         render_with, shadow, table_page)


@pytest.fixture(scope="module")
def leaves() -> tuple[np.ndarray, np.ndarray]:
    return render_with(REGISTER_LINES, DEJAVU_SERIF), render_with(LEDGER_LINES, DEJAVU_SANS)


@pytest.mark.parametrize("depth", [0.25, 0.45, 0.6])
def test_spread_with_a_gutter_shadow_is_split_at_the_fold(leaves, depth):
    left, right = leaves
    spread = book_spread(left, right, shadow_depth=depth)
    gutter = spreads.find_gutter(spread, DPI)
    assert gutter.is_spread
    assert abs(gutter.x - (left.shape[1] + 20)) <= 40
    parts = spreads.split(spread, DPI)
    assert [side for _, side in parts] == ["left", "right"]
    assert sum(p.shape[1] for p, _ in parts) == spread.shape[1]  # every pixel kept, 100 % scale
    assert all(p.shape[0] == spread.shape[0] for p, _ in parts)
    assert np.array_equal(parts[0][0][:, :500], spread[:, :500])  # left leaf first


def test_landscape_table_is_not_split():
    table = table_page()
    assert not spreads.find_gutter(table, DPI).is_spread
    assert len(spreads.split(table, DPI)) == 1
    assert len(spreads.split(shadow(table, 0.5), DPI)) == 1  # even with a shadow


def test_landscape_letter_and_flat_two_columns_are_not_split(leaves):
    letter = render_with(REGISTER_LINES + LEDGER_LINES, DEJAVU_SERIF, size=(2480, 1754), font_px=40)
    assert len(spreads.split(letter, DPI)) == 1
    flat = book_spread(*leaves, shadow_depth=0.0)  # two text columns, no binding
    assert len(spreads.split(flat, DPI)) == 1


def test_a_portrait_page_fed_sideways_is_not_a_spread(leaves):
    from tests.pages import rotate

    sideways = shadow(rotate(leaves[0], 90), 0.5)  # landscape pixels, clear columns between its lines
    assert spreads.find_gutter(sideways, DPI) is None
    assert len(spreads.split(sideways, DPI, "always")) == 1


@pytest.mark.parametrize("shape", [(4, 900), (30, 2000), (600, 2400), (1, 500)])
def test_strips_and_slips_are_never_split(shape):
    noise = np.random.default_rng(0).integers(0, 256, shape).astype(np.uint8)
    assert spreads.find_gutter(noise, DPI) is None
    assert len(spreads.split(noise, DPI, "always")) == 1


def test_modes(leaves):
    spread = book_spread(*leaves)
    assert len(spreads.split(spread, DPI, "never")) == 1
    flat = book_spread(*leaves, shadow_depth=0.0)
    assert len(spreads.split(flat, DPI, "always")) == 2
    portrait = leaves[0]
    assert len(spreads.split(portrait, DPI, "always")) == 1  # only landscape pages


def test_a_spread_on_a_dark_cover_keeps_both_leaves(leaves):
    """The gutter shadow parts the bright paper in two: both leaves are the paper."""
    scan = on_background(book_spread(*leaves, shadow_depth=0.6), 2.0, seed=5)
    paper = pagedetect.find_paper(scan, DPI)
    assert paper is not None
    assert paper.width >= 0.97 * (2 * leaves[0].shape[1] + 40)


def test_unknown_split_mode_is_a_one_line_config_error():
    from digitize.config import ConvertSettings
    from digitize.convert import ConvertOptions
    from digitize.errors import ConfigError

    assert ConvertOptions.from_settings(ConvertSettings()).split_spreads == "auto"
    with pytest.raises(ConfigError, match="split_spreads must be one of auto, never, always"):
        ConvertOptions.from_settings(ConvertSettings(split_spreads="sometimes"))


def test_board_edges_left_beside_the_leaves_do_not_make_a_spread_look_sideways():
    """A crop that keeps a sliver of the dark board at both sides: those full-height dark columns
    are not text lines running down the page."""
    sparse = render_with(REGISTER_LINES[:5], DEJAVU_SERIF), render_with(LEDGER_LINES[:5], DEJAVU_SANS)
    spread = book_spread(*sparse, shadow_depth=0.45)
    edge = spread.shape[1] // 100
    framed = spread.copy()
    framed[:, :edge] = 80
    framed[:, -edge:] = 80
    gutter = spreads.find_gutter(framed, DPI)
    assert gutter is not None and gutter.is_spread
    assert [side for _, side in spreads.split(framed, DPI)] == ["left", "right"]
