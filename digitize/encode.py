"""Archival image encoding: keep the scanner's stream when possible, else the right codec.

Colour/grey pages become JPEG (what scanners produce; ~100-300 KB per A4 page at 300 dpi),
bilevel pages CCITT G4 (lossless, a few tens of KB), and a scanner JPEG that needs no
rotation keeps its image data byte for byte (its metadata dropped), so the archival image is the scan itself.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
from PIL import Image, TiffImagePlugin


@dataclass(frozen=True)
class EncodedImage:
    data: bytes
    width: int
    height: int
    colour_space: str  # "/DeviceRGB" or "/DeviceGray"
    bits: int
    filter: str  # "/DCTDecode", "/CCITTFaxDecode", "/FlateDecode"
    decode_parms: dict = field(default_factory=dict)
    encoding: str = ""  # report label


def _jpeg_segments(data: bytes) -> Iterator[tuple[int, int, int]]:
    """(marker, start, end) of each segment of a JPEG from SOI to EOI, a scan's entropy-coded data
    counted in its SOS segment; it stops, without an EOI, at the first thing out of place."""
    if data[:2] != b"\xff\xd8":
        return
    yield 0xD8, 0, 2
    i, n = 2, len(data)
    while i + 1 < n:
        if data[i] != 0xFF:
            return
        marker = data[i + 1]
        if marker == 0xFF:  # a fill byte
            i += 1
            continue
        if marker == 0xD9:
            yield marker, i, i + 2
            return
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # no length: stray standalone markers
            i += 2
            continue
        if i + 4 > n:
            return
        end = i + 2 + struct.unpack(">H", data[i + 2:i + 4])[0]
        if end < i + 4 or end > n:
            return
        if marker == 0xDA:  # the scan's data runs to the next marker but a restart or a stuffed 0xFF00
            while True:
                end = data.find(b"\xff", end)
                if end < 0 or end + 1 >= n:
                    return
                if data[end + 1] != 0 and not 0xD0 <= data[end + 1] <= 0xD7:
                    break
                end += 2
        yield marker, i, end
        i = end


def _jpeg_colour_space(data: bytes) -> tuple[int, int, int, int] | None:
    """(width, height, components, bits) from a baseline/progressive JPEG's SOF marker."""
    for marker, start, end in _jpeg_segments(data):
        if marker in (0xC0, 0xC1, 0xC2):
            if end - start < 10:
                return None
            height, width = struct.unpack(">HH", data[start + 5:start + 9])
            return width, height, data[start + 9], data[start + 4]
    return None


def _jpeg_without_metadata(data: bytes) -> bytes | None:
    """The JPEG with only what decoding needs: SOI, JFIF (its thumbnail dropped), Adobe (its colour
    transform flag), tables, frame, scans, EOI. EXIF (maker, serial, GPS), XMP, ICC, comments and any
    bytes after EOI go: the archive keeps a citizen's scan, not the phone's metadata nor a payload
    hidden behind the image. Nothing is re-encoded; the pixels decode the same. DATA itself when
    nothing is dropped; None when the stream does not parse to its EOI."""
    kept, ended = [], False
    for marker, start, end in _jpeg_segments(data):
        ended = marker == 0xD9
        segment = data[start:end]
        if marker == 0xE0 and segment[4:9] == b"JFIF\x00" and len(segment) >= 18:
            kept.append(b"\xff\xe0\x00\x10" + segment[4:16] + b"\x00\x00")  # no thumbnail
        elif (marker == 0xEE and segment[4:9] == b"Adobe") or marker in (0xD8, 0xD9, 0xDA, 0xDB, 0xDD) \
                or 0xC0 <= marker <= 0xCF:  # SOFn, DHT, DAC
            kept.append(segment)
    if not ended:
        return None
    out = b"".join(kept)
    return data if out == data else out


def passthrough_jpeg(data: bytes) -> EncodedImage | None:
    """Wrap an existing JPEG if PDF/A can show it as is (grey or RGB, 8-bit baseline/progressive),
    its image data unchanged and its metadata dropped (see _jpeg_without_metadata)."""
    info = _jpeg_colour_space(data)
    if info is None:
        return None
    data = _jpeg_without_metadata(data)
    if data is None:
        return None  # not parsed to its end: re-encoded from the decoded pixels instead
    width, height, components, precision = info
    if components not in (1, 3) or precision != 8:
        return None  # CMYK/YCCK need conversion to the sRGB output intent
    return EncodedImage(data, width, height, "/DeviceGray" if components == 1 else "/DeviceRGB", 8,
                        "/DCTDecode", encoding="jpeg-passthrough")


A4_SQUARE_INCHES = 8.27 * 11.69
# JPEG quality is predicted, not stepped down by trial: a page's JPEG size is the sum of its
# 16-row MCU bands, so every SAMPLE_EVERY-th band, cut out at full resolution and encoded alone,
# predicts the whole page's size at any quality to a few per cent (noise, text and margins are
# sampled in proportion), at a tenth of a page encode per quality tried.
SAMPLE_BAND = 16  # rows of one MCU band at 4:2:0
SAMPLE_EVERY = 10
FIT_MARGIN = 0.97  # aim this far under the budget
UNDER_BUDGET = 0.9  # a first encode this far under the budget is corrected upwards (sample error ~+-15 %)
# JPEG down to MIN_QUALITY before JPEG 2000. At equal bytes JPEG 2000 keeps more detail, but on
# grainy A4 pages that JPEG fits at q15..q40 only 0.5-0.7 dB PSNR more (against the scan; 0.3 dB
# less against the noise-free page at q15), for 15-40x the CPU (0.1 s against 2-7 s a page): it
# truly wins only where JPEG would need coarser steps still, and its blocks would show.
MIN_QUALITY = 20


BUDGET_DPI = 300  # page_kb is for an A4 page at up to this resolution


def page_budget(width: int, height: int, dpi: float, kb_per_a4: int) -> int:
    """Bytes allowed for a page's image: the per-A4 budget scaled by the page's paper area, and by
    its pixels above BUDGET_DPI. An archive scanned at 600 dpi has four times the pixels of one at
    300: held to the same bytes, its pages went to JPEG q20-26 or to JPEG 2000 (~5 s an A4 page)
    and a scanner's own JPEG was never kept, the resolution chosen for fidelity spent on blocks."""
    area = (width / dpi) * (height / dpi)
    return int(kb_per_a4 * 1024 * max(area / A4_SQUARE_INCHES, 0.05) * max(1.0, dpi / BUDGET_DPI) ** 2)


def encode_jpx(pixels: np.ndarray, budget: int) -> EncodedImage:
    """JPEG 2000 (PDF/A-2 allows it) at exactly the byte budget: for grainy pages where even
    JPEG at MIN_QUALITY is over budget, it keeps far more detail per byte (but costs ~0.5 s an
    A4 page)."""
    mode = "L" if pixels.ndim == 2 else "RGB"
    buf = io.BytesIO()
    ratio = max(pixels.size / max(budget, 1), 1.0)
    # 1024-px tiles bound OpenJPEG's memory (an untiled A4 colour page took ~300 MB)
    Image.fromarray(pixels, mode).save(buf, "JPEG2000", quality_mode="rates", quality_layers=[ratio],
                                       irreversible=True, no_jp2=False, tile_size=(1024, 1024))
    h, w = pixels.shape[:2]
    return EncodedImage(buf.getvalue(), w, h, "/DeviceGray" if mode == "L" else "/DeviceRGB", 8, "/JPXDecode",
                        encoding="jpx")


def encode_jpeg(pixels: np.ndarray, quality: int, budget: int | None = None) -> EncodedImage:
    """JPEG at ``quality``, or at the highest quality predicted to fit ``budget`` bytes (down to
    MIN_QUALITY): one final encode, and at most one correction with the model calibrated by
    that encode's true size (down when over budget, up when far under); past MIN_QUALITY,
    JPEG 2000 at the budget."""
    mode = "L" if pixels.ndim == 2 else "RGB"
    img = Image.fromarray(pixels, mode)
    if budget is None:
        return _jpeg_image(_jpeg(img, quality, optimize=True), pixels, quality)
    model = JpegSizeModel(pixels)
    target = budget * FIT_MARGIN
    fitted = model.best_quality(quality, target)
    if fitted is None:
        return encode_jpx(pixels, budget)
    data = _jpeg(img, fitted, optimize=True)
    calibration = len(data) / model.size(fitted)
    if len(data) > budget:
        again = model.best_quality(fitted - 1, target / calibration)
        if again is None:
            return encode_jpx(pixels, budget)
        data, fitted = _jpeg(img, again, optimize=True), again
        if len(data) > budget:
            return encode_jpx(pixels, budget)
    elif fitted < quality and len(data) < UNDER_BUDGET * budget:
        better = model.best_quality(quality, target / calibration, low=fitted)
        if better is not None and better > fitted:
            bigger = _jpeg(img, better, optimize=True)
            if len(bigger) <= budget:
                data, fitted = bigger, better
    return _jpeg_image(data, pixels, fitted)


def _jpeg_image(data: bytes, pixels: np.ndarray, quality: int) -> EncodedImage:
    h, w = pixels.shape[:2]
    return EncodedImage(data, w, h, "/DeviceGray" if pixels.ndim == 2 else "/DeviceRGB", 8, "/DCTDecode",
                        encoding=f"jpeg-q{quality}")


def _jpeg(img: Image.Image, quality: int, optimize: bool = False) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality, optimize=optimize, subsampling="4:2:0")
    return buf.getvalue()


def band_sample(pixels: np.ndarray) -> tuple[np.ndarray, float]:
    """A 1/SAMPLE_EVERY sample of the page in MCU-sized pieces, and the factor from its JPEG
    size to the page's (whole page when small).

    Stratified: the page is cut into groups of SAMPLE_EVERY bands and into SAMPLE_EVERY columns,
    and each (group, column) cell gives one band of its own, at a fixed pseudo-random place. A
    regular grid would beat against the line pitch; whole bands would leave the share of text
    rows to chance (+-15 % on a half-empty page)."""
    h, w = pixels.shape[:2]
    stride = SAMPLE_BAND * SAMPLE_EVERY
    if h < 4 * stride or w < 4 * SAMPLE_EVERY * SAMPLE_BAND:
        return pixels, 1.0
    groups = h // stride
    cut = [c * w // SAMPLE_EVERY // SAMPLE_BAND * SAMPLE_BAND for c in range(SAMPLE_EVERY)] + [w]
    picks = np.random.default_rng(h * 65_537 + w).integers(0, SAMPLE_EVERY, size=(groups, SAMPLE_EVERY))
    rows = []
    for g in range(groups):
        rows.append(np.concatenate([pixels[(top := (g * SAMPLE_EVERY + int(picks[g, c])) * SAMPLE_BAND):
                                           top + SAMPLE_BAND, cut[c]:cut[c + 1]]
                                    for c in range(SAMPLE_EVERY)], axis=1))
    return np.ascontiguousarray(np.concatenate(rows)), h / (groups * SAMPLE_BAND)


class JpegSizeModel:
    """Predicted JPEG size of a page at any quality, from Huffman-optimised encodes of its
    band sample (each ~1/SAMPLE_EVERY of a page encode), cached per quality."""

    def __init__(self, pixels: np.ndarray):
        sample, self.factor = band_sample(pixels)
        self.image = Image.fromarray(sample, "L" if sample.ndim == 2 else "RGB")
        self._sizes: dict[int, float] = {}

    def size(self, quality: int) -> float:
        if quality not in self._sizes:  # headers and tables are paid once, not ``factor`` times
            header = len(_jpeg(Image.new(self.image.mode, (8, 8)), quality))
            self._sizes[quality] = header + (len(_jpeg(self.image, quality, optimize=True)) - header) * self.factor
        return self._sizes[quality]

    def best_quality(self, high: int, target: float, low: int = MIN_QUALITY) -> int | None:
        """Highest quality in [low, high] predicted to fit ``target`` bytes, by interpolation
        (None when not even ``low`` fits)."""
        if high < low:
            return None
        if self.size(high) <= target:
            return high
        if self.size(low) > target:
            return None
        # regula falsi on log size (nearly linear in quality): 2-3 sample encodes, not 6
        while high - low > 1:  # low fits, high does not
            a, b = np.log(self.size(low)), np.log(self.size(high))
            guess = low + (np.log(target) - a) * (high - low) / max(b - a, 1e-9)
            mid = min(max(int(guess), low + 1), high - 1)
            low, high = (mid, high) if self.size(mid) <= target else (low, mid)
        return low


def encode_bilevel(pixels: np.ndarray) -> EncodedImage:
    """CCITT G4 via libtiff (lossless); falls back to 1-bit Flate if G4 is unavailable."""
    h, w = pixels.shape[:2]
    img = Image.fromarray(pixels > 127)  # mode "1": True = white
    try:
        buf = io.BytesIO()
        TiffImagePlugin.WRITE_LIBTIFF = True
        img.save(buf, "TIFF", compression="group4", tiffinfo={278: h})  # one strip: one G4 stream
        data, photometric = _tiff_single_strip(buf.getvalue())
        # libtiff codes 0 bits as white runs; Pillow's bilevel TIFF is min-is-black (1 = white),
        # so its "black" runs are paper: BlackIs1 makes the PDF reader decode them to white.
        return EncodedImage(data, w, h, "/DeviceGray", 1, "/CCITTFaxDecode",
                            {"/K": -1, "/Columns": w, "/Rows": h, "/BlackIs1": photometric == 1},
                            encoding="ccitt-g4")
    except (OSError, ValueError):
        packed = np.packbits(pixels > 127, axis=1).tobytes()
        return EncodedImage(zlib.compress(packed, 9), w, h, "/DeviceGray", 1, "/FlateDecode", encoding="flate")
    finally:
        TiffImagePlugin.WRITE_LIBTIFF = False


def _tiff_single_strip(tiff: bytes) -> tuple[bytes, int]:
    """The raw G4 stream of a one-strip TIFF (what PDF wants) and its photometric tag."""
    img = Image.open(io.BytesIO(tiff))
    tags = img.tag_v2
    photometric = tags.get(262, 0)
    if tags.get(259) != 4 or photometric not in (0, 1):
        raise ValueError("unexpected TIFF encoding")
    offsets, counts = tags[273], tags[279]
    if isinstance(offsets, int):
        offsets, counts = (offsets,), (counts,)
    if len(offsets) != 1:
        raise ValueError("G4 TIFF with several strips")
    return tiff[offsets[0]:offsets[0] + counts[0]], photometric


def encode_archival(pixels: np.ndarray, colour_mode: str, quality: int, budget: int | None = None) -> EncodedImage:
    if colour_mode == "bilevel":
        return encode_bilevel(pixels if pixels.ndim == 2 else pixels[..., 0])
    return encode_jpeg(pixels, quality, budget)
