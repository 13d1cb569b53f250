#!/usr/bin/env python3
"""Held-out hard pages for issue 13: one file per fault, seeded, with exact ground truth.

Own texts (texts.py) set in GNU FreeFont (FreeSerif, FreeSans, FreeMono: Debian
fonts-freefont-ttf), neither the Liberation fonts of samples/ nor the DejaVu fonts of the tests'
page generators, so nothing here was seen while the conversion was tuned. Every file is one
input page (a spread: one image of two pages); the bench runs one `digitize run` per file.

    .venv/bin/python samples/hard/make_samples.py           # rewrite the files here
    .venv/bin/python samples/hard/make_samples.py --check   # regenerate in memory, exit 1 if any byte differs
"""

from __future__ import annotations

import argparse
import io
import json
import struct
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import pikepdf
from PIL import Image, ImageDraw, ImageFont

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))
import texts as T  # noqa: E402
from generate import _g4_strip, _star  # noqa: E402  (samples/generate.py: G4 strip, seal star)

FONT_DIR = Path("/usr/share/fonts/truetype/freefont")
FONTS = {("serif", False): "FreeSerif.ttf", ("serif", True): "FreeSerifBold.ttf",
         ("sans", False): "FreeSans.ttf", ("sans", True): "FreeSansBold.ttf",
         ("mono", False): "FreeMono.ttf", ("mono", True): "FreeMonoBold.ttf"}
A4 = (210.0, 297.0)


# ---------------------------------------------------------------- typesetting

@dataclass(frozen=True)
class Layout:
    family: str = "serif"
    pt: float = 13.0
    dpi: int = 200
    size_mm: tuple[float, float] = A4
    margins_mm: tuple[float, float, float, float] = (28.0, 22.0, 18.0, 20.0)  # left, top, right, bottom
    ruled: bool = False  # table rows get a grid
    typewriter: bool = False  # one strike per character: uneven darkness and height


def font(family: str, bold: bool, px: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(FONT_DIR / FONTS[family, bold]), px)


def mm(value: float, dpi: int) -> int:
    return round(value / 25.4 * dpi)


def wrap(text: str, fnt: ImageFont.FreeTypeFont, width: float, indent: float) -> list[str]:
    lines, current = [], ""
    for word in text.split():
        trial = f"{current} {word}".strip()
        if current and fnt.getlength(trial) > width - (indent if not lines else 0):
            lines.append(current)
            current = word
        else:
            current = trial
    return lines + [current] if current else lines


def typeset(doc: T.Doc, lay: Layout, rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
    """Ink coverage (float 0..1, H x W) of the document and its printed lines (the truth)."""
    w, h = mm(lay.size_mm[0], lay.dpi), mm(lay.size_mm[1], lay.dpi)
    left, top, right = mm(lay.margins_mm[0], lay.dpi), mm(lay.margins_mm[1], lay.dpi), w - mm(lay.margins_mm[2], lay.dpi)
    px = round(lay.pt * lay.dpi / 72)
    regular, bold = font(lay.family, False, px), font(lay.family, True, px)
    pitch = round(px * 1.5)
    ink = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(ink)
    y, truth, index = top + px, [], 0

    def put(x: float, text: str, fnt: ImageFont.FreeTypeFont, at: int | None = None) -> None:
        y0 = y if at is None else at
        if not lay.typewriter:
            draw.text((x, y0), text, font=fnt, fill=255, anchor="ls")
            return
        for ch in text:  # a monospaced strike per letter: its own force and height
            if not ch.isspace():
                fill = int(255 * rng.uniform(0.55, 1.0))
                draw.text((x, y0 + rng.normal(0, px * 0.03)), ch, font=fnt, fill=fill, anchor="ls")
            x += fnt.getlength(ch)

    while index < len(doc):
        style, text = doc[index]
        if style == "row":
            rows = []
            while index < len(doc) and doc[index][0] == "row":
                rows.append([c.strip() for c in doc[index][1].split("|")])
                index += 1
            y = table(draw, rows, regular, left, right, y, pitch, lay, put)
            truth += [" ".join(r) for r in rows]
            continue
        index += 1
        if style == "title":
            y += pitch // 2
            put((left + right - bold.getlength(text)) / 2, text, bold)
            truth.append(text)
            y += pitch + pitch // 2
        elif style in ("centre", "right"):
            fnt = bold if style == "right" or text.isupper() else regular
            x = (left + right - fnt.getlength(text)) / 2 if style == "centre" else right - fnt.getlength(text)
            put(x, text, fnt)
            truth.append(text)
            y += pitch
        else:
            indent = px * 2
            for n, line in enumerate(wrap(text, regular, right - left, indent)):
                put(left + (indent if n == 0 else 0), line, regular)
                truth.append(line)
                y += pitch
            y += pitch // 3
        if y > h - mm(lay.margins_mm[3], lay.dpi):
            raise ValueError(f"text runs off the page at line {len(truth)}")
    return np.asarray(ink, np.float32) / 255.0, truth


def table(draw: ImageDraw.ImageDraw, rows: list[list[str]], fnt: ImageFont.FreeTypeFont, left: int, right: int,
          y: int, pitch: int, lay: Layout, put: Callable) -> int:
    """Rows of cells in columns as wide as their longest cell (scaled to the column), ruled or not."""
    pad = pitch // 3
    widths = [max(fnt.getlength(r[c]) for r in rows) + 2 * pad for c in range(len(rows[0]))]
    scale = min(1.0, (right - left) / sum(widths))
    xs = np.concatenate([[0], np.cumsum(widths) * scale]) + left
    row_h = round(pitch * 1.35)
    top = y - round(pitch * 0.95)
    for r, cells in enumerate(rows):
        for c, cell in enumerate(cells):
            put(xs[c] + pad, cell, fnt, y)
        y += row_h
    if lay.ruled:
        line = max(2, lay.dpi // 100)
        for k in range(len(rows) + 1):
            yy = top + k * row_h
            draw.line([(xs[0], yy), (xs[-1], yy)], fill=255, width=line)
        for x in xs:
            draw.line([(x, top), (x, top + len(rows) * row_h)], fill=255, width=line)
    return y + pitch // 2


# ---------------------------------------------------------------- paper, ink and faults

def paint(ink: np.ndarray, paper: tuple[int, ...], colour: tuple[int, ...]) -> np.ndarray:
    """Paper of colour ``paper`` with ink ``colour`` laid at coverage ``ink`` (float HxW)."""
    p, c = np.array(paper, np.float32), np.array(colour, np.float32)
    out = p + ink[..., None] * (c - p)
    return out[..., 0] if len(paper) == 1 else out


def grain(img: np.ndarray, rng: np.random.Generator, sigma: float) -> np.ndarray:
    return img + rng.normal(0, sigma, img.shape).astype(np.float32)


def blur(img: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(img, (0, 0), sigma)


def u8(img: np.ndarray) -> np.ndarray:
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def on_background(page: np.ndarray, angle: float, margin: float, dark: tuple[int, int, int],
                  rng: np.random.Generator) -> np.ndarray:
    """The page turned by ``angle`` degrees on a larger dark, textured surface (a scanner lid, a cover)."""
    h, w = page.shape[:2]
    H, W = round(h * (1 + margin)), round(w * (1 + margin))
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    m[:, 2] += ((W - w) / 2, (H - h) / 2)
    mask = cv2.warpAffine(np.ones((h, w), np.float32), m, (W, H), flags=cv2.INTER_LINEAR)
    turned = cv2.warpAffine(page, m, (W, H), flags=cv2.INTER_LINEAR)
    ground = np.array(dark, np.float32) * (0.8 + 0.4 * blur(rng.random((H, W)).astype(np.float32), 9)[..., None])
    shadow = blur(mask, 12)[..., None] * 0.35  # the paper's edge casts a little shadow
    ground = ground * (1 - shadow)
    return turned * mask[..., None] + ground * (1 - mask[..., None])


def seal(shape: tuple[int, int], centre: tuple[int, int], r: int, text: str, dpi: int) -> np.ndarray:
    """A round red seal layer (white elsewhere): two rings, a star and its name around the rim
    (set in a straight strip, then bent round by a polar remap)."""
    red = (196, 30, 38)
    layer = np.full((*shape, 3), 255, np.uint8)
    cv2.circle(layer, centre, r, red, max(3, dpi // 45), cv2.LINE_AA)
    cv2.circle(layer, centre, round(r * 0.66), red, max(2, dpi // 90), cv2.LINE_AA)
    _star(layer, centre, round(r * 0.28))
    band = round(r * 0.26)
    strip = Image.new("L", (round(2 * np.pi * r), band), 0)
    fnt = font("sans", True, round(band * 0.72))
    ImageDraw.Draw(strip).text((strip.width / 2, band / 2), text, font=fnt, fill=255, anchor="mm")
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float32)
    dx, dy = xx - centre[0], yy - centre[1]
    theta = (np.arctan2(dx, -dy) % (2 * np.pi)) / (2 * np.pi) * strip.width  # clockwise from the top
    rho = (r * 0.94 - np.hypot(dx, dy)) / (r * 0.94 - r * 0.70) * band
    letters = cv2.remap(np.asarray(strip), theta, rho, cv2.INTER_LINEAR, borderValue=0) > 110
    layer[letters] = red
    return layer


def multiply(img: np.ndarray, layer: np.ndarray, strength: float) -> np.ndarray:
    return img * (1 - strength * (1 - layer.astype(np.float32) / 255.0))


def bend_gutter(img: np.ndarray, depth: float) -> np.ndarray:
    """Lines curving down into the gutter of a bound book, as a flatbed sees them."""
    h, w = img.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    near = np.clip(1 - np.abs(xx - w / 2) / (w * 0.22), 0, 1) ** 2
    return cv2.remap(img, xx, yy - depth * near, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


# ---------------------------------------------------------------- the pages

@dataclass(frozen=True)
class Made:
    """One generated input: its encoded bytes, dpi, truth pages and what a correct output holds."""

    data: bytes
    dpi: tuple[int, int]
    pages: list[list[str]]  # truth lines per output page
    width: int
    height: int
    colour: str


def jpeg(img: np.ndarray, dpi: int, quality: int = 80) -> bytes:
    out = io.BytesIO()
    Image.fromarray(u8(img)).save(out, "JPEG", quality=quality, optimize=True, dpi=(dpi, dpi))
    return out.getvalue()


def png(img: np.ndarray, dpi: int) -> bytes:
    out = io.BytesIO()
    Image.fromarray(u8(img)).save(out, "PNG", optimize=True, dpi=(dpi, dpi))
    return out.getvalue()


def made(data: bytes, img: np.ndarray, dpi: tuple[int, int], pages: list[list[str]]) -> Made:
    colour = "colour" if img.ndim == 3 else ("bilevel" if img.dtype == bool else "grey")
    return Made(data, dpi, pages, img.shape[1], img.shape[0], colour)


def dark_lid(rng: np.random.Generator) -> Made:
    lay = Layout("serif", 13, 200)
    ink, truth = typeset(T.RESIDENCE_CONFIRMATION, lay, rng)
    page = grain(paint(ink, (236, 230, 214), (40, 38, 48)), rng, 4)
    img = on_background(page, 5.5, 0.16, (34, 32, 36), rng)
    return made(jpeg(img, 200), img, (200, 200), [truth])


def phone_photo(rng: np.random.Generator) -> Made:
    lay = Layout("sans", 12, 200)
    ink, truth = typeset(T.PHOTO_RECEIPT, lay, rng)
    page = paint(ink, (242, 240, 236), (30, 30, 36))
    h, w = ink.shape
    W, H = 1800, 2400
    quad = np.float32([[250, 230], [1590, 300], [1690, 2250], [110, 2150]])  # tilted, closer at the bottom
    m = cv2.getPerspectiveTransform(np.float32([[0, 0], [w, 0], [w, h], [0, h]]), quad)
    warped = cv2.warpPerspective(page, m, (W, H), flags=cv2.INTER_AREA)
    mask = cv2.warpPerspective(np.ones((h, w), np.float32), m, (W, H))[..., None]
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    desk = np.stack([118 + 20 * np.sin(xx / 37 + yy / 400), 84 + 14 * np.sin(xx / 37 + yy / 400),
                     58 + 8 * np.sin(xx / 37)], -1)
    light = (1.08 - 0.28 * (xx + yy) / (W + H))[..., None]  # a lamp at the top left
    img = grain(blur((warped * mask + desk * (1 - mask)) * light, 0.9), rng, 3)
    return made(jpeg(img, 72, 85), img, (72, 72), [truth])  # phones write 72 dpi


def book_spread(rng: np.random.Generator) -> Made:
    lay = Layout("serif", 11, 200, (148.0, 210.0), (18.0, 18.0, 16.0, 14.0))
    left, t_left = typeset(T.SPREAD_LEFT, lay, rng)
    right, t_right = typeset(T.SPREAD_RIGHT, lay, rng)
    ink = np.concatenate([left, right], axis=1)
    img = bend_gutter(paint(ink, (226,), (25,)), 28)
    h, w = img.shape
    x = np.arange(w, dtype=np.float32)
    gutter = 1 - 0.55 * np.exp(-((x - w / 2) / (w * 0.025)) ** 2) - 0.12 * np.exp(-((x - w / 2) / (w * 0.09)) ** 2)
    edges = np.where((x < 14) | (x > w - 15), 0.35, 1.0)  # the cover's edge beyond each leaf
    img = grain(img * gutter * edges, rng, 3.5)
    return made(jpeg(img, 200), img, (200, 200), [t_left, t_right])


def landscape_table(rng: np.random.Generator) -> Made:
    lay = Layout("sans", 11, 200, (297.0, 210.0), (20.0, 20.0, 20.0, 18.0), ruled=True)
    ink, truth = typeset(T.LANDSCAPE_REGISTER, lay, rng)
    img = grain(paint(ink, (248,), (20,)), rng, 2.5)
    return made(jpeg(img, 200, 85), img, (200, 200), [truth])


def typewriter(rng: np.random.Generator) -> Made:
    lay = Layout("mono", 12, 250, typewriter=True)
    ink, truth = typeset(T.TYPED_DECISION, lay, rng)
    h, w = ink.shape
    bands = np.repeat(rng.uniform(0.5, 1.0, h // 3 + 1), 3)[:h, None]  # worn ribbon: pale bands
    holes = blur(rng.random((h, w)).astype(np.float32), 1.2) > 0.56  # breaks inside the strokes
    ink = blur(ink * bands * np.where(holes, 0.25, 1.0), 0.7)
    img = grain(paint(ink, (232,), (30,)), rng, 4)
    return made(jpeg(img, 250, 78), img, (250, 250), [truth])


def red_seal(rng: np.random.Generator) -> Made:
    lay = Layout("serif", 13, 200)
    ink, truth = typeset(T.SEAL_CERTIFICATE, lay, rng)
    page = paint(ink, (247, 245, 238), (25, 25, 30))
    h, w = ink.shape
    layer = seal((h, w), (round(w * 0.52), round(h * 0.46)), round(200 * 0.72), "ỦY BAN NHÂN DÂN HUYỆN LẠC DƯƠNG * LÂM ĐỒNG *", 200)
    img = grain(multiply(page, layer, 0.9), rng, 3)
    return made(jpeg(img, 200, 82), img, (200, 200), [truth])


def ruled_table(rng: np.random.Generator) -> Made:
    lay = Layout("serif", 13, 200, ruled=True)
    ink, truth = typeset(T.TABLE_INTRO, lay, rng)
    img = blur(paint(ink, (255,), (0,)), 0.6)
    return made(png(img, 200), img, (200, 200), [truth])


def bleed_through(rng: np.random.Generator) -> Made:
    lay = Layout("sans", 12, 200)
    front, truth = typeset(T.BLEED_MINUTES, lay, rng)
    back, _ = typeset(T.BLEED_BACK, Layout("serif", 13, 200, margins_mm=(20.0, 40.0, 28.0, 20.0)), rng)
    back = blur(back[:, ::-1], 1.6) * 0.45  # the back's ink seen through thin paper, mirrored
    img = grain(paint(np.maximum(front, back), (238,), (22,)), rng, 3)
    return made(jpeg(img, 200), img, (200, 200), [truth])


def carbon_copy(rng: np.random.Generator) -> Made:
    lay = Layout("mono", 12, 200, typewriter=True)
    ink, truth = typeset(T.CARBON_LETTER, lay, rng)
    ink = blur(ink, 1.1) * 0.42
    img = grain(paint(ink, (240, 238, 232), (70, 60, 150)), rng, 3.5)
    return made(jpeg(img, 200), img, (200, 200), [truth])


def fax(rng: np.random.Generator) -> Made:
    header = "14/10/2003 08:52 FROM: VP UBND DAM HA TO: 0333862417 P.01"
    lay = Layout("serif", 12, 204)
    ink, truth = typeset([("body", header)] + T.FAX_NOTICE, lay, rng)
    h, w = ink.shape
    ink = cv2.resize(ink, (w, round(h * 196 / 204)), interpolation=cv2.INTER_AREA)  # 204 x 196 dpi fine mode
    ink = blur(ink, 0.8) + rng.normal(0, 0.12, ink.shape)
    ink[rng.integers(0, ink.shape[0], 6)] += 0.9  # streaks of a dirty scan head
    bits = ink < 0.5  # True = paper
    image = Image.fromarray(bits)
    return made(_tiff_g4(image, (204, 196)), bits, (204, 196), [truth])


def _tiff_g4(image: Image.Image, dpi: tuple[int, int]) -> bytes:
    out = io.BytesIO()
    image.save(out, "TIFF", compression="group4", dpi=dpi)
    return out.getvalue()


def upside_down(rng: np.random.Generator) -> Made:
    lay = Layout("sans", 12, 200)
    ink, truth = typeset(T.UPSIDE_REQUEST, lay, rng)
    img = grain(paint(ink, (245,), (15,)), rng, 3)[::-1, ::-1]
    return made(jpeg(img, 200, 82), img, (200, 200), [truth])


def jbig2_devicen(rng: np.random.Generator) -> Made:
    """A bilevel page as a PDF with a JBIG2 (generic region, MMR) image in a DeviceN [/Black] space."""
    lay = Layout("serif", 12, 300)
    ink, truth = typeset(T.JBIG2_RECEIPT, lay, rng)
    paper = ink < 0.5
    h, w = paper.shape
    mmr = _g4_strip(Image.fromarray(paper))  # T.6 runs, paper as white: JBIG2's MMR coding
    data = (_segment(0, 48, struct.pack(">IIIIBH", w, h, 0, 0, 0, 0))
            + _segment(1, 38, struct.pack(">IIIIBB", w, h, 0, 0, 0, 1) + mmr))
    pdf = pikepdf.new()
    image = pikepdf.Stream(pdf, b"")
    image.write(data, filter=pikepdf.Name.JBIG2Decode)
    tint = pikepdf.Dictionary(FunctionType=2, Domain=[0, 1], C0=[1], C1=[0], N=1)
    image.Type, image.Subtype, image.Width, image.Height = pikepdf.Name.XObject, pikepdf.Name.Image, w, h
    image.BitsPerComponent = 1
    image.ColorSpace = pikepdf.Array([pikepdf.Name.DeviceN, [pikepdf.Name.Black], pikepdf.Name.DeviceGray, tint])
    image.Decode = [1, 0]  # JBIG2Decode gives 0 for black; tint 1 is full black ink
    w_pt, h_pt = round(w * 72 / 300, 2), round(h * 72 / 300, 2)
    page = pikepdf.Dictionary(Type=pikepdf.Name.Page, MediaBox=[0, 0, w_pt, h_pt],
                              Resources=pikepdf.Dictionary(XObject=pikepdf.Dictionary(Im0=image)),
                              Contents=pdf.make_stream(f"q {w_pt} 0 0 {h_pt} 0 0 cm /Im0 Do Q".encode()))
    pdf.pages.append(pikepdf.Page(page))
    out = io.BytesIO()
    pdf.save(out, deterministic_id=True)
    return made(out.getvalue(), paper, (300, 300), [truth])


def _segment(number: int, kind: int, data: bytes) -> bytes:
    """A JBIG2 segment of an embedded (PDF) stream: header (no referred segments, page 1) + data."""
    return struct.pack(">IBBBI", number, kind, 0, 1, len(data)) + data


SAMPLES: list[tuple[str, str, Callable[[np.random.Generator], Made]]] = [
    ("h01_dark_lid_skew.jpg", "dark scanner lid around the page, skew +5.5°", dark_lid),
    ("h02_phone_perspective.jpg", "phone photo on a desk: perspective, uneven light, 72 dpi", phone_photo),
    ("h03_book_spread.jpg", "two-page spread of a bound register: gutter shadow, curved lines", book_spread),
    ("h04_landscape_table.jpg", "landscape ruled register table (one page: must not be split)", landscape_table),
    ("h05_typewriter.jpg", "typewriter: worn ribbon, broken and uneven strikes", typewriter),
    ("h06_red_seal_mid.jpg", "red seal over body text mid-page", red_seal),
    ("h07_ruled_table.png", "ruled table inside a portrait page", ruled_table),
    ("h08_bleed_through.jpg", "bleed-through of the back page, mirrored", bleed_through),
    ("h09_carbon_copy.jpg", "faint purple carbon copy of a typed letter", carbon_copy),
    ("h10_fax_fine.tif", "fax, fine mode 204 × 196 dpi, noise and streaks", fax),
    ("h11_upside_down.jpg", "fed upside down (180°)", upside_down),
    ("h12_jbig2_devicen.pdf", "PDF: JBIG2 (MMR) image in a DeviceN colour space", jbig2_devicen),
]


def build_all(seed: int = 0) -> dict[str, bytes]:
    """Every sample; SEED 0 gives the committed files, another seed a fresh draw of the same
    faults (noise, skew, stains, placement) for measuring on pages the code was not tuned on."""
    files, records = {}, []
    for name, fault, make in SAMPLES:
        key = zlib.crc32(name.encode())
        page = make(np.random.default_rng([seed, key] if seed else key))
        stem = Path(name).stem
        files[name] = page.data
        files[f"truth/{stem}.txt"] = "\f".join("\n".join(p) for p in page.pages).encode() + b"\n"
        records.append({"name": name, "fault": fault, "truth": f"truth/{stem}.txt", "page_count": 1,
                        "output_pages": len(page.pages), "bytes": len(page.data),
                        "pages": [{"dpi": list(page.dpi), "width_px": page.width, "height_px": page.height,
                                   "colour": page.colour}]})
    index = {"generator": "samples/hard/make_samples.py", "fonts": "GNU FreeFont (fonts-freefont-ttf)",
             "samples": records}
    files["samples.json"] = (json.dumps(index, ensure_ascii=False, indent=1) + "\n").encode()
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="regenerate and compare with the files on disk")
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--seed", type=int, default=0, help="another draw of every fault (0: the committed files)")
    args = parser.parse_args(argv)
    files = build_all(args.seed)
    if args.check:
        changed = [n for n, d in files.items() if not (args.out / n).is_file() or (args.out / n).read_bytes() != d]
        for name in changed:
            print(f"differs: {name}", file=sys.stderr)
        return 1 if changed else 0
    for name, data in files.items():
        (args.out / name).parent.mkdir(parents=True, exist_ok=True)
        (args.out / name).write_bytes(data)
    print(f"wrote {len(files)} files ({sum(map(len, files.values())) / 1e6:.2f} MB) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
