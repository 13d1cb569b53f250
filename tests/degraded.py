"""Generated degraded pages (issue 13, "Degraded text"): typewriter, red seal over text, ruled
table, bleed-through, each randomised by a seed, 300 dpi A4, with its ground-truth text.

Other texts and fonts than samples/ and tests/pages.py: FreeMono, FreeSerif, DejaVu Serif /
Sans Mono, Liberation Mono (fonts-freefont-ttf, fonts-dejavu-core, fonts-liberation2). Used by
the unit/integration tests and by bench/degraded_bench.py (the dev set and the held-out set
differ only by seed).
"""

from __future__ import annotations

import math
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

DPI = 300
A4 = (2480, 3508)
FONTS = Path("/usr/share/fonts/truetype")
TYPEWRITER_FONTS = [FONTS / "freefont/FreeMono.ttf", FONTS / "liberation2/LiberationMono-Regular.ttf",
                    FONTS / "dejavu/DejaVuSansMono.ttf"]
BOOK_FONTS = [FONTS / "freefont/FreeSerif.ttf", FONTS / "dejavu/DejaVuSerif.ttf",
              FONTS / "liberation2/LiberationMono-Regular.ttf"]
FAULTS = ("typewriter", "seal", "table", "bleed", "fax", "worn")

# our own administrative prose (no line of it is in samples/)
TEXT = [
    "ỦY BAN NHÂN DÂN HUYỆN THẠCH HÀ",
    "Số: 318/TB-UBND ngày 14 tháng 9 năm 1979",
    "THÔNG BÁO về việc kiểm kê ruộng đất vụ mùa",
    "Thực hiện chỉ thị của Ủy ban tỉnh về công tác",
    "thống kê diện tích gieo cấy, Ủy ban huyện đề nghị",
    "các hợp tác xã khẩn trương hoàn thành việc đo đạc",
    "lại từng thửa ruộng, ghi rõ tên chủ hộ nhận khoán,",
    "loại đất, hạng đất và sản lượng bình quân ba năm.",
    "Biểu mẫu gửi về phòng Nông nghiệp trước ngày 30.",
    "Đồng chí Nguyễn Hữu Thắng, Phó Chủ tịch, chịu trách",
    "nhiệm đôn đốc; cán bộ địa chính các xã phối hợp.",
    "Nơi nhận: Thường trực Huyện ủy; các xã, thị trấn;",
    "lưu văn thư. Mọi vướng mắc báo cáo bằng văn bản.",
    "GIẤY CHỨNG NHẬN kết hôn số 76, quyển số 02/1984",
    "Họ và tên chồng: Phan Đình Quý, sinh năm 1959,",
    "nghề nghiệp thợ rèn, trú tại xóm Đông, xã Kỳ Anh.",
    "Họ và tên vợ: Hoàng Thị Xuân, sinh năm 1962, dân",
    "tộc Kinh, trú tại thôn Yên Lạc cùng xã nói trên.",
    "Đăng ký kết hôn ngày 21 tháng 12 năm 1984 tại Ủy",
    "ban nhân dân xã, có hai người làm chứng ký tên.",
    "BÁO CÁO tình hình thu chi ngân sách quý IV năm 1991",
    "Tổng thu trên địa bàn đạt 1.482.600 đồng, bằng 97%",
    "kế hoạch năm; các khoản chi thường xuyên được bảo",
    "đảm, riêng chi sửa chữa trường học vượt dự toán.",
    "Đề nghị cấp trên xem xét bổ sung kinh phí cho việc",
    "xây dựng trạm y tế xã và nạo vét mương tưới tiêu.",
    "QUYẾT ĐỊNH điều động cán bộ, viên chức năm 1996",
    "Điều 1. Điều động bà Trịnh Thị Ngọc Ánh, kế toán,",
    "đến nhận công tác tại Phòng Tài chính - Kế hoạch.",
    "Điều 2. Chế độ lương và phụ cấp theo quy định hiện",
    "hành; thời gian điều động tính từ ngày mùng một.",
    "Điều 3. Chánh Văn phòng, Trưởng phòng Tổ chức và",
    "người có tên tại Điều 1 chịu trách nhiệm thi hành.",
    "TỜ TRÌNH xin chủ trương mở rộng chợ phiên Đồng Lộc",
    "Chợ hiện có 112 quầy, họp vào các ngày chẵn, thường",
    "xuyên quá tải; xe cộ đỗ lấn chiếm lòng đường liên xã.",
    "Ủy ban xã kính trình huyện cho phép dùng 2.450 mét",
    "vuông đất công ích liền kề để mở thêm dãy ki-ốt.",
]
TABLE_CELLS = [row.split("|") for row in """\
STT|Họ và tên|Năm sinh|Thôn, xóm|Diện tích|Ghi chú
1|Lê Văn Được|1941|Đông Hải|1.250|đã nộp
2|Trần Thị Mười|1950|Tây Sơn|860|chưa ký
3|Võ Đức Thiện|1938|Bắc Phong|2.015|thừa kế
4|Ngô Thị Huệ|1962|Nam Định|415|đã nộp
5|Đặng Quốc Việt|1955|Đông Hải|1.708|tranh chấp
6|Bùi Thị Thơm|1947|Tây Sơn|930|đã nộp
7|Hồ Sĩ Khiêm|1966|Trung Lương|1.122|mới cấp
8|Phùng Văn Tư|1944|Bắc Phong|675|đã nộp
9|Lưu Thị Yến|1958|Nam Định|1.390|chưa ký
10|Mạc Đăng Khoa|1971|Trung Lương|502|đổi thửa
11|Châu Thị Lụa|1949|Đông Hải|1.804|đã nộp""".splitlines()]


@dataclass
class DegradedPage:
    fault: str
    seed: int
    pixels: np.ndarray  # uint8, grey (H, W) or RGB (H, W, 3)
    truth: str
    dpi: float = DPI


@lru_cache(maxsize=32)
def _font(path: str, px: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, px)


def _lines(rng: np.random.Generator, count: int) -> list[str]:
    start = int(rng.integers(0, len(TEXT)))
    return [TEXT[(start + i) % len(TEXT)] for i in range(count)]


def _paper(rng: np.random.Generator, shape, level: float = 245.0, grain: float = 4.0) -> np.ndarray:
    return np.clip(level + rng.normal(0, grain, shape[:2]), 0, 255).astype(np.float32)


def typewriter_page(seed: int, jump: int = 3, filled: float = 0.0, spatter: int = 0, lift: int = 0,
                    fault: str = "typewriter") -> DegradedPage:
    """Fixed pitch, every strike its own darkness, height and sideways jitter; ribbon breaks
    (worn stripes and dropouts inside strokes), half-struck letters (one half faint), filled-in
    letters and ink blots, soft edges of a cloth ribbon, paper grain. ``jump``: the most a
    strike sits off its line, in pixels; ``filled``: the share of letters whose bowls (e, a, o)
    fill in with ink; ``spatter``: ink specks thrown around the lines; ``lift``: tone marks
    struck that many pixels above their letter (a dead key's mark, typed apart)."""
    rng = np.random.default_rng(seed)
    font_path = str(TYPEWRITER_FONTS[seed % len(TYPEWRITER_FONTS)])
    px = int(rng.integers(46, 54))  # 11-13 pt at 300 dpi
    font = _font(font_path, px)
    pitch = font.getlength("M")
    lines = _lines(rng, int(rng.integers(22, 27)))
    ink = np.zeros(A4[::-1], np.float32)  # 0 no ink .. 1 full
    y = 230
    for line in lines:
        for i, ch in enumerate(line):
            if ch == " ":
                continue
            glyph = Image.new("L", (int(pitch * 2), int(px * 2)), 0)
            ImageDraw.Draw(glyph).text((pitch // 2, px // 3), ch, font=font, fill=255)
            g = np.asarray(glyph).astype(np.float32) / 255 * rng.uniform(0.55, 1.0)
            if lift and unicodedata.normalize("NFD", ch) != ch:
                g = _lift_marks(g, ch, font, pitch, px, lift)
            if filled and rng.random() < filled:  # a clogged type slug: its bowls print solid
                g = cv2.morphologyEx(g, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (9, 9)))
            if rng.random() < 0.12:  # half-struck: the key hit at an angle
                half = g.shape[0] // 2 if rng.random() < 0.5 else 0
                g[half:half + g.shape[0] // 2] *= rng.uniform(0.25, 0.5)
            x0 = int(200 + i * pitch + rng.integers(-2, 3) - pitch // 2)
            y0 = int(y + rng.integers(-jump, jump + 1) - px // 3)
            h, w = g.shape
            region = ink[y0:y0 + h, x0:x0 + w]
            region[:] = np.maximum(region, g[:region.shape[0], :region.shape[1]])
        y += int(px * rng.uniform(1.7, 2.0))
    # ribbon wear: horizontal stripes of the ribbon carry less ink, and random dropouts
    stripes = 1 - 0.3 * (np.sin(np.arange(ink.shape[0]) / rng.uniform(2.5, 4.0)) > 0.6)
    ink *= stripes[:, None].astype(np.float32)
    drop = cv2.GaussianBlur((rng.random(ink.shape) < 0.03).astype(np.float32), (0, 0), 1.5) > 0.1
    ink[drop] *= 0.15
    ink = cv2.GaussianBlur(ink, (0, 0), 1.0)
    _blots(rng, ink, count=int(rng.integers(6, 15)))
    if spatter:  # specks of ribbon ink, most of them in the gaps between lines
        ys, xs = rng.integers(200, ink.shape[0] - 200, spatter), rng.integers(150, ink.shape[1] - 150, spatter)
        for cy, cx in zip(ys, xs):
            cv2.circle(ink, (int(cx), int(cy)), int(rng.integers(1, 4)), float(rng.uniform(0.5, 1.0)), -1)
    page = _paper(rng, ink.shape, grain=6.0) * (1 - 0.85 * np.clip(ink, 0, 1))
    return DegradedPage(fault, seed, np.clip(page, 0, 255).astype(np.uint8), "\n".join(lines))


def _lift_marks(g: np.ndarray, ch: str, font, pitch: float, px: int, lift: int) -> np.ndarray:
    """``g``, the glyph of ``ch``, with the ink above its base letter moved up by ``lift``."""
    base = unicodedata.normalize("NFD", ch)[0]
    plain = Image.new("L", (g.shape[1], g.shape[0]), 0)
    ImageDraw.Draw(plain).text((pitch // 2, px // 3), base, font=font, fill=255)
    rows = np.flatnonzero(np.asarray(plain).max(axis=1) > 64)
    if not len(rows) or rows[0] <= lift:
        return g
    top = int(rows[0]) - 1
    out = g.copy()
    out[:top] = 0
    out[:top - lift] = np.maximum(out[:top - lift], g[lift:top])
    return out


def worn_typewriter_page(seed: int) -> DegradedPage:
    """A worse machine than typewriter_page's: strikes up to 6 px off the line, a fifth of the
    letters with their bowls filled in, ink spatter around the lines."""
    return typewriter_page(seed, jump=6, filled=0.2, spatter=400, fault="worn")


def fabric_typewriter_page(seed: int) -> DegradedPage:
    """The typewriter page through a worn cloth ribbon, faint: the ink of every stroke mottled by
    the fabric's weave, scanned at 200-300 dpi and stored as JPEG (q60-90), each drawn from the
    seed with the weave's depth and the ink's strength. Its strokes fall apart into fragments
    when thresholded, as a held-out typewriter page's did: some pages a little (the smoothed
    copy measures ~1.5x taller), most a lot (~2x)."""
    page = typewriter_page(seed)
    rng = np.random.default_rng(seed + 1000)
    if seed <= 4 or 100 <= seed <= 103:  # the first dev and held-out pages, as first drawn
        depth, strength, dpi, quality = 0.6, 0.7, 250, 80
    else:
        depth, strength = rng.uniform(0.25, 0.7), rng.uniform(0.55, 0.95)
        dpi, quality = int(rng.choice([200, 225, 250, 275, 300])), int(rng.integers(60, 91))
    ink = np.clip((245 - page.pixels.astype(np.float32)) / 245, 0, 1)
    weave = cv2.GaussianBlur(rng.random(ink.shape).astype(np.float32), (0, 0), 0.8)
    weave = np.clip((weave - weave.mean()) / weave.std() * depth + 0.7, 0, 1)
    out = np.clip(245 - 245 * ink * weave * strength + rng.normal(0, 6, ink.shape), 0, 255).astype(np.uint8)
    if dpi != DPI:
        out = cv2.resize(out, None, fx=dpi / DPI, fy=dpi / DPI, interpolation=cv2.INTER_AREA)
    out = cv2.imdecode(cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, quality])[1], cv2.IMREAD_GRAYSCALE)
    return DegradedPage("fabric", seed, out, page.truth, dpi=float(dpi))


def dead_key_typewriter_page(seed: int) -> DegradedPage:
    """Tone marks typed apart with dead keys, sitting 8 px (300 dpi) above their letters."""
    return typewriter_page(seed, lift=8, fault="deadkey")


def _blots(rng: np.random.Generator, ink: np.ndarray, count: int) -> None:
    """Small round ink blots, on text lines or beside them."""
    ys, xs = np.nonzero(ink[::8, ::8] > 0.5)
    if not len(ys):
        return
    for _ in range(count):
        k = int(rng.integers(0, len(ys)))
        cy, cx = ys[k] * 8 + int(rng.integers(-20, 21)), xs[k] * 8 + int(rng.integers(-20, 21))
        cv2.circle(ink, (int(cx), int(cy)), int(rng.integers(2, 6)), 0.9, -1)


def _body(rng: np.random.Generator, draw: ImageDraw.ImageDraw, lines: list[str], font, px: int,
          top: int = 230, left: int = 220, leading: float = 1.75, fill=(20, 20, 20)) -> list[int]:
    ys = []
    y = top
    for line in lines:
        draw.text((left, y), line, font=font, fill=fill)
        ys.append(y)
        y += int(px * leading)
    return ys


def seal_page(seed: int) -> DegradedPage:
    """Body text with a round red seal stamped over it mid-page (ring, star, the agency's name
    around), a blue signature stroke; the ink multiplies, so text under the seal stays dark."""
    rng = np.random.default_rng(seed)
    font_path = str(BOOK_FONTS[seed % len(BOOK_FONTS)])
    px = int(rng.integers(44, 52))
    lines = _lines(rng, int(rng.integers(20, 25)))
    page = Image.new("RGB", A4, (250, 248, 242))
    ys = _body(rng, ImageDraw.Draw(page), lines, _font(font_path, px), px)
    base = np.asarray(page).astype(np.float32) / 255
    stamp = Image.new("L", A4, 0)
    d = ImageDraw.Draw(stamp)
    r = int(rng.integers(240, 320))
    cx = int(rng.integers(700, 1800))
    cy = int(ys[len(ys) // 2] + rng.integers(-200, 200))
    for width, radius in ((16, r), (6, r - 60)):
        d.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), outline=255, width=width)
    star = [(cx + 70 * math.cos(a) * (1 if k % 2 == 0 else 0.4), cy + 70 * math.sin(a) * (1 if k % 2 == 0 else 0.4))
            for k, a in enumerate(np.linspace(-math.pi / 2, 1.5 * math.pi, 11)[:-1])]
    d.polygon(star, fill=255)
    ring_font = _font(str(FONTS / "dejavu/DejaVuSans-Bold.ttf"), 34)
    for k, ch in enumerate("ỦY BAN NHÂN DÂN XÃ YÊN HÒA * HUYỆN NGHI LỘC *"):
        a = -math.pi + k * 2 * math.pi / 44
        d.text((cx + (r - 34) * math.cos(a) - 12, cy + (r - 34) * math.sin(a) - 17), ch, font=ring_font, fill=255)
    strength = cv2.GaussianBlur(np.asarray(stamp).astype(np.float32) / 255, (0, 0), 1.2)
    strength *= rng.uniform(0.7, 0.95) * (rng.random(strength.shape) > 0.08)  # patchy stamp ink
    red = np.array([rng.uniform(0.5, 0.9), 0.1, 0.14], np.float32)  # bright to dark red ink
    out = base * (1 - strength[..., None] * (1 - red))
    pen = Image.new("L", A4, 0)
    y0 = ys[-1] + 140
    pts = [(1500 + 40 * t, y0 + 40 * math.sin(t * 1.3 + seed)) for t in np.linspace(0, 14, 60)]
    ImageDraw.Draw(pen).line(pts, fill=255, width=7)
    p = np.asarray(pen).astype(np.float32)[..., None] / 255 * 0.9
    out = out * (1 - p * (1 - np.array([0.15, 0.2, 0.75], np.float32)))
    noise = rng.normal(0, 3, out.shape[:2])[..., None] / 255
    return DegradedPage("seal", seed, np.clip((out + noise) * 255, 0, 255).astype(np.uint8), "\n".join(lines))


def table_page(seed: int) -> DegradedPage:
    """A heading, then a ruled table (rulings of uneven thickness, a little off straight, some
    touching the letters), a closing line; the truth is the cells row by row."""
    rng = np.random.default_rng(seed)
    font_path = str(BOOK_FONTS[seed % len(BOOK_FONTS)])
    px = int(rng.integers(40, 46))
    font = _font(font_path, px)
    img = Image.new("L", A4, 246)
    d = ImageDraw.Draw(img)
    head = _lines(rng, 2)
    ys = _body(rng, d, head, font, px, fill=15)
    widths = [150, 560, 290, 420, 330, 360]
    x0, top = 200, ys[-1] + 180
    row_h = int(px * rng.uniform(1.9, 2.4))
    rows = TABLE_CELLS[: int(rng.integers(9, len(TABLE_CELLS) + 1))]
    xs = np.cumsum([x0] + widths)
    for r, row in enumerate(rows):
        for c, cell in enumerate(row):
            d.text((xs[c] + 22, top + r * row_h + (row_h - px) // 2 - 4), cell, font=font, fill=15)
    bottom = top + len(rows) * row_h
    for r in range(len(rows) + 1):
        yy = top + r * row_h + int(rng.integers(-3, 4))
        d.line((xs[0], yy, xs[-1], yy + int(rng.integers(-4, 5))), fill=int(rng.integers(0, 60)),
               width=int(rng.integers(3, 7)))
    for x in xs:
        xx = int(x + rng.integers(-3, 4))
        d.line((xx, top, xx + int(rng.integers(-4, 5)), bottom), fill=int(rng.integers(0, 60)),
               width=int(rng.integers(3, 7)))
    tail = _lines(rng, 2)
    _body(rng, d, tail, font, px, top=bottom + 140, fill=15)
    page = np.asarray(img).astype(np.float32) + rng.normal(0, 4, A4[::-1])
    truth = "\n".join(head + [" ".join(row) for row in rows] + tail)
    return DegradedPage("table", seed, np.clip(page, 0, 255).astype(np.uint8), truth)


def bleed_page(seed: int) -> DegradedPage:
    """Thin paper: the back's text bleeds through mirrored, soft, at low contrast (an ink that
    soaked through, somewhat darker in places), on yellowed paper."""
    rng = np.random.default_rng(seed)
    font_path = str(BOOK_FONTS[seed % len(BOOK_FONTS)])
    px = int(rng.integers(44, 52))
    font = _font(font_path, px)
    lines = _lines(rng, int(rng.integers(20, 25)))
    front = Image.new("L", A4, 0)
    _body(rng, ImageDraw.Draw(front), lines, font, px, fill=255)
    back = Image.new("L", A4, 0)
    _body(rng, ImageDraw.Draw(back), _lines(rng, 24), _font(str(BOOK_FONTS[(seed + 1) % 3]), px + 4), px + 4,
          top=250 + int(rng.integers(0, 40)), left=180, fill=255)
    f = np.asarray(front).astype(np.float32) / 255
    b = cv2.GaussianBlur(np.asarray(back)[:, ::-1].astype(np.float32) / 255, (0, 0), rng.uniform(1.5, 3.0))
    patch = cv2.resize(rng.uniform(0.6, 1.0, (12, 9)).astype(np.float32), A4, interpolation=cv2.INTER_CUBIC)
    bleed = b * rng.uniform(0.25, 0.45) * patch
    paper = np.array([238, 228, 200], np.float32)
    ink = np.array([25, 25, 35], np.float32)
    out = paper * (1 - bleed[..., None] * 0.75) + 0 * ink
    out = out * (1 - f[..., None]) + ink * f[..., None]
    out += rng.normal(0, 4, out.shape[:2])[..., None]
    return DegradedPage("bleed", seed, np.clip(out, 0, 255).astype(np.uint8), "\n".join(lines))


FAX_DPI = (204, 196)  # fine mode
FAX_FONTS = [FONTS / "dejavu/DejaVuSerif.ttf", FONTS / "liberation2/LiberationSerif-Regular.ttf",
             FONTS / "freefont/FreeSans.ttf"]


def fax_page(seed: int) -> DegradedPage:
    """A fine-mode fax (204 x 196 dpi, 1 bit) of thin print: a sender's header line, body text
    drawn at 4x and thresholded light (thin strokes), sampled to the fax grid, speckle, and
    scan-head streaks: single scan rows gone black across the page, some through the text, some
    between its lines. Returned as the reader makes it: square 204 dpi pixels, 0/255 (``dpi``)."""
    from digitize.sources import _square_pixels  # the reader's own fine-mode handling

    rng = np.random.default_rng(seed)
    xdpi, ydpi = FAX_DPI
    up = 4
    width, height = int(8.27 * xdpi) * up, int(11.69 * xdpi) * up  # drawn square, sampled to the fax grid
    font_path = str(FAX_FONTS[seed % len(FAX_FONTS)])
    px = int(rng.integers(10, 13) / 72 * ydpi * up)  # 10-12 pt
    img = Image.new("L", (width, height), 0)
    d = ImageDraw.Draw(img)
    header = (f"{int(rng.integers(1, 29)):02d}/{int(rng.integers(1, 13)):02d}/19{int(rng.integers(85, 100))} "
              f"{int(rng.integers(7, 18)):02d}:{int(rng.integers(0, 60)):02d} FROM: UBND XA "
              f"{int(rng.integers(10, 99))} TO: 0{int(rng.integers(200000000, 999999999))} P.0{seed % 9 + 1}")
    d.text((40 * up, 30 * up), header, font=_font(str(FONTS / "dejavu/DejaVuSansMono.ttf"), int(0.6 * px)), fill=255)
    lines = _lines(rng, int(rng.integers(16, 21)))
    ys = _body(rng, d, lines, _font(font_path, px), px, top=160 * up, left=150 * up, leading=1.6, fill=255)
    ink = cv2.GaussianBlur(np.asarray(img).astype(np.float32), (0, 0), up * 0.6)
    ink = ink > rng.uniform(150, 190)  # thin print: a light threshold
    grid = (width // up, round(11.69 * ydpi))
    fax = cv2.resize(ink.astype(np.uint8) * 255, grid, interpolation=cv2.INTER_AREA) >= 128
    fax ^= rng.random(fax.shape) < 0.0015  # speckle, both ways
    to_grid = ydpi / xdpi / up
    rows = [int((y + rng.uniform(0.3, 0.75) * px) * to_grid) for y in rng.choice(ys, 3, replace=False)]
    rows += [int((y - 0.3 * px) * to_grid) for y in rng.choice(ys, 2, replace=False)]  # between lines
    for r in rows:  # a scan row gone black from near the left edge on, with a few dropouts
        start = int(rng.integers(0, 30))
        fax[r, start:] |= rng.random(fax.shape[1] - start) > 0.02
    square, _ = _square_pixels(Image.fromarray(~fax), xdpi, ydpi)
    pixels = np.asarray(square).astype(np.uint8) * 255
    return DegradedPage("fax", seed, pixels, "\n".join([header] + lines), dpi=float(xdpi))


GENERATORS = {"typewriter": typewriter_page, "seal": seal_page, "table": table_page, "bleed": bleed_page,
              "fax": fax_page, "worn": worn_typewriter_page, "deadkey": dead_key_typewriter_page,
              "fabric": fabric_typewriter_page}


def generate(fault: str, seed: int) -> DegradedPage:
    return GENERATORS[fault](seed)


# DejaVu Sans Mono is left out: without precomposed Vietnamese letters, PIL sets their tone marks
# apart (``kêt´``), and the page's truth would not be what it shows
HOLEY_FONTS = [FONTS / "freefont/FreeMono.ttf", FONTS / "liberation2/LiberationMono-Regular.ttf"]


@lru_cache(maxsize=8)
def holey_typewriter_page(seed: int, clean: bool = False) -> DegradedPage:
    """A typewriter page whose worn ribbon leaves grainy, broken strokes: pale bands of a few scan
    rows, holes punched through every stroke (blurred noise over a threshold), uneven strikes (each
    letter its own darkness and a little off its line), soft edges, paper grain, JPEG, 200-300 dpi,
    each drawn from the seed. Thresholded, most letters fall into 3-12 px fragments while the
    smoothed copy joins them only part of the way (1.4-1.8x). ``clean``: the same page unworn
    (solid strokes, same strikes), whose measure is the true letter height."""
    rng = np.random.default_rng(seed + 7000)
    dpi = int(rng.choice([200, 225, 250, 275, 300]))
    px = round(float(rng.uniform(10.5, 13.0)) * dpi / 72)
    font = _font(str(HOLEY_FONTS[seed % len(HOLEY_FONTS)]), px)
    w, h = round(8.27 * dpi), round(11.69 * dpi)
    ink = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(ink)
    lines = _lines(rng, int(rng.integers(20, 26)))
    pitch = px * float(rng.uniform(1.45, 1.75))
    y = round(1.0 * dpi)
    for line in lines:
        x = round(0.9 * dpi)
        for ch in line:
            if not ch.isspace():
                draw.text((x, y + rng.normal(0, px * 0.03)), ch, font=font, fill=int(255 * rng.uniform(0.55, 1.0)),
                          anchor="ls")
            x += font.getlength(ch)
        y += pitch
    ink = np.asarray(ink, np.float32) / 255.0
    low, hole_at, soft = rng.uniform(0.4, 0.65), rng.uniform(0.53, 0.60), rng.uniform(0.6, 0.9)
    bands = np.repeat(rng.uniform(low, 1.0, h // 3 + 1), 3)[:h, None].astype(np.float32)
    holes = cv2.GaussianBlur(rng.random((h, w)).astype(np.float32), (0, 0), 1.2) > hole_at
    if clean:
        bands, holes = np.float32(1.0), np.zeros_like(holes)
    ink = cv2.GaussianBlur(ink * bands * np.where(holes, 0.25, 1.0).astype(np.float32), (0, 0), soft)
    paper, dark = rng.uniform(225, 240), rng.uniform(20, 45)
    img = paper - (paper - dark) * np.clip(ink, 0, 1) + rng.normal(0, rng.uniform(3, 5), ink.shape)
    img = np.clip(img, 0, 255).astype(np.uint8)
    img = cv2.imdecode(cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(70, 86))])[1],
                       cv2.IMREAD_GRAYSCALE)
    return DegradedPage("holey", seed, img, "\n".join(lines), dpi=float(dpi))


GENERATORS["holey"] = holey_typewriter_page
