"""The visible signature mark (Decree 30/2020/NĐ-CP App. I, electronic copy made from paper).

Top right of page 1: the signer's or agency's name and the signing time (ISO 8601, +07:00) in a
Times-metric font with Vietnamese glyphs (Liberation Serif), 10 pt, black, embedded; for an agency,
its seal image at actual size to the left of the text. The page is never scaled: the mark sits in
the top margin, inset from the corner. pyHanko draws it as an appearance stream (/AP with /N only),
which is what PDF/A asks of a widget.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError

# Whole points throughout: pyHanko's layout works in exact fractions and refuses floats.
FONT_SIZE = 10
LEADING = 12  # pt from line to line
PADDING = 3  # pt around the text
INSET = 14  # pt from the page's top and right edges (5 mm)
SEAL_GAP = 4  # pt between the seal and the text
FONT_FILE = "LiberationSerif-Regular.ttf"
FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts", "~/.local/share/fonts", "~/.fonts")
VIETNAMESE_SAMPLE = "ĐđƠơƯưẠạẶặỆệỘộỰựỹ"


@dataclass(frozen=True)
class Seal:
    path: Path
    width_pt: float  # actual size, from the image's own dpi
    height_pt: float


@dataclass(frozen=True)
class Mark:
    """Where the mark goes and what it says; ``box`` is (x1, y1, x2, y2) in page-1 user space."""

    lines: tuple[str, ...]
    box: tuple[int, int, int, int]
    seal: Seal | None
    font: Path


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
    Made once per signer name with fontTools and cached (keyed by the source's size and time)."""
    from fontTools import subset
    from fontTools.ttLib import TTFont
    from fontTools.ttLib.scaleUpem import scale_upem

    from .fsutil import atomic_path

    chars = "".join(sorted(set(text + MARK_CHARACTERS)))
    info = font.stat()
    tag = hashlib.sha256(f"{font.resolve()}|{info.st_size}|{int(info.st_mtime)}|{chars}".encode()).hexdigest()[:16]
    cache = _font_cache() / f"{font.stem}-{tag}.ttf"
    if not cache.is_file():
        with TTFont(str(font)) as tt:
            options = subset.Options()
            options.name_IDs, options.notdef_outline, options.layout_features = ["*"], True, ["*"]
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
    except (OSError, UnidentifiedImageError) as e:
        raise ConfigError(f"sign.seal {path}: cannot read the seal image: {getattr(e, 'strerror', None) or e}") from None
    dx, dy = (float(d) if d and float(d) > 1 else 300.0 for d in dpi)
    return Seal(Path(path), w / dx * 72.0, h / dy * 72.0)


def text_width(text: str, font: Path) -> float:
    """Advance width in pt of ``text`` at FONT_SIZE (Pillow's FreeType at size N px = N pt units)."""
    return float(_pil_font(str(font)).getlength(text))


@functools.lru_cache(maxsize=4)
def _pil_font(font: str):
    from PIL import ImageFont

    return ImageFont.truetype(font, FONT_SIZE)


def place(page_width: float, page_height: float, lines: tuple[str, ...], font: Path, seal: Seal | None) -> Mark:
    """The mark's box at the top right of page 1, inset INSET pt; the page itself is left as it is."""
    text_w = math.ceil(max(text_width(line, font) for line in lines)) + 2 * PADDING + 1
    text_h = len(lines) * LEADING + 2 * PADDING
    width = text_w + ((math.ceil(seal.width_pt) + SEAL_GAP) if seal else 0)
    height = max(text_h, math.ceil(seal.height_pt) if seal else 0)
    x2, y2 = math.floor(page_width) - INSET, math.floor(page_height) - INSET
    return Mark(lines, (max(0, x2 - width), max(0, y2 - height), x2, y2), seal, font)


def stamp_style(mark: Mark):
    """A pyHanko text stamp: embedded font subset, black text right-aligned, seal at the left unscaled."""
    from pyhanko.pdf_utils import layout
    from pyhanko.pdf_utils.font.opentype import GlyphAccumulatorFactory
    from pyhanko.pdf_utils.images import PdfImage
    from pyhanko.pdf_utils.text import TextBoxStyle
    from pyhanko.stamp import TextStampStyle

    text_layout = layout.SimpleBoxLayoutRule(x_align=layout.AxisAlignment.ALIGN_MAX,
                                             y_align=layout.AxisAlignment.ALIGN_MID,
                                             margins=layout.Margins.uniform(PADDING),
                                             inner_content_scaling=layout.InnerScaling.NO_SCALING)
    text_style = TextBoxStyle(font=GlyphAccumulatorFactory(str(pdf_font(mark.font, "".join(mark.lines)))),
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

        with Image.open(mark.seal.path) as img:
            image = PdfImage(img.convert("RGBA"), box=layout.BoxConstraints(
                round(mark.seal.width_pt), round(mark.seal.height_pt)))
        extra = dict(background=image, background_opacity=1.0,
                     background_layout=layout.SimpleBoxLayoutRule(
                         x_align=layout.AxisAlignment.ALIGN_MIN, y_align=layout.AxisAlignment.ALIGN_MID,
                         inner_content_scaling=layout.InnerScaling.NO_SCALING))
    return TextStampStyle(stamp_text="\n".join(line.replace("%", "%%") for line in mark.lines),
                          text_box_style=text_style, inner_content_layout=stamp_layout, border_width=0, **extra)


def mark_lines(name: str, when_iso: str) -> tuple[str, ...]:
    return (name, when_iso)

