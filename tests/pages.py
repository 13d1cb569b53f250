"""Synthetic scanned pages for tests: Vietnamese text rendered with Pillow, then turned, skewed, soiled.

Conventions match digitize.geometry:
- ``rotate(pixels, degrees)`` turns the page **clockwise** by 0/90/180/270 (lossless), so the
  orientation geometry should report for the result is ``(360 - degrees) % 360``;
- ``skew(pixels, degrees)`` rotates **counter-clockwise** by ``degrees`` (OpenCV's sign), so the
  skew geometry should report is ``-degrees``.
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

FONT_PATH = "/usr/share/fonts/truetype/liberation2/LiberationSerif-Regular.ttf"
DPI = 300.0

VIETNAMESE_LINES = [
    "CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM",
    "Độc lập - Tự do - Hạnh phúc",
    "QUYẾT ĐỊNH về việc giao đất cho hộ gia đình",
    "Căn cứ Luật Đất đai ngày 29 tháng 11 năm 2013;",
    "Xét đề nghị của Trưởng phòng Tài nguyên và Môi trường,",
    "Điều 1. Giao cho ông Nguyễn Văn Hùng, sinh năm 1968,",
    "thường trú tại thôn Phước Lộc, xã Hòa Phước, huyện",
    "Hòa Vang, thành phố Đà Nẵng, thửa đất số 127,",
    "tờ bản đồ số 14, diện tích 312,5 m² để sử dụng",
    "vào mục đích đất ở tại nông thôn; thời hạn lâu dài.",
    "Điều 2. Ông Nguyễn Văn Hùng có trách nhiệm nộp",
    "tiền sử dụng đất theo quy định và sử dụng đất",
    "đúng mục đích, ranh giới được giao.",
    "Điều 3. Quyết định này có hiệu lực kể từ ngày ký.",
    "Chánh Văn phòng, Trưởng phòng Tài nguyên và Môi",
    "trường, Chủ tịch UBND xã Hòa Phước chịu trách nhiệm",
    "thi hành Quyết định này./.",
]


@lru_cache(maxsize=8)
def _font(px: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(FONT_PATH, px)


def render_text_page(lines=VIETNAMESE_LINES, size: tuple[int, int] = (1240, 1748), font_px: int = 40,
                     colour: bool = False, margin: int = 90, leading: float = 1.6) -> np.ndarray:
    """Black text lines on white paper. ``size`` is (width, height). Grey uint8 (H, W), or RGB
    uint8 (H, W, 3) with a red seal ring and a blue signature stroke when ``colour``."""
    width, height = size
    img = Image.new("RGB" if colour else "L", (width, height), "white")
    draw = ImageDraw.Draw(img)
    font = _font(font_px)
    y = margin
    for line in lines:
        if y + font_px > height - margin:
            break
        draw.text((margin, y), line, font=font, fill="black")
        y += int(font_px * leading)
    if colour:
        cx, cy, r = width * 2 // 3, height - margin - 180, 150
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=(220, 30, 30), width=14)
        draw.line((margin, height - margin - 60, margin + 300, height - margin - 120), fill=(30, 40, 200), width=6)
    return np.asarray(img).copy()


def rotate(pixels: np.ndarray, degrees: int) -> np.ndarray:
    """Turn clockwise by a multiple of 90 degrees."""
    assert degrees % 90 == 0
    return np.ascontiguousarray(np.rot90(pixels, -(degrees // 90) % 4))


def skew(pixels: np.ndarray, degrees: float, fill: int | tuple[int, ...] = 255) -> np.ndarray:
    """Rotate counter-clockwise by ``degrees`` about the centre, same canvas, corners filled with paper."""
    if degrees == 0:
        return pixels.copy()
    h, w = pixels.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    if pixels.ndim == 3 and isinstance(fill, int):
        fill = (fill,) * pixels.shape[2]
    return cv2.warpAffine(pixels, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=fill)


def noise(pixels: np.ndarray, amount: float = 0.01, seed: int = 0) -> np.ndarray:
    """Salt-and-pepper: ``amount`` of the pixels set to black or white at random (reproducible)."""
    rng = np.random.default_rng(seed)
    out = pixels.copy()
    hit = rng.random(pixels.shape[:2]) < amount
    salt = rng.random(pixels.shape[:2]) < 0.5
    out[hit & salt] = 255
    out[hit & ~salt] = 0
    return out


def shadow(pixels: np.ndarray, darkest: float = 0.45) -> np.ndarray:
    """Multiply by a left-to-right gradient from ``darkest`` to 1 (a book-gutter shadow)."""
    w = pixels.shape[1]
    ramp = np.linspace(darkest, 1.0, w, dtype=np.float32)
    ramp = ramp[None, :, None] if pixels.ndim == 3 else ramp[None, :]
    return np.clip(pixels.astype(np.float32) * ramp, 0, 255).astype(np.uint8)


# -- archive faults (issue 13): other fonts and texts than the samples' ------------------------

DEJAVU_SERIF = "/usr/share/fonts/truetype/dejavu/DejaVuSerif.ttf"
DEJAVU_SANS = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"

REGISTER_LINES = [
    "SỔ ĐĂNG KÝ HỘ TỊCH NĂM 1998",
    "Xã Tân Phú, huyện Châu Thành",
    "Số 214. Họ và tên: Lê Thị Mỹ Duyên",
    "Ngày sinh: mười bảy tháng ba năm một",
    "nghìn chín trăm chín mươi tám.",
    "Nơi sinh: Trạm y tế xã Tân Phú.",
    "Dân tộc: Kinh. Quốc tịch: Việt Nam.",
    "Họ tên cha: Lê Văn Thành, nông dân.",
    "Họ tên mẹ: Trần Thị Hồng Nhung.",
    "Người đi khai: Lê Văn Thành, là cha.",
    "Cán bộ hộ tịch ký tên: Phạm Quốc Bảo.",
]

LEDGER_LINES = [
    "BIÊN BẢN HỌP HỘI ĐỒNG XÃ",
    "Hôm nay, ngày 05 tháng 7 năm 1987,",
    "tại trụ sở Ủy ban xã Bình Hòa, chúng",
    "tôi gồm có: ông Đỗ Văn Khải, chủ tọa;",
    "bà Vũ Thị Lan, thư ký; cùng mười hai",
    "đại biểu dự họp đầy đủ. Nội dung:",
    "bàn việc sửa đường liên thôn, đắp",
    "bờ kênh và phân chia ruộng khoán.",
    "Biểu quyết: mười hai phiếu thuận.",
    "Cuộc họp kết thúc lúc mười giờ.",
]


@lru_cache(maxsize=8)
def _dejavu(path: str, px: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, px)


def render_with(lines, font_path: str, size: tuple[int, int] = (1240, 1754), font_px: int = 34,
                margin: int = 110, leading: float = 1.7) -> np.ndarray:
    """Grey page of ``lines`` in another font (DejaVu); returns (H, W) uint8."""
    width, height = size
    img = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(img)
    font = _dejavu(font_path, font_px)
    y = margin
    for line in lines:
        if y + font_px > height - margin:
            break
        draw.text((margin, y), line, font=font, fill=0)
        y += int(font_px * leading)
    return np.asarray(img).copy()


def on_background(page: np.ndarray, degrees: float = 0.0, level: int = 40, pad: float = 0.12,
                  seed: int = 0, colour: bool = False) -> np.ndarray:
    """The page lying on a dark lid/desk, turned ``degrees`` counter-clockwise: a textured dark
    canvas ``pad`` of the page's size larger on each side (grain and a lighting gradient)."""
    rng = np.random.default_rng(seed)
    h, w = page.shape[:2]
    ph, pw = int(h * pad), int(w * pad)
    H, W = h + 2 * ph, w + 2 * pw
    grain = rng.normal(0, 6, (H, W)).astype(np.float32)
    light = np.linspace(0.8, 1.2, W, dtype=np.float32)[None, :]
    canvas = np.clip(level * light + grain, 0, 255).astype(np.uint8)
    sheet = np.full((H, W), 0, np.uint8)
    sheet[ph:ph + h, pw:pw + w] = page if page.ndim == 2 else page[..., 0]
    inside = np.zeros((H, W), np.uint8)
    inside[ph:ph + h, pw:pw + w] = 255
    m = cv2.getRotationMatrix2D((W / 2, H / 2), degrees, 1.0)
    sheet = cv2.warpAffine(sheet, m, (W, H), flags=cv2.INTER_LINEAR, borderValue=0)
    inside = cv2.warpAffine(inside, m, (W, H), flags=cv2.INTER_LINEAR, borderValue=0).astype(np.float32) / 255
    out = (sheet * inside + canvas * (1 - inside)).astype(np.uint8)
    if colour:  # a brown desk under cream paper
        tint = np.where(inside[..., None] > 0.5, (1.0, 0.97, 0.9), (1.0, 0.75, 0.55))
        out = np.clip(out[..., None].astype(np.float32) * tint, 0, 255).astype(np.uint8)
    return out


def photographed(page: np.ndarray, tilt: float = 0.08, level: int = 50, seed: int = 0) -> np.ndarray:
    """A phone photo from above and a little in front: the sheet's top edge shorter than its
    bottom (keystone) on a dark desk."""
    h, w = page.shape[:2]
    pad = int(0.1 * max(h, w))
    H, W = h + 2 * pad, w + 2 * pad
    src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    dx = tilt * w
    dst = np.float32([[pad + dx, pad], [pad + w - dx, pad], [pad + w, pad + h], [pad, pad + h]])
    m = cv2.getPerspectiveTransform(src, dst)
    sheet = cv2.warpPerspective(page, m, (W, H), flags=cv2.INTER_LINEAR, borderValue=0)
    inside = cv2.warpPerspective(np.full((h, w), 255, np.uint8), m, (W, H), borderValue=0).astype(np.float32) / 255
    rng = np.random.default_rng(seed)
    canvas = np.clip(level + rng.normal(0, 5, (H, W)), 0, 255).astype(np.float32)
    return (sheet * inside + canvas * (1 - inside)).astype(np.uint8)


def book_spread(left: np.ndarray, right: np.ndarray, shadow_depth: float = 0.45, gap: int = 40) -> np.ndarray:
    """Two leaves of an open bound book side by side, darkening towards the gutter between them."""
    h = max(left.shape[0], right.shape[0])
    gutter = np.full((h, gap), 255, np.uint8)
    spread = np.concatenate([left[:h], gutter, right[:h]], axis=1).astype(np.float32)
    w = spread.shape[1]
    x = np.abs(np.arange(w, dtype=np.float32) - (left.shape[1] + gap / 2)) / (w / 2)
    light = 1 - shadow_depth * np.exp(-((x / 0.06) ** 2))  # a soft shadow ~6 % of the width
    return np.clip(spread * light[None, :], 0, 255).astype(np.uint8)


def table_page(size: tuple[int, int] = (2480, 1754), rows: int = 12, cols: int = 6, font_px: int = 30) -> np.ndarray:
    """A landscape ruled table (a register's summary sheet): rulings and rows cross the middle."""
    width, height = size
    img = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(img)
    font = _dejavu(DEJAVU_SANS, font_px)
    x0, y0, x1, y1 = 120, 150, width - 120, height - 150
    for r in range(rows + 1):
        y = y0 + r * (y1 - y0) // rows
        draw.line((x0, y, x1, y), fill=0, width=3)
    for c in range(cols + 1):
        x = x0 + c * (x1 - x0) // cols
        draw.line((x, y0, x, y1), fill=0, width=3)
    words = ["Số", "Họ tên", "Năm sinh", "Thôn", "Diện tích", "Ghi chú"]
    for r in range(rows):
        for c in range(cols):
            draw.text((x0 + c * (x1 - x0) // cols + 20, y0 + r * (y1 - y0) // rows + 20),
                      words[c] if r == 0 else f"{(r * 7 + c * 3) % 97}", font=font, fill=0)
    return np.asarray(img).copy()


def show_through(front: np.ndarray, back: np.ndarray, strength: float = 0.4) -> np.ndarray:
    """Thin paper: the back's text shows through mirrored, ``strength`` as dark as real ink."""
    mirrored = back[:, ::-1]
    return np.minimum(front, 255 - (255 - mirrored.astype(np.float32)) * strength).astype(np.uint8)


def carbon_copy(page: np.ndarray, ink: int = 195, paper: int = 235, blur: float = 1.5, grain: float = 8.0,
                seed: int = 0) -> np.ndarray:
    """A faint carbon copy: ink only ``paper - ink`` levels darker than the paper, soft, grainy."""
    rng = np.random.default_rng(seed)
    faint = paper - (255 - page.astype(np.float32)) / 255 * (paper - ink)
    faint = cv2.GaussianBlur(faint, (0, 0), blur) + rng.normal(0, grain, page.shape)
    return np.clip(faint, 0, 255).astype(np.uint8)


LIBERATION_MONO = "/usr/share/fonts/truetype/liberation2/LiberationMono-Regular.ttf"


def typewritten(lines, seed: int = 0, font_px: int = 34, size: tuple[int, int] = (1240, 1754)) -> np.ndarray:
    """A typewriter page: fixed pitch, every strike its own darkness and height, ribbon breaks
    (small patches of missing ink), paper grain."""
    rng = np.random.default_rng(seed)
    img = Image.new("L", size, 255)
    draw = ImageDraw.Draw(img)
    font = _dejavu(LIBERATION_MONO, font_px)
    pitch = font.getlength("M")
    y = 120
    for line in lines:
        for i, ch in enumerate(line):
            draw.text((110 + i * pitch, y + int(rng.integers(-2, 3))), ch, font=font, fill=int(rng.integers(0, 110)))
        y += int(font_px * 1.8)
    page = np.asarray(img).astype(np.float32)
    breaks = cv2.GaussianBlur((rng.random(page.shape) < 0.02).astype(np.float32), (0, 0), 1.6) > 0.08
    page[breaks] = np.maximum(page[breaks], 200)
    return np.clip(page + rng.normal(0, 8, page.shape), 0, 255).astype(np.uint8)
