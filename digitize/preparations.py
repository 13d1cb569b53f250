"""OCR-only preparations for degraded pages, chosen per page by measurement (issue 13).

Each function takes the OCR image (or the upright colour page it came from) and returns a new
OCR image; the archival image is never touched. They are measured on the image and applied
before the first reading when their fault is found, at no extra OCR pass: coloured marks (a
red seal stamped over the text, a blue pen stroke) whitened by their saturation, the vertical
rulings of a table removed, a fax's streaks through the text removed, lines curving into a
book's gutter levelled. The one preparation that costs a second reading, dropping
show-through, lives with the faint-ink measure in imaging.py (convert.recognise chooses).
"""

from __future__ import annotations

import cv2
import numpy as np

from . import imaging

SATURATED = 60  # max - min over RGB: coloured ink (a seal's red, a pen's blue) against black or grey
MARKS_MAX_SHARE = 0.5  # coloured ink at most this share of the ink: else it is the text (violet carbon)
MARKS_MIN_PX = 200  # fewer coloured pixels than this: nothing worth a mask


def coloured_marks(rgb: np.ndarray) -> np.ndarray | None:
    """Mask of coloured marks on a page written in black (seals, signatures, pen ticks), or
    None when there are none, or when coloured ink is most of the ink: a violet carbon copy or
    a blue typewriter ribbon is the text itself. Text under a stamp stays: the stamp's ink
    multiplies with the black, which stays dark and unsaturated."""
    if rgb.ndim != 3 or rgb.shape[2] < 3:
        return None
    paper = imaging.paper_colour(rgb)
    # white-balanced on the paper: yellowed paper and the JPEG colour noise around black text on
    # it are not coloured ink (OpenCV per-pixel ops: 20x numpy's max(axis=2) on an A4 page)
    r, g, b = (cv2.convertScaleAbs(plane, alpha=255.0 / max(paper[c], 1)) for c, plane in enumerate(cv2.split(rgb)[:3]))
    top = cv2.max(cv2.max(r, g), b)
    marks = cv2.compare(cv2.subtract(top, cv2.min(cv2.min(r, g), b)), SATURATED, cv2.CMP_GT)
    # seals and pen strokes are several pixels thick; chroma fringes of JPEG text are 1-2 px
    marks = cv2.morphologyEx(marks, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    count = cv2.countNonZero(marks)
    if count < MARKS_MIN_PX:
        return None
    dark = cv2.countNonZero(cv2.bitwise_and(cv2.compare(top, 128, cv2.CMP_LT), cv2.bitwise_not(marks)))
    return marks > 0 if count <= MARKS_MAX_SHARE * (count + dark) else None


def whiten(grey: np.ndarray, mask: np.ndarray, grow: int = 0) -> np.ndarray:
    """``grey`` with the masked pixels, grown by ``grow`` pixels, turned to paper. Coloured
    marks are not grown: their soft edges are light already, and growing them ate the edges
    of the letters under a seal (generated seal pages: CER 0.006/0.002 exact, 0.020/0.014 grown)."""
    if grow:
        mask = cv2.dilate(mask.view(np.uint8), np.ones((2 * grow + 1, 2 * grow + 1), np.uint8)) > 0
    out = grey.copy()
    out[mask] = imaging.paper_colour(grey)
    return out


RULING_EM = 4.0  # a horizontal or vertical run of ink this many letter heights long is a ruling, not a letter


def ruling_lines(grey: np.ndarray, letter_px: float, horizontal: bool = True,
                 ink: np.ndarray | None = None) -> np.ndarray | None:
    """Mask of long vertical (and, with ``horizontal``, horizontal) lines, table rulings and
    form lines, in an OCR image whose letters are ``letter_px`` high, or None when there are
    none. No glyph is four letter heights long in one direction; a dash or a dotted leader is
    broken. ``ink``: the image's imaging.otsu_ink, when the caller has it."""
    ink = imaging.otsu_ink(grey) if ink is None else ink
    length = max(15, int(RULING_EM * letter_px))
    lines = imaging.opened(ink, cv2.getStructuringElement(cv2.MORPH_RECT, (1, length)))
    if horizontal:
        lines |= imaging.opened(ink, cv2.getStructuringElement(cv2.MORPH_RECT, (length, 1)))
    return lines > 0 if np.count_nonzero(lines) >= 2 * length else None


def remove_rulings(grey: np.ndarray, letter_px: float, ink: np.ndarray | None = None) -> np.ndarray:
    """The OCR image without its vertical rulings, which Tesseract reads as "|", "l" or "I"
    between a table's cells. Horizontal rulings stay: Tesseract's layout analysis finds them
    itself and keeps a row's cells on one line; without them it read a generated table
    column by column (CER 0.004 -> 0.62; vertical rulings removed only: 0.0)."""
    mask = ruling_lines(grey, letter_px, horizontal=False, ink=ink)
    return grey if mask is None else whiten(grey, mask, grow=1)  # a ruling's grey fringe too


STREAK_TOUCH = 0.1  # share of a long line's columns where letters touch it above or below: it runs through text


def text_streaks(grey: np.ndarray, letter_px: float, ink: np.ndarray | None = None) -> np.ndarray | None:
    """Mask of long horizontal lines that run through the text (a fax's or scanner's streaks: one
    scan row gone black across the page) with their grey fringe, less the letters' strokes that
    cross them, or None when there are none. A ruling runs between the lines of text, clear of
    the letters (a table's, a form's: Tesseract needs those, see remove_rulings); a streak cuts
    the letters wherever it falls, so they touch it over a good share of its length (a fine-mode
    fax: a third and a half of the columns of the two streaks through its lines, 0-3 % of the
    others' in blank space). Where ink goes on past the streak's band both above and below, a stroke
    crosses it, and those pixels stay. ``ink``: the image's imaging.otsu_ink, when the caller has it."""
    ink = imaging.otsu_ink(grey) if ink is None else ink
    length = max(15, int(RULING_EM * letter_px))
    lines = imaging.opened(ink, cv2.getStructuringElement(cv2.MORPH_RECT, (length, 1)))
    if cv2.countNonZero(lines) < length:
        return None
    count, labels, stats = imaging.components(lines)
    tops, heights = stats[:, cv2.CC_STAT_TOP], stats[:, cv2.CC_STAT_HEIGHT]
    thin = heights <= max(3, 0.4 * letter_px)  # a bold rule is no scan row (one, enlarged with small print: ~7 px)
    thin[0] = False
    if not thin.any():
        return None
    pad = 2  # the band: the line and its fringe rows, which the opening left out where letters break them
    far = int(heights[thin].max()) + 2 * pad + 2  # beyond a band's rows on both sides: a crossing stroke's ink
    # the work is done in strips of rows around the thin lines only (a fax: 200 -> ~40 ms)
    strips = _row_strips(tops[thin], heights[thin], far + pad + 1, grey.shape[0])
    cut = []
    for a, b in strips:
        band = cv2.dilate(lines[a:b], np.ones((2 * pad + 1, 1), np.uint8))
        cut.append(cv2.bitwise_and(ink[a:b], cv2.bitwise_not(band)))  # the letters, without the lines
    reach = pad + 2
    column = np.ones((reach + 1, 1), np.uint8)
    pairs = []
    for (a, b), letters in zip(strips, cut):
        above = cv2.dilate(letters, column, anchor=(0, reach)) > 0  # letter ink within ``reach`` rows above
        below = cv2.dilate(letters, column, anchor=(0, 0)) > 0
        ys, xs = np.nonzero((lines[a:b] > 0) & (above | below))
        pairs.append(labels[a:b][ys, xs].astype(np.int64) * grey.shape[1] + xs)
    touched = np.bincount(np.unique(np.concatenate(pairs)) // grey.shape[1],
                          minlength=count)  # columns of each line that a letter touches
    streak = thin & (touched >= STREAK_TOUCH * stats[:, cv2.CC_STAT_WIDTH])
    if not streak.any():
        return None
    # the same scan row past the text's end, or beyond a gap: the rest of that streak
    struck = np.zeros(grey.shape[0] + 2, bool)
    for i in np.flatnonzero(streak):
        struck[tops[i]:tops[i] + heights[i] + 2] = True  # a row of slack each side (index + 1)
    streak |= thin & struck[tops + 1] & struck[tops + heights]
    mask = np.zeros(grey.shape, bool)
    column = np.ones((far + 1, 1), np.uint8)
    for (a, b), letters in zip(strips, cut):
        grown = cv2.dilate(streak[labels[a:b]].view(np.uint8), np.ones((2 * pad + 1, 1), np.uint8)) > 0
        up = cv2.dilate(letters, column, anchor=(0, far)) > 0
        down = cv2.dilate(letters, column, anchor=(0, 0)) > 0
        mask[a:b] = grown & ~(up & down)  # a pixel with letter ink beyond the band on both sides: a stroke's
    return mask


def _row_strips(tops: np.ndarray, heights: np.ndarray, margin: int, rows: int) -> list[tuple[int, int]]:
    """Row ranges [a, b) covering each line of ``tops``/``heights`` with ``margin`` rows either
    side, overlapping ones merged."""
    covered = np.zeros(rows + 1, np.int32)
    for top, height in zip(tops, heights):
        covered[max(0, top - margin)] += 1
        covered[min(rows, top + height + margin)] -= 1
    inside = np.concatenate(([False], np.cumsum(covered[:rows]) > 0, [False]))
    edges = np.flatnonzero(np.diff(inside.astype(np.int8)))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def remove_streaks(grey: np.ndarray, letter_px: float, ink: np.ndarray | None = None) -> np.ndarray:
    """The OCR image without the streaks through its text (text_streaks): Tesseract read a line
    a streak ran through as two lines or as marks, and lost its words (generated fine-mode faxes
    of thin print with scan-head streaks, dev seeds 1-6: mean CER 0.117 -> 0.043, worst 0.20 -> 0.075)."""
    mask = text_streaks(grey, letter_px, ink)
    return grey if mask is None else whiten(grey, mask)


CURL_STRIPS = 12  # vertical strips whose text lines are matched to their neighbour's
CURL_BACK = 0.25  # shifts against the curl's way, at most this share of it (a pixel of noise here and there)
CURL_MIN_EM = 1 / 3  # lines that rise or fall less than this many letter heights across the page: left as they are


def line_curl(grey: np.ndarray, letter_px: float, ink: np.ndarray | None = None) -> np.ndarray | None:
    """Vertical shift in pixels of the text lines at each column of an OCR image whose lines
    curve (a book page's lines bending into the gutter), or None when they run straight. Each
    of CURL_STRIPS vertical strips' row profile of ink is matched to its neighbour's within a
    letter height (less than a line pitch, so a line cannot be matched to the next); the shifts
    must run (almost) one way, as a curl does, else it is no curl (a table's cells, a second
    column). Generated spreads, own texts: the right leaf's line ends were garbled, Tesseract
    fitting one sloped baseline to a curved line (CER 0.11 -> 0.013)."""
    h, w = grey.shape
    if w < CURL_STRIPS * 8 or h < 4 * letter_px:
        return None
    ink = imaging.otsu_ink(grey) if ink is None else ink  # 0/255
    edges = np.linspace(0, w, CURL_STRIPS + 1).astype(int)
    reach = max(1, int(letter_px))
    # each strip's ink pixels per row, all strips in one pass (a strip at a time, on a 0/1 copy: 3.4 -> 1.7
    # ms an OCR image); each blurred on its own, as a column of its own: the same floats as before
    counts = (np.add.reduceat(ink, edges[:-1], axis=1, dtype=np.int32) // 255).astype(np.float32).T.copy()
    profiles = [cv2.GaussianBlur(count.reshape(-1, 1), (1, 0), letter_px / 4).ravel() for count in counts]
    shifts = [0.0]
    for before, after in zip(profiles, profiles[1:]):
        if min(before.sum(), after.sum()) < 50 * letter_px:  # a margin or a blank strip: nothing to match
            shifts.append(shifts[-1])
            continue
        core = before[reach:h - reach]
        best = max(range(-reach, reach + 1), key=lambda d: float(np.dot(core, after[reach + d:h - reach + d])))
        shifts.append(shifts[-1] + best)
    steps = np.diff(shifts)
    rise, fall = float(steps[steps > 0].sum()), float(-steps[steps < 0].sum())
    if np.ptp(shifts) < CURL_MIN_EM * letter_px or min(rise, fall) > CURL_BACK * max(rise, fall):
        return None
    centres = (edges[:-1] + edges[1:]) / 2
    shift = np.array(shifts, np.float32) - float(np.median(shifts))
    return np.interp(np.arange(w), centres, shift).astype(np.float32)


def uncurl(grey: np.ndarray, curl: np.ndarray) -> np.ndarray:
    """The OCR image with each column moved up or down by ``curl``: lines level again."""
    h, w = grey.shape
    map_x = np.tile(np.arange(w, dtype=np.float32), (h, 1))
    map_y = np.arange(h, dtype=np.float32)[:, None] + curl[None, :]
    return cv2.remap(grey, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=255)


def first_reading(prepared: np.ndarray, page: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """The OCR image for the first reading, with the faults measured on it removed, and their
    names (for the page report). ``page`` is the upright page ``prepared`` was made from (its
    colour tells the marks); ``prepared``'s letters are OCR-sized (imaging.OCR_LETTER_PX)."""
    done = []
    marks = coloured_marks(page)
    if marks is not None:
        small = cv2.resize(marks.view(np.uint8), prepared.shape[::-1], interpolation=cv2.INTER_NEAREST) > 0
        prepared = whiten(prepared, small)
        done.append("colour-marks-removed")
    # one Otsu threshold serves the three measures while none of them changes the image
    ink = imaging.otsu_ink(prepared)
    without = remove_rulings(prepared, imaging.OCR_LETTER_PX, ink)
    if without is not prepared:
        prepared, ink = without, None
        done.append("rulings-removed")
    without = remove_streaks(prepared, imaging.OCR_LETTER_PX, ink)
    if without is not prepared:
        prepared, ink = without, None
        done.append("streaks-removed")
    curl = line_curl(prepared, imaging.OCR_LETTER_PX, ink)
    if curl is not None:
        prepared = uncurl(prepared, curl)
        done.append("lines-uncurled")
    return prepared, done
