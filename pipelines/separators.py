"""Separator sheets: splitting one scan of a stack into its dossiers, and printing the sheets.

A separator is a page whose QR code reads ``DIGITIZE-SEP`` (plain) or ``DIGITIZE-SEP:<case-id>``.
It ends the document before it, starts the next one, and is itself dropped, so each part's page
count equals the physical pages of that dossier. Planning is a pure function of the codes found.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import segno
from PIL import Image, ImageDraw, ImageFont

from digitize.fsutil import atomic_path

PREFIX = "DIGITIZE-SEP"


@dataclass(frozen=True)
class Separator:
    case_id: str | None  # the dossier that follows, when the sheet names it


@dataclass(frozen=True)
class Part:
    """One document of a scan: 0-based input pages, in order."""

    pages: tuple[int, ...]
    case_id: str | None = None  # from the separator sheet in front of it
    whole: bool = False  # the file had no separators: store it as one document

    @property
    def source_pages(self) -> str:
        """The archive's label for a split part: "" for a whole file, else 1-based "3-7" (or "3")."""
        if self.whole:
            return ""
        first, last = self.pages[0] + 1, self.pages[-1] + 1
        return str(first) if first == last else f"{first}-{last}"


def separator_payload(case_id: str | None) -> str:
    return f"{PREFIX}:{case_id}" if case_id else PREFIX


def parse_separator(codes: Sequence[str]) -> Separator | None:
    """The separator among a page's code texts, or None when the page is an ordinary page."""
    for text in codes:
        head, _, tail = text.strip().partition(":")
        if head.strip().upper() == PREFIX:
            return Separator(tail.strip() or None)
    return None


def plan_parts(separators: Sequence[Separator | None]) -> list[Part]:
    """Split pages at separators (one entry per page); empty parts (two sheets in a row) vanish."""
    if not any(separators):
        return [Part(tuple(range(len(separators))), whole=True)]
    parts: list[Part] = []
    current: list[int] = []
    case_id: str | None = None
    for index, sep in enumerate(separators):
        if sep is None:
            current.append(index)
            continue
        if current:
            parts.append(Part(tuple(current), case_id))
        current, case_id = [], sep.case_id
    if current:
        parts.append(Part(tuple(current), case_id))
    return parts


# --- the printable sheet -------------------------------------------------------------------------

SHEET_DPI = 150
A4_MM = (210, 297)
# Fonts with Vietnamese glyphs (fonts-dejavu-core, fonts-liberation2 are installed by setup.sh).
FONT_CANDIDATES = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans{bold}.ttf",
    "/usr/share/fonts/truetype/liberation2/LiberationSans{bold}.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans{bold}.ttf",
)
INSTRUCTIONS = (
    "TỜ PHÂN CÁCH HỒ SƠ",
    "Đặt tờ này ngay TRƯỚC trang đầu của hồ sơ khi quét chung nhiều hồ sơ.",
    "Trang này tự động bị loại bỏ; các trang sau nó (đến tờ phân cách kế tiếp)",
    "được lưu thành một văn bản của hồ sơ có mã ở trên.",
    "Không gấp, không ghi đè, không đóng dấu lên mã QR.",
    "Separator sheet: put it in front of a dossier in a stack scan; this page is removed.",
)


def _font(size: int, bold: bool = True) -> ImageFont.ImageFont:
    for pattern in FONT_CANDIDATES:
        candidate = pattern.format(bold="-Bold" if bold else "")
        if Path(candidate).is_file():
            return ImageFont.truetype(candidate, size)
    return ImageFont.load_default(size)


def _mm(mm: float) -> int:
    return round(mm / 25.4 * SHEET_DPI)


def render_sheet(case_id: str | None) -> Image.Image:
    """An A4 page: a large QR code (found even at a quick, downscaled look), the ID in big type, instructions."""
    width, height = _mm(A4_MM[0]), _mm(A4_MM[1])
    page = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(page)
    qr_png = io.BytesIO()
    segno.make(separator_payload(case_id), error="h", micro=False).save(qr_png, kind="png", scale=1, border=4)
    qr = Image.open(io.BytesIO(qr_png.getvalue())).convert("L")
    side = _mm(90)
    qr = qr.resize((side, side), Image.NEAREST)
    page.paste(qr, ((width - side) // 2, _mm(45)))
    draw.text((width // 2, _mm(20)), INSTRUCTIONS[0], font=_font(64), fill=0, anchor="mt")
    label = case_id or "(không có mã hồ sơ / no case ID)"
    y = _mm(45) + side + _mm(12)
    draw.text((width // 2, y), label, font=_font(64 if case_id else 40), fill=0, anchor="mt")
    y += _mm(25)
    for line in INSTRUCTIONS[1:]:
        draw.text((_mm(15), y), line, font=_font(22, bold=False), fill=0)
        y += _mm(7)
    return page


def write_sheet(case_id: str | None, output: Path) -> None:
    """Write the sheet as a one-page PDF, atomically."""
    with atomic_path(output, suffix=".pdf") as tmp:
        render_sheet(case_id).save(tmp, format="PDF", resolution=SHEET_DPI)
