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
import re
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
WORD_GAP = 0.2  # the space between two words of a line, in line heights, for text extraction
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
def cid_to_gid_map(highest_cid: int = 0xFFFF) -> bytes:
    """CIDs 0..highest_cid map to glyph 1 (the blank glyph).

    The map need only reach the highest CID the text uses (ISO 32000-1, 9.7.4.2: the glyph of
    CID c is read at bytes 2c, 2c+1): Vietnamese stays under U+2000, so ~16 KB instead of 128 KB,
    which veraPDF reads for every file it checks.
    """
    return b"\x00\x01" * (min(max(highest_cid, 0), 0xFFFF) + 1)


_HEX_STRING = re.compile(rb"<([0-9a-fA-F]*)>")


def highest_cid(text_ops: bytes) -> int:
    """The highest CID shown by ``content_stream``'s operators (its text is hex strings of 2-byte CIDs)."""
    highest = 0
    for match in _HEX_STRING.finditer(text_ops):
        cids = bytes.fromhex(match.group(1).decode("ascii"))
        for i in range(0, len(cids) - 1, 2):
            highest = max(highest, int.from_bytes(cids[i:i + 2], "big"))
    return highest


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
    Font size = line height so the highlight covers the line. Each word is stretched up to
    the next word of its line but for a narrow space (WORD_GAP), so that text extraction sees
    one line with word breaks: with the real gaps, a table row's cells left "gutters" down the
    page that ``pdftotext`` took for columns and read the table column by column.
    """
    ops: list[str] = ["BT", "3 Tr"]
    for line in lines:
        top, bottom = line.top, line.bottom
        size = max((bottom - top) * scale, 1.0)
        baseline_y = (height_px - bottom) * scale + size * (-DESCENT / UNITS_PER_EM)
        advance = size * ADVANCE / UNITS_PER_EM  # of one glyph at Tz 100
        ops.append(f"{FONT_RESOURCE} {_fmt(size)} Tf")
        words = line.words
        for i, word in enumerate(words):
            span_px, space_px = _spans(word, words[i + 1] if i + 1 < len(words) else None, bottom - top)
            if not word.text or span_px <= 0:
                continue
            tz = 100.0 * span_px * scale / (len(word.text) * advance)
            ops.append(f"{_fmt(tz)} Tz 1 0 0 1 {_fmt(word.left * scale)} {_fmt(baseline_y)} Tm "
                       f"<{encode_text(word.text).hex()}> Tj")
            if space_px:
                ops.append(f"{_fmt(100.0 * space_px * scale / advance)} Tz <0020> Tj")
    ops.append("ET")
    return ("\n".join(ops) + "\n").encode("ascii")


def _spans(word: Word, following: Word | None, line_px: int) -> tuple[float, float]:
    """Pixel widths of a word's glyphs and of the space after it (0: last word of its line).
    The space is WORD_GAP line heights wide whatever the real gap (at most half the way to the
    next word), and the word's glyphs fill the rest up to the next word: a narrower space let
    pdftotext join touching words ("ở riêng" read as one), a wider one looked like a column
    gutter. A next word not to its right (a misread order) leaves the word in its box."""
    if following is None:
        return word.right - word.left, 0.0
    space = max(WORD_GAP * line_px, 1.0)
    if following.left <= word.left:
        return word.right - word.left, space
    space = min(space, (following.left - word.left) / 2)
    return following.left - word.left - space, space


def group_lines(words: Iterable[tuple[int, Word]]) -> list[Line]:
    """Group ``(line_id, word)`` pairs (as produced by the OCR) into lines, keeping order."""
    lines: dict[int, list[Word]] = {}
    for line_id, word in words:
        if word.text.strip():
            lines.setdefault(line_id, []).append(word)
    return [Line(tuple(ws)) for ws in lines.values() if ws]
