"""Archival image encoding: keep the scanner's stream when possible, else the right codec.

Colour/grey pages become JPEG (what scanners produce; ~100-300 KB per A4 page at 300 dpi),
bilevel pages CCITT G4 (lossless, a few tens of KB), and a scanner JPEG that needs no
rotation is copied byte for byte, so the archival image is the scan itself.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass, field

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


def _jpeg_colour_space(data: bytes) -> tuple[int, int, int, int] | None:
    """(width, height, components, bits) from a baseline/progressive JPEG's SOF marker."""
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        length = struct.unpack(">H", data[i + 2:i + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2):
            height, width = struct.unpack(">HH", data[i + 5:i + 9])
            return width, height, data[i + 9], data[i + 4]
        i += 2 + length
    return None


def passthrough_jpeg(data: bytes) -> EncodedImage | None:
    """Wrap an existing JPEG if PDF/A can show it as is (grey or RGB, 8-bit baseline/progressive)."""
    info = _jpeg_colour_space(data)
    if info is None:
        return None
    width, height, components, precision = info
    if components not in (1, 3) or precision != 8:
        return None  # CMYK/YCCK need conversion to the sRGB output intent
    return EncodedImage(data, width, height, "/DeviceGray" if components == 1 else "/DeviceRGB", 8,
                        "/DCTDecode", encoding="jpeg-passthrough")


A4_SQUARE_INCHES = 8.27 * 11.69
# JPEG down to q40 before JPEG 2000: on the samples' grainy pages that fit at q40, JPEG keeps
# about the same detail as JPEG 2000 at the budget (PSNR 35.8 vs 35.5 dB and 37.5 vs 38.6 dB),
# every PDF reader and signing tool decodes it, and it costs 0.05 s instead of ~0.5 s a page.
MIN_QUALITY = 40


def page_budget(width: int, height: int, dpi: float, kb_per_a4: int) -> int:
    """Bytes allowed for a page's image: the per-A4 budget scaled by the page's paper area."""
    area = (width / dpi) * (height / dpi)
    return int(kb_per_a4 * 1024 * max(area / A4_SQUARE_INCHES, 0.05))


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
    """JPEG at ``quality``, stepping down (to MIN_QUALITY) while it is over ``budget`` bytes;
    past that, JPEG 2000 at the budget."""
    mode = "L" if pixels.ndim == 2 else "RGB"
    img = Image.fromarray(pixels, mode)
    while True:  # trial encodes skip Huffman optimisation (2x faster); it only shrinks the result
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=quality, subsampling="4:2:0")
        if budget is None or buf.tell() <= budget or quality <= MIN_QUALITY:
            break
        quality = max(MIN_QUALITY, quality - 10)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality, optimize=True, subsampling="4:2:0")
    if budget is not None and buf.tell() > budget:
        return encode_jpx(pixels, budget)
    h, w = pixels.shape[:2]
    return EncodedImage(buf.getvalue(), w, h, "/DeviceGray" if mode == "L" else "/DeviceRGB", 8, "/DCTDecode",
                        encoding=f"jpeg-q{quality}")


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
