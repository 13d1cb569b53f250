"""Conversion of one input file into one PDF/A-2b: the stages, in order, page by page.

read page (sources) -> the paper cut out of a dark background (pagedetect) -> a book spread
split into its two leaves (spreads) -> geometry (orientation, skew) -> archival image (turned, deskewed)
-> OCR image (imaging) -> text (ocr, or the PDF's own text) -> page PDF (encode, textlayer, pdfa)
then merge -> veraPDF -> atomic rename -> sidecar and JSON report.

Pages run in a process pool (``jobs``); each worker reads its own page from the input path
and writes its page PDF to a private temp dir, so nothing page-sized crosses processes and
memory does not grow with the page count. Conversion is a pure function of (input bytes,
options) apart from timestamps, which makes it safe to redo as an idempotent job.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from . import encode, geometry, imaging, ocr, pagedetect, pageworkers, pdfa, poppler, preparations, signmark, spreads
from . import textlayer
from . import verapdf
from . import __version__
from .config import ConvertSettings
from .errors import (BadArgsError, ConfigError, DigitizeError, FileAccessError, OcrTimeoutError, OutputValidationError,
                     resource_fault)
from .fsutil import atomic_path, atomic_write_text, sha256_file, sweep_parts, work_dir
from .records import DocumentReport, PageReport, Word
from .sources import SourcePage, open_source, sniff

if TYPE_CHECKING:
    from .signing import Signer

DESKEW_MIN_DEGREES = 0.2
LOW_CONFIDENCE = 45.0
# A page read two ways (on the border of strokes in pieces) whose first reading, the cheaper one,
# is this sure is not read the other way. Of 30 fresh draws of the hard set's typewriter page on
# that border (samples/hard/make_samples.py seeds 2-30, and the committed page) the smoothed way
# read better in 26, as well in 2, and at most 0.003 worse (CER) in 2, at mean word confidence
# 90.5-94.4; the other way's readings took 1.3-2.7x its CPU and reached 93.6 while worse (0.069
# against 0.018): confidence cannot rank two readings this close, so a sure first one is kept.
# A first reading under this is still compared with the other way, as before.
SURE_READING = 93.0
# The other way's reading replaces the first only if it reads at least this share of the first's
# letters. Both read the same ink, so one with fewer has lost text (Tesseract's layout drops a
# line or a block of faint or broken lines it cannot segment), and its mean confidence is higher
# for having left the unsure words out. One line is 2.5-7 % of the letters of a page of 15-40
# lines; the 2 % left is for readings that split or join a few fragments differently. Fresh
# draws of the typewriter page (bench/border_bench.py, seeds 1-60): the other way was kept on
# 3 of 60, each worse: seed 41 at 391 letters of 512 (CER 0.25 against the first's 0.021), seed 25 at 485
# (0.069 against 0.018), seed 38 at 512 of 513 (0.023 against 0.014: confidence misranks them).
KEEPS_TEXT = 0.98


@dataclass(frozen=True)
class ConvertOptions:
    language: str = "vie+eng"
    jobs: int = 1
    ocr_timeout: float = 180.0
    default_dpi: float = 300.0
    max_pixels: int = 250_000_000
    jpeg_quality: int = 80
    page_kb: int = 390  # image budget per A4 page (the text layer adds ~10 KB)
    validate: bool = True
    title: str | None = None
    pages: tuple[int, ...] | None = None  # 0-based input pages to include, in this order (stack splitting)
    max_stream_mb: int = 100  # a PDF page's non-image streams, decoded (pdfguard.py)
    max_memory_mb: int = 8192  # each page worker's address space; 0 = unlimited
    split_spreads: str = "auto"  # book spreads into two pages: "auto" (detected), "never", "always" (landscape)
    mark_band: bool = False  # page 1's top band handed on for a visible signature mark (set when signing)
    max_pages: int = 2000  # pages of one file (sources.ReadLimits); 0 = no limit

    @classmethod
    def from_settings(cls, settings: ConvertSettings, **overrides) -> "ConvertOptions":
        base = cls(language=settings.language, jobs=settings.jobs, ocr_timeout=settings.ocr_timeout,
                   default_dpi=settings.default_dpi, max_pixels=settings.max_pixels,
                   jpeg_quality=settings.jpeg_quality, page_kb=settings.page_kb, validate=settings.validate,
                   max_stream_mb=settings.max_stream_mb, max_memory_mb=settings.max_memory_mb,
                   split_spreads=settings.split_spreads, max_pages=settings.max_pages)
        if base.split_spreads not in spreads.MODES:
            raise ConfigError(f"[convert] split_spreads must be one of {', '.join(spreads.MODES)}, "
                              f"not {base.split_spreads!r}")
        given = {k: (tuple(v) if k == "pages" and v is not None else v) for k, v in overrides.items() if v is not None}
        return replace(base, **given)


@dataclass
class _PageWork:
    """What one page's stages produce, before it becomes a page PDF."""

    pixels: np.ndarray
    mode: str
    orientation: int = 0
    skew: float = 0.0
    words: list[tuple[int, Word]] = field(default_factory=list)
    text: str = ""
    confidence: float = 0.0
    text_source: str = "ocr"
    preparation: str = ""  # OCR preparations applied, comma-separated (convert.recognise)
    timings: dict[str, float] = field(default_factory=dict)


# -- stages ---------------------------------------------------------------------------------

def find_page(page: SourcePage, pixels: np.ndarray, mode: str) -> tuple[np.ndarray, dict]:
    """A scan or photo on a dark background: the paper alone, levelled by its edges, at 100 %
    scale (pagedetect.py), and what was done for the report."""
    if page.words is not None or mode == "bilevel":
        return pixels, {}
    paper = pagedetect.find_paper(pixels, page.dpi)
    if paper is None:
        return pixels, {}
    return pagedetect.cut_out(pixels, paper), paper.describe()


def straighten(page: SourcePage, pixels: np.ndarray, opts: ConvertOptions) -> tuple[int, float, bool]:
    """Orientation and skew; OSD is asked only when the cheap up/down vote is unclear."""
    if page.words is not None:
        return 0, 0.0, True  # born-digital: poppler already drew it upright
    grey = imaging.analysis_grey(pixels)
    geom = geometry.analyse(grey, page.dpi)
    if geom.confident:
        return geom.orientation, geom.skew, True
    osd = ocr.detect_orientation(grey, page.dpi, opts.ocr_timeout)
    if osd is None or osd == geom.orientation:
        return geom.orientation, geom.skew, False
    turned = geom if osd == 0 else geometry.analyse(geometry.turn(grey, osd), page.dpi)  # 0: as measured
    return osd, turned.skew if turned.orientation in (0, 180) else 0.0, False


def archival_pixels(pixels: np.ndarray, mode: str, orientation: int, skew: float) -> np.ndarray:
    """Turn and deskew the page image, keeping its colour mode, resolution and canvas."""
    out = geometry.turn(pixels, orientation)
    if abs(skew) >= DESKEW_MIN_DEGREES:
        out = geometry.deskew(out, skew, imaging.paper_colour(out))
        if mode == "bilevel":
            out = imaging.rebinarise(out)
    return out


def recognise(pixels: np.ndarray, dpi: float, opts: ConvertOptions, what: str,
              timings: dict[str, float] | None = None) -> tuple[ocr.OcrResult, str]:
    """OCR of the prepared page, and which preparations read it (comma-separated, "" for the
    standard one). Faults measured on the image (coloured marks over the text, a table's
    vertical rulings) are removed before the first reading, at no OCR cost (preparations.py).
    A page with a second, fainter ink apart from its text (show-through from the back) is read
    again without it, and the more confident reading is kept: the only pages that pay a second
    pass; a bilevel scan has one ink by nature (its OCR image's greys are the smoothing of its
    edges: a fine fax was read twice for nothing, 0.7 CPU-s). (Not a second pass for every poorly read page: on generated typewriter pages joining
    broken strokes helped as often as it hurt, and mean word confidence could not tell which,
    e.g. a CER 0.90 reading at 30.5 against a CER 1.58 one at 35.5.) A page whose letter measure
    is on the border of strokes in pieces (imaging.pieces_border) is read the cheaper way first;
    unless that reading is sure (SURE_READING) it is read the other way too and the more
    confident reading kept, by the confidence of the page's reading before its rescues
    (_first_confidence; "read-other-way" when it is the second), unless the more confident one
    lost text (KEEPS_TEXT): fresh draws of the hard
    set's typewriter page, seeds 1-12, worst CER 0.19 -> 0.018. The image work (not
    Tesseract's) is added to ``timings["preparation"]``."""
    clock = time.perf_counter()
    first, *others = imaging.prepare_readings(pixels, dpi)
    spent = [_lap(clock)]
    result, factor, done = _read(first, pixels, dpi, opts, what, spent)
    for other in others:  # a page on the border of strokes in pieces: read the other way too
        if result.confidence >= SURE_READING:
            break
        again, again_factor, again_done = _read(other, pixels, dpi, opts, what, spent)
        if _first_confidence(again) > _first_confidence(result) and _letters(again) >= KEEPS_TEXT * _letters(result):
            result, factor, done = again, again_factor, again_done + ["read-other-way"]
    if factor != 1.0:
        result.words = [(line, _scale_word(w, 1.0 / factor)) for line, w in result.words]
    if timings is not None:
        timings["preparation"] = timings.get("preparation", 0.0) + spent[0]
    return result, ",".join(done)


def _first_confidence(result: ocr.OcrResult) -> float:
    """A reading's confidence as Tesseract read the page, before the rescues (missed lines, sideways
    lines, unsure words) added re-read words: their high confidence lifts a poor reading's mean. On
    the fresh typewriter draws read both ways (84 pages, seeds 1-12, 113-175 and the unseen sets),
    the rescued means chose the enlarged way 7 times, 4 of them worse (up to CER +0.026; seed 170's
    page 0.017 -> 0.061 over #13's ceiling), 3 better by <= 0.009; the first readings' chose it
    once."""
    return result.confidence if result.first_confidence is None else result.first_confidence


def _letters(result: ocr.OcrResult) -> int:
    return sum(len(w.text) for _, w in result.words)


def _read(prepare, pixels: np.ndarray, dpi: float, opts: ConvertOptions, what: str,
          spent: list[float]) -> tuple[ocr.OcrResult, float, list[str]]:
    """One reading of recognise: (result in OCR pixels, their scale, preparations); image work into spent[0]."""
    clock = time.perf_counter()
    prepared, factor = prepare()
    ruled, (prepared, done) = prepared, preparations.first_reading(prepared, pixels)
    spent[0] += _lap(clock)
    result = ocr.recognise(prepared, opts.language, dpi * factor, opts.ocr_timeout, what,
                           ruled=ruled if "rulings-removed" in done else None)
    clock = time.perf_counter()
    level = None if imaging.colour_mode(pixels) == "bilevel" else imaging.faint_ink_level(prepared)
    spent[0] += _lap(clock)
    if level is not None:
        clock = time.perf_counter()
        dropped = imaging.drop_faint_ink(prepared, level)
        spent[0] += _lap(clock)
        other = ocr.recognise(dropped, opts.language, dpi * factor, opts.ocr_timeout, what)
        if other.confidence > result.confidence:
            result, done = other, done + ["faint-ink-dropped"]
    return result, factor, done


def _scale_word(w: Word, s: float) -> Word:
    return Word(w.text, round(w.left * s), round(w.top * s), round(w.right * s), round(w.bottom * s), w.confidence)


def read_text(page: SourcePage, work: _PageWork, opts: ConvertOptions, sure: bool) -> None:
    """Born-digital text as is; otherwise OCR, retried upside down when it reads badly."""
    if page.words is not None:
        work.words, work.text_source, work.confidence = page.words, "pdf-text", 100.0
        work.text = _text_from_words(page.words)
        return
    what = f"page {page.index + 1}"
    result, work.preparation = recognise(work.pixels, page.dpi, opts, what, work.timings)
    if not sure and result.word_count >= 5 and result.confidence < LOW_CONFIDENCE:
        flipped = geometry.turn(work.pixels, 180)
        other, preparation = recognise(flipped, page.dpi, opts, what, work.timings)
        if other.confidence > result.confidence + 10:
            work.pixels, work.orientation, result = flipped, (work.orientation + 180) % 360, other
            work.preparation = preparation
    work.words, work.text, work.confidence = result.words, result.text, result.confidence
    work.text_source = "ocr" if result.words else "none"


def _text_from_words(words: Sequence[tuple[int, Word]]) -> str:
    lines: dict[int, list[str]] = {}
    for line, w in words:
        lines.setdefault(line, []).append(w.text)
    return "\n".join(" ".join(ws) for ws in lines.values())


def encode_page(page: SourcePage, work: _PageWork, opts: ConvertOptions) -> encode.EncodedImage:
    """The scanner's JPEG when unturned and within budget, else JPEG/G4 within the page budget."""
    h, w = work.pixels.shape[:2]
    budget = encode.page_budget(w, h, page.dpi, opts.page_kb)
    untouched = work.orientation == 0 and abs(work.skew) < DESKEW_MIN_DEGREES
    if untouched and page.passthrough_jpeg is not None and len(page.passthrough_jpeg) <= budget:
        kept = encode.passthrough_jpeg(page.passthrough_jpeg)
        if kept is not None and (kept.width, kept.height) == (w, h):
            return kept
    return encode.encode_archival(work.pixels, work.mode, opts.jpeg_quality, budget)


def process_page(page: SourcePage, number: int, out_pdf: Path, opts: ConvertOptions) -> list[PageReport]:
    """All stages for one input page; writes its page PDF (a book spread: one per leaf, named
    ``out_pdf`` with ``.0``/``.1`` before the suffix, so they sort in order) and returns their reports."""
    clock = time.perf_counter()
    pixels = imaging.as_uint8(np.asarray(page.image))
    mode = imaging.colour_mode(pixels)
    pixels, paper = find_page(page, pixels, mode)
    leaves = split_spread(page, pixels, mode, opts)
    found = _lap(clock)
    if len(leaves) == 1:
        return [process_leaf(page, leaves[0][0], mode, number, out_pdf, opts, paper, found, first=number == 1)]
    return [process_leaf(page, leaf, mode, number, out_pdf.with_suffix(f".{i}.pdf"), opts,
                         {**paper, "leaf": side}, found / 2, first=number == 1 and i == 0)
            for i, (leaf, side) in enumerate(leaves)]


def split_spread(page: SourcePage, pixels: np.ndarray, mode: str, opts: ConvertOptions) -> list[tuple[np.ndarray, str]]:
    """A book spread as its two leaves, left first (spreads.py); any other page as it is."""
    if page.words is not None:
        return [(pixels, "")]
    return spreads.split(pixels, page.dpi, opts.split_spreads)


def process_leaf(page: SourcePage, pixels: np.ndarray, mode: str, number: int, out_pdf: Path,
                 opts: ConvertOptions, paper: dict, found: float, first: bool = False) -> PageReport:
    """Geometry, OCR and encoding of one physical page; writes its single-page PDF. The document's
    ``first`` page also hands on its top band for the signature mark (from the pixels in memory:
    the signer need not decode the page image again)."""
    clock = time.perf_counter() - found
    timings: dict[str, float] = {}
    orientation, skew, sure = straighten(page, pixels, opts)
    work = _PageWork(archival_pixels(pixels, mode, orientation, skew), mode, orientation, skew)
    pdfa.check_page_size(work.pixels.shape[1], work.pixels.shape[0], page.dpi, f"page {number}")  # once cropped
    timings["geometry"] = _lap(clock)
    read_text(page, work, opts, sure)
    timings["preparation"] = work.timings.get("preparation", 0.0)  # OCR image work, apart from Tesseract's
    timings["ocr"] = _lap(clock) - timings["geometry"] - timings["preparation"]
    image = encode_page(page, work, opts)
    timings["encode"] = _lap(clock) - timings["geometry"] - timings["preparation"] - timings["ocr"]
    h, w = work.pixels.shape[:2]
    scale = 72.0 / page.dpi
    ops = textlayer.content_stream(textlayer.group_lines(work.words), h, scale) if work.words else b""
    pdfa.write_page_pdf(out_pdf, image, w * scale, h * scale, ops)
    top_band = signmark.top_band_grey(work.pixels, w * scale, h * scale) if first and opts.mark_band else None
    timings["total"] = _lap(clock)
    return PageReport(
        number=number, width_px=w, height_px=h, dpi=page.dpi, dpi_source=page.dpi_source, colour_mode=mode,
        orientation=work.orientation, skew_angle=round(-work.skew, 2) + 0.0, text_source=work.text_source,
        ocr_confidence=round(work.confidence, 2), word_count=len(work.words), image_encoding=image.encoding,
        image_bytes=len(image.data), text=work.text, warnings=list(page.warnings),
        timings={k: round(v, 3) for k, v in timings.items()}, paper=paper, ocr_preparation=work.preparation,
        top_band=top_band,
    )


def _lap(start: float) -> float:
    return time.perf_counter() - start


# -- workers --------------------------------------------------------------------------------

_worker_source: tuple[tuple, object] | None = None  # (what was opened, the open Source)


def _page_task(input_path: str, index: int, number: int, out_pdf: str, opts: ConvertOptions,
               key: tuple) -> list[PageReport]:
    """Runs in a worker: reads its own page from the input (kept open for the file's next pages;
    a kept worker given another file, or the same path changed, opens that instead). ``key``
    says which file: taken once per conversion, so every page reads the same one."""
    global _worker_source
    key = (input_path, *key, opts.max_pixels, opts.default_dpi, opts.max_stream_mb)
    if _worker_source is None or _worker_source[0] != key:
        if _worker_source is not None:
            _worker_source[1].close()
            _worker_source = None
        _worker_source = (key, open_source(Path(input_path), opts))
    return process_page(_worker_source[1].page(index), number, Path(out_pdf), opts)


HARD_GRACE = 60.0  # seconds past a page's OCR timeouts before its worker is killed


def page_deadline(opts: ConvertOptions) -> float:
    """How long a page may take before its worker is killed: its OCR calls (first language,
    re-read, both again upside down) each have their own timeout, plus the other stages."""
    return 4 * opts.ocr_timeout + HARD_GRACE


def in_page_worker(task, args: list[tuple], opts: ConvertOptions) -> list:
    """``task(*a)`` for each A of ARGS in one page worker (memory-capped, past its deadline
    killed): how a process that must survive a hostile file reads anything of it. OpenCV's
    thread pool must not be in use across the fork, so this process is made single-threaded."""
    imaging.single_threaded()
    return pageworkers.run(task, args, 1, page_deadline(opts), memory_mb=opts.max_memory_mb)


def _count_task(path: str, opts: ConvertOptions) -> int:
    with open_source(Path(path), opts) as src:
        return src.page_count


def count_pages(input_path: Path, opts: ConvertOptions) -> int:
    """The file's page count, taken in a page worker: qpdf inflates a whole object stream when
    an object in it is first resolved, before any limit can look (a 306 KB PDF took 550 MB)."""
    return in_page_worker(_count_task, [(str(input_path), opts)], opts)[0]


def _run_pages(input_path: Path, indices: Sequence[int], tmp: Path, opts: ConvertOptions,
               while_running=lambda: None) -> list[PageReport]:
    """Pages in forked worker processes (pageworkers.py), even for one job. OpenCV's thread pool
    must not be in use across a fork, so the caller is made single-threaded first; the workers
    are the parallelism."""
    paths = [tmp / f"page-{n:05d}.pdf" for n in range(1, len(indices) + 1)]
    info = os.stat(input_path)
    key = (info.st_dev, info.st_ino, info.st_mtime_ns, info.st_size)
    tasks = [(str(input_path), idx, n, str(paths[n - 1]), opts, key) for n, idx in enumerate(indices, start=1)]
    imaging.single_threaded()
    ocr.warm(opts.language)
    per_input = pageworkers.run(_page_task, tasks, max(1, min(opts.jobs, len(tasks))), page_deadline(opts),
                                while_running, memory_mb=opts.max_memory_mb)
    pageworkers.release()  # they exit while the pages are merged and checked (reaped by held())
    reports = [r for rs in per_input for r in rs]  # a book spread gave two
    for number, r in enumerate(reports, start=1):
        r.number = number
    return reports


def tool_versions() -> dict[str, str]:
    import pikepdf

    return {"digitize": __version__, "tesseract": ocr.version(), "poppler": poppler.version(),
            "pikepdf": pikepdf.__version__, "veraPDF": verapdf.version() if verapdf.available() else ""}


def _page_indices(count: int, wanted: Sequence[int] | None, name: str) -> list[int]:
    if wanted is None:
        return list(range(count))
    bad = [i + 1 for i in wanted if not 0 <= i < count]
    if bad:
        raise BadArgsError(f"{name}: page(s) {bad} do not exist (it has {count})")
    if not wanted:
        raise BadArgsError(f"{name}: no pages selected")
    return list(wanted)


def convert_file(input_path: Path | str, output_path: Path | str, opts: ConvertOptions | None = None,
                 sidecar: Path | str | None = None, report: Path | str | None = None,
                 signer: "Signer | None" = None, page_count: int | None = None) -> DocumentReport:
    """Convert one file; OUTPUT appears complete and veraPDF-checked (and signed by ``signer``, then
    checked again), or not at all. A caller that counted the pages in a worker (a long-lived watcher)
    passes PAGE_COUNT, and then nothing of the untrusted file but its first bytes is read in this process."""
    opts = opts or ConvertOptions()
    if signer is not None and signer.visible:
        opts = replace(opts, mark_band=True)
    verapdf.require(opts.validate)  # before any work: a check that cannot run fails the run (exit 3)
    input_path, output_path = Path(input_path), Path(output_path)
    start = time.perf_counter()
    kind = sniff(input_path)
    if output_path.resolve() == input_path.resolve():
        raise BadArgsError("output must not overwrite the input (the scan stays until its outputs are stored)")
    doc = DocumentReport(input_path=str(input_path), input_sha256=sha256_file(input_path), input_type=kind,
                         language=opts.language, created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    with pageworkers.held():  # the count's worker goes on to the pages: one fork a run, not two
        try:
            ocr.warm(opts.language)  # so the models are loaded before that fork
            unready = None
        except DigitizeError as e:  # no language (9), no model (3): said after the input's own faults (2, 1),
            unready = e             # as before the count shared its worker (review2 r2speed14 L3)
        if page_count is None:
            page_count = count_pages(input_path, opts)
        indices = _page_indices(page_count, opts.pages, input_path.name)
        if unready is not None:
            raise unready
        try:
            return _convert(input_path, output_path, opts, sidecar, report, doc, indices, start, signer)
        except OSError as e:  # in a page worker (its page PDF), the merge or a report
            fault = resource_fault(e, f"cannot write {_where(e, output_path)}")
            if fault is not None:
                raise fault from None
            raise


def _where(error: OSError, output_path: Path) -> str:
    """Which folder ran out: the temp folder's files are named in the error's text."""
    text = f"{getattr(error, 'filename', '') or ''} {error}"
    tmp = tempfile.gettempdir()
    return f"temp folder {tmp} (TMPDIR)" if os.path.join(tmp, "digitize-") in text else str(output_path)


log = logging.getLogger(__name__)
_swept: set[str] = set()  # output folders this process has swept


def _sweep_parts_once(folder: Path) -> None:
    """A run killed mid-write (kill -9 of it or of the converter's child, a power cut) leaves its hidden
    ``.NAME.*.part`` beside the output: removed once it is an hour old (fsutil.sweep_parts: only our
    own temp names and files), the first time a process writes to that folder (not its subfolders)."""
    key = os.path.abspath(folder)
    if key not in _swept:
        _swept.add(key)
        for name in sweep_parts(folder, tree=False):
            log.info("removed %s, left by a run that was killed while writing it", folder / name)


def _convert(input_path: Path, output_path: Path, opts: ConvertOptions, sidecar, report, doc: DocumentReport,
             indices: list[int], start: float, signer: "Signer | None") -> DocumentReport:
    # the validator boots while the pages are processed
    boot = verapdf.prestart if opts.validate else (lambda: None)
    with work_dir("pages") as tmp:
        doc.pages = _run_pages(input_path, indices, tmp, opts, boot)
        doc.timings["pages"] = round(time.perf_counter() - start, 3)
        page_files = sorted(tmp.glob("page-*.pdf"))
        try:
            _sweep_parts_once(output_path.parent)
            with atomic_path(output_path) as tmp_out:
                title = opts.title or input_path.stem
                pdfa.merge_pdfa(page_files, tmp_out, title, dt.datetime.fromisoformat(doc.created),
                                subject=f"Converted from {input_path.name} ({doc.input_sha256[:16]})")
                doc.timings["merge"] = round(time.perf_counter() - start - doc.timings["pages"], 3)
                if signer is None:
                    _validate(tmp_out, opts, doc)
                else:
                    _sign(tmp_out, signer, opts, doc)
                doc.output_sha256 = sha256_file(tmp_out)
                doc.output_bytes = tmp_out.stat().st_size
        except PermissionError as e:
            raise FileAccessError(f"cannot write {output_path}: {e.strerror}") from None
        finally:
            for page in doc.pages:
                page.top_band = None  # the mark's job is done; the report lives on
    doc.output_path = str(output_path)
    doc.tools = tool_versions()
    doc.warnings = [w for p in doc.pages for w in p.warnings]
    doc.timings["total"] = round(time.perf_counter() - start, 3)
    _write_extras(doc, sidecar, report)
    return doc


def _validate(path: Path, opts: ConvertOptions, doc: DocumentReport, timing: str = "validate") -> None:
    doc.pdfa = {"flavour": "2b", "validator": "", "compliant": None}
    if not opts.validate:
        return
    t = time.perf_counter()
    result = verapdf.require_valid(path)
    doc.pdfa = {"flavour": "2b", "validator": verapdf.version(), "compliant": result.compliant}
    doc.timings[timing] = round(time.perf_counter() - t, 3)


def _sign(path: Path, signer: "Signer", opts: ConvertOptions, doc: DocumentReport) -> None:
    """PAdES-sign the PDF/A (an incremental update: the PDF/A's bytes are kept, a revision is added)
    and have veraPDF judge the signed file, the one that is stored. By default the unsigned one is
    validated only if that fails, to say whether conversion or signing broke it: one veraPDF check per
    file instead of two (a check costs more than the signature). With ``[sign] validate_unsigned``
    (the signer's ``validate_unsigned``) it is checked before signing too, as the issue's order reads."""
    both = bool(getattr(signer, "validate_unsigned", False))
    if both:
        _validate(path, opts, doc, "validate_unsigned")  # conversion broke it: not signed at all
    t = time.perf_counter()
    signed = path.with_name(path.name + ".signed")
    try:
        doc.signature = signer.sign(path, signed, doc.pages[0].top_band if doc.pages else None).as_dict()
        doc.timings["sign"] = round(time.perf_counter() - t, 3)
        try:
            _validate(signed, opts, doc)
        except OutputValidationError as signed_error:
            if not both:
                _validate(path, opts, doc, "validate_unsigned")  # raises if the PDF/A was invalid before signing
            raise OutputValidationError(f"the PDF/A is valid but not once signed: {signed_error}") from None
        os.chmod(signed, path.stat().st_mode & 0o777)
        os.replace(signed, path)
    finally:
        signed.unlink(missing_ok=True)


def _write_extras(doc: DocumentReport, sidecar: Path | str | None, report: Path | str | None) -> None:
    try:
        if sidecar:
            atomic_write_text(sidecar, doc.text)
        if report:
            atomic_write_text(report, doc.to_json())
    except PermissionError as e:
        raise FileAccessError(f"cannot write report: {e}") from None

