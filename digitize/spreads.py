"""Book spreads: a bound register scanned open is two physical pages, and the rule is one image
per physical page, in order. Pure functions.

A spread is told from a landscape page (a wide table, a landscape letter) by its gutter, all of:
- a valley: a vertical band near the middle that text never crosses, with a text block on each
  side (a table's rulings and rows cross the middle; a landscape letter's lines do);
- a binding: the paper darkens towards that band (the gutter shadow of a book that does not lie
  flat) or a dark line runs down it (the edges of the two leaves).
Two text columns on flat paper have the valley but no binding, so they stay one page.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .geometry import ANALYSIS_DPI, ink_mask
from .imaging import analysis_grey, resize_at_least_1px

MODES = ("auto", "never", "always")
MIN_ASPECT = 1.1  # width / height of a spread: two portrait leaves side by side
MAX_ASPECT = 2.5
MIN_LEAF_INCHES = 3.0  # a leaf's height at least this (a slip or a cheque is not a book)
WINDOW = (0.35, 0.65)  # where the gutter may be, as shares of the width
MAX_CROSSING = 0.02  # share of rows with ink in the gutter column (a valley)
MIN_SIDE_INK = 0.25  # the lighter side's ink against the heavier's: a text block on each side
MIN_SHADOW = 20  # grey levels the gutter is darker than the open paper
MAX_TEXT_RUN = 0.7  # a column or row inked along more of its length than this is no text line


@dataclass(frozen=True)
class Gutter:
    x: int  # column of the full-size image where the pages meet
    valley: bool  # text never crosses it, text on both sides
    binding: bool  # shadow or leaf edges there

    @property
    def is_spread(self) -> bool:
        return self.valley and self.binding


def find_gutter(grey: np.ndarray, dpi: float) -> Gutter | None:
    """Where a landscape page would split into two leaves, and what speaks for it (None for
    portrait pages and strips)."""
    h, w = grey.shape[:2]
    if not _two_leaves_fit(h, w, dpi):
        return None
    mask = ink_mask(grey, dpi)  # at ANALYSIS_DPI
    if _lines_run_down(mask):
        return None  # a portrait page fed sideways: orientation turns it, it is not two leaves
    small = resize_at_least_1px(grey, mask.shape[1] / w, cv2.INTER_AREA)
    mw = mask.shape[1]
    lo, hi = int(WINDOW[0] * mw), int(WINDOW[1] * mw)
    band = max(3, int(ANALYSIS_DPI * 0.04))  # ~1 mm: a gap between two words is not a gutter
    rows_with_ink = mask.mean(axis=0)  # share of rows with ink, per column
    smooth = np.convolve(rows_with_ink, np.ones(band) / band, mode="same")
    paper = np.percentile(small, 90, axis=0).astype(np.float32)  # paper brightness per column
    clear = np.nonzero(smooth[lo:hi] <= MAX_CROSSING)[0] + lo
    if len(clear):  # the text-free run nearest the middle; in it, the darkest paper (the fold)
        runs = np.split(clear, np.nonzero(np.diff(clear) > 1)[0] + 1)
        run = min(runs, key=lambda r: abs((r[0] + r[-1]) / 2 - mw / 2))
        x = int(run[np.argmin(paper[run])]) if np.ptp(paper[run]) > 2 else int((run[0] + run[-1]) // 2)
    else:
        x = lo + int(np.argmin(smooth[lo:hi]))
    left, right = mask[:, :x].sum(), mask[:, x:].sum()
    valley = (smooth[x] <= MAX_CROSSING and min(left, right) >= MIN_SIDE_INK * max(left, right, 1)
              and max(left, right) > 0)
    binding = _binding(small, paper, x)
    return Gutter(round(x * w / mw), bool(valley), bool(binding))


def _lines_run_down(mask: np.ndarray) -> bool:
    """Text lines vertical: the column profile is peakier than the row profile (the same test
    as geometry.analyse, at angle 0). Columns and rows inked along most of their length (a sliver
    of dark board left beside the leaves by the crop, a leaf's edge, a long ruling) are not text
    lines and are left out: on a sparse page they would outweigh the text."""
    text = mask[np.ix_(mask.mean(axis=1) < MAX_TEXT_RUN, mask.mean(axis=0) < MAX_TEXT_RUN)]
    rows, cols = text.sum(axis=1).astype(np.float64), text.sum(axis=0).astype(np.float64)
    return float(np.dot(cols, cols)) > 1.15 * float(np.dot(rows, rows))


def _binding(small: np.ndarray, paper: np.ndarray, x: int) -> bool:
    """The paper darkens towards column ``x`` (gutter shadow), or a dark line runs down it."""
    level = float(np.median(paper))
    reach = max(2, small.shape[1] // 40)
    near = paper[max(0, x - reach):x + reach + 1]
    if level - float(near.min()) >= MIN_SHADOW:
        return True
    column = np.median(small[:, max(0, x - reach):x + reach + 1], axis=0)  # a line down the whole height
    return level - float(column.min()) >= 3 * MIN_SHADOW


def split(pixels: np.ndarray, dpi: float, mode: str = "auto") -> list[tuple[np.ndarray, str]]:
    """[(pixels, side)]: the two leaves of a spread, left first, at 100 % scale ("left", "right"),
    or the page as it is (""). ``mode``: "auto" splits detected spreads, "always" every landscape
    page (at its gutter, else the middle), "never" none."""
    if mode == "never" or not _two_leaves_fit(pixels.shape[0], pixels.shape[1], dpi):
        return [(pixels, "")]
    gutter = find_gutter(analysis_grey(pixels), dpi)
    if gutter is None or (mode == "auto" and not gutter.is_spread):
        return [(pixels, "")]
    x = gutter.x if gutter.valley or gutter.binding else pixels.shape[1] // 2
    return [(np.ascontiguousarray(pixels[:, :x]), "left"), (np.ascontiguousarray(pixels[:, x:]), "right")]


def _two_leaves_fit(h: int, w: int, dpi: float) -> bool:
    """Landscape, and neither a strip (a slip, a banner) nor wider than two portrait leaves."""
    return MIN_ASPECT * h <= w <= MAX_ASPECT * h and h >= MIN_LEAF_INCHES * dpi
