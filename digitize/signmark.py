"""The visible signature mark (Decree 30/2020/NĐ-CP App. I, electronic copy made from paper).

Top right of page 1: the signer's or agency's name and the signing time (ISO 8601, +07:00) in a
Times-metric font with Vietnamese glyphs (Liberation Serif), 10 pt, black, embedded; for an agency,
its seal image at actual size to the left of the text. The page is never scaled or moved: the mark
goes on a blank part of the page's top band (ink analysis of page 1's archival image), as near the
top-right corner as one of its size is found; a page with no such place (text or a letterhead all
across the top) gets the mark at the top-right inset, over whatever is there, and the record says
so. pyHanko draws it as an appearance stream (/AP with /N only), which is what PDF/A asks of a widget.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import lazyimports
from .errors import ConfigError

lazyimports.install()  # before any pyHanko import: its unused eager imports deferred

# Whole points throughout: pyHanko's layout works in exact fractions and refuses floats.
FONT_SIZE = 10
LEADING = 12  # pt from line to line
PADDING = 3  # pt around the text
INSET = 14  # pt from the page's top and right edges (5 mm)
SEAL_GAP = 4  # pt between the seal and the text
TOP_BAND = 0.25  # the share of the page height, from the top, searched for a blank place
CLEARANCE = 3  # pt of blank paper kept between the mark and any ink
INK_DELTA = 60  # grey levels darker than the paper that count as ink (stamps and letterheads too)
FONT_FILE = "LiberationSerif-Regular.ttf"
FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts", "~/.local/share/fonts", "~/.fonts")
VIETNAMESE_SAMPLE = "ĐđƠơƯưẠạẶặỆệỘộỰựỹ"


@dataclass(frozen=True)
class Seal:
    path: Path
    width_pt: float  # actual size, from the image's own dpi
    height_pt: float
    pixels: tuple[int, int] = (0, 0)  # the image's width and height
    rgba: bytes = field(default=b"", repr=False)  # as drawn (seal_rgba), made once when the key opens, not per signature


@dataclass(frozen=True)
class Mark:
    """Where the mark goes and what it says; ``box`` is (x1, y1, x2, y2) in page-1 user space."""

    lines: tuple[str, ...]
    box: tuple[int, int, int, int]
    seal: Seal | None
    font: Path
    where: str = ""  # for the report: on a blank place, or the top-right inset and why


@functools.lru_cache(maxsize=4)
def find_font(configured: str = "") -> Path:
    """The configured TTF, else Liberation Serif wherever fontconfig's usual folders keep it (Debian:
    fonts-liberation2 under truetype/liberation2, older: truetype/liberation). It must have Vietnamese."""
    if configured:
        candidates = [Path(configured).expanduser()]
    else:
        candidates = []
        for folder in FONT_DIRS:
            root = Path(folder).expanduser()
            if root.is_dir():
                candidates.extend(sorted(root.rglob(FONT_FILE)))
    for path in candidates:
        if path.is_file() and _has_vietnamese(path):
            return path
    where = configured or f"{FONT_FILE} under {', '.join(FONT_DIRS)}"
    raise ConfigError(f"no font with Vietnamese glyphs for the signature mark ({where}): "
                      "install fonts-liberation2 or set sign.font")


MARK_CHARACTERS = "0123456789-:+T "  # what an ISO 8601 time with its offset is made of


def pdf_font(font: Path, text: str) -> Path:
    """The font cut down to the glyphs of ``text`` (and of the time), with 1000 units per em.

    pyHanko writes glyph widths in font units where PDF expects thousandths of an em, so a
    2048-unit TrueType font (Liberation) would come out double-spaced; and it subsets the font it is
    given at every signature (0.2 s for all of Liberation Serif, milliseconds for a few dozen glyphs).
    Made once per signer name with fontTools and cached (keyed by the source's size and time). The
    cut keeps its glyph names (post table format 2): without them fontTools names every glyph from
    the Adobe Glyph List, which it parses first (~0.1-0.2 s of CPU at a batch's first signature)."""
    chars = "".join(sorted(set(text + MARK_CHARACTERS)))
    info = font.stat()
    tag = hashlib.sha256(f"{font.resolve()}|{info.st_size}|{int(info.st_mtime)}|{chars}|glyph-names".encode()
                         ).hexdigest()[:16]
    cache = _font_cache() / f"{font.stem}-{tag}.ttf"
    if not cache.is_file():  # fontTools' subsetter imported only here (~0.2 s of CPU): not at a cache hit
        from fontTools import subset
        from fontTools.ttLib import TTFont
        from fontTools.ttLib.scaleUpem import scale_upem

        from .fsutil import atomic_path

        with TTFont(str(font)) as tt:
            options = subset.Options()
            options.name_IDs, options.notdef_outline, options.layout_features = ["*"], True, ["*"]
            options.glyph_names = True
            subsetter = subset.Subsetter(options)
            subsetter.populate(text=chars)
            subsetter.subset(tt)
            if tt["head"].unitsPerEm != 1000:
                scale_upem(tt, 1000)
            with atomic_path(cache) as tmp:
                tt.save(str(tmp))
    return cache


def _font_cache() -> Path:
    from .resident import cache_dir

    return cache_dir() / "fonts"  # a font another account could swap is parsed and embedded as ours


def _has_vietnamese(path: Path) -> bool:
    from fontTools.ttLib import TTFont, TTLibError

    try:
        with TTFont(str(path), lazy=True) as font:
            cmap = font.getBestCmap() or {}
    except (TTLibError, OSError, AssertionError):
        return False
    return all(ord(c) in cmap for c in VIETNAMESE_SAMPLE)


@functools.lru_cache(maxsize=4)
def load_seal(path: str) -> Seal:
    """The seal PNG and its physical size (pixels / dpi; 300 dpi when the file does not say)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            if img.format != "PNG":
                raise ConfigError(f"sign.seal {path}: the seal must be a PNG (transparent), not {img.format}")
            dpi = img.info.get("dpi", (300.0, 300.0))
            w, h = img.size
            dx, dy = (float(d) if d and float(d) > 1 else 300.0 for d in dpi)
            width_pt, height_pt = w / dx * 72.0, h / dy * 72.0
            mm = max(width_pt, height_pt) / 72.0 * 25.4
            if mm > SEAL_MAX_MM or w * h > SEAL_MAX_PIXELS:  # before its pixels are decoded
                raise ConfigError(f"sign.seal {path}: {w}x{h} pixels at {round(dx, 1):g} dpi is {mm:.0f} mm across, "
                                  f"no seal's actual size (at most {SEAL_MAX_MM} mm, {SEAL_MAX_PIXELS // 1_000_000} "
                                  "megapixels): give the image the dpi it was scanned at")
            rgba = seal_rgba(img).tobytes()
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise ConfigError(f"sign.seal {path}: cannot read the seal image: {getattr(e, 'strerror', None) or e}") from None
    return Seal(Path(path), width_pt, height_pt, (w, h), rgba)


SEAL_MAX_MM = 80  # Vietnamese seals are 30-50 mm across; a larger one is a dpi missing or wrong, and would cover the page
SEAL_MAX_PIXELS = 25_000_000  # 80 mm at 1600 dpi


def seal_rgba(img):
    """The seal as drawn: its own transparency, or, for a seal scanned on white without any (RGB, a
    JPEG saved as PNG), white made transparent and the colours un-blended from white, so that over
    white paper it looks exactly as scanned and over the page's text it hides nothing (an opaque
    seal's white square covered the words under it)."""
    from PIL import Image

    has_alpha = img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info
    rgba = img.convert("RGBA")
    if has_alpha and rgba.getextrema()[3][0] < 255:
        return rgba
    rgb = np.asarray(rgba, dtype=np.float32)[..., :3]
    alpha = 255.0 - rgb.min(axis=2)  # white: 0; the ink's strongest channel decides its cover
    with np.errstate(divide="ignore", invalid="ignore"):
        colour = 255.0 - (255.0 - rgb) * (255.0 / np.maximum(alpha, 1.0))[..., None]
    out = np.dstack([np.clip(colour, 0, 255), alpha]).round().astype(np.uint8)
    return Image.fromarray(out, "RGBA")


def text_width(text: str, font: Path) -> float:
    """Advance width in pt of ``text`` at FONT_SIZE (Pillow's FreeType at size N px = N pt units)."""
    return float(_pil_font(str(font)).getlength(text))


@functools.lru_cache(maxsize=4)
def _pil_font(font: str):
    from PIL import ImageFont

    return ImageFont.truetype(font, FONT_SIZE)


def mark_size(lines: tuple[str, ...], font: Path, seal: Seal | None) -> tuple[int, int]:
    """Width and height in whole pt of the mark: the text block, and the seal at actual size."""
    text_w = math.ceil(max(text_width(line, font) for line in lines)) + 2 * PADDING + 1
    text_h = len(lines) * LEADING + 2 * PADDING
    width = text_w + ((math.ceil(seal.width_pt) + SEAL_GAP) if seal else 0)
    height = max(text_h, math.ceil(seal.height_pt) if seal else 0)
    return width, height


def place(page_width: float, page_height: float, lines: tuple[str, ...], font: Path, seal: Seal | None,
          grey: np.ndarray | None = None) -> Mark:
    """The mark's box on page 1: on the blank place nearest the top-right corner in the top band of
    ``grey`` (page 1 from its top, one cell per pt: top_band_grey); without one, inset INSET pt from
    the corner. The page itself is left as it is."""
    width, height = mark_size(lines, font, seal)
    top = math.floor(page_height)
    spot = None
    if grey is not None and (grey.ndim != 2 or abs(grey.shape[1] - math.floor(page_width)) > 1):
        grey = None  # not this page's image (a rounding of its width apart): no guessing
    if grey is not None:
        band = max(math.floor(top * TOP_BAND), INSET + height + CLEARANCE)
        spot = blank_spot(ink_mask(grey[:band + CLEARANCE]), width, height, band)
    if spot is not None:
        left, down = spot
        return Mark(lines, (left, top - down - height, left + width, top - down), seal, font,
                    f"blank top margin, {left} pt from the left, {down} pt from the top")
    x2, y2 = math.floor(page_width) - INSET, top - INSET
    why = "no page image to look at" if grey is None else f"no blank {width} x {height} pt place in the top band"
    return Mark(lines, (max(0, x2 - width), max(0, y2 - height), x2, y2), seal, font,
                f"top-right inset ({why})")


def ink_mask(grey: np.ndarray) -> np.ndarray:
    """Which cells of a grey page image (uint8, one cell per pt) hold ink: darker than the paper
    (its 90th percentile, so a toned or grey scan works) by INK_DELTA. A lone dark cell (dust,
    JPEG noise) with no dark neighbour is not ink; a stroke, a letter or a line always has one.
    The 3 x 3 neighbourhood counts are OpenCV's unnormalised box filter with a blank border (the
    same integers as numpy's shifted sums, in a sixth of the time: the signer runs this per file)."""
    import cv2

    grey = np.asarray(grey)
    if grey.size == 0:
        return np.zeros(grey.shape, dtype=bool)
    dark = grey.astype(np.int16) < int(paper_level(grey)) - INK_DELTA
    if dark.ndim != 2:
        return dark & (_neighbours(dark) > 1)
    counts = cv2.boxFilter(dark.view(np.uint8), -1, (3, 3), normalize=False, borderType=cv2.BORDER_CONSTANT)
    return dark & (counts > 1)


def _neighbours(dark: np.ndarray) -> np.ndarray:
    """3 x 3 neighbourhood sums of a boolean image, blank outside (numpy; the reference ink_mask matches)."""
    counts = np.pad(dark, 1).astype(np.uint8)
    counts = counts[:-2] + counts[1:-1] + counts[2:]  # rows, then columns
    return counts[:, :-2] + counts[:, 1:-1] + counts[:, 2:]


def paper_level(grey: np.ndarray) -> float:
    """np.percentile(grey, 90) (linear), from a histogram of the uint8 levels: no sort of the band
    (OpenCV's histogram, exact counts below 2**24 cells; numpy's bincount above)."""
    grey = np.asarray(grey)
    if grey.dtype != np.uint8:
        return float(np.percentile(grey, 90))
    if grey.ndim == 2 and grey.size < 2 ** 24:
        import cv2

        hist = cv2.calcHist([np.ascontiguousarray(grey)], [0], None, [256], [0, 256]).ravel().astype(np.int64)
    else:
        hist = np.bincount(grey.ravel(), minlength=256)
    cumulative = np.cumsum(hist)
    at = 0.9 * (grey.size - 1)
    low = int(np.searchsorted(cumulative, int(at), side="right"))  # the value at sorted index floor(at)
    high = int(np.searchsorted(cumulative, min(int(at) + 1, grey.size - 1), side="right"))
    return low + (at - int(at)) * (high - low)


def blank_spot(ink: np.ndarray, width: int, height: int, band: int | None = None, inset: int = INSET,
               clearance: int = CLEARANCE) -> tuple[int, int] | None:
    """(left, top) in cells of a ``width`` x ``height`` place with no ink within ``clearance`` of it,
    its top in the first ``band`` rows (default: all of ``ink``) and the place inside them, at least
    ``inset`` from the top and side edges; the one nearest the top-right corner (fewest cells down
    plus cells in from the right; the higher one on a tie). None when there is no such place.
    Every candidate's ink is counted at once from a summed-area table (OpenCV's integral image)."""
    import cv2

    rows, cols = ink.shape
    band = rows if band is None else min(band, rows)
    win_h, win_w = height + 2 * clearance, width + 2 * clearance  # the place and its clearance
    first_top, last_top = inset, min(band - height, rows - height - clearance)
    first_left, last_left = inset, cols - inset - width
    if last_top < first_top or last_left < first_left or inset < clearance:
        return None
    area = ink[first_top - clearance:last_top + height + clearance, first_left - clearance:last_left + width + clearance]
    table = cv2.integral(np.ascontiguousarray(area, dtype=np.uint8), sdepth=cv2.CV_32S)
    inked = table[win_h:, win_w:] - table[:-win_h, win_w:] - table[win_h:, :-win_w] + table[:-win_h, :-win_w]
    free = inked == 0  # row r, column c: top first_top + r, left first_left + c
    has = free.any(axis=1)
    if not has.any():
        return None
    cols_n = inked.shape[1]
    # per row the place furthest right; then the fewest cells down plus in from the right, the higher on a tie
    in_from_right = np.argmax(free[:, ::-1], axis=1)
    distance = np.where(has, np.arange(inked.shape[0]) + in_from_right, np.iinfo(np.int64).max)
    best_row = int(np.argmin(distance))  # argmin: the first (highest) row on a tie
    return first_left + cols_n - 1 - int(in_from_right[best_row]), first_top + best_row


BAND_ROWS_MIN = 200  # pt handed on at least: a small page's band deepens to fit a 40 mm seal


def top_band_grey(pixels: np.ndarray, width_pt: float, height_pt: float) -> np.ndarray:
    """The top of a page image (grey, RGB or bilevel; the whole page is ``width_pt`` x
    ``height_pt``) as grey, one cell per pt (area-averaged): what place() looks at. Only the top
    band and a little more is kept and resampled, a few milliseconds for a 300 dpi page.

    One area average, on purpose: the mark must never sit over ink. A first step over 2 x 2 pixel
    blocks (~3x less CPU) spread a faint dot straddling a block's edge over two cells, up to 52 grey
    levels lighter, and lost ~18 % of the ink cells of faint small marks (whole dots and hairlines);
    a first step taking each block's darkest pixel lost none on clean paper but some on noisy paper
    (its paper level drops too), and found ~8x more ink than there is."""
    import cv2

    cols, rows = math.floor(width_pt), math.floor(height_pt)
    keep = min(rows, max(math.floor(rows * TOP_BAND), BAND_ROWS_MIN) + CLEARANCE)
    h = pixels.shape[0]
    top = pixels[:min(h, math.ceil(keep * h / max(height_pt, 1)))]
    if top.dtype != np.uint8:
        top = top.astype(np.uint8) * (255 if top.dtype == bool else 1)
    if top.ndim == 3:
        top = cv2.cvtColor(np.ascontiguousarray(top[..., :3]), cv2.COLOR_RGB2GRAY)
    return cv2.resize(top, (cols, keep), interpolation=cv2.INTER_AREA)


def page_grey(pdf: Path, width_pt: float, height_pt: float) -> np.ndarray | None:
    """The top of page 1's archival image, read back from the PDF, as top_band_grey gives it: for a
    file signed outside a conversion (a conversion hands it over from the page worker). None when
    page 1 is not one image covering the page (then the mark takes the inset).
    A JPEG is decoded at a quarter of its size or less (libjpeg's DCT scaling), a JPEG 2000 at its
    matching resolution level: a few milliseconds, not a full 300 dpi decode per signature."""
    import io

    import pikepdf
    from PIL import Image

    cols, rows = math.floor(width_pt), math.floor(height_pt)
    try:
        with pikepdf.open(pdf) as doc:
            page = doc.pages[0]
            if int(page.obj.get("/Rotate", 0)) % 360:
                return None
            xobjects = page.obj.get("/Resources", {}).get("/XObject", {})
            images = [x for x in xobjects.values() if x.get("/Subtype") == "/Image"]
            if len(images) != 1 or cols < 1 or rows < 1:
                return None
            xobj = images[0]
            w, h = int(xobj.Width), int(xobj.Height)
            if abs(w / h - width_pt / height_pt) > 0.02 * (width_pt / height_pt):
                return None
            filters = xobj.get("/Filter")
            filters = [str(f) for f in filters] if isinstance(filters, pikepdf.Array) else [str(filters)]
            if filters == ["/DCTDecode"] or filters == ["/JPXDecode"]:
                img = Image.open(io.BytesIO(xobj.read_raw_bytes()))
                if filters == ["/DCTDecode"]:
                    img.draft("L", (max(cols, w // 4), max(rows, h // 4)))
                else:
                    img.reduce = max(0, min(2, int(math.log2(max(1.0, w / cols)))))
            else:
                img = pikepdf.PdfImage(xobj).as_pil_image()
            img = img.convert("L") if img.mode != "L" else img
            return top_band_grey(np.asarray(img), width_pt, height_pt)
    except Exception:  # noqa: BLE001 - only where the mark goes: the inset is always there
        return None


def stamp_style(mark: Mark):
    """A pyHanko text stamp: embedded font subset, black text right-aligned, seal at the left unscaled."""
    from pyhanko.pdf_utils import layout
    from pyhanko.pdf_utils.images import PdfImage
    from pyhanko.pdf_utils.text import TextBoxStyle
    from pyhanko.stamp import TextStampStyle

    text_layout = layout.SimpleBoxLayoutRule(x_align=layout.AxisAlignment.ALIGN_MAX,
                                             y_align=layout.AxisAlignment.ALIGN_MID,
                                             margins=layout.Margins.uniform(PADDING),
                                             inner_content_scaling=layout.InnerScaling.NO_SCALING)
    text_style = TextBoxStyle(font=_prepared_font_factory()(str(pdf_font(mark.font, "".join(mark.lines)))),
                              font_size=FONT_SIZE,
                              leading=LEADING, text_color=(0.0, 0.0, 0.0), border_width=0,
                              box_layout_rule=text_layout)
    stamp_layout = layout.SimpleBoxLayoutRule(x_align=layout.AxisAlignment.ALIGN_MAX,
                                              y_align=layout.AxisAlignment.ALIGN_MID,
                                              margins=layout.Margins.uniform(0),
                                              inner_content_scaling=layout.InnerScaling.NO_SCALING)
    extra = {}
    if mark.seal is not None:
        from PIL import Image

        image = PdfImage(Image.frombytes("RGBA", mark.seal.pixels, mark.seal.rgba), box=layout.BoxConstraints(
            round(mark.seal.width_pt), round(mark.seal.height_pt)))
        extra = dict(background=image, background_opacity=1.0,
                     background_layout=layout.SimpleBoxLayoutRule(
                         x_align=layout.AxisAlignment.ALIGN_MIN, y_align=layout.AxisAlignment.ALIGN_MID,
                         inner_content_scaling=layout.InnerScaling.NO_SCALING))
    return TextStampStyle(stamp_text="\n".join(line.replace("%", "%%") for line in mark.lines),
                          text_box_style=text_style, inner_content_layout=stamp_layout, border_width=0, **extra)


def warm_appearance(font: Path) -> None:
    """Import and parse now what a first signature's appearance and incremental update need (~0.1 s
    of CPU: pyHanko's font engine and fontTools' table modules, parsing ``font``; pyHanko's XMP
    writer, with lxml). Nothing is signed or written."""
    import contextlib

    from pyhanko.pdf_utils.writer import PdfFileWriter

    engine = _prepared_font_factory()(str(font)).create_font_engine(PdfFileWriter(), obj_stream=None)
    engine.shape("".join(MARK_CHARACTERS))
    with contextlib.suppress(ImportError):  # pyHanko's module, imported by its writer at the first XMP update
        import pyhanko.pdf_utils.metadata.xmp_xml  # noqa: F401


@functools.lru_cache(maxsize=8)
def _font_program(path: str) -> bytes:
    """The font file, Flate-compressed once per process: it is embedded whole (see below)."""
    import zlib

    return zlib.compress(Path(path).read_bytes(), 6)


@functools.lru_cache(maxsize=1)
def _prepared_font_factory():
    """pyHanko's glyph accumulator, minus the work it repeats on every signature. It subsets the
    font to the glyphs drawn and writes the subset out again (fontTools: about a quarter of a
    signature's CPU time); the font we give it is already pdf_font's subset of the mark's few
    dozen characters, so it is embedded whole, from bytes compressed once per process. Glyph ids,
    widths and the /ToUnicode map are pyHanko's own, as before."""
    from dataclasses import dataclass as _dataclass

    from pyhanko.pdf_utils import generic
    from pyhanko.pdf_utils.font.opentype import GlyphAccumulatorFactory

    def embed_whole(cidfont, path: str, writer):
        stream = generic.StreamObject({generic.pdf_name("/Filter"): generic.pdf_name("/FlateDecode")},
                                      encoded_data=_font_program(path))
        ref = writer.add_object(stream)
        cidfont._font_descriptor[generic.pdf_name("/FontFile2")] = ref
        return ref

    @_dataclass(frozen=True)
    class PreparedFontFactory(GlyphAccumulatorFactory):
        def create_font_engine(self, writer, obj_stream=None):
            engine = super().create_font_engine(writer, obj_stream)
            if type(engine.cidfont_obj).__name__ == "CIDFontType2":  # TrueType outlines (Liberation)
                engine._extract_subset = lambda options=None: None
                engine.cidfont_obj.set_font_file = functools.partial(embed_whole, engine.cidfont_obj,
                                                                     self.font_file)
            return engine

    return PreparedFontFactory


def mark_lines(name: str, when_iso: str) -> tuple[str, ...]:
    return (name, when_iso)

