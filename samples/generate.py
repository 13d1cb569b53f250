#!/usr/bin/env python3
"""Deterministic generator of the sample scans in this folder, with their ground truth.

Why generated: real dossiers carry personal data, and a generator gives exact ground truth
for every printed line plus a controlled fault per page (skew, rotation, blur, shadow, seal,
fax, fading). All randomness comes from fixed seeds, so the committed files are byte-identical
to a fresh run on the same machine (``--check`` verifies that).

    python samples/generate.py                       # (re)write the committed samples
    python samples/generate.py --check               # regenerate in memory, compare bytes
    python samples/generate.py --pages 100 --out /tmp/p100.pdf   # image-only PDF for the RSS benchmark
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import unicodedata
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pikepdf
import segno
from PIL import Image, ImageDraw, ImageFont, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parent))
import content as C  # noqa: E402  (sibling module; samples/ is not a package)
from content import CASES, Block, Gap, Line  # noqa: E402

HERE = Path(__file__).resolve().parent
FONT_DIR = Path("/usr/share/fonts/truetype/liberation2")
A4_MM = (210.0, 297.0)
MARGINS_MM = (30.0, 20.0, 20.0, 20.0)  # left, top, right, bottom (Nghị định 30/2020 layout)
LINE_PITCH = 1.28  # x font size: room for stacked Vietnamese marks (Ễ, Ộ)
PAPER = 255

# style -> font file suffix; sizes in points: body 14 pt serif / 13 pt sans as offices print them
FONT_FILES = {"body": "Regular", "italic": "Italic", "bold": "Bold", "title": "Bold", "motto": "Bold"}
FONT_PT = {"serif": {"body": 14, "italic": 14, "bold": 14, "title": 14, "motto": 13},
           "sans": {"body": 13, "italic": 13, "bold": 13, "title": 14, "motto": 13}}


# ---------------------------------------------------------------- layout and rendering

@dataclass(frozen=True)
class Placed:
    """A printed line and its box in page pixels; the ground truth is the list of ``text``."""

    text: str
    box: tuple[int, int, int, int]  # x0, y0, x1, y1
    tag: str = ""


@dataclass(frozen=True)
class Canvas:
    """A4 page geometry at a given resolution."""

    dpi: int

    def px(self, mm: float) -> int:
        return round(mm / 25.4 * self.dpi)

    @property
    def size(self) -> tuple[int, int]:
        return self.px(A4_MM[0]), self.px(A4_MM[1])

    @property
    def text_box(self) -> tuple[int, int, int, int]:
        left, top, right, bottom = (self.px(m) for m in MARGINS_MM)
        width, height = self.size
        return left, top, width - right, height - bottom


def font(family: str, style: str, dpi: int) -> ImageFont.FreeTypeFont:
    name = f"Liberation{'Serif' if family == 'serif' else 'Sans'}-{FONT_FILES[style]}.ttf"
    return ImageFont.truetype(str(FONT_DIR / name), round(FONT_PT[family][style] * dpi / 72))


def wrap(text: str, fnt: ImageFont.FreeTypeFont, first_width: float, width: float) -> list[str]:
    """Greedy word wrap; the first line is narrower by the paragraph indent."""
    lines: list[str] = []
    current = ""
    for word in text.split():
        candidate = f"{current} {word}".strip()
        limit = first_width if not lines else width
        if current and fnt.getlength(candidate) > limit:
            lines.append(current)
            current = word
        else:
            current = candidate
    return lines + [current] if current else lines


def layout(blocks: Sequence[Block], family: str, canvas: Canvas) -> list[tuple[Placed, str]]:
    """Places every line top-down; returns (line, style). Raises if a line overflows the page."""
    x0, y, x1, y_end = canvas.text_box
    width = x1 - x0
    pitch = round(FONT_PT[family]["body"] * canvas.dpi / 72 * LINE_PITCH)
    placed: list[tuple[Placed, str]] = []
    for block in blocks:
        if isinstance(block, Gap):
            y += round(pitch * block.lines)
            continue
        for text, style, indent, align, tag in _block_lines(block, family, canvas, width):
            w = round(font(family, style, canvas.dpi).getlength(text))
            if w > width - indent:
                raise ValueError(f"line too wide: {text!r}")
            x = _align_x(align, x0 + indent, x1, w)
            placed.append((Placed(text, (x, y, x + w, y + pitch), tag), style))
            y += pitch
    if y > y_end:
        raise ValueError(f"page overflows by {y - y_end} px")
    return placed


def _block_lines(block: Block, family: str, canvas: Canvas, width: int) -> list[tuple[str, str, int, str, str]]:
    """(text, style, indent px, align, tag) of each printed line of a block."""
    if isinstance(block, Line):  # a too-long line continues on the next, as a word processor does
        pieces = wrap(block.text, font(family, block.style, canvas.dpi), width, width)
        return [(t, block.style, 0, block.align, block.tag) for t in pieces]
    indent = canvas.px(block.indent_mm)
    wrapped = wrap(block.text, font(family, "body", canvas.dpi), width - indent, width)
    return [(t, "body", indent if i == 0 else 0, "left", "") for i, t in enumerate(wrapped)]


def _align_x(align: str, left: int, right: int, w: int) -> int:
    if align == "centre":
        return (left + right - w) // 2
    if align == "right":
        return right - w
    if align == "sign":
        return (left + right) // 2 + ((right - left) // 2 - w) // 2
    return left


def render(blocks: Sequence[Block], family: str, dpi: int) -> tuple[np.ndarray, list[Placed]]:
    """Black text on white A4 at ``dpi``; returns the grey image and the placed lines."""
    canvas = Canvas(dpi)
    image = Image.new("L", canvas.size, PAPER)
    draw = ImageDraw.Draw(image)
    placed = layout(blocks, family, canvas)
    for line, style in placed:
        fnt = font(family, style, dpi)
        ascent, descent = fnt.getmetrics()
        x, y0, _, y1 = line.box
        baseline = y0 + (y1 - y0 + ascent - descent) // 2
        draw.text((x, baseline), line.text, font=fnt, fill=0, anchor="ls")
    return np.asarray(image).copy(), [p for p, _ in placed]


# ---------------------------------------------------------------- faults

@dataclass(frozen=True)
class Ctx:
    """What a fault may look at besides the pixels."""

    dpi: int
    placed: list[Placed]
    rng: np.random.Generator


@dataclass(frozen=True)
class Fault:
    """A scan defect; ``apply`` returns a new image (grey HxW or RGB HxWx3 uint8)."""

    def apply(self, img: np.ndarray, ctx: Ctx) -> np.ndarray:
        raise NotImplementedError

    @property
    def label(self) -> str:
        return type(self).__name__.lower()


def _paper_value(img: np.ndarray) -> tuple[int, ...]:
    """Colour of the top-left corner, used to fill areas uncovered by rotation."""
    return tuple(int(v) for v in np.atleast_1d(img[2, 2]))


@dataclass(frozen=True)
class Skew(Fault):
    """Rotate by ``degrees`` counter-clockwise on the same canvas, as a crooked sheet on a flatbed."""

    degrees: float

    def apply(self, img, ctx):
        h, w = img.shape[:2]
        matrix = cv2.getRotationMatrix2D(_text_centre(ctx.placed), self.degrees, 1.0)
        _check_inside(ctx.placed, matrix, w, h)
        return cv2.warpAffine(img, matrix, (w, h), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=_paper_value(img))

    @property
    def label(self):
        return f"skew{self.degrees:+g}"


def _text_centre(placed: list[Placed]) -> tuple[float, float]:
    """Turning about the printed block (not the sheet) keeps a steep skew on the canvas."""
    boxes = np.array([p.box for p in placed], np.float64)
    return (boxes[:, 0].min() + boxes[:, 2].max()) / 2, (boxes[:, 1].min() + boxes[:, 3].max()) / 2


def _check_inside(placed: list[Placed], matrix: np.ndarray, w: int, h: int) -> None:
    """The ground truth stays true only if no printed line is rotated off the canvas."""
    corners = np.array([[x, y, 1.0] for p in placed for x in p.box[::2] for y in p.box[1::2]])
    moved = corners @ matrix.T
    if moved.min() < 0 or moved[:, 0].max() >= w or moved[:, 1].max() >= h:
        raise ValueError("skew pushes text off the page")


@dataclass(frozen=True)
class Turn(Fault):
    """Sheet fed sideways or upside down: content turned ``degrees`` clockwise (90/180/270)."""

    degrees: int

    def apply(self, img, ctx):
        return np.ascontiguousarray(np.rot90(img, k=-self.degrees // 90))

    @property
    def label(self):
        return f"turned{self.degrees}"


@dataclass(frozen=True)
class Noise(Fault):
    """Sensor grain (Gaussian, ``sigma``) plus salt-and-pepper on ``speckle`` of the pixels."""

    sigma: float = 2.0
    speckle: float = 0.002

    def apply(self, img, ctx):
        grain = ctx.rng.normal(0.0, self.sigma, img.shape[:2]).astype(np.float32)
        noisy = img.astype(np.float32) + (grain[..., None] if img.ndim == 3 else grain)  # same grain on R, G, B
        out = np.clip(noisy, 0, 255).astype(np.uint8)
        return _speckle(out, ctx.rng, self.speckle)


def _speckle(img: np.ndarray, rng: np.random.Generator, fraction: float) -> np.ndarray:
    """Salt-and-pepper: dust and toner dots, in 1-3 px specks as photocopiers leave them."""
    out = img.copy()
    h, w = img.shape[:2]
    count = int(h * w * fraction / 4)
    ys, xs = rng.integers(0, h - 3, count), rng.integers(0, w - 3, count)
    sizes, dark = rng.integers(1, 4, count), rng.random(count) < 0.7
    for y, x, s, d in zip(ys, xs, sizes, dark):
        out[y:y + s, x:x + s] = 20 if d else 250
    return out


@dataclass(frozen=True)
class Blur(Fault):
    """Out-of-focus or cheap phone capture."""

    sigma: float = 1.2

    def apply(self, img, ctx):
        return cv2.GaussianBlur(img, (0, 0), self.sigma)


@dataclass(frozen=True)
class Shadow(Fault):
    """Photocopy of a bound dossier: dark band fading in from the spine edge, grey cast, toner specks."""

    band: float = 0.16  # fraction of the width
    darkness: float = 0.75

    def apply(self, img, ctx):
        h, w = img.shape[:2]
        x = np.arange(w, dtype=np.float32) / (w * self.band)
        ramp = 1.0 - self.darkness * np.exp(-x * 2.5)  # darkest at the left edge
        wobble = 1.0 + 0.04 * np.sin(np.arange(h, dtype=np.float32) / h * 7.0)[:, None]
        shaded = img.astype(np.float32) * 0.93 * np.clip(ramp[None, :] * wobble, 0, 1)
        return _speckle(shaded.astype(np.uint8), ctx.rng, 0.004)


@dataclass(frozen=True)
class Paper(Fault):
    """Coloured paper: grey ink on a tinted sheet, giving an RGB image."""

    rgb: tuple[int, int, int] = (250, 240, 196)  # yellowish; pink is (250, 222, 228)

    def apply(self, img, ctx):
        tint = np.array(self.rgb, np.float32) / 255.0
        return (img.astype(np.float32)[..., None] * tint).astype(np.uint8)

    @property
    def label(self):
        return "pink-paper" if self.rgb[1] < self.rgb[2] else "yellow-paper"


def _signer_box(ctx: Ctx) -> tuple[int, int, int, int]:
    return next(p.box for p in ctx.placed if p.tag == "signer")


def _multiply(img: np.ndarray, layer: np.ndarray) -> np.ndarray:
    """Ink over ink as on paper: the darker wins per channel (seal stamped over print)."""
    return (img.astype(np.float32) * layer.astype(np.float32) / 255.0).astype(np.uint8)


@dataclass(frozen=True)
class Signature(Fault):
    """Blue ballpoint scrawl above the signer's name."""

    def apply(self, img, ctx):
        x0, y0, x1, _ = _signer_box(ctx)
        t = np.linspace(0, 1, 400)
        span, height = (x1 - x0) * 1.1, ctx.dpi * 0.28
        xs = x0 - 0.05 * span + span * t + 0.04 * span * np.sin(t * 31)
        ys = y0 - height * 1.2 + height * (0.55 * np.sin(t * 17) + 0.3 * np.sin(t * 5 + 1) - 0.6 * t)
        layer = np.full(img.shape, 255, np.uint8)
        points = np.stack([xs, ys], 1).round().astype(np.int32)
        cv2.polylines(layer, [points], False, (40, 60, 170), max(2, ctx.dpi // 100), cv2.LINE_AA)
        return _multiply(img, layer)


SEAL_RED = (205, 40, 45)


@dataclass(frozen=True)
class Seal(Fault):
    """Red round seal over the left part of the signature, covering printed text as real ones do."""

    def apply(self, img, ctx):
        x0, y0, x1, y1 = _signer_box(ctx)
        radius = round(ctx.dpi * 0.7)  # ~36 mm seal
        centre = (x0 - radius // 6, (y0 + y1) // 2 - radius // 2)
        layer = np.full(img.shape, 255, np.uint8)
        thick = max(2, ctx.dpi // 60)
        cv2.circle(layer, centre, radius, SEAL_RED, thick * 2, cv2.LINE_AA)
        cv2.circle(layer, centre, int(radius * 0.72), SEAL_RED, thick, cv2.LINE_AA)
        _star(layer, centre, int(radius * 0.3))
        _ring_text(layer, "ỦY BAN NHÂN DÂN * HUYỆN MỸ XUYÊN * SÓC TRĂNG *", centre, int(radius * 0.86), ctx.dpi)
        faded = 255 - ((255 - layer.astype(np.float32)) * 0.85).astype(np.uint8)
        return _multiply(img, faded)


def _star(layer: np.ndarray, centre: tuple[int, int], r: int) -> None:
    angles = np.pi / 2 + np.arange(10) * np.pi / 5
    radii = np.where(np.arange(10) % 2 == 0, r, r * 0.4)
    pts = np.stack([centre[0] + radii * np.cos(angles), centre[1] - radii * np.sin(angles)], 1)
    cv2.fillPoly(layer, [pts.round().astype(np.int32)], SEAL_RED, cv2.LINE_AA)


def _ring_text(layer: np.ndarray, text: str, centre: tuple[int, int], r: int, dpi: int) -> None:
    """Letters around the seal's rim, each glyph rotated to face outwards."""
    fnt = ImageFont.truetype(str(FONT_DIR / "LiberationSans-Bold.ttf"), round(9 * dpi / 72))
    step = 2 * np.pi / len(text)
    for i, ch in enumerate(text):
        angle = np.pi / 2 - i * step  # clockwise from the top
        glyph = Image.new("L", (fnt.size * 2, fnt.size * 2), 0)
        ImageDraw.Draw(glyph).text((fnt.size, fnt.size), ch, font=fnt, fill=255, anchor="mm")
        glyph = glyph.rotate(np.degrees(angle - np.pi / 2), resample=Image.BILINEAR)
        mask = np.asarray(glyph) > 100
        gx = int(centre[0] + r * np.cos(angle)) - fnt.size
        gy = int(centre[1] - r * np.sin(angle)) - fnt.size
        region = layer[gy:gy + mask.shape[0], gx:gx + mask.shape[1]]
        region[mask[:region.shape[0], :region.shape[1]]] = SEAL_RED


@dataclass(frozen=True)
class Fade(Fault):
    """Light, washed-out photocopy: ink only reaches ``ink`` grey, paper goes slightly grey."""

    ink: int = 150
    paper: int = 238

    def apply(self, img, ctx):
        scaled = self.ink + img.astype(np.float32) * (self.paper - self.ink) / 255.0
        return _speckle(scaled.astype(np.uint8), ctx.rng, 0.0005)


@dataclass(frozen=True)
class Fax(Fault):
    """Fax standard mode: halve the vertical resolution, then threshold to pure black/white."""

    def apply(self, img, ctx):
        h, w = img.shape[:2]
        squashed = cv2.resize(img, (w, h // 2), interpolation=cv2.INTER_AREA)
        noisy = squashed.astype(np.float32) + ctx.rng.normal(0, 30, squashed.shape)
        return np.where(noisy > 140, 255, 0).astype(np.uint8)


@dataclass(frozen=True)
class Bilevel(Fault):
    """Scanner in black-and-white mode."""

    threshold: int = 150

    def apply(self, img, ctx):
        return np.where(img > self.threshold, 255, 0).astype(np.uint8)


@dataclass(frozen=True)
class QrCode(Fault):
    """Receipt QR code with the case ID, bottom left (signatures sit right)."""

    payload: str

    def apply(self, img, ctx):
        matrix = np.array(segno.make(self.payload, error="m", micro=False).matrix, np.uint8)
        module = max(2, round(ctx.dpi / 300 * 9))
        code = np.kron(np.pad(1 - matrix, 4, constant_values=1), np.ones((module, module), np.uint8)) * 255
        left, _, _, bottom = Canvas(ctx.dpi).text_box
        top = bottom - code.shape[0]
        if any(p.box[1] < bottom and p.box[3] > top and p.box[0] < left + code.shape[1] for p in ctx.placed):
            raise ValueError("QR code would cover text")
        out = img.copy()
        out[top:bottom, left:left + code.shape[1]] = code
        return out

    @property
    def label(self):
        return "qr"


# ---------------------------------------------------------------- pages and samples

@dataclass(frozen=True)
class PageSpec:
    """One page: which document, typeface, resolution and what goes wrong with it."""

    doc: Callable[[], list[Block]]
    family: str = "serif"
    dpi: int = 300
    faults: tuple[Fault, ...] = ()
    pdf_rotate: int = 0  # /Rotate of the PDF page (only for PDF outputs)

    @property
    def orientation(self) -> int:
        """Degrees clockwise the page must be turned to be upright, as a viewer displays it."""
        turned = sum(f.degrees for f in self.faults if isinstance(f, Turn)) + self.pdf_rotate
        return (360 - turned) % 360

    @property
    def skew(self) -> float:
        return float(sum(f.degrees for f in self.faults if isinstance(f, Skew)))

    @property
    def fault_labels(self) -> list[str]:
        return [f.label for f in self.faults] or ["clean"]


@dataclass
class RenderedPage:
    """Pixels of a finished page plus what the ground truth and samples.json need."""

    spec: PageSpec
    pixels: np.ndarray
    lines: list[str]
    dpi: tuple[int, int]

    @property
    def colour(self) -> str:
        if self.pixels.ndim == 3:
            return "colour"
        return "bilevel" if np.isin(self.pixels, (0, 255)).all() else "grey"


Encoder = Callable[[list[RenderedPage]], bytes]


@dataclass(frozen=True)
class Sample:
    """One committed file: its pages, how they are encoded, and the dossier they belong to."""

    name: str
    fault: str
    case_id: str
    pages: tuple[PageSpec, ...]
    encode: Encoder
    encoding: str
    maintenance: str = "Vĩnh viễn"
    rights: str = "Hạn chế"


def seed_for(name: str, index: int) -> int:
    """Stable per-page seed, independent of the order samples are generated in."""
    return zlib.crc32(f"{name}#{index}".encode())


def render_page(spec: PageSpec, seed: int) -> RenderedPage:
    pixels, placed = render(spec.doc(), spec.family, spec.dpi)
    ctx = Ctx(spec.dpi, placed, np.random.default_rng(seed))
    for fault in spec.faults:
        pixels = fault.apply(pixels, ctx)
    dpi = (spec.dpi, spec.dpi // 2) if any(isinstance(f, Fax) for f in spec.faults) else (spec.dpi, spec.dpi)
    lines = [unicodedata.normalize("NFC", p.text) for p in placed]
    return RenderedPage(spec, pixels, lines, dpi)


def render_sample(sample: Sample) -> list[RenderedPage]:
    return [render_page(spec, seed_for(sample.name, i)) for i, spec in enumerate(sample.pages)]


# ---------------------------------------------------------------- encoders

def _pil(page: RenderedPage) -> Image.Image:
    image = Image.fromarray(page.pixels)
    return image.convert("1") if page.colour == "bilevel" else image


def _save(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def jpeg(quality: int = 80) -> Encoder:
    def encode(pages: list[RenderedPage]) -> bytes:
        (page,) = pages
        return _save(_pil(page), "JPEG", quality=quality, dpi=page.dpi, optimize=True)
    return encode


def png(mode: str = "") -> Encoder:
    """``mode``: "" as is, "P" 16-grey palette, "I;16" 16-bit grey, "LA" ink on transparent paper."""
    def encode(pages: list[RenderedPage]) -> bytes:
        (page,) = pages
        return _save(_png_image(page, mode), "PNG", dpi=page.dpi, optimize=mode != "I;16")
    return encode


def _png_image(page: RenderedPage, mode: str) -> Image.Image:
    grey = page.pixels
    if mode == "P":
        return Image.fromarray(grey).quantize(16, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    if mode == "I;16":
        return Image.fromarray(grey.astype(np.uint16) * 257)
    if mode == "LA":
        return Image.fromarray(np.stack([np.zeros_like(grey), 255 - grey], -1), "LA")
    return Image.fromarray(grey)


def tiff(compression: str) -> Encoder:
    def encode(pages: list[RenderedPage]) -> bytes:
        images = [_pil(p) for p in pages]
        return _save(images[0], "TIFF", compression=compression, dpi=pages[0].dpi,
                     save_all=True, append_images=images[1:])
    return encode


@dataclass(frozen=True)
class PdfImage:
    """An already-encoded image stream ready to place on a PDF page."""

    data: bytes
    filter: str
    colour_space: str
    bits: int
    width: int
    height: int
    dpi: tuple[int, int]
    decode_parms: dict = field(default_factory=dict)


def pdf_image(page: RenderedPage, quality: int = 80) -> PdfImage:
    """JPEG (DCTDecode) for grey/colour, CCITT G4 for bilevel: what scanners put in PDFs."""
    h, w = page.pixels.shape[:2]
    if page.colour == "bilevel":
        parms = {"/K": -1, "/Columns": w, "/Rows": h, "/BlackIs1": False}
        return PdfImage(_g4_strip(_pil(page)), "/CCITTFaxDecode", "/DeviceGray", 1, w, h, page.dpi, parms)
    space = "/DeviceRGB" if page.colour == "colour" else "/DeviceGray"
    data = _save(_pil(page), "JPEG", quality=quality, optimize=True)
    return PdfImage(data, "/DCTDecode", space, 8, w, h, page.dpi)


def _g4_strip(image: Image.Image) -> bytes:
    """G4 data of a one-strip TIFF: exactly what a PDF CCITTFaxDecode stream holds.

    libtiff codes 0 bits as white runs whatever the photometric tag says, so ink (0 in Pillow's
    mode "1") is inverted first to come out as black runs, as /BlackIs1 false expects.
    """
    inverted = ImageOps.invert(image.convert("L")).convert("1")
    raw = _save(inverted, "TIFF", compression="group4", tiffinfo={278: image.height})
    tif = Image.open(io.BytesIO(raw))
    (offset,), (count,) = tif.tag_v2[273], tif.tag_v2[279]
    return raw[offset:offset + count]


def build_pdf(images: Sequence[PdfImage], rotations: Sequence[int]) -> bytes:
    """Image-only PDF, one full-page image per page, no text, deterministic bytes."""
    pdf = pikepdf.new()
    for image, rotate in zip(images, rotations):
        stream = pikepdf.Stream(pdf, b"")
        stream.write(image.data, filter=pikepdf.Name(image.filter),
                     decode_parms=pikepdf.Dictionary(image.decode_parms) if image.decode_parms else None)
        stream.Type, stream.Subtype = pikepdf.Name.XObject, pikepdf.Name.Image
        stream.Width, stream.Height, stream.BitsPerComponent = image.width, image.height, image.bits
        stream.ColorSpace = pikepdf.Name(image.colour_space)
        w_pt = round(image.width * 72 / image.dpi[0], 2)
        h_pt = round(image.height * 72 / image.dpi[1], 2)
        page = pikepdf.Dictionary(
            Type=pikepdf.Name.Page, MediaBox=[0, 0, w_pt, h_pt],
            Resources=pikepdf.Dictionary(XObject=pikepdf.Dictionary(Im0=stream)),
            Contents=pdf.make_stream(f"q {w_pt} 0 0 {h_pt} 0 0 cm /Im0 Do Q".encode()))
        if rotate:
            page.Rotate = rotate
        pdf.pages.append(pikepdf.Page(page))
    out = io.BytesIO()
    pdf.save(out, deterministic_id=True)
    return out.getvalue()


def pdf() -> Encoder:
    def encode(pages: list[RenderedPage]) -> bytes:
        return build_pdf([pdf_image(p) for p in pages], [p.spec.pdf_rotate for p in pages])
    return encode


# ---------------------------------------------------------------- the sample set

NOISE = Noise(2.0, 0.002)
YELLOW, PINK = Paper((250, 240, 196)), Paper((250, 222, 228))
CASE_0027, CASE_0031, CASE_0044 = (c.case_id for c in CASES)
CASE_0049, CASE_0052 = "000.00.31.H56-241104-0049", "000.00.31.H56-241107-0052"

SAMPLES: tuple[Sample, ...] = (
    Sample("01_clean.png", "clean", CASE_0027, (PageSpec(C.land_change_application),), png(), "png-grey"),
    Sample("02_skew_plus7.jpg", "skew +7° with noise", CASE_0031,
           (PageSpec(C.birth_declaration, "sans", faults=(Skew(7.0), NOISE)),), jpeg(), "jpeg-grey"),
    Sample("03_skew_minus12.png", "skew -12° with speckles, 16-bit PNG", CASE_0044,
           (PageSpec(C.building_permit_application, faults=(Skew(-12.0), Noise(0.0, 0.003))),),
           png("I;16"), "png-grey16"),
    Sample("04_rotated_90.jpg", "rotated 90°", CASE_0027,
           (PageSpec(C.registration_fee_declaration, faults=(Turn(90), Noise(2.0, 0.0005))),), jpeg(), "jpeg-grey"),
    Sample("05_upside_down.png", "upside down (180°), palette PNG", CASE_0027,
           (PageSpec(C.power_of_attorney, "sans", faults=(Turn(180),)),), png("P"), "png-palette"),
    Sample("06_lowdpi_blur.jpg", "150 dpi, blurred, JPEG q60", CASE_0027,
           (PageSpec(C.transfer_contract, dpi=150, faults=(Blur(0.9), Noise(3.0, 0.0))),), jpeg(60), "jpeg-grey"),
    Sample("07_photocopy_shadow.jpg", "photocopy shadow + speckles", CASE_0027,
           (PageSpec(C.site_inspection_record, faults=(Shadow(), Noise(0.0, 0.003))),), jpeg(), "jpeg-grey"),
    Sample("08_colour_seal.jpg", "yellow paper, red seal over text, blue signature", CASE_0027,
           (PageSpec(C.land_use_decision, faults=(YELLOW, Signature(), Seal(), Noise(2.0, 0.0))),),
           jpeg(), "jpeg-colour", rights="Công khai"),
    Sample("09_transparent.png", "transparent background (grey + alpha PNG)", CASE_0052,
           (PageSpec(C.data_request_form, "sans"),), png("LA"), "png-alpha", "20 năm"),
    Sample("10_fax_g4.tif", "fax: bilevel 200x100 dpi, G4, 2 pages", CASE_0049,
           (PageSpec(C.citizen_feedback_letter, dpi=200, faults=(Fax(),)),
            PageSpec(C.residence_change_declaration, "sans", dpi=200, faults=(Fax(),))),
           tiff("group4"), "tiff-g4"),
    Sample("11_faded_lzw.tif", "faded light-grey photocopy; LZW, 2 pages", CASE_0044,
           (PageSpec(C.building_permit_application, "sans", faults=(Fade(),)),
            PageSpec(C.land_use_decision, "sans")), tiff("tiff_lzw"), "tiff-lzw"),
    Sample("12_receipt_qr.pdf", "receipt with QR, skew +2.5° with noise; PDF with JPEG", CASE_0027,
           (PageSpec(lambda: C.receipt(CASES[0]), faults=(QrCode(CASE_0027), Skew(2.5), NOISE)),),
           pdf(), "pdf-dct"),
    Sample("13_pdf_rotate90.pdf", "PDF page /Rotate 90 over a sideways G4 image", CASE_0027,
           (PageSpec(C.transfer_contract, "sans", faults=(Turn(270), Bilevel()), pdf_rotate=90),),
           pdf(), "pdf-g4"),
    Sample("14_stack.pdf", "scanned stack: two dossiers, each led by a QR receipt; 5 pages", CASE_0031,
           (PageSpec(lambda: C.receipt(CASES[1]), faults=(QrCode(CASE_0031), Skew(-1.5), NOISE)),
            PageSpec(C.birth_declaration, faults=(Noise(2.0, 0.001),)),
            PageSpec(C.residence_change_declaration, faults=(PINK, Signature(), Noise(2.0, 0.0))),
            PageSpec(lambda: C.receipt(CASES[2]), faults=(QrCode(CASE_0044), Skew(1.0), Bilevel())),
            PageSpec(C.building_permit_application, "sans", faults=(Bilevel(),))),
           pdf(), "pdf-dct+g4", "20 năm"),
)

PROCEDURE_OF = {**{c.case_id: c.procedure_code for c in CASES},
                CASE_0049: "1.004227.000.00.00.H56", CASE_0052: "1.004269.000.00.00.H56"}
ORGAN_ID = "000.00.31.H56"
MANIFEST_COLUMNS = ("path", "case_id", "procedure_code", "title", "organ_id", "file_catalog",
                    "file_notation", "maintenance", "rights")
CONVENTIONS = {
    "orientation": "degrees clockwise the page must be turned to be upright, as a viewer displays it",
    "skew": "degrees the text lines are rotated counter-clockwise (positive = rising to the right)",
    "dpi": "[horizontal, vertical] pixels per inch stored in the file",
    "truth": "UTF-8 NFC, one line per printed line, pages separated by form feed",
    "manifest paths": "relative to this folder",
}


# ---------------------------------------------------------------- outputs

def truth_text(pages: Sequence[RenderedPage]) -> str:
    """One line per printed line, pages separated by a form feed (like ``digitize --sidecar``)."""
    return "\f".join("\n".join(p.lines) + "\n" for p in pages)


def truth_name(sample_name: str) -> str:
    return f"truth/{Path(sample_name).stem}.txt"


def page_record(page: RenderedPage) -> dict:
    h, w = page.pixels.shape[:2]
    spec = page.spec
    return {"faults": spec.fault_labels, "font": spec.family, "dpi": list(page.dpi), "colour": page.colour,
            "width_px": w, "height_px": h, "orientation": spec.orientation, "skew": spec.skew,
            "pdf_rotate": spec.pdf_rotate, "lines": len(page.lines)}


def sample_record(sample: Sample, pages: Sequence[RenderedPage]) -> dict:
    return {"name": sample.name, "fault": sample.fault, "encoding": sample.encoding,
            "case_id": sample.case_id, "truth": truth_name(sample.name), "page_count": len(pages),
            "pages": [page_record(p) for p in pages]}


def title_of(sample: Sample) -> str:
    """The document title as printed (title-style lines of the first page)."""
    return " ".join(b.text for b in sample.pages[0].doc() if isinstance(b, Line) and b.style == "title")


def manifest_row(sample: Sample) -> dict[str, str]:
    seq = sample.case_id.rsplit("-", 1)[1]
    return {"path": sample.name, "case_id": sample.case_id, "procedure_code": PROCEDURE_OF[sample.case_id],
            "title": title_of(sample), "organ_id": ORGAN_ID, "file_catalog": "01",
            "file_notation": f"{seq}/2024/HS", "maintenance": sample.maintenance, "rights": sample.rights}


def manifest_csv(rows: list[dict[str, str]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, MANIFEST_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue().encode()


def sample_files(sample: Sample) -> tuple[dict[str, bytes], list[RenderedPage]]:
    """The encoded file and its ground truth, keyed by path relative to samples/."""
    pages = render_sample(sample)
    return {sample.name: sample.encode(pages), truth_name(sample.name): truth_text(pages).encode()}, pages


def build_all() -> dict[str, bytes]:
    """Every committed output, in memory."""
    files: dict[str, bytes] = {}
    records = []
    for sample in SAMPLES:
        produced, pages = sample_files(sample)
        files.update(produced)
        records.append(sample_record(sample, pages))
    index = {"generator": "samples/generate.py", "conventions": CONVENTIONS, "samples": records}
    files["samples.json"] = (json.dumps(index, ensure_ascii=False, indent=1) + "\n").encode()
    files["manifest.csv"] = manifest_csv([manifest_row(s) for s in SAMPLES])
    return files


def differences(files: dict[str, bytes], root: Path) -> list[str]:
    """Paths whose bytes on disk differ from (or are missing against) a fresh generation."""
    return [name for name, data in files.items()
            if not (root / name).is_file() or (root / name).read_bytes() != data]


def bench_pdf(pages: int) -> bytes:
    """N-page image-only PDF (300 dpi grey JPEG pages cycling over three documents) for RSS tests."""
    specs = [PageSpec(C.land_change_application, faults=(Noise(2.0, 0.001),)),
             PageSpec(C.transfer_contract, "sans", faults=(Skew(2.0), Noise(2.0, 0.001))),
             PageSpec(C.site_inspection_record, faults=(Noise(2.0, 0.001),))]
    images = [pdf_image(render_page(s, seed_for("bench", i))) for i, s in enumerate(specs)]
    return build_pdf([images[i % len(images)] for i in range(pages)], [0] * pages)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="regenerate and compare with the files on disk")
    parser.add_argument("--pages", type=int, help="write an N-page image-only PDF to --out instead")
    parser.add_argument("--out", type=Path, help="output folder (default: this folder) or PDF with --pages")
    args = parser.parse_args(argv)
    if args.pages:
        if not args.out:
            parser.error("--pages needs --out FILE.pdf")
        args.out.write_bytes(bench_pdf(args.pages))
        return 0
    root = args.out or HERE
    files = build_all()
    if args.check:
        changed = differences(files, root)
        for name in changed:
            print(f"differs: {name}", file=sys.stderr)
        print(f"{len(files) - len(changed)}/{len(files)} files identical")
        return 1 if changed else 0
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    print(f"wrote {len(files)} files ({sum(map(len, files.values())) / 1e6:.1f} MB) to {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
