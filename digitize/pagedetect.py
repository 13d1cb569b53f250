"""Page detection: the sheet of paper in a scan or photo taken on a dark lid, cover or desk.

Why: when the paper lies on a dark background, the background is most of the "ink" the skew
analysis sees, so it measures the background's straight edges rather than the text (0.0°) and
OCR gets a tilted page in a black frame. Here the paper is found as the large bright, nearly
quadrilateral region that the dark border surrounds, on a ~50 dpi copy (a few milliseconds):
its edges give the page's angle whatever the amount of text, and it is cut out at 100 % scale
(a pure rotation; a true perspective warp only for photos whose corners are not a rectangle).
Ordinary scans, whose paper reaches the image border, are left alone. Pure functions.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .imaging import analysis_grey, shrink_for_analysis

ANALYSIS_DPI = 50.0
MIN_DARK_BORDER = 0.5  # share of the image's outer ring that must be background (not paper)
MIN_CONTRAST = 60  # grey levels between paper and background medians
MIN_PAPER_SHARE = 0.15  # of the image area
MIN_RECTANGULARITY = 0.9  # paper area / its rotated bounding rectangle's area
MIN_PART = 0.05  # bright regions this large against the largest are paper too
PERSPECTIVE_TOLERANCE = 0.02  # corner offset from a rectangle, as a share of the diagonal


LOG_LUT = np.round(255 * np.log1p(np.arange(256)) / np.log(256)).astype(np.uint8)


@dataclass(frozen=True)
class Paper:
    """Where the paper is in the full-size image, and how it will be cut out."""

    corners: np.ndarray  # (4, 2) float32 image coordinates: top-left, top-right, bottom-right, bottom-left
    width: int  # size of the cut-out page in pixels
    height: int
    angle: float  # degrees the paper's top edge rises counter-clockwise (undone by the cut-out)
    perspective: bool  # corners not a rectangle: a photo, warped to one

    def describe(self) -> dict:
        """What was done, for the page report."""
        xs, ys = self.corners[:, 0], self.corners[:, 1]
        return {"action": "perspective" if self.perspective else "crop",
                "box": [int(xs.min()), int(ys.min()), int(np.ceil(xs.max())), int(np.ceil(ys.max()))],
                "edge_angle": round(self.angle, 2) + 0.0, "size": [self.width, self.height]}


def _order(points: np.ndarray) -> np.ndarray:
    """Four points as top-left, top-right, bottom-right, bottom-left (for tilts under 45°)."""
    s, d = points.sum(axis=1), points[:, 1] - points[:, 0]
    return np.array([points[np.argmin(s)], points[np.argmin(d)], points[np.argmax(s)], points[np.argmax(d)]],
                    np.float32)


def _border_share(mask: np.ndarray) -> float:
    """Share of the outer one-pixel ring that is not paper."""
    ring = np.concatenate([mask[0], mask[-1], mask[1:-1, 0], mask[1:-1, -1]])
    return float(np.count_nonzero(ring == 0)) / max(len(ring), 1)


def find_paper(pixels: np.ndarray, dpi: float) -> Paper | None:
    """The paper on a darker background in a grey or colour image (coloured ink counts as
    paper, as in the geometry analysis), or None when there is no such background (the paper
    fills the image, or nothing paper-like stands out)."""
    h, w = pixels.shape[:2]
    scale = min(1.0, ANALYSIS_DPI / dpi)
    small = cv2.GaussianBlur(analysis_grey(shrink_for_analysis(pixels, scale)), (0, 0), 1.0)
    if min(small.shape) < 20:
        return None
    # Otsu on log brightness: uneven light multiplies paper and background alike, so in logs it
    # shifts both by the same amount and the gap between them (their reflectance ratio) stays
    _, bright = cv2.threshold(cv2.LUT(small, LOG_LUT), 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
    if _border_share(bright) < MIN_DARK_BORDER:
        return None
    contours, _ = cv2.findContours(bright, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return None
    # every large bright region belongs to the sheet: the two leaves of a book that its gutter
    # shadow parts, a page that a dark stripe or fold crosses; nothing of the paper may be cut off
    largest = max(cv2.contourArea(c) for c in contours)
    parts = [c for c in contours if cv2.contourArea(c) >= MIN_PART * largest]
    hull = cv2.convexHull(np.concatenate(parts))
    area = cv2.contourArea(hull)
    if area < MIN_PAPER_SHARE * small.size:
        return None
    inside = np.zeros_like(bright)
    cv2.fillPoly(inside, [hull], 255)
    outside = small[inside == 0]
    if outside.size < 0.02 * small.size:
        return None  # the sheet fills the image: nothing to cut
    if float(np.median(small[inside > 0])) - float(np.median(outside)) < MIN_CONTRAST:
        return None
    rect = cv2.minAreaRect(hull)
    if area < MIN_RECTANGULARITY * rect[1][0] * rect[1][1]:
        return None  # not a sheet: a bright object, a lamp's glare, a page torn or folded
    box = _order(cv2.boxPoints(rect))
    quad = cv2.approxPolyDP(hull, 0.02 * cv2.arcLength(hull, True), True).reshape(-1, 2).astype(np.float32)
    diagonal = float(np.hypot(*small.shape))
    corners, perspective = box, False
    x, y, bw, bh = cv2.boundingRect(hull)
    clipped = x <= 0 or y <= 0 or x + bw >= small.shape[1] or y + bh >= small.shape[0]
    if len(quad) == 4 and not clipped:  # a sheet cut by the image border has no true corners there
        quad = _order(quad)
        if np.abs(quad - box).max() > PERSPECTIVE_TOLERANCE * diagonal:
            corners, perspective = quad, True
    corners = _inset(corners, 2.0) / scale  # the blurred edge transition (~1 mm) is background too
    corners = np.clip(corners, 0, [w - 1, h - 1]).astype(np.float32)
    top, bottom = corners[1] - corners[0], corners[2] - corners[3]
    left, right = corners[3] - corners[0], corners[2] - corners[1]
    width = round((np.hypot(*top) + np.hypot(*bottom)) / 2)
    height = round((np.hypot(*left) + np.hypot(*right)) / 2)
    if perspective:
        width, height = round(max(np.hypot(*top), np.hypot(*bottom))), round(max(np.hypot(*left), np.hypot(*right)))
    angle = float(np.degrees(np.arctan2(-(top[1] + bottom[1]), top[0] + bottom[0])))
    return Paper(corners, max(1, width), max(1, height), angle, perspective)


def _inset(corners: np.ndarray, by: float) -> np.ndarray:
    """Move each corner ``by`` pixels towards the quadrilateral's centre along both axes."""
    centre = corners.mean(axis=0)
    return corners + np.sign(centre - corners) * by


def cut_out(pixels: np.ndarray, paper: Paper) -> np.ndarray:
    """The paper alone, upright to its edges: a rotation (same pixel size: 100 % scale) or,
    for a photo's perspective, a homography onto a width x height rectangle."""
    target = np.array([[0, 0], [paper.width - 1, 0], [paper.width - 1, paper.height - 1], [0, paper.height - 1]],
                      np.float32)
    if paper.perspective:
        m = cv2.getPerspectiveTransform(paper.corners, target)
        return cv2.warpPerspective(pixels, m, (paper.width, paper.height), flags=cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_REPLICATE)
    m = cv2.getAffineTransform(paper.corners[:3], target[:3])
    return cv2.warpAffine(pixels, m, (paper.width, paper.height), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)
