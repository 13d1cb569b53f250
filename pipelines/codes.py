"""Reading QR codes and barcodes from page images (receipts carry the case ID, separator sheets a marker).

zxing-cpp already searches every rotation; what defeats it on real scans is speckle noise and
sheer size, so a page is tried as-is, then downscaled, then binarised, stopping at the first hit.
Separator sheets carry a large QR code, so stack splitting uses the cheap ``quick`` pass only.
"""

from __future__ import annotations

from typing import Callable

import cv2
import numpy as np
import zxingcpp
from PIL import Image

# Payloads we look for are text: 2-D codes and the linear symbologies that carry text.
# Restricting formats also avoids EAN/UPC false positives that speckle noise produces.
_FORMATS = [getattr(zxingcpp.BarcodeFormat, name) for name in
            ("QRCode", "MicroQRCode", "DataMatrix", "Aztec", "PDF417", "Code128", "Code39")]

QUICK_MAX_SIDE = 700  # a separator QR code (~8 cm) is still >100 px wide at this size
FULL_MAX_SIDE = 2600  # larger pages are halved first: zxing gets slower, not better


def _fit(image: Image.Image, max_side: int) -> Image.Image:
    grey = image if image.mode == "L" else image.convert("L")
    factor = max(1, -(-max(grey.size) // max_side))  # ceil division
    return grey.reduce(factor) if factor > 1 else grey


def _binarise(image: Image.Image) -> np.ndarray:
    """Median filter (removes salt-and-pepper) then a global Otsu threshold."""
    grey = cv2.medianBlur(np.asarray(image, dtype=np.uint8), 3)
    return cv2.threshold(grey, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)[1]


def _decode(image: Image.Image | np.ndarray, downscale: bool = True) -> list[str]:
    """zxing in every rotation; printed codes are dark on light, so no inverted search (a quarter of the time)."""
    found = zxingcpp.read_barcodes(image, formats=_FORMATS, try_invert=False, try_downscale=downscale)
    return [b.text for b in found if b.text]


def _variants(image: Image.Image) -> list[Callable[[], list[str]]]:
    full = _fit(image, FULL_MAX_SIDE)
    return [
        lambda: _decode(full),
        lambda: _decode(_fit(full, max(full.size) // 2), downscale=False),
        lambda: _decode(_binarise(full), downscale=False),
    ]


def read_codes(image: Image.Image, quick: bool = False) -> list[str]:
    """Texts of the codes on a page, in zxing's order; [] when none is found.

    ``quick`` looks only at a small copy: enough for a separator sheet, a few ms per page.
    """
    if quick:
        return _decode(_fit(image, QUICK_MAX_SIDE))
    for attempt in _variants(image):
        found = attempt()
        if found:
            return found
    return []
