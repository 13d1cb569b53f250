"""Image preparation, pure numpy/OpenCV functions.

Two images per page with different duties:
- the **archival** image keeps the paper's look (colour stays colour, grey stays grey, same
  resolution and physical size); it is only turned and deskewed (geometry.py);
- the **OCR** image is whatever reads best: coloured ink and paper dropped, background
  flattened, speckles removed, and resampled so that its text has the size Tesseract reads
  best and fastest (OCR_LETTER_PX), whatever the scan's dpi.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

import cv2
import numpy as np

OCR_LETTER_PX = 16.0  # median glyph height given to Tesseract: 13-14 pt text at ~160 dpi (see ocr_scale)
MEASURE_DPI = 150.0  # letter heights are measured on a copy this small (a few milliseconds)
BILEVEL_SMOOTHING = 1.0  # Gaussian sigma in pixels at 200 dpi


def colour_mode(pixels: np.ndarray) -> str:
    """"colour", "grey" or "bilevel" (a grey image holding only black and white is bilevel)."""
    if pixels.ndim == 3:
        return "colour"
    if pixels.dtype == bool:
        return "bilevel"
    if pixels.dtype == np.uint8 and pixels.size:  # one pass in OpenCV, no page-sized temporaries
        return "grey" if cv2.countNonZero(cv2.inRange(pixels, 1, 254)) else "bilevel"
    return "grey" if np.count_nonzero((pixels != 0) & (pixels != 255)) else "bilevel"


def as_uint8(pixels: np.ndarray) -> np.ndarray:
    if pixels.dtype == bool:
        return pixels.astype(np.uint8) * 255
    return pixels


def drop_colour(pixels: np.ndarray) -> np.ndarray:
    """Grey where saturated ink (red seals, blue signatures) and tinted paper turn white.

    Black text is dark in every channel, coloured ink is bright in at least one, so the
    per-pixel maximum over channels keeps the text and loses the rest.
    """
    if pixels.ndim == 2:
        return pixels
    first, second, third = cv2.split(pixels)[:3]  # contiguous planes: a quarter less CPU than strided ones
    return cv2.max(cv2.max(first, second), third)


def paper_colour(pixels: np.ndarray) -> tuple[int, ...] | int:
    """Typical paper colour (bright end of the histogram), used to fill deskewed corners."""
    sample = as_uint8(pixels)[::8, ::8]
    if sample.ndim == 2:
        return int(np.percentile(sample, 90))
    return tuple(int(np.percentile(sample[..., c], 90)) for c in range(sample.shape[2]))


DUSTY_SHARE = 0.05  # isolated specks per letter above which a page counts as dusty
LETTER_PX = 29.0  # median glyph height of 13-14 pt text at 300 dpi, the scale the tiers are set at


def letter_height(stats: np.ndarray, dpi: float) -> float:
    """Median height of glyph-sized blobs: the page's own text size, in pixels. (Blobs under
    30 px at 300 dpi do not count, so dust cannot pass for text; very small print measures
    somewhat larger than it is.)"""
    areas, heights = stats[1:, cv2.CC_STAT_AREA], stats[1:, cv2.CC_STAT_HEIGHT]
    glyphs = heights[(areas > 30 * (dpi / 300.0) ** 2) & (heights < dpi / 2)]
    return float(np.median(glyphs)) if len(glyphs) >= 20 else LETTER_PX * dpi / 300.0


def remove_specks(grey: np.ndarray, dpi: float, inked: Inked | None = None) -> np.ndarray:
    """Whiten dust and salt-and-pepper that Tesseract would read as stray punctuation.

    Two tiers, scaled to the page's own letter size (set at 13-14 pt, 300 dpi): blobs up to
    20 px are dust when no letter lies within ~1/3 em, since small diacritic parts always sit
    next to their letter; on a dusty page (isolated specks more than DUSTY_SHARE of the
    letters), blobs under 12 px are dust wherever they are (a full stop, colon dot or dot
    below is 20-30 px there). Measured on the speckled samples: mean CER 1.2 % (isolation
    rule only) -> 0.3 %. On a clean page the tiny blobs beside letters are the letters' own:
    the fragments of a typewriter's broken strokes and tone marks (generated typewriter pages,
    bench/degraded_bench.py: CER 0.035/0.075 -> 0.031/0.068 when they are kept). ``inked``: the
    image's _inked, when the caller has it.
    """
    ink, (count, labels, stats) = _inked(grey) if inked is None else inked
    if count <= 1:
        return grey
    scale = letter_height(stats, dpi) / LETTER_PX
    areas = stats[:, cv2.CC_STAT_AREA]
    tiny = areas <= max(2, int(12 * scale * scale))
    small = areas <= max(4, int(20 * scale * scale))
    tiny[0] = small[0] = False  # label 0 is the background
    if not small.any():
        return grey
    small_px = _per_label(small, labels)
    letters = ((ink > 0) & ~small_px).view(np.uint8)
    reach = max(5, int(21 * scale)) | 1
    near = cv2.dilate(letters, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (reach, reach)))
    speck = small.copy()
    speck[labels[(near > 0) & small_px]] = False
    speck[0] = False
    if np.count_nonzero(speck) > DUSTY_SHARE * np.count_nonzero(~small[1:]):
        speck |= tiny  # a dusty page: its tiny blobs are dust, even beside a letter
    speck[0] = False
    if not speck.any():
        return grey  # no dust (most clean pages): no page-sized look-up and copy for nothing
    out = grey.copy()
    out[_per_label(speck, labels)] = 255
    return out


LOOKUP_ROWS = 64  # rows of labels per look-up: NumPy widens each index to 8 bytes before it looks up


def _per_label(flags: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``flags[labels]`` (a bool per component, per pixel), looked up as bytes, a band of rows at
    a time: a page at once made NumPy widen every 16-bit label into a page-sized array of 8-byte
    indices first (31 MB of fresh memory on an A4 page at 200 dpi); a band's indices stay in the cache
    (10.4 -> 6.3 ms on an A4 page at 200 dpi; the same pixels)."""
    table = flags.view(np.uint8)
    out = np.empty(labels.shape, np.uint8)
    for top in range(0, labels.shape[0], LOOKUP_ROWS):
        np.take(table, labels[top:top + LOOKUP_ROWS], out=out[top:top + LOOKUP_ROWS])
    return out.view(bool)


Inked = tuple[np.ndarray, tuple[int, np.ndarray, np.ndarray]]  # an image's otsu_ink and its components


def _inked(grey: np.ndarray) -> Inked:
    ink = otsu_ink(grey)
    return ink, components(ink)


def components(ink: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """8-connected components (count, labels, stats). 16-bit labels when they fit: a quarter of
    the memory traffic, 4x faster on an A4 page; OpenCV refuses them past 65535 provisional labels.
    Bolelli's Spaghetti labelling: the same labels and stats as OpenCV's default (Grana's BBDT),
    ~15 % less CPU (13.7 -> 11.7 ms on an A4 page at 200 dpi)."""
    try:
        return cv2.connectedComponentsWithStatsWithAlgorithm(ink, 8, cv2.CV_16U, cv2.CCL_BOLELLI)[:3]
    except cv2.error:
        return cv2.connectedComponentsWithStats(ink, connectivity=8)[:3]


def opened(ink: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """``cv2.morphologyEx(ink, MORPH_OPEN, kernel)``, the same pixels, without the dilation when the
    erosion left nothing: the long-line kernels of the rulings and streak measures find nothing on
    most pages (a page with no vertical ruling, a fax without streaks), and the dilation was half
    of each such measure's cost."""
    eroded = cv2.erode(ink, kernel)
    return eroded if not cv2.countNonZero(eroded) else cv2.dilate(eroded, kernel)


def otsu_ink(grey: np.ndarray) -> np.ndarray:
    """Ink (255) where Otsu's threshold of the grey image says dark, paper 0."""
    return cv2.threshold(grey, 0, 255, cv2.THRESH_BINARY_INV | cv2.THRESH_OTSU)[1]


def flatten_background(grey: np.ndarray, dpi: float) -> np.ndarray:
    """Divide by the estimated paper (closing removes text strokes): kills shadows, gradients, fading."""
    small_scale = 0.25
    small = resize_at_least_1px(grey, small_scale, cv2.INTER_AREA)
    k = max(5, int(dpi * small_scale / 10)) | 1
    background = cv2.morphologyEx(small, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_RECT, (k, k)))
    background = cv2.GaussianBlur(background, (0, 0), k / 2)
    background = cv2.resize(background, (grey.shape[1], grey.shape[0]), interpolation=cv2.INTER_LINEAR)
    return cv2.divide(grey, np.maximum(background, 1), scale=255)


FAINT_CONTRAST = 80  # darkest ink within this many grey levels of the paper: a faint page
MIN_LIFT_RANGE = 25  # at most a 10x gain: a blank page's grain must not become ink


def lift_faint(grey: np.ndarray, dpi: float) -> np.ndarray:
    """A faint page (carbon copy, worn typewriter ribbon, faded pencil), after background
    flattening: smoothed so grain does not turn into specks, then stretched so its darkest ink
    is black. Measured on generated carbon copies (ink 35-40 levels under the paper, grain 8):
    CER 0.96-1.0 -> 0.005-0.006; the samples are all far above FAINT_CONTRAST (>= 94)."""
    paper, darkest = percentiles(grey, 50, 0.5)
    if paper - darkest >= FAINT_CONTRAST:
        return grey
    smooth = cv2.GaussianBlur(grey, (0, 0), max(0.8, dpi / 300.0))
    low = min(percentiles(smooth, 0.5)[0], paper - MIN_LIFT_RANGE)
    return stretch_levels(smooth, low, paper)


def percentiles(grey: np.ndarray, *qs: float) -> list[float]:
    """np.percentile's (linear) values of an 8-bit image, from one histogram: a page-sized
    np.percentile/np.median sorts partially at every call (~25 ms each on an A4 page at 200 dpi)."""
    hist = cv2.calcHist([np.ascontiguousarray(grey)], [0], None, [256], [0, 256]).ravel()
    below = np.cumsum(hist)  # below[v] = pixels <= v
    n = int(below[-1])
    out = []
    for q in qs:
        rank = (n - 1) * q / 100.0
        lo = int(np.floor(rank))
        a = int(np.searchsorted(below, lo + 1))  # the lo-th smallest value (0-based)
        b = int(np.searchsorted(below, min(lo + 2, n)))
        out.append(a + (b - a) * (rank - lo))
    return out


def stretch_contrast(grey: np.ndarray) -> np.ndarray:
    """Map the darkest ink to black: faded photocopies get the contrast Tesseract expects."""
    hist = cv2.calcHist([grey], [0], None, [256], [0, 256]).ravel()
    ink = hist[:200].sum()
    if ink < 0.001 * grey.size:
        return grey
    low = float(np.searchsorted(np.cumsum(hist[:200]), 0.05 * ink))
    if low < 40:
        return grey
    return stretch_levels(grey, low, max(255.0, low + 1.0))


def stretch_levels(grey: np.ndarray, black: float, white: float) -> np.ndarray:
    """Levels ``black`` and below to 0, ``white`` and above to 255, linear between."""
    lut = np.clip((np.arange(256, dtype=np.float32) - black) * 255.0 / (white - black), 0, 255).astype(np.uint8)
    return cv2.LUT(grey, lut)


def measure_letter_height(grey: np.ndarray, dpi: float) -> float:
    """Median glyph height of an upright page in its own pixels (LETTER_PX at 300 dpi when
    there is too little text), from a background-flattened Otsu binarisation: first of a copy
    at MEASURE_DPI (a few milliseconds), again at full size when the letters there are too
    small to tell apart. A page whose strokes fall apart into fragments when thresholded is
    measured on its smoothed copy instead (fragmented_letter_height)."""
    return measure_letters(grey, dpi)[0]


def measure_letters(grey: np.ndarray, dpi: float) -> tuple[float, bool]:
    """(measure_letter_height, whether the page's strokes fall apart into fragments)."""
    return _measure_letters(grey, dpi).letters


@dataclass(frozen=True)
class Letters:
    """A page's letter measure (measure_letters), and what prepare_for_ocr may reuse of it."""

    height: float  # in the page's own pixels
    in_pieces: bool
    flat: np.ndarray | None = None  # flatten_background(grey, dpi), when made on the way
    inked: Inked | None = None  # flat's _inked, when its letters were measured on them
    other_height: float | None = None  # a page on the border of in_pieces: its height measured the other way

    @property
    def letters(self) -> tuple[float, bool]:
        return self.height, self.in_pieces


def _measure_letters(grey: np.ndarray, dpi: float) -> Letters:
    """measure_letters, with ``flatten_background(grey, dpi)`` when it was made on the way (a page
    at most MEASURE_DPI, or one whose letters were too small to measure on the small copy: 5 of
    the 13 hard pages), else None, and its _inked (its letters were measured on them), else None:
    prepare_for_ocr then reuses them rather than making them again (remove_specks' threshold and
    components of the same image: ~17 ms an A4 page at 200 dpi). A page within one pixel of the
    measuring copy of PIECES_OF_PITCH (pieces_border) also gets its height measured the other way."""
    scale = min(1.0, MEASURE_DPI / dpi)
    flat = flatten_background(resize_at_least_1px(grey, scale, cv2.INTER_AREA) if scale < 1 else grey, dpi * scale)
    full = flat if scale == 1 else None
    plain, inked = None, None
    if scale < 1:
        plain = _flat_letter_height(flat, dpi * scale)
        plain = plain / scale if plain >= SMALL_LETTERS_PX else None
    if plain is None:
        if full is None:
            full = flatten_background(grey, dpi)
        inked = _inked(full)
        plain = letter_height(inked[1][2], dpi)
    joined, border = _pieces_measure(flat, dpi * scale, plain * scale)
    if joined is None:
        return Letters(plain, False, full, inked, None if border is None else border / scale)
    return Letters(joined / scale, True, full, inked, plain if border is not None else None)


FRAGMENTED = 1.75  # smoothing the measuring copy raises its letter height this much: its strokes were in pieces
PIECES = 1.4  # or this much, when the letters measured are also short for their lines:
PIECES_OF_PITCH = 0.22  # under this share of the line pitch (ordinary pages 0.24-0.60, fragmented 0.12-0.21)


def fragmented_letter_height(flat: np.ndarray, dpi: float, plain: float) -> float | None:
    """The letter height of a page whose strokes break into fragments at the threshold (a worn
    cloth ribbon's mottled, faint ink: the fragments' heights made the median), measured on the
    measuring copy (``flat``: background-flattened, letters ``plain`` high) smoothed (sigma 1 px),
    or None when smoothing changes little. On ordinary pages smoothing joins tone marks to their
    letters and raises the median by up to 1.55x (the samples, hard pages, generated seal, table,
    bleed-through, fax and typewriter pages), so a rise of 1.4-1.75x counts only when the letters
    measured are also under PIECES_OF_PITCH of the text-line pitch (line_pitch: a typed or printed
    letter's median blob is 0.24-0.60 of it on all those pages; a double-spaced typewriter page is
    at the low end, a table whose cells hold two lines at the high end). Generated fabric-ribbon
    pages (200-300 dpi, seeds 1-40) that fall apart measured 0.12-0.21 of their pitch, their
    smoothed copies 1.73-2.3x taller (within ~10 % of the true height); the mildly mottled ones
    (1.0-1.33x, 0.26-0.31) are measured as they are."""
    return _pieces_measure(flat, dpi, plain)[0]


def _pieces_measure(flat: np.ndarray, dpi: float, plain: float) -> tuple[float | None, float | None]:
    """(fragmented_letter_height, the smoothed height when the page is on the border: pieces_border)."""
    joined = _flat_letter_height(cv2.GaussianBlur(flat, (0, 0), 1.0), dpi)
    if joined >= FRAGMENTED * plain:
        return joined, None
    if joined < PIECES * plain:
        return None, None
    pitch = line_pitch(flat, dpi)
    if pitch is None:
        return None, None
    return (joined if plain < PIECES_OF_PITCH * pitch else None), (joined if pieces_border(plain, pitch) else None)


def pieces_border(plain: float, pitch: float) -> bool:
    """Whether letters ``plain`` high (their smoothed copy 1.4-1.75x taller) are within one pixel
    of PIECES_OF_PITCH of the line pitch on the measuring copy, where a median of whole pixels
    cannot tell the two kinds of page apart: fresh draws of the hard set's typewriter page
    (samples/hard/make_samples.py, seeds 1-12) measure 8 or 9 px in 38 (0.211 or 0.237), and
    read at CER 0.008-0.19 whole against 0.006-0.018 in pieces, while a red seal's page, as
    generated, measures 0.241 and must not be smoothed. Such a page is read both ways
    (convert.recognise keeps the more confident reading)."""
    return abs(plain - PIECES_OF_PITCH * pitch) < 1.0


def line_pitch(flat: np.ndarray, dpi: float) -> float | None:
    """The text lines' pitch (baseline to baseline) in pixels: the first strong period of the ink's
    row profile between 1/12 and 2/3 inch, or None when the rows show no period."""
    _, ink = cv2.threshold(cv2.GaussianBlur(flat, (0, 0), 1.0), 0, 1, cv2.THRESH_BINARY_INV | cv2.THRESH_OTSU)
    profile = ink.sum(axis=1, dtype=np.float64)
    profile -= profile.mean()
    n = len(profile)
    lo, hi = max(2, int(dpi / 12)), min(n // 3, int(dpi * 2 / 3))
    if hi <= lo or not profile.any():
        return None
    spectrum = np.fft.rfft(profile, 2 * n)
    corr = np.fft.irfft(spectrum * np.conj(spectrum))[:n]
    corr /= corr[0]
    window = corr[lo - 1:hi + 2]
    peaks = lo + np.flatnonzero((window[1:-1] >= window[:-2]) & (window[1:-1] > window[2:]))
    if not len(peaks) or corr[peaks].max() <= 0.2:
        return None
    # the first strong peak: its multiples (every second line) can correlate as well or better
    return float(peaks[np.argmax(corr[peaks] >= 0.6 * corr[peaks].max())])


SMALL_LETTERS_PX = 12  # below this, letters merge and blur: measured heights are no longer true


def _letter_height_at(grey: np.ndarray, dpi: float) -> float:
    return _flat_letter_height(flatten_background(grey, dpi), dpi)


def _flat_letter_height(flat: np.ndarray, dpi: float) -> float:
    return letter_height(_inked(flat)[1][2], dpi)


def ocr_scale(letter_px: float) -> float:
    """Factor that brings text of ``letter_px`` to OCR_LETTER_PX, 1.0 when within 10 %.

    Tesseract's LSTM scales every text line to a fixed height anyway; its thresholding, layout
    analysis (line finding, column finding: a third of a reading) and line images cost in
    proportion to the pixels. At 300 dpi an A4 page of 13-14 pt text has letters ~29 px high:
    reading it at 20 px cost 23 % less CPU (OCR preparation included) than at 29 at the same
    mean CER on the samples (0.0074 -> 0.0077). 16 px (2026-12-02) read better still where it
    counts, on pages never developed on: the held-out hard set 0.0085 -> 0.0077 and two fresh
    draws of its generators 0.0251 -> 0.0080 and 0.0202 -> 0.0070 (their typewriter pages, whose
    broken strokes measure 14 px and were enlarged x1.43: 0.23/0.17 -> 0.020/0.014), for less
    page CPU (fewer pixels to lay out); the easy set 0.0024 -> 0.0037 (worst page 0.0115); 14 px read worse than 16 on a fresh
    draw. Small print is enlarged: an 8 pt fax line at 200 dpi is read as if at ~280.
    """
    factor = OCR_LETTER_PX / max(letter_px, 1.0)
    return 1.0 if 0.9 <= factor <= 1.1 else min(max(factor, 0.25), 4.0)


def resize_at_least_1px(pixels: np.ndarray, factor: float, interpolation: int) -> np.ndarray:
    """cv2.resize by a factor, never to zero rows or columns (a 1-pixel-high scan strip)."""
    h, w = pixels.shape[:2]
    return cv2.resize(pixels, (max(1, round(w * factor)), max(1, round(h * factor))), interpolation=interpolation)


def shrink_for_analysis(pixels: np.ndarray, factor: float) -> np.ndarray:
    """A small copy for measuring (skew, orientation, paper, gutter), not for reading: whole k x k
    blocks averaged (k = the whole part of 1/factor), the rest of the way bilinear. OpenCV's area
    resampling costs 5-15x more at a ratio that is not a whole number (a 300 dpi page with an odd
    width halved: 22 -> 2 ms grey, 77 -> 5 ms colour; 200 -> 150 dpi: ~25 -> 3 ms), and after
    the blocks what is left is a shrink by less than 2, where bilinear aliases little. The < k
    rows and columns past the last whole block are dropped (under 0.2 % of a page's edge); the
    OCR image is still made by resize_at_least_1px."""
    if factor >= 1:
        return pixels
    h, w = pixels.shape[:2]
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    k = int(1.0 / factor + 1e-6)
    if k >= 2 and h >= k and w >= k:
        pixels = cv2.resize(pixels[:h - h % k, :w - w % k], (w // k, h // k), interpolation=cv2.INTER_AREA)
        got = pixels.shape[1], pixels.shape[0]
        if got == size or (min(got) >= 64 and abs(got[0] - size[0]) <= 1 and abs(got[1] - size[1]) <= 1):
            return pixels  # the ratio was whole (give or take the rounding of an odd edge): done
    return cv2.resize(pixels, size, interpolation=cv2.INTER_LINEAR)


def prepare_for_ocr(pixels: np.ndarray, dpi: float) -> tuple[np.ndarray, float]:
    """Upright archival pixels -> (OCR image, scale factor from archival to OCR pixels).

    Shrinking happens first, so the cleaning runs on fewer pixels; enlarging happens last, so
    it interpolates clean strokes rather than dust."""
    return prepare_readings(pixels, dpi)[0]()


def prepare_readings(pixels: np.ndarray, dpi: float) -> list[Callable[[], tuple[np.ndarray, float]]]:
    """prepare_for_ocr's preparation, made when called; and for a page on the border of strokes
    in pieces (pieces_border), a second one that takes the page the other way. Of the two, the
    one read at the smaller scale comes first (fewer pixels for Tesseract: the smoothed way,
    whose letters measure taller), so that a reading sure enough to end there is the cheaper one."""
    grey = drop_colour(as_uint8(pixels))
    letters = _measure_letters(grey, dpi)
    ways = [(letters.height, letters.in_pieces)]
    if letters.other_height is not None:
        ways.append((letters.other_height, not letters.in_pieces))
        ways.sort(key=lambda way: ocr_scale(way[0]))  # stable: as measured first at the same scale
    return [partial(_prepare, grey, dpi, height, in_pieces, letters.flat, letters.inked) for height, in_pieces in ways]


def _prepare(grey: np.ndarray, dpi: float, letter_px: float, in_pieces: bool, flat: np.ndarray | None,
             inked: Inked | None) -> tuple[np.ndarray, float]:
    factor = ocr_scale(letter_px)
    if in_pieces and colour_mode(grey) != "bilevel" and not faint_strokes(grey):
        grey, flat = join_fragments(grey, dpi), None
    if colour_mode(grey) == "bilevel":
        # no speck removal: a fax's or a thin print's strokes break into fragments that it took
        # for dust (generated fine-mode faxes: CER 0.077/0.19/0.39 -> 0.027/0.067/0.18), and
        # Tesseract reads a bilevel page's specks no worse (the samples' fax 0.0053 -> 0.0039)
        if dpi >= 250:
            return _resample(grey, factor), factor
        # jagged low-res fax edges read better smoothed before resampling (CER 2.3% -> 0.6%); the
        # smoothing also pales thin strokes, which a 2x2 minimum filter gives their weight back
        # (generated faxes, own texts, DejaVu/Liberation: CER 0.027/0.067/0.175 -> 0.022/0.059/0.155
        # fine mode, 0.169/0.084 -> 0.063/0.069 normal mode; the samples' fax 0.0039 -> 0.0024)
        grey = _resample(cv2.GaussianBlur(grey, (0, 0), BILEVEL_SMOOTHING * 200.0 / dpi), factor)
        return cv2.erode(grey, np.ones((2, 2), np.uint8)), factor
    if factor < 1:
        grey, dpi, flat = resize_at_least_1px(grey, factor, cv2.INTER_AREA), dpi * factor, None
    if flat is None:
        flat, inked = flatten_background(grey, dpi), None
    clean = stretch_contrast(lift_faint(flat, dpi))
    grey = remove_specks(clean, dpi, inked if clean is flat else None)  # inked: flat's, if measured
    return (_resample(grey, factor) if factor > 1 else grey), factor


PIECES_SMOOTHING = 0.08  # Gaussian sigma in mm (0.8 px at 250 dpi): about a worn ribbon's holes


def join_fragments(grey: np.ndarray, dpi: float) -> np.ndarray:
    """The page, smoothed, for a page whose strokes fall apart into fragments (measure_letters):
    grainy, broken typewriter strokes are read whole again, not as pieces. Generated "holey"
    typewriter pages (tests/degraded.py), the 16 of seeds 21-85 measured in pieces, as they were ->
    smoothed: mean CER 0.102 -> 0.024, worst 0.66 -> 0.059; 8 better (those read at 0.07-0.66),
    7 that read well lose 0.001-0.009. The sigma was chosen on 8 pages of seeds 2-20 (0.050 ->
    0.030). Smoothing every page would blur ordinary print; a second reading kept by Tesseract's
    confidence was no better over both fresh sets (0.043, 0.026 against 0.020, 0.028)."""
    return cv2.GaussianBlur(grey, (0, 0), PIECES_SMOOTHING * dpi / 25.4)


FAINT_PIECES = 193  # the darkest tenth of a page's ink no darker than this: faint strokes, not worn ones


def faint_strokes(grey: np.ndarray) -> bool:
    """Whether a page's ink is faint throughout (a carbon copy's, once its colour is dropped), so that
    its strokes fall apart for want of contrast, not for holes: smoothing would fade them further
    (a generated carbon copy: CER 0.003 -> 0.012). The darkest tenth of the ink, on a 1-in-16 sample:
    carbon copies 200, h05 132, every generated holey/fabric typewriter page measured in pieces
    117-186 (tests/degraded.py seeds 2-85 and 1-21), so each of those is still smoothed."""
    sample = grey[::4, ::4]
    ink = sample[sample < FAINT_INK_BELOW]
    return ink.size == 0 or float(np.percentile(ink, 10)) >= FAINT_PIECES


FAINT_INK_BELOW = 215  # grey levels darker than this are ink of some kind (OCR image: paper ~255)
FAINT_INK_SHARE = 0.25  # share of the ink that is faint and stands apart from the text


def faint_ink_level(grey: np.ndarray) -> int | None:
    """The grey level between the text's ink and a second, much fainter ink that stands apart
    from it (not the anti-aliased edges of letters): show-through of the back of the sheet, a
    faint stamp. None when the page has one ink. Measured: on the samples at most 13 % of the
    ink is faint and apart (a photocopy's specks), on pages with bleed-through 34-39 %."""
    ink = grey < FAINT_INK_BELOW
    count = int(np.count_nonzero(ink))
    if count < 500:
        return None
    level, _ = cv2.threshold(grey[ink].reshape(1, -1), 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
    dark = (grey <= level).view(np.uint8)
    near_text = cv2.dilate(dark, np.ones((5, 5), np.uint8)) > 0
    apart = np.count_nonzero(ink & ~near_text)  # faint ink (ink and not dark) away from any stroke
    return int(level) if apart >= FAINT_INK_SHARE * count else None


def drop_faint_ink(grey: np.ndarray, level: int) -> np.ndarray:
    """The OCR image with everything lighter than ``level`` turned to paper."""
    return np.where(grey > level, 255, grey).astype(np.uint8)


def _resample(grey: np.ndarray, factor: float) -> np.ndarray:
    if factor == 1.0:
        return grey
    return resize_at_least_1px(grey, factor, cv2.INTER_AREA if factor < 1 else cv2.INTER_CUBIC)


def analysis_grey(pixels: np.ndarray) -> np.ndarray:
    """Grey image for geometry analysis (coloured marks dropped, bilevel as 0/255)."""
    return drop_colour(as_uint8(pixels))


def rebinarise(pixels: np.ndarray) -> np.ndarray:
    """After interpolation a bilevel page is grey at the edges: back to pure black and white."""
    return np.where(pixels >= 128, 255, 0).astype(np.uint8)


def single_threaded() -> None:
    """No OpenCV worker threads in this process: page work is parallel across processes, and
    a thread pool that exists when a process forks deadlocks the child's OpenCV."""
    cv2.setNumThreads(1)
