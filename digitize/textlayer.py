"""Invisible text layer: a tiny embedded glyphless font and per-word positioned text.

Why our own font: PDF/A wants every font embedded, and an invisible layer needs no glyph
shapes. A two-glyph TrueType (built once with fontTools, ~600 bytes) whose single blank glyph
stands for every character keeps each page small, and a ToUnicode map (CID = Unicode code
point) lets ``pdftotext`` and viewers give back exact NFC Vietnamese.

Each word is stretched (``Tz``) to its box from the OCR, so selecting a word in a viewer
highlights that word on the image.
"""

from __future__ import annotations

import functools
import io
from dataclasses import dataclass
from typing import Iterable, Sequence

from .records import Word
from .text import nfc

FONT_NAME = "GlyphLessFont"
UNITS_PER_EM = 1000
ADVANCE = 500  # every glyph is half an em wide
ASCENT = 800
DESCENT = -200
FONT_RESOURCE = "/FDgtz"
FONT_DATE = 3_786_912_000  # 2024-01-01, in the TrueType epoch (seconds since 1904)


@functools.lru_cache(maxsize=1)
def glyphless_truetype() -> bytes:
    """Build the embedded TrueType program: .notdef plus one blank glyph used for every CID."""
    from fontTools.fontBuilder import FontBuilder
    from fontTools.pens.ttGlyphPen import TTGlyphPen

    fb = FontBuilder(UNITS_PER_EM, isTTF=True)
    fb.setupGlyphOrder([".notdef", "blank"])
    fb.setupCharacterMap({0x20: "blank"})
    empty = TTGlyphPen(None).glyph()
    fb.setupGlyf({".notdef": empty, "blank": empty})
    fb.setupHorizontalMetrics({".notdef": (ADVANCE, 0), "blank": (ADVANCE, 0)})
    fb.setupHorizontalHeader(ascent=ASCENT, descent=DESCENT)
    fb.setupNameTable({"familyName": FONT_NAME, "styleName": "Regular", "psName": FONT_NAME})
    fb.setupOS2(sTypoAscender=ASCENT, sTypoDescender=DESCENT, usWinAscent=ASCENT, usWinDescent=-DESCENT,
                sCapHeight=ASCENT, sxHeight=ASCENT // 2)
    fb.setupPost()
    # fixed dates: the same bytes in every output (reproducible, and buildable once by a
    # resident converter for all its runs)
    fb.font["head"].created = fb.font["head"].modified = FONT_DATE
    fb.font.recalcTimestamp = False
    buf = io.BytesIO()
    fb.save(buf)
    return buf.getvalue()


@functools.lru_cache(maxsize=1)
def cid_to_gid_map() -> bytes:
    """Every 2-byte CID maps to glyph 1 (the blank glyph)."""
    return b"\x00\x01" * 65536


@functools.lru_cache(maxsize=1)
def to_unicode_cmap() -> bytes:
    """CID == Unicode code point for the BMP; ranges never cross a high-byte boundary (PDF rule)."""
    ranges = [f"<{hi:02X}00> <{hi:02X}FF> <{hi:02X}00>" for hi in range(256) if not 0xD8 <= hi <= 0xDF]
    blocks = []
    for i in range(0, len(ranges), 100):
        chunk = ranges[i:i + 100]
        blocks.append(f"{len(chunk)} beginbfrange\n" + "\n".join(chunk) + "\nendbfrange")
    return (
        "/CIDInit /ProcSet findresource begin\n12 dict begin\nbegincmap\n"
        "/CIDSystemInfo << /Registry (Adobe) /Ordering (UCS) /Supplement 0 >> def\n"
        "/CMapName /Adobe-Identity-UCS def\n/CMapType 2 def\n"
        "1 begincodespacerange\n<0000> <FFFF>\nendcodespacerange\n"
        + "\n".join(blocks)
        + "\nendcmap\nCMapName currentdict /CMap defineresource pop\nend\nend\n"
    ).encode("ascii")


def encode_text(text: str) -> bytes:
    """NFC text as big-endian CIDs; characters outside the BMP become U+FFFD."""
    out = bytearray()
    for ch in nfc(text):
        cp = ord(ch)
        if cp > 0xFFFF or 0xD800 <= cp <= 0xDFFF:
            cp = 0xFFFD
        out += cp.to_bytes(2, "big")
    return bytes(out)


@dataclass(frozen=True)
class Line:
    """Words sharing one baseline and size, in reading order."""

    words: tuple[Word, ...]

    @property
    def top(self) -> int:
        return min(w.top for w in self.words)

    @property
    def bottom(self) -> int:
        return max(w.bottom for w in self.words)


def _fmt(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".") or "0"


def content_stream(lines: Sequence[Line], height_px: int, scale: float) -> bytes:
    """PDF operators drawing every word invisibly (render mode 3) over its pixel box.

    ``scale`` converts pixels to points (72 / dpi); PDF's origin is bottom-left.
    Font size = line height so the highlight covers the line; a trailing space per word
    (stretched over the gap to the next word) lets text extraction see word breaks.
    """
    ops: list[str] = ["BT", "3 Tr"]
    for line in lines:
        top, bottom = line.top, line.bottom
        size = max((bottom - top) * scale, 1.0)
        baseline_y = (height_px - bottom) * scale + size * (-DESCENT / UNITS_PER_EM)
        ops.append(f"{FONT_RESOURCE} {_fmt(size)} Tf")
        words = line.words
        for i, word in enumerate(words):
            text = word.text
            span_px = word.right - word.left
            if i + 1 < len(words) and words[i + 1].left > word.left:
                text += " "
                span_px = words[i + 1].left - word.left
            natural = len(text) * size * ADVANCE / UNITS_PER_EM
            if natural <= 0 or span_px <= 0:
                continue
            tz = 100.0 * span_px * scale / natural
            x = word.left * scale
            ops.append(f"{_fmt(tz)} Tz 1 0 0 1 {_fmt(x)} {_fmt(baseline_y)} Tm <{encode_text(text).hex()}> Tj")
    ops.append("ET")
    return ("\n".join(ops) + "\n").encode("ascii")


def group_lines(words: Iterable[tuple[int, Word]]) -> list[Line]:
    """Group ``(line_id, word)`` pairs (as produced by the OCR) into lines, keeping order."""
    lines: dict[int, list[Word]] = {}
    for line_id, word in words:
        if word.text.strip():
            lines.setdefault(line_id, []).append(word)
    return [Line(tuple(ws)) for ws in lines.values() if ws]
