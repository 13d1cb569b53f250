"""Tesseract: one hOCR run per page gives text, word boxes and confidences.

Tesseract is kept loaded in the process through its C API (tesslib.py); the `tesseract`
command via pytesseract remains the fallback where libtesseract cannot be loaded. Either way
it runs single-threaded (OMP_THREAD_LIMIT=1): parallelism is across pages and documents,
which scales better on scanner PCs and Celery workers alike.
"""

from __future__ import annotations

import os
import re
import subprocess
import statistics
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from . import imaging, tesslib
from .fsutil import work_dir
from .errors import ConfigError, MissingDependencyError, OcrError, OcrTimeoutError
from .records import Word
from .secrets import tool_environment
from .text import fold_accents, nfc

os.environ.setdefault("OMP_THREAD_LIMIT", "1")

_BBOX = re.compile(r"bbox (-?\d+) (-?\d+) (-?\d+) (-?\d+)")
_CONF = re.compile(r"x_wconf (\d+(?:\.\d+)?)")
_TEXTANGLE = re.compile(r"textangle (\d+)")
LINE_CLASSES = {"ocr_line", "ocr_caption", "ocr_header", "ocr_textfloat"}


Box = tuple[int, int, int, int]  # left, top, right, bottom in pixels


@dataclass
class OcrResult:
    words: list[tuple[int, Word]]  # (line id, word) in reading order
    confidence: float  # mean word confidence 0..100
    paragraph_starts: set[int] = field(default_factory=set)  # line ids that begin a paragraph
    sideways: list[tuple[Box, list[Word]]] = field(default_factory=list)  # lines read as vertical text
    # the page reading's own mean confidence, before recognise's rescues added re-read words (None: as confidence)
    first_confidence: float | None = None

    @property
    def word_count(self) -> int:
        return len(self.words)

    @property
    def text(self) -> str:
        """Lines joined by newlines, paragraphs by blank lines, NFC (words are)."""
        paragraphs: list[list[str]] = []
        line, words = None, []
        for line_id, w in self.words + [(None, None)]:
            if line_id != line and words:
                if line in self.paragraph_starts or not paragraphs:
                    paragraphs.append([])
                paragraphs[-1].append(" ".join(words))
                words = []
            line = line_id
            if w is not None:
                words.append(w.text)
        return "\n\n".join("\n".join(lines) for lines in paragraphs)

    def update_confidence(self) -> None:
        self.confidence = sum(w.confidence for _, w in self.words) / len(self.words) if self.words else 0.0


def _pytesseract():
    import pytesseract

    # pytesseract gives its tesseract the environment in its module's `environ` (os.environ) and takes
    # no other: a cleaned copy, so that the command fallback gets no secret either (tool_environment)
    pytesseract.pytesseract.environ = tool_environment()
    return pytesseract


def _with_image_file(pixels: np.ndarray, fn):
    with work_dir("ocr") as tmp:
        path = tmp / ("page.pgm" if pixels.ndim == 2 else "page.ppm")
        cv2.imwrite(str(path), pixels if pixels.ndim == 2 else cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR))
        return fn(str(path))


def _call(fn, timeout: float, what: str):
    pt = _pytesseract()
    try:
        return fn()
    except pt.TesseractNotFoundError:
        raise MissingDependencyError("tesseract not found: install tesseract-ocr (scripts/setup.sh)") from None
    except RuntimeError as e:
        if "timeout" in str(e).lower():
            raise OcrTimeoutError(f"{what}: Tesseract did not finish within {timeout:g} s and was stopped") from None
        raise OcrError(f"{what}: Tesseract failed: {' '.join(str(e).split())[:200]}") from None
    except pt.TesseractError as e:
        message = " ".join(str(e.message).split())[:200]
        if "Failed loading language" in message or "Error opening data file" in message:
            raise MissingDependencyError(f"Tesseract language data missing ({message})") from None
        raise OcrError(f"{what}: Tesseract failed: {message}") from None


def _hocr(pixels: np.ndarray, language: str, dpi: float, psm: int, timeout: float, what: str) -> OcrResult:
    engine = _engine(language)
    if engine is None:
        return parse_hocr(_hocr_command(pixels, language, dpi, psm, timeout, what))
    try:
        hocr = engine.hocr(pixels, dpi, psm, timeout)
    except tesslib.TessLibError as e:
        raise OcrError(f"{what}: Tesseract failed: {e}") from None
    if hocr is None:
        raise OcrTimeoutError(f"{what}: Tesseract did not finish within {timeout:g} s and was stopped")
    return parse_hocr(hocr)


def _engine(language: str) -> tesslib.Engine | None:
    """The loaded model, or None when only the command is there; a missing model is an error."""
    if tesslib.library() is None:
        return None
    try:
        return tesslib.engine(language)
    except tesslib.TessLibError as e:
        raise MissingDependencyError(f"Tesseract language data missing ({e}); install tesseract-ocr-"
                                     f"{language.split('+')[0]}") from None


def warm(language: str, orientation: bool = False) -> None:
    """Load the models now, e.g. before forking page workers, which then share them; with
    ``orientation``, the OSD model too (10 MB: for a process that forks many runs, not one)."""
    primary, *others = split_languages(language)
    _engine(primary)
    if others:
        _engine("+".join(others))
    if orientation:
        try:
            _engine("osd")
        except MissingDependencyError:
            pass  # detect_orientation copes without it


def _hocr_command(pixels: np.ndarray, language: str, dpi: float, psm: int, timeout: float, what: str) -> bytes:
    pt = _pytesseract()
    config = f"--psm {psm} --dpi {round(dpi)} " + " ".join(f"-c {k}={v}" for k, v in tesslib.SETTINGS.items())
    return _with_image_file(pixels, lambda p: _call(
        lambda: pt.image_to_pdf_or_hocr(p, lang=language, config=config, extension="hocr", timeout=timeout),
        timeout, what))


def split_languages(language: str) -> list[str]:
    languages = [lang for lang in language.split("+") if lang]
    if not languages:
        raise ConfigError(f"no OCR language given ({language!r}); e.g. --lang vie+eng")
    return languages


def recognise(pixels: np.ndarray, language: str, dpi: float, timeout: float, what: str = "page",
              ruled: np.ndarray | None = None) -> OcrResult:
    """Run Tesseract on an upright 8-bit image; raises OcrTimeoutError past ``timeout``.

    A page whose reading has lines side by side (columns found) is read again as one block of
    text (psm 6), and the more confident reading is kept, or on a monospaced page the block's
    unless it trails by more than MONOSPACE_MARGIN: there the "columns" are the rivers of a
    typewriter's aligned spaces (see ``monospaced``; one fresh page's block read trailed by 3.6
    and read at half the CER), while a typed page's real columns read surer cut. The only second
    pass of this kind.
    ``ruled`` is the same image with the table rulings that were taken out of ``pixels`` still
    in it: lines side by side with a vertical ruling between them are a table's cells, which
    need no second reading (a ruled table page paid a whole second pass, 0.6 CPU-s, and kept
    the first reading).

    Lines of ink it left out altogether (a faint typewriter line) are read back on their own,
    in one more call on a strip of them (reread_missed_lines).

    ``vie+eng`` means: read the page with the first language, then let the others re-read
    only the words it was unsure of. Letting Tesseract mix models per word makes ``eng`` win
    on capitalised Vietnamese (``ĐƠN`` read as ``DON``): measured on a clean page, CER 1.06 %
    with ``-l vie+eng`` against 0.35 % with ``-l vie`` (and 20 % slower).
    """
    primary, *others = split_languages(language)
    deadline = time.monotonic() + timeout
    result = _hocr(pixels, primary, dpi, 3, timeout, what)
    if side_by_side_lines(result.words, ruled):
        as_block = _hocr(pixels, primary, dpi, 6, max(1.0, deadline - time.monotonic()), what)
        if as_block.confidence > result.confidence or (
                as_block.confidence >= result.confidence - MONOSPACE_MARGIN and monospaced(result.words)):
            result = as_block
    result.first_confidence = result.confidence
    if result.sideways:
        reread_sideways_lines(result, pixels, primary, dpi, timeout, what)
    drop_noise_lines(result)
    reread_missed_lines(result, pixels, primary, dpi, max(1.0, deadline - time.monotonic()), what)
    if others:
        refine_unsure_words(result, pixels, "+".join(others), dpi, timeout, what)
    return result


def side_by_side_lines(words: list[tuple[int, Word]], ruled: np.ndarray | None = None) -> bool:
    """Whether two lines of a reading stand side by side (share most of their height, apart
    across): Tesseract's layout analysis found columns. Monospaced typewriter text has
    "rivers" of spaces aligned down the page that it takes for a column gutter, and then
    cuts lines, even words, in two (a generated typewriter page: CER 0.27; read as one block
    of text, psm 6: 0.021, and more confident); a signature block beside "Nơi nhận" is real.
    Two lines with a vertical ruling of ``ruled`` between them do not count: table cells."""
    boxes = sorted(_line_boxes(words).values(), key=lambda b: b[1])
    for i, (l0, t0, r0, b0) in enumerate(boxes):
        for l1, t1, r1, b1 in boxes[i + 1:]:
            if t1 >= b0:
                break
            overlap = min(b0, b1) - t1
            if overlap > 0.5 * min(b0 - t0, b1 - t1) and (r0 <= l1 or r1 <= l0):
                gap = (r0, l1) if r0 <= l1 else (r1, l0)
                if ruled is None or not ruling_between(ruled, gap, (t1, min(b0, b1))):
                    return True
    return False


MONOSPACE_CV = 0.06  # spread (coefficient of variation) of width per letter under which a page is typed
MONOSPACE_WORDS = 10  # distinct words of 4+ letters needed to tell
MONOSPACE_MARGIN = 5.0  # points of mean confidence a monospaced page's block reading may trail the cut one by


def monospaced(words: list[tuple[int, Word]]) -> bool:
    """Whether a reading's words have one width per letter (a typewriter's): the coefficient of
    variation of box width / letters over words of four letters or more is under MONOSPACE_CV.
    Measured on first readings: typewritten pages (the hard set's typewriter and carbon copy pages,
    fresh draws) 0.020-0.029, every proportional page 0.12-0.25. On such a page, lines side by side
    are a river of aligned spaces that cut the text, not columns, and the cut reading's short
    pieces score high: a fresh typewriter draw (seed 112) read cut at confidence 92.0 and CER 0.12,
    as a block at 88.4 and CER 0.05."""
    widths: dict[str, float] = {}  # one width per distinct word: a form's "Không" ten times is one word
    for _, w in words:
        if len(w.text) >= 4 and w.text.isalpha():
            widths.setdefault(w.text, (w.right - w.left) / len(w.text))
    per_letter = list(widths.values())
    if len(per_letter) < MONOSPACE_WORDS:
        return False
    mean = sum(per_letter) / len(per_letter)
    return mean > 0 and statistics.pstdev(per_letter) < MONOSPACE_CV * mean


RULING_COVER = 0.8  # a column of the gap inked over this share of the lines' common rows: a ruling


def ruling_between(image: np.ndarray, columns: tuple[int, int], rows: tuple[int, int]) -> bool:
    """Whether a vertical line of ink runs through ``rows`` somewhere in ``columns`` (a gap
    between two line boxes, widened by a pixel each side: a cell's box may touch its ruling)."""
    (left, right), (top, bottom) = columns, rows
    gap = image[max(0, top):max(0, bottom), max(0, left - 1):max(0, right + 1)]
    if gap.size == 0:
        return False
    ink = (gap if gap.ndim == 2 else gap.min(axis=2)) < 128
    return bool((ink.sum(axis=0) >= RULING_COVER * gap.shape[0]).any())


UNSURE_BELOW = 60.0
STRIP_GAP = 24


def refine_unsure_words(result: OcrResult, pixels: np.ndarray, language: str, dpi: float, timeout: float,
                        what: str) -> int:
    """Re-read low-confidence words with other languages in one call on a strip of word crops
    (more strips only past Tesseract's image size limit, MAX_STRIP_PX).

    A reading is taken only if it is clearly more confident AND its letters differ from the
    first reading with marks folded: another model may fix a code or an English word, but it
    can never strip Vietnamese tone marks. Returns the number of words replaced.
    """
    unsure = [i for i, (_, w) in enumerate(result.words) if w.confidence < UNSURE_BELOW]
    if not unsure:
        return 0
    deadline = time.monotonic() + timeout
    replaced = 0
    for batch in _strip_batches([_crop(pixels, result.words[i][1]) for i in unsure]):
        strip, rows = _stack([crop for _, crop in batch])
        reread = _hocr(strip, language, dpi, 6, max(1.0, deadline - time.monotonic()), what)
        replaced += _take_rereadings(result, [unsure[k] for k, _ in batch], rows, reread)
    if replaced:
        result.update_confidence()
    return replaced


MAX_STRIP_PX = 30000  # Tesseract refuses an image over 32767 px a side ("recognition failed")


def _strip_batches(crops: list[np.ndarray]) -> list[list[tuple[int, np.ndarray]]]:
    """(index, crop) in strips short enough for Tesseract: a poor page has hundreds of unsure
    words, whose one strip (~50 000 px on a worn typewriter page) failed the whole page."""
    batches: list[list[tuple[int, np.ndarray]]] = [[]]
    height = STRIP_GAP
    for k, crop in enumerate(crops):
        step = min(crop.shape[0], MAX_STRIP_PX - 2 * STRIP_GAP) + STRIP_GAP
        if batches[-1] and height + step > MAX_STRIP_PX:
            batches.append([])
            height = STRIP_GAP
        batches[-1].append((k, crop[:MAX_STRIP_PX - 2 * STRIP_GAP]))
        height += step
    return [b for b in batches if b]


def _take_rereadings(result: OcrResult, indices: list[int], rows: list[tuple[int, int]], reread: OcrResult) -> int:
    replaced = 0
    for i, (top, bottom) in zip(indices, rows):
        found = [w for _, w in reread.words if top <= (w.top + w.bottom) / 2 <= bottom]
        if not found:
            continue
        text = " ".join(w.text for w in found)
        conf = sum(w.confidence for w in found) / len(found)
        line, old = result.words[i]
        if conf >= old.confidence + 20 and fold_accents(text) != fold_accents(old.text) and " " not in text:
            result.words[i] = (line, Word(text, old.left, old.top, old.right, old.bottom, conf, old.baseline))
            replaced += 1
    return replaced


def _crop(pixels: np.ndarray, w: Word, pad: int = 6) -> np.ndarray:
    h, wd = pixels.shape[:2]
    return pixels[max(0, w.top - pad):min(h, w.bottom + pad), max(0, w.left - pad):min(wd, w.right + pad)]


def _stack(crops: list[np.ndarray]) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Crops one per row on white paper; returns the strip and each row's y range."""
    width = max(c.shape[1] for c in crops) + 2 * STRIP_GAP
    height = sum(c.shape[0] for c in crops) + STRIP_GAP * (len(crops) + 1)
    strip = np.full((height, width), 255, np.uint8)
    rows, y = [], STRIP_GAP
    for c in crops:
        grey = c if c.ndim == 2 else c.max(axis=2)
        strip[y:y + grey.shape[0], STRIP_GAP:STRIP_GAP + grey.shape[1]] = grey
        rows.append((y - STRIP_GAP // 2, y + grey.shape[0] + STRIP_GAP // 2))
        y += grey.shape[0] + STRIP_GAP
    return strip, rows


NOISE_LINE_BELOW = 50.0  # a line of 3+ words read at this mean confidence or less...
NOISE_LINE_WORDS = 3
NOISE_PAGE_AT_LEAST = 75.0  # ...on a page read at least this well is noise read as text


def drop_noise_lines(result: OcrResult) -> int:
    """Drop the lines Tesseract made out of noise on a page it otherwise read well.

    A smudge or a streak between two typed lines comes back as a line of one- and two-letter
    "words" at a mean confidence around 40 ("* 2 TY a Z€ te 14 li dư ý z Tn": a fresh draw of the
    hard set's typewriter page, seed 70, CER 0.088, of which that line 0.062), while the page's
    text reads at 85-95. Only on such a page, and only lines of several words: a poor page keeps
    every reading it has, and a short line (a page number, a signature's name) is never dropped.
    Returns the number of lines dropped."""
    if result.confidence < NOISE_PAGE_AT_LEAST:
        return 0
    lines: dict[int, list[float]] = {}
    for line, w in result.words:
        lines.setdefault(line, []).append(w.confidence)
    noise = {line for line, confs in lines.items()
             if len(confs) >= NOISE_LINE_WORDS and sum(confs) / len(confs) <= NOISE_LINE_BELOW}
    if noise:
        _drop_lines(result, noise)
    return len(noise)


def _drop_lines(result: OcrResult, dropped: set[int]) -> None:
    """Remove the words of the DROPPED lines; a dropped line that began a paragraph hands that
    start to the next line kept, so the paragraph break stays where Tesseract put it."""
    starts, carry, previous = set(), False, None
    for line, _ in result.words:
        if line == previous:
            continue
        previous = line
        if line in dropped:
            carry = carry or line in result.paragraph_starts
        else:
            if carry or line in result.paragraph_starts:
                starts.add(line)
            carry = False
    result.words = [(line, w) for line, w in result.words if line not in dropped]
    result.paragraph_starts = starts
    result.update_confidence()


MISSED_INK = 60  # levels under the paper: ink, on the OCR image (its paper is flattened and stretched)
MISSED_SIZES = (0.5, 2.0)  # a band of left-out rows this many times a read word's height: a line
MISSED_MIN_WIDTH = 2.0  # ...and at least this many word heights wide (not a speck, a tick or a dot leader)
MISSED_MAX = 16  # bands re-read on a page (one Tesseract call for all)
MISSED_KEEP_CONFIDENCE = 80.0  # a band's reading is taken at this mean confidence...
MISSED_KEEP_CHARS = 3  # ...and this many letters or digits (a stroke of a signature reads as "~" or "|")


def reread_missed_lines(result: OcrResult, pixels: np.ndarray, language: str, dpi: float, timeout: float,
                        what: str) -> int:
    """Read the lines Tesseract passed over, each with its own contrast, and add them in place.

    A typewriter's ribbon runs dry unevenly: a line or two of a page can be far fainter than the
    rest, and Tesseract's layout analysis, thresholding the page as a whole, then leaves them out
    altogether (a fresh draw of the hard set's typewriter page lost 2 of its 16 lines: CER 0.082).
    Ink that no word or sideways line covers is joined into line-shaped bands; each band is cut
    out, stretched so its own darkest ink is black, and all are read in one call as a strip. A
    band whose reading is confident becomes a new line, before the first line below it that it
    overlaps. Pages Tesseract read whole pay only the search (a threshold and a row profile, ~5 ms
    an A4 page). Returns the number of words added."""
    heights = sorted(w.bottom - w.top for _, w in result.words)
    if not heights or pixels.ndim != 2:
        return 0
    unit = float(heights[len(heights) // 2])
    bands = _missed_bands(result, pixels, unit)
    if not bands:
        return 0
    crops = [_own_contrast(_without_words(result, pixels, band, unit)) for band in bands]
    strip, rows = _stack(crops)
    reread = _hocr(strip, language, dpi, 6, timeout, what)
    added = 0
    for (left, top, _, _), (row_top, row_bottom) in zip(bands, rows):
        lines: dict[int, list[Word]] = {}  # a band of two faint lines in a row reads as two
        for line, w in reread.words:
            if row_top <= (w.top + w.bottom) / 2 <= row_bottom:
                lines.setdefault(line, []).append(w)
        dy, dx = top - (row_top + STRIP_GAP // 2), left - STRIP_GAP
        for found in lines.values():
            if _reads_as_text(found, MISSED_KEEP_CHARS, MISSED_KEEP_CONFIDENCE):
                _add_line(result, [Word(w.text, w.left + dx, w.top + dy, w.right + dx, w.bottom + dy, w.confidence)
                                   for w in found])
                added += len(found)
    if added:
        result.update_confidence()
    return added


def _missed_bands(result: OcrResult, pixels: np.ndarray, unit: float) -> list[Box]:
    """Bands of rows with ink outside every word read, line-sized, as boxes in ``pixels``, top to
    bottom. Rows, not blobs: a row profile of the page costs a few milliseconds."""
    paper = imaging.percentiles(pixels, 50)[0]
    if paper <= MISSED_INK:
        return []
    ink = cv2.threshold(pixels, paper - MISSED_INK - 1, 1, cv2.THRESH_BINARY_INV)[1]
    _blank(ink, [(w.left, w.top, w.right, w.bottom) for _, w in result.words] + [box for box, _ in result.sideways],
           max(1, round(unit / 4)), 0)
    rows = cv2.reduce(ink, 1, cv2.REDUCE_SUM, dtype=cv2.CV_32S).ravel() >= max(2.0, unit / 4)
    bands = []
    for top, bottom in _runs(rows, gap=round(unit / 3)):
        if not MISSED_SIZES[0] * unit <= bottom - top <= MISSED_SIZES[1] * unit:
            continue
        columns = np.flatnonzero(cv2.reduce(ink[top:bottom], 0, cv2.REDUCE_SUM, dtype=cv2.CV_32S).ravel())
        if columns.size < unit or columns[-1] - columns[0] < MISSED_MIN_WIDTH * unit:
            continue
        margin = round(unit / 2)
        bands.append((max(0, int(columns[0]) - margin), max(0, top - margin),
                      min(pixels.shape[1], int(columns[-1]) + 1 + margin), min(pixels.shape[0], bottom + margin)))
    return bands[:MISSED_MAX]


def _runs(flags: np.ndarray, gap: int) -> list[tuple[int, int]]:
    """[start, end) of the runs of True in FLAGS, runs less than GAP apart joined (a tone mark's rows
    above its letter's)."""
    edges = np.flatnonzero(np.diff(np.concatenate(([0], flags.view(np.int8), [0]))))
    runs: list[tuple[int, int]] = []
    for start, end in zip(edges[::2].tolist(), edges[1::2].tolist()):
        if runs and start - runs[-1][1] < gap:
            runs[-1] = (runs[-1][0], end)
        else:
            runs.append((start, end))
    return runs


def _without_words(result: OcrResult, pixels: np.ndarray, band: Box, unit: float) -> np.ndarray:
    """The band's part of the page, whitened where words were read (the lines above and below
    reach into it): what is left is the band's own ink."""
    left, top, right, bottom = band
    crop = pixels[top:bottom, left:right].copy()
    _blank(crop, [(w.left, w.top, w.right, w.bottom) for _, w in result.words], max(1, round(unit / 2)), 255,
           origin=(left, top))
    return crop


def _blank(image: np.ndarray, boxes: list[Box], pad: int, value: int, origin: tuple[int, int] = (0, 0)) -> None:
    """Set every box (page coordinates; ``image``'s top-left corner is at ``origin``), grown by PAD, to VALUE."""
    height, width = image.shape[:2]
    for x0, y0, x1, y1 in boxes:
        top, bottom = max(0, y0 - pad - origin[1]), min(height, y1 + pad - origin[1])
        left, right = max(0, x0 - pad - origin[0]), min(width, x1 + pad - origin[0])
        if top < bottom and left < right:
            image[top:bottom, left:right] = value


def _own_contrast(crop: np.ndarray) -> np.ndarray:
    """A band stretched between its own darkest ink (black) and its paper (white)."""
    dark, paper = imaging.percentiles(crop, 1, 50)
    return crop if paper - dark < 1 else imaging.stretch_levels(crop, dark, paper)


def _line_beside_words(boxes: dict[int, Box], words: list[Word]) -> int | None:
    """The nearest line left or right of WORDS that spans their middle height, or None."""
    left, right = min(w.left for w in words), max(w.right for w in words)
    middle = (min(w.top for w in words) + max(w.bottom for w in words)) / 2
    beside = [(min(abs(x0 - right), abs(left - x1)), l) for l, (x0, y0, x1, y1) in boxes.items()
              if y0 <= middle <= y1 and (x1 <= left or x0 >= right)]
    return min(beside)[1] if beside else None


def _add_line(result: OcrResult, words: list[Word]) -> None:
    """WORDS into the line read beside them, when one spans their height (the end of a line that
    Tesseract cut short); else as a new line, before the first line (in reading order) below them
    that they overlap across, or after the last line if none."""
    left, right = min(w.left for w in words), max(w.right for w in words)
    middle = (min(w.top for w in words) + max(w.bottom for w in words)) / 2
    boxes = _line_boxes(result.words)
    line = _line_beside_words(boxes, words)
    if line is not None:
        for w in words:
            _insert_in_line(result.words, line, w)
        return
    line = max((l for l, _ in result.words), default=0) + 1
    below = {l for l, (x0, y0, x1, _) in boxes.items() if y0 > middle and x0 < right and x1 > left}
    at = next((i for i, (l, _) in enumerate(result.words) if l in below), len(result.words))
    result.words[at:at] = [(line, w) for w in words]


SIDEWAYS_CONTEXT_INCH = 1.2  # text beside a number column re-read with it: the LSTM needs context
SIDEWAYS_MIN_CONFIDENCE = 65.0  # a list number re-read scores 70-96; rotated text read across, less
SIDEWAYS_KEEP_CONFIDENCE = 60.0  # a vertical line read this well is text set vertically: kept as read
SIDEWAYS_KEEP_CHARS = 4  # ...if it has this many letters or digits: a QR code yields "IM" at 90
MAX_SIDEWAYS_REREADS = 8  # per page; together they get one OCR timeout
ACROSS = 3.0  # a "vertical" line this many times wider than high lies across: a horizontal line's rest
ROW_HEIGHTS = 1.5  # a "vertical" line over this many of the page's line heights tall spans lines: never merged
ROW_GAP = 2.0  # line heights between "vertical" lines merged along a row (a typewriter's word space: ~1)


def reread_sideways_lines(result: OcrResult, pixels: np.ndarray, language: str, dpi: float, timeout: float,
                          what: str) -> int:
    """Give list numbers that Tesseract read as vertical text back to their lines.

    Its layout analysis takes a column of numbers at the left margin ("1.", "2.", ... in every
    form) for one line of vertical text and reads it sideways into garbage, dropping the
    numbers. Pages reach Tesseract upright, so such a column is re-read horizontally, with an
    inch of the text beside it for context, and each confident reading joins the line to its
    right. A column that gives nothing back keeps its sideways reading if that was confident
    (a margin note set vertically), else it is dropped (a QR code's or a stamp's "text").

    A "vertical" line lying across (its box ACROSS times wider than high) is no column: it is
    the rest of a horizontal line (monospaced typewriter text, whose rivers of spaces cut a line
    in two, had the second half of a line read as vertical garbage and dropped: a generated
    typewriter page lost "đồng xét cấp đất thị xã Vị Thanh;", CER 0.061). Its confident words read
    across, less those a line already covers, join the nearest line beside them on the row, or,
    with none there, make a line of their own in reading order when they read as text (as a missed
    line's do: _add_line); its sideways glyphs are never kept. Returns the number of words added.
    """
    lines = _line_boxes(result.words)
    height, width = pixels.shape[:2]
    deadline = time.monotonic() + timeout
    added = 0
    for n, ((x0, y0, x1, y1), sideways) in enumerate(_sideways_rows(result.sideways, lines)):
        joined = 0
        across = x1 - x0 > ACROSS * (y1 - y0)
        if n < MAX_SIDEWAYS_REREADS and time.monotonic() < deadline:
            pad = max(4, round(dpi / 25))
            left, top = max(0, x0 - pad), max(0, y0 - pad)
            crop = pixels[top:min(height, y1 + pad), left:min(width, x1 + round(SIDEWAYS_CONTEXT_INCH * dpi))]
            budget = max(1.0, deadline - time.monotonic())
            found = [Word(w.text, w.left + left, w.top + top, w.right + left, w.bottom + top, w.confidence)
                     for _, w in _hocr(crop, language, dpi, 6, budget, what).words]
            found = [w for w in found if (w.left + w.right) / 2 < x1 and w.confidence >= SIDEWAYS_MIN_CONFIDENCE]
            if across:  # less what a line read already: its last word cut at the crop's edge ("Hội" as "lội")
                found = [w for w in found if not _covered(lines, w)]
                if found and (_reads_as_text(found) or _line_beside_words(lines, found) is not None):
                    _add_line(result, found)
                    joined = len(found)
                    lines = _line_boxes(result.words)  # a later row may lie beside what this one added
            for word in found if not across else ():
                line = _line_beside(lines, word)
                if line:
                    _insert_in_line(result.words, line, word)
                    joined += 1
        if not joined and not across and _reads_as_text(sideways):  # a merged row's glyphs are no text
            line_id = max((line for line, _ in result.words), default=0) + 1
            result.paragraph_starts.add(line_id)
            result.words += [(line_id, w) for w in sideways]
            joined = len(sideways)
        added += joined
    if added:
        result.update_confidence()
    return added


def _reads_as_text(words: list[Word], chars: int = SIDEWAYS_KEEP_CHARS,
                   confidence: float = SIDEWAYS_KEEP_CONFIDENCE) -> bool:
    """Whether WORDS hold this many letters or digits, read at this mean confidence."""
    letters = sum(ch.isalnum() for w in words for ch in w.text)
    return bool(words) and letters >= chars and sum(w.confidence for w in words) / len(words) >= confidence


def _line_boxes(words: list[tuple[int, Word]]) -> dict[int, Box]:
    boxes: dict[int, Box] = {}
    for line, w in words:
        l, t, r, b = boxes.get(line, (w.left, w.top, w.right, w.bottom))
        boxes[line] = (min(l, w.left), min(t, w.top), max(r, w.right), max(b, w.bottom))
    return boxes


def _line_beside(lines: dict[int, Box], word: Word) -> int | None:
    """The nearest line to the right of ``word`` whose height spans the word's middle."""
    middle, centre = (word.top + word.bottom) / 2, (word.left + word.right) / 2
    beside = [(box[0], line) for line, box in lines.items() if box[1] <= middle <= box[3] and box[0] > centre]
    return min(beside)[1] if beside else None


def _sideways_rows(sideways: list[tuple[Box, list[Word]]], lines: dict[int, Box]) -> list[tuple[Box, list[Word]]]:
    """The page's "vertical" lines, in their order, with those side by side along a row that lie
    across once merged (ACROSS times wider than high) made one: a box no taller than ROW_HEIGHTS of
    the page's lines (median height of ``lines``) whose middle lies within such a row's height,
    starting at most ROW_GAP line heights past its end, joins it. Tesseract can read a horizontal
    line's glyphs as so many one-glyph vertical lines (a typewriter page: 25 of them, 8 re-read one
    by one, none giving its words back). A column of list numbers spans lines, so it is taller, and
    stays as it is; so does every box of a merge that would not lie across, and with no lines read
    on the page nothing is merged."""
    if len(sideways) < 2 or not lines:
        return list(sideways)
    line = statistics.median(b - t for _, t, _, b in lines.values())
    rows: list[tuple[Box, list[int]]] = []  # a row's box and the indexes of the boxes in it
    for k in sorted(range(len(sideways)), key=lambda k: (sideways[k][0][0], sideways[k][0][1])):
        box = sideways[k][0]
        middle, low = (box[1] + box[3]) / 2, box[3] - box[1] <= ROW_HEIGHTS * line
        for i, ((l, t, r, b), members) in enumerate(rows):
            if low and b - t <= ROW_HEIGHTS * line and t <= middle <= b and box[0] - r <= ROW_GAP * line:
                rows[i] = ((l, min(t, box[1]), max(r, box[2]), max(b, box[3])), members + [k])
                break
        else:
            rows.append((box, [k]))
    kept: list[tuple[int, tuple[Box, list[Word]]]] = []
    for (l, t, r, b), members in rows:
        if len(members) > 1 and r - l > ACROSS * (b - t):
            kept.append((min(members), ((l, t, r, b), [w for k in members for w in sideways[k][1]])))
        else:
            kept += [(k, sideways[k]) for k in members]
    return [row for _, row in sorted(kept, key=lambda item: item[0])]


def _covered(lines: dict[int, Box], word: Word) -> bool:
    """Whether ``word``'s middle lies inside a line's box."""
    x, y = (word.left + word.right) / 2, (word.top + word.bottom) / 2
    return any(l <= x <= r and t <= y <= b for l, t, r, b in lines.values())


def _insert_in_line(words: list[tuple[int, Word]], line: int, word: Word) -> None:
    """Insert in reading order; words of the line read from the same ink (the full stop of
    "1." that the line kept) give way to it."""
    kept: list[tuple[int, Word]] = []
    placed = False
    for l, w in words:
        centre = (w.left + w.right) / 2
        if l == line and not placed and centre >= word.left:
            kept.append((line, word))
            placed = True
        if l != line or not word.left <= centre <= word.right:
            kept.append((l, w))
    if not placed:
        last = max(i for i, (l, _) in enumerate(kept) if l == line)
        kept.insert(last + 1, (line, word))
    words[:] = kept


def parse_hocr(hocr: bytes) -> OcrResult:
    try:
        root = ET.fromstring(hocr)
    except ET.ParseError as e:
        raise OcrError(f"Tesseract produced unreadable hOCR ({e})") from None
    result = OcrResult([], 0.0)
    line_id = 0
    for par in root.iter():
        if par.get("class") != "ocr_par":
            continue
        first_line = True
        for line in par.iter():
            if line.get("class") not in LINE_CLASSES:
                continue
            title = line.get("title", "")
            angle, box = _TEXTANGLE.search(title), _BBOX.search(title)
            if angle and int(angle.group(1)) % 180 and box:
                result.sideways.append((tuple(map(int, box.groups())), [w for _, w in _line_words(line, 0)]))
                continue
            line_id += 1
            words = list(_line_words(line, line_id))
            if words and first_line:
                result.paragraph_starts.add(line_id)
                first_line = False
            result.words += words
    result.update_confidence()
    return result


def _line_words(line: ET.Element, line_id: int):
    for w in line.iter():
        if w.get("class") != "ocrx_word":
            continue
        text = nfc("".join(w.itertext()).strip())
        box = _BBOX.search(w.get("title", ""))
        if not text or not box:
            continue
        conf = _CONF.search(w.get("title", ""))
        x0, y0, x1, y1 = map(int, box.groups())
        yield line_id, Word(text, x0, y0, x1, y1, float(conf.group(1)) if conf else 0.0)


def detect_orientation(pixels: np.ndarray, dpi: float, timeout: float) -> int | None:
    """Tesseract OSD (expensive): degrees clockwise to turn the page upright, or None if unsure."""
    try:
        engine = _engine("osd")
    except MissingDependencyError:
        return None
    if engine is not None:
        found = engine.orientation(pixels, dpi)
        if found is None or found.confidence < 1.0:
            return None
        return found.rotate
    return _osd_command(pixels, dpi, timeout)


def _osd_command(pixels: np.ndarray, dpi: float, timeout: float) -> int | None:
    pt = _pytesseract()
    try:
        osd = _with_image_file(pixels, lambda p: _call(
            lambda: pt.image_to_osd(p, config=f"--psm 0 --dpi {round(dpi)}", timeout=timeout), timeout, "OSD"))
    except OcrError:
        return None
    rotate = re.search(r"Rotate: (\d+)", osd)
    conf = re.search(r"Orientation confidence: ([\d.]+)", osd)
    if not rotate or (conf and float(conf.group(1)) < 1.0):
        return None
    return int(rotate.group(1)) % 360


def version() -> str:
    """The Tesseract that reads the pages: the loaded library's, else the command's."""
    loaded = tesslib.version()
    if loaded:
        return f"tesseract {loaded} (libtesseract)"
    try:
        out = subprocess.run(["tesseract", "--version"], capture_output=True, text=True, timeout=30,
                             env=tool_environment())
    except (OSError, subprocess.SubprocessError):
        return ""
    text = (out.stdout or out.stderr).splitlines()
    return text[0].strip() if text else ""
