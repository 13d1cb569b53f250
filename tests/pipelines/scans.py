"""Small synthetic scans for pipeline tests: A6 pages at 200 dpi with a few words, QR codes, faults.

Small pages keep real Tesseract fast; the faults (rotation, speckle noise) are the ones that
defeat naive QR readers on real receipts.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

import numpy as np
import segno
from PIL import Image, ImageDraw, ImageFont

DPI = 200
A6_PX = (826, 1165)  # 105 x 148 mm at 200 dpi
FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"


def qr_image(payload: str, module_px: int = 5) -> Image.Image:
    buf = io.BytesIO()
    segno.make(payload, error="m", micro=False).save(buf, kind="png", scale=module_px, border=2)
    return Image.open(io.BytesIO(buf.getvalue())).convert("L")


def page(lines: Sequence[str], qr: str | None = None, qr_module_px: int = 5, font_px: int = 34) -> Image.Image:
    """A white A6 page with text lines and an optional QR code at the top right."""
    img = Image.new("L", A6_PX, 255)
    draw = ImageDraw.Draw(img)
    font = ImageFont.truetype(FONT, font_px)
    y = 120
    if qr:
        code = qr_image(qr, qr_module_px)
        img.paste(code, (A6_PX[0] - code.width - 40, 40))
        y = 60 + code.height
    for line in lines:
        draw.text((50, y), line, font=font, fill=0)
        y += int(font_px * 1.6)
    return img


def rotated_noisy(img: Image.Image, degrees: float, noise: float = 0.04, seed: int = 1) -> Image.Image:
    """Rotate (scanner fed the sheet crooked or sideways) and add salt-and-pepper speckle."""
    turned = img.rotate(degrees, expand=True, fillcolor=255, resample=Image.BICUBIC)
    arr = np.array(turned)
    rng = np.random.default_rng(seed)
    mask = rng.random(arr.shape)
    arr[mask < noise / 2] = 0
    arr[mask > 1 - noise / 2] = 255
    return Image.fromarray(arr)


def write_pdf(pages: Sequence[Image.Image], path: Path) -> Path:
    """An image-only PDF like a scanner's, one page per image at 200 dpi."""
    first, *rest = [p.convert("L") for p in pages]
    first.save(path, format="PDF", save_all=True, append_images=rest, resolution=DPI)
    return path
