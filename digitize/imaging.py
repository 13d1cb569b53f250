"""Image preparation, pure numpy/OpenCV functions.

Two images per page with different duties:
- the **archival** image keeps the paper's look (colour stays colour, grey stays grey, same
  resolution and physical size); it is only turned and deskewed (geometry.py);
- the **OCR** image is whatever reads best: coloured ink and paper dropped, background
  flattened, speckles removed, resampled to ~300 dpi where Tesseract is most accurate.
"""

from __future__ import annotations

import cv2
import numpy as np

OCR_DPI = 300.0


def colour_mode(pixels: np.ndarray) -> str:
    """"colour", "grey" or "bilevel" (a grey image holding only black and white is bilevel)."""
    if pixels.ndim == 3:
        return "colour"
    if pixels.dtype == bool or not np.count_nonzero((pixels != 0) & (pixels != 255)):
        return "bilevel"
    return "grey"


def as_uint8(pixels: np.ndarray) -> np.ndarray:
    if pixels.dtype == bool:
        return pixels.astype(np.uint8) * 255
    return pixels


def drop_colour(pixels: np.ndarray) -> np.ndarray:
    """Grey where saturated ink (red seals, blue signatures) and tinted paper turn white.

    Black text is dark in every channel, coloured ink is bright in at least one, so the
    per-pixel maximum over channels keeps the text and loses the rest.
    """
    if pixels.ndim == 2:
        return pixels
    return pixels.max(axis=2)


def paper_colour(pixels: np.ndarray) -> tuple[int, ...] | int:
    """Typical paper colour (bright end of the histogram), used to fill deskewed corners."""
    sample = pixels[::8, ::8]
    if sample.ndim == 2:
        return int(np.percentile(sample, 90))
    return tuple(int(np.percentile(sample[..., c], 90)) for c in range(sample.shape[2]))


def speckle_fraction(grey: np.ndarray) -> float:
    """Share of pixels a 3x3 median changes a lot: high for salt-and-pepper noise."""
    med = cv2.medianBlur(grey, 3)
    return float(np.count_nonzero(cv2.absdiff(grey, med) > 80)) / grey.size


def flatten_background(grey: np.ndarray, dpi: float) -> np.ndarray:
    """Divide by the estimated paper (closing removes text strokes): kills shadows, gradients, fading."""
    small_scale = 0.25
    small = cv2.resize(grey, None, fx=small_scale, fy=small_scale, interpolation=cv2.INTER_AREA)
    k = max(5, int(dpi * small_scale / 10)) | 1
    background = cv2.morphologyEx(small, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_RECT, (k, k)))
    background = cv2.GaussianBlur(background, (0, 0), k / 2)
    background = cv2.resize(background, (grey.shape[1], grey.shape[0]), interpolation=cv2.INTER_LINEAR)
    return cv2.divide(grey, np.maximum(background, 1), scale=255)


def stretch_contrast(grey: np.ndarray) -> np.ndarray:
    """Map the darkest ink to black: faded photocopies get the contrast Tesseract expects."""
    ink = grey[grey < 200]
    if ink.size < 0.001 * grey.size:
        return grey
    low = float(np.percentile(ink, 5))
    if low < 40:
        return grey
    lut = np.clip((np.arange(256, dtype=np.float32) - low) * 255.0 / max(255.0 - low, 1.0), 0, 255).astype(np.uint8)
    return cv2.LUT(grey, lut)


def resample_for_ocr(grey: np.ndarray, dpi: float) -> tuple[np.ndarray, float]:
    """Scale to ~300 dpi when far from it; returns the image and the factor applied."""
    if 250 <= dpi <= 400:
        return grey, 1.0
    factor = OCR_DPI / dpi
    interp = cv2.INTER_CUBIC if factor > 1 else cv2.INTER_AREA
    return cv2.resize(grey, None, fx=factor, fy=factor, interpolation=interp), factor


def prepare_for_ocr(pixels: np.ndarray, dpi: float) -> tuple[np.ndarray, float]:
    """Upright archival pixels -> (OCR image, scale factor from archival to OCR pixels)."""
    grey = drop_colour(as_uint8(pixels))
    if colour_mode(grey) == "bilevel":
        grey, factor = resample_for_ocr(grey, dpi)
        return grey, factor
    if speckle_fraction(grey) > 0.002:
        grey = cv2.medianBlur(grey, 3)
    grey = stretch_contrast(flatten_background(grey, dpi))
    return resample_for_ocr(grey, dpi)


def analysis_grey(pixels: np.ndarray) -> np.ndarray:
    """Grey image for geometry analysis (coloured marks dropped, bilevel as 0/255)."""
    return drop_colour(as_uint8(pixels))


def rebinarise(pixels: np.ndarray) -> np.ndarray:
    """After interpolation a bilevel page is grey at the edges: back to pure black and white."""
    return np.where(pixels >= 128, 255, 0).astype(np.uint8)
