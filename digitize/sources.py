"""Input reading, one page at a time, so memory never grows with the page count.

Files are recognised by their bytes, not their names: PDF, TIFF (multi-page, G4/LZW/JPEG),
JPEG, PNG (alpha, palette, 16-bit). Each page comes out as a :class:`SourcePage`: the decoded
image with the PDF's /Rotate applied, its resolution and where that came from, the scanner's
own JPEG stream when it can stay as is, and the page's text when the PDF is born-digital.

PDF text policy: a page whose text is *visible* (born-digital) keeps that exact text as its
text layer, over an image of the page; a page whose only text is invisible (earlier OCR) is
OCRed again, since we cannot trust another engine's layer and our preprocessing is better.
The original file is always kept byte for byte in the store, so nothing of it is lost.
"""

from __future__ import annotations

import contextlib
import errno
import io
import math
import os
import struct
import sys
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import pikepdf
from PIL import Image, ImageOps, UnidentifiedImageError

from . import colour, pdfa, pdfguard, poppler
from .errors import (DigitizeError, EncryptedPdfError, FileTooLargeError, InputError, InputTooLargeError,
                     TooManyPagesError, UnsupportedInputError)
from .records import Word

MIN_DPI, MAX_DPI = 50.0, 2400.0
SCAN_MIN_DPI = 200.0  # scanned copies: at least 200 dpi (Circular 01/2023/TT-VPCP Art. 8)
# (width, height) in inches of the papers a one-stop shop scans
PAPER_SIZES = {"A4": (8.27, 11.69), "A5": (5.83, 8.27), "A3": (11.69, 16.54), "Letter": (8.5, 11.0),
               "Legal": (8.5, 14.0)}


@dataclass
class SourcePage:
    index: int  # 0-based position in the input
    image: Image.Image  # mode "RGB", "L" or "1"; /Rotate and EXIF orientation applied
    dpi: float
    dpi_source: str  # "file", "paper-size", "default", "pdf"
    passthrough_jpeg: bytes | None = None  # scanner JPEG usable unchanged if the page needs no rotation
    words: list[tuple[int, Word]] | None = None  # born-digital text (line id, word) in image pixels
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ReadLimits:
    max_pixels: int = 250_000_000
    default_dpi: float = 300.0
    max_stream_bytes: int = 100_000_000  # a PDF page's non-image streams, decoded (pdfguard.py)
    max_pages: int = 2000  # pages (PDF) or frames (TIFF) of one file; 0 = no limit


def sniff(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            head = f.read(1024)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, not a file") from None
    except PermissionError:
        raise InputError(f"{path}: permission denied") from None
    return sniff_head(head, path.name)


def sniff_head(head: bytes, name: str) -> str:
    """The input kind from a file's first 1024 bytes; ``name`` is for the message."""
    if not head:
        raise InputError(f"{name}: file is empty (0 bytes)")
    if b"%PDF-" in head:
        return "pdf"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if head[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    hint = {b"PK": "a ZIP/Office document", b"GI": "a GIF image", b"BM": "a BMP image", b"\xd0\xcf": "an old Office document",
            b"Ri": "a WebP image"}.get(head[:2], "not a PDF, TIFF, JPEG or PNG")
    raise UnsupportedInputError(f"{name}: unsupported file type ({hint}); scan to PDF, TIFF, JPEG or PNG")


def guess_dpi(width: int, height: int, default: float) -> tuple[float, str]:
    """DPI for an image that has none: a known paper size if the aspect matches, else the default."""
    for w_in, h_in in PAPER_SIZES.values():
        for pw, ph in ((w_in, h_in), (h_in, w_in)):
            dx, dy = width / pw, height / ph
            if abs(dx - dy) / dx < 0.02 and 100 <= dx <= 1200:
                return round((dx + dy) / 2, 1), "paper-size"
    return default, "default"


def normalise_mode(img: Image.Image) -> Image.Image:
    """Any Pillow mode to "RGB", "L" or "1": alpha over white paper, palettes expanded, 16-bit to 8-bit."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img)
        if arr.dtype.kind not in "ui" or arr.dtype.itemsize > 2:
            arr = np.asarray(img, dtype=np.uint32)  # 32-bit "I": clip, no 16-bit fast path
        shift = 8 if int(arr.max()) > 255 else 0
        return Image.fromarray((arr >> shift).clip(0, 255).astype(np.uint8), "L")
    if img.mode == "F":
        return Image.fromarray(np.asarray(img).clip(0, 255).astype(np.uint8), "L")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("LA", "RGBA"):
        img = _on_white(np.asarray(img), "L" if img.mode == "LA" else "RGB")
    elif img.mode in ("PA", "La", "RGBa"):
        img = _on_white(np.asarray(img.convert("RGBA")), "RGB")
    if img.mode == "CMYK":
        img = img.convert("RGB")
    if img.mode not in ("RGB", "L", "1"):
        img = img.convert("RGB")
    if img.mode == "RGB" and _grey_at_sample(img):
        arr = np.asarray(img)
        if np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 1], arr[..., 2]):
            img = Image.fromarray(arr[..., 0], "L")  # grey stored as RGB stays grey
    return img


def _grey_at_sample(img: Image.Image) -> bool:
    """Whether a 64 x 64 grid of an RGB image's own pixels is grey: a colour page is told by it
    before the whole image is converted and compared channel by channel (two page-sized scans and
    a copy); a page grey there is still checked whole."""
    grid = np.asarray(img.resize((min(64, img.width), min(64, img.height)), Image.Resampling.NEAREST))
    return bool(np.array_equal(grid[..., 0], grid[..., 1]) and np.array_equal(grid[..., 1], grid[..., 2]))


def _on_white(arr: np.ndarray, mode: str) -> Image.Image:
    """Colour channels composited over white paper by their alpha (the last channel)."""
    colour, alpha = arr[..., :-1].astype(np.uint16), arr[..., -1:].astype(np.uint16)
    out = (colour * alpha + 255 * (255 - alpha) + 127) // 255
    return Image.fromarray(out.astype(np.uint8).squeeze(-1) if mode == "L" else out.astype(np.uint8), mode)


def _check_pixels(width: int, height: int, limits: ReadLimits, what: str) -> None:
    if width <= 0 or height <= 0:
        raise InputError(f"{what}: image has no pixels ({width}x{height})")
    if width * height > limits.max_pixels:
        raise InputTooLargeError(
            f"{what}: {width}x{height} = {width * height / 1e6:.0f} megapixels exceeds the limit of "
            f"{limits.max_pixels / 1e6:.0f} (decompression bomb?); raise convert.max_pixels if genuine")


def _check_page_count(count: int, limits: ReadLimits, name: str) -> None:
    """Refused when the file is opened, before any page is decoded: every page costs a render and
    an OCR pass, so a small file of many pages would hold a watcher for hours."""
    if limits.max_pages and count > limits.max_pages:
        raise TooManyPagesError(f"{name}: {count} pages exceed the limit of {limits.max_pages} pages per file; "
                                "split it, or raise convert.max_pages if genuine")


SPARSE_MIN_BYTES, SPARSE_RATIO = 16 * 1024 * 1024, 8  # see check_input_size
_HOLE_WALK = 4096  # extents looked at; a file with more, and few blocks, is taken as sparse


def check_input_size(fd: int, max_input_mb: int, name: str, info: os.stat_result | None = None) -> None:
    """A scan's size from its descriptor (``info``: its fstat), before anything reads it whole (hashing,
    the private copy): over ``max_input_mb`` (0 = no limit), or sparse, it is refused.

    Sparse: a file of at least SPARSE_MIN_BYTES with under 1/SPARSE_RATIO of its size allocated
    (st_blocks) *and* holes (SEEK_HOLE/SEEK_DATA) over the rest: a scanner never writes holes, and every
    copy would write them out in full. Compression (ZFS, btrfs) lowers st_blocks but leaves no holes,
    so an uncompressed TIFF there is not refused; a file system that reports no blocks (st_blocks 0:
    some network shares, FUSE mounts) or no holes is not judged sparse, only by its size."""
    info = info or os.fstat(fd)
    if max_input_mb and info.st_size > max_input_mb * 1024 * 1024:
        raise FileTooLargeError(f"{name}: {info.st_size / 1024 / 1024:.0f} MB exceeds the limit of {max_input_mb} MB "
                                "per file; split it, or raise convert.max_input_mb if genuine")
    allocated = getattr(info, "st_blocks", 0) * 512
    if info.st_size >= SPARSE_MIN_BYTES and 0 < allocated * SPARSE_RATIO < info.st_size \
            and _hole_bytes(fd, info.st_size) * SPARSE_RATIO > info.st_size * (SPARSE_RATIO - 1):
        raise FileTooLargeError(f"{name}: a sparse file ({info.st_size / 1024 / 1024:.0f} MB long, "
                                f"{allocated / 1024 / 1024:.1f} MB written): mostly holes, not a scan")


def _hole_bytes(fd: int, size: int) -> int:
    """Bytes in holes, by SEEK_HOLE/SEEK_DATA (0 where the file system has neither); past _HOLE_WALK
    extents, ``size`` (judged by its blocks). The descriptor's offset is kept."""
    kept = os.lseek(fd, 0, os.SEEK_CUR)
    holes, offset = 0, 0
    try:
        for _ in range(_HOLE_WALK):
            hole = os.lseek(fd, offset, os.SEEK_HOLE)
            if hole >= size:
                return holes
            try:
                offset = os.lseek(fd, hole, os.SEEK_DATA)
            except OSError as e:
                if e.errno == errno.ENXIO:  # a hole to the end
                    return holes + size - hole
                raise
            holes += offset - hole
        return size
    except (OSError, AttributeError):  # no SEEK_HOLE here: not judged
        return 0
    finally:
        os.lseek(fd, kept, os.SEEK_SET)


def _image_dpi(img: Image.Image) -> tuple[float, float] | None:
    dpi = img.info.get("dpi")
    if not dpi:
        return None
    try:
        x, y = float(dpi[0]), float(dpi[1])
    except (TypeError, ValueError, IndexError):
        return None
    if not (MIN_DPI <= x <= MAX_DPI and MIN_DPI <= y <= MAX_DPI):
        return None
    return x, y


def _squared_size(width: int, height: int, xdpi: float, ydpi: float) -> tuple[int, int] | None:
    """The size of an image with unequal x/y resolution once its pixels are square (None: already square)."""
    if abs(xdpi - ydpi) / max(xdpi, ydpi) < 0.02:
        return None
    dpi = max(xdpi, ydpi)
    return round(width * dpi / xdpi), round(height * dpi / ydpi)


def _check_declared(img: Image.Image, index: int, limits: ReadLimits, name: str) -> None:
    """The pixel limit on what a page will become, from its header alone, before any pixel is decoded:
    its declared size and, with unequal x/y resolution, its size once squared (up to MAX_DPI/MIN_DPI
    = 48 times larger)."""
    what = f"{name} page {index + 1}"
    _check_pixels(img.width, img.height, limits, what)
    dpi = _image_dpi(img)
    squared = _squared_size(img.width, img.height, *dpi) if dpi else None
    if squared is not None:
        _check_pixels(*squared, limits, f"{what} (its {dpi[0]:g}x{dpi[1]:g} dpi made square)")


def _square_pixels(img: Image.Image, xdpi: float, ydpi: float) -> tuple[Image.Image, float]:
    """Fax-style 204x98 dpi becomes square pixels at the higher resolution (same physical size)."""
    size = _squared_size(img.width, img.height, xdpi, ydpi)
    if size is None:
        return img, (xdpi + ydpi) / 2
    dpi = max(xdpi, ydpi)
    resample = Image.Resampling.NEAREST if img.mode == "1" else Image.Resampling.LANCZOS
    return img.resize(size, resample), dpi


def _decoded_page(img: Image.Image, index: int, limits: ReadLimits, name: str,
                  raw_jpeg: bytes | None = None, orientation: int | None = None,
                  turned: bool = False) -> SourcePage:
    """Shared tail of image-file and TIFF reading: orientation (the EXIF tag, or ORIENTATION as
    the caller read it: a TIFF frame's own tag; TURNED: the decoder applied it already), mode,
    resolution (its x and y swapped by a quarter turn)."""
    _check_declared(img, index, limits, name)
    notes: list[str] = []
    dpi = _image_dpi(img)
    try:
        img.load()
        if orientation is None:
            orientation = img.getexif().get(ORIENTATION, 1)
        # the image is ours (decoded for this page): no copy when there is nothing to turn, as on
        # nearly every scan (Pillow's exif_transpose copies it whole, ~7 ms an A4 colour page)
        method = TRANSPOSITIONS.get(orientation) if isinstance(orientation, int) else None
        transposed = img.transpose(method) if method is not None and not turned else img
    except (OSError, SyntaxError, ValueError) as e:
        raise InputError(f"{name} page {index + 1}: image data is corrupt or truncated ({e})") from None
    if method is not None:
        raw_jpeg = None  # pixels were turned: the stored stream no longer matches
        if dpi is not None and orientation >= 5:
            dpi = (dpi[1], dpi[0])  # a quarter turn swaps the axes: a fax page's 200x100 dpi too
    managed = colour.to_srgb(transposed, f"page {index + 1}")
    if managed.note:
        notes.append(managed.note)
    if managed.changed:
        raw_jpeg = None  # its numbers are not sRGB's: the converted pixels are encoded instead
    page_img = normalise_mode(managed.image)
    if page_img.mode != img.mode:
        raw_jpeg = None  # e.g. grey stored as RGB: the stream would not match the page's mode
    if dpi is None:
        value, source = guess_dpi(page_img.width, page_img.height, limits.default_dpi)
        notes.append(f"page {index + 1}: no resolution in the file; assumed {value:g} dpi ({source})")
    else:
        if dpi[0] != dpi[1]:
            raw_jpeg = None
        page_img, value = _square_pixels(page_img, *dpi)
        source = "file"
    notes += low_resolution_notes(index, value)
    return SourcePage(index, page_img, value, source, raw_jpeg, None, notes)


def low_resolution_notes(index: int, dpi: float, slack: float = 0.05) -> list[str]:
    """The report's note for a page under the scanned-copy minimum. ``slack`` forgives a file's own
    rounding: a PNG keeps whole dots per metre, so its 200 dpi (7874 /m) reads back as 199.9996."""
    if dpi >= SCAN_MIN_DPI - slack:
        return []
    return [f"page {index + 1}: {round(dpi, 1):g} dpi is below the {SCAN_MIN_DPI:g} dpi minimum for scanned copies"]


def _one_ink_colours(xobj) -> tuple[float, float] | None:
    """Grey levels (0 black .. 1 white) of the two samples of a 1-bit image in a one-ink
    Separation or DeviceN space with an exponential tint function (as scanners write a
    bilevel page: ``DeviceN [/Black]``), its /Decode applied; None for anything else."""
    try:
        cs = xobj.get("/ColorSpace")
        if int(xobj.get("/BitsPerComponent", 0)) != 1 or not isinstance(cs, pikepdf.Array) or len(cs) < 4:
            return None
        kind, inks, alternate, tint = cs[0], cs[1], cs[2], cs[3]
        if kind == "/DeviceN" and (not isinstance(inks, pikepdf.Array) or len(inks) != 1):
            return None
        if kind not in ("/DeviceN", "/Separation") or not isinstance(tint, pikepdf.Dictionary) \
                or int(tint.get("/FunctionType", -1)) != 2:
            return None
        c0 = [float(v) for v in tint.get("/C0", [0.0])]
        c1 = [float(v) for v in tint.get("/C1", [1.0])]
        n = float(tint.get("/N", 1))
        decode = [float(v) for v in xobj.get("/Decode", [0, 1])]
        if len(decode) != 2 or len(c0) != len(c1):
            return None
        greys = []
        for sample in (0, 1):
            t = decode[0] + sample * (decode[1] - decode[0])
            colour = [a + t ** n * (b - a) for a, b in zip(c0, c1)]
            greys.append(_grey(alternate, colour))
    except (pikepdf.PdfError, ValueError, TypeError, ZeroDivisionError):
        return None
    if None in greys or abs(greys[0] - greys[1]) < 0.5:
        return None
    return greys[0], greys[1]


def _grey(space, colour: list[float]) -> float | None:
    if space == "/DeviceGray" and len(colour) == 1:
        return colour[0]
    if space == "/DeviceRGB" and len(colour) == 3:
        return 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]
    if space == "/DeviceCMYK" and len(colour) == 4:
        c, m, y, k = colour
        return max(0.0, 1.0 - min(1.0, 0.299 * c + 0.587 * m + 0.114 * y + k))
    return None


def _one_ink_bilevel(pdf: pikepdf.Pdf, xobj) -> Image.Image | None:
    """A one-ink 1-bit image (see _one_ink_colours) as a bilevel page, its samples decoded by
    pikepdf (jbig2dec for JBIG2) through a DeviceGray copy of the stream. Rendering it with
    poppler instead drew a JBIG2 MMR page with streaks running down from the letters (a
    generated receipt: CER 0.031 -> 0.0), where jbig2dec decodes the same bytes cleanly."""
    colours = _one_ink_colours(xobj)
    if colours is None:
        return None
    copy = pikepdf.Stream(pdf, bytes(xobj.read_raw_bytes()))
    for key in ("/Width", "/Height", "/Filter", "/DecodeParms"):
        if key in xobj:
            copy[key] = xobj[key]
    copy.Type, copy.Subtype = pikepdf.Name.XObject, pikepdf.Name.Image
    copy.BitsPerComponent, copy.ColorSpace = 1, pikepdf.Name.DeviceGray
    img = pikepdf.PdfImage(copy).as_pil_image()
    img.load()
    if img.mode != "1":
        return None
    white_is_1 = colours[1] > colours[0]  # sample 1 (PIL's white) is the lighter colour
    return img if white_is_1 else ImageOps.invert(img.convert("L")).convert("1")


ORIENTATION = 0x0112  # the EXIF tag (and TIFF tag 274)
ICC_PROFILE = 34675  # TIFF tag InterColorProfile
TRANSPOSITIONS = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
                  4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
                  6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
                  8: Image.Transpose.ROTATE_90}  # what turns an image with that orientation upright


# What pikepdf, Pillow and the codecs raise on a file whose structure is broken: a dictionary
# without a required key (AttributeError, KeyError), a wrong type (TypeError: "Missing dimensions"),
# a bad value, a short read (struct.error, EOFError), a codec's complaint (OSError without an errno).
MALFORMED = (pikepdf.PdfError, pikepdf.PikepdfError, AttributeError, KeyError, TypeError, ValueError, IndexError,
             EOFError, SyntaxError, struct.error, zlib.error, NotImplementedError, Image.DecompressionBombError)


@contextlib.contextmanager
def reading(what: str):
    """Errors met while reading an untrusted file become one-line bad-input errors: a malformed file
    is the file's fault, not a bug (exit 2, not 15). OSErrors with an errno (disk, permissions) and
    running out of memory keep their own meaning."""
    try:
        with warnings.catch_warnings(), _c_stderr_silenced():
            warnings.simplefilter("ignore")  # Pillow's "Corrupt EXIF data" and such: not a second line
            yield
    except DigitizeError:
        raise
    except MemoryError:
        raise InputTooLargeError(f"{what}: decoding needs more memory than this worker may use "
                                 "(decompression bomb?); raise convert.max_memory_mb if genuine") from None
    except Image.DecompressionBombError as e:  # Pillow's guard (see _pillow_guard)
        raise InputTooLargeError(f"{what}: image data is more than twice the limit of {Image.MAX_IMAGE_PIXELS / 1e6:.0f} "
                                 f"megapixels (decompression bomb?); raise convert.max_pixels if genuine") from None
    except OSError as e:
        if e.errno is not None:
            raise
        raise InputError(f"{what}: image data is corrupt or truncated ({_first_line(e)})") from None
    except MALFORMED as e:
        raise InputError(f"{what}: file is malformed or truncated ({type(e).__name__}: {_first_line(e)})") from None


@contextlib.contextmanager
def _c_stderr_silenced():
    """libtiff and other C decoders print their complaints straight to file descriptor 2
    ("TIFFFetchNormalTag: Incompatible type..."): while a file is read they go nowhere, so a
    refusal stays one line and a good conversion prints nothing."""
    try:
        saved = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
    except OSError:
        yield
        return
    try:
        sys.stderr.flush()
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


class Source:
    """Base: a sequence of pages read lazily; use as a context manager."""

    kind = "?"
    page_count = 0
    name = "?"

    def page(self, index: int) -> SourcePage:
        """Page INDEX (0-based), decoded; a malformed one raises InputError."""
        if not 0 <= index < self.page_count:
            raise IndexError(index)
        with reading(f"{self.name} page {index + 1}"):
            _pillow_guard(self.limits)
            page = self._read_page(index)
        pdfa.check_page_size(page.image.width, page.image.height, page.dpi, f"{self.name} page {index + 1}")
        return page

    def _read_page(self, index: int) -> SourcePage:
        raise NotImplementedError

    def __iter__(self) -> Iterator[SourcePage]:
        for i in range(self.page_count):
            yield self.page(i)

    def close(self) -> None:
        pass

    def __enter__(self) -> "Source":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ImageSource(Source):
    """JPEG and PNG files: one page."""

    def __init__(self, path: Path, kind: str, limits: ReadLimits):
        self.path, self.kind, self.limits, self.page_count, self.name = path, kind, limits, 1, path.name

    def _read_page(self, index: int) -> SourcePage:
        data = self.path.read_bytes()
        img = _open_image(io.BytesIO(data), self.path.name, self.limits)
        raw = data if self.kind == "jpeg" and img.mode in ("RGB", "L") else None
        return _decoded_page(img, 0, self.limits, self.path.name, raw)


class TiffSource(Source):
    kind = "tiff"

    def __init__(self, path: Path, limits: ReadLimits):
        self.path, self.limits, self.name = path, limits, path.name
        # from a file object, not a name: Pillow maps an uncompressed TIFF named by its path at
        # its turned size, so a frame with Orientation 5-8 came out scrambled (Pillow 13)
        self._file = open(path, "rb")
        try:
            self._img = _open_image(self._file, path.name, limits)
            try:
                self.page_count = getattr(self._img, "n_frames", 1)
                _check_page_count(self.page_count, limits, path.name)
            except BaseException:
                self._img.close()
                raise
        except BaseException:
            self._file.close()
            raise

    def _read_page(self, index: int) -> SourcePage:
        try:
            self._img.seek(index)
        except EOFError:
            raise InputError(f"{self.path.name}: page {index + 1} is missing (truncated TIFF)") from None
        _check_declared(self._img, index, self.limits, self.path.name)  # copy() decodes the frame
        orientation = self._img.tag_v2.get(ORIENTATION, 1)  # the frame's own tag: the copy has no IFD
        frame = self._img.copy() if self._img.mode != "1" else self._img.convert("1")
        frame.info = dict(self._img.info)
        # the frame's own colour profile or none: Pillow keeps an earlier frame's in info
        frame.info.pop("icc_profile", None)
        try:
            icc = self._img.tag_v2.get(ICC_PROFILE)
        except (ValueError, TypeError, OSError, struct.error):  # a malformed tag: no profile, as an unreadable one
            icc = None
        if icc is not None:
            frame.info["icc_profile"] = icc
        turned = ORIENTATION not in self._img.tag_v2  # Pillow (>= 11) turns a frame as it loads it
        return _decoded_page(frame, index, self.limits, self.path.name, orientation=orientation, turned=turned)

    def close(self) -> None:
        self._img.close()
        self._file.close()


def _codec_size(xobj: pikepdf.Stream, filters: list) -> tuple[int, int] | None:
    """The size a DCT or JPX image decodes to, read from its codestream's header (SOF, SIZ),
    not from its dictionary; None for other codecs (CCITT and raw samples decode to the
    dictionary's size; JBIG2 goes to jbig2dec)."""
    if not filters or filters[-1] not in ("/DCTDecode", "/JPXDecode"):
        return None
    if len(filters) == 1:
        data = bytes(xobj.read_raw_bytes())
    else:  # general filters in front (measured by pdfguard): undo only those
        data = bytes(xobj.read_bytes(pikepdf.StreamDecodeLevel.generalized))
    with Image.open(io.BytesIO(data)) as codec:  # lazily: the header only
        return codec.size


def _check_codec_size(xobj: pikepdf.Stream, filters: list, width: int, height: int, what: str) -> None:
    """Refuse an embedded JPEG/JPEG 2000 whose own header disagrees with its dictionary: the
    decoder follows the header (a 100x100 dictionary over a 30000x30000 JPEG decoded to
    0.9 Gpx past ``max_pixels``), and the page's dpi would be wrong by the same factor."""
    size = _codec_size(xobj, filters)
    if size is not None and size != (width, height):
        raise InputError(f"{what}: image data is {size[0]}x{size[1]} pixels, its dictionary says "
                         f"{width}x{height}; the file is malformed or crafted")


def _pillow_guard(limits: ReadLimits) -> None:
    """Pillow's own bomb check, process-wide, at this read's limit: every Pillow decode (pikepdf's
    of an embedded image too) refuses a header above twice ``max_pixels``; our ``_check_pixels``,
    which names the setting, refuses anything above it first where we read the header ourselves."""
    Image.MAX_IMAGE_PIXELS = limits.max_pixels


def _open_image(fp, name: str, limits: ReadLimits) -> Image.Image:
    """Open lazily (header only); our own pixel limit is checked before anything is decoded."""
    _pillow_guard(limits)
    try:
        img = Image.open(fp)
    except UnidentifiedImageError:
        raise InputError(f"{name}: image is corrupt or truncated (cannot identify it)") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise InputError(f"{name}: image is corrupt or truncated ({e})") from None
    _check_pixels(img.width, img.height, limits, name)
    return img


@dataclass(frozen=True)
class _PageLayout:
    """What a PDF page's content stream does, enough to choose how to read it."""

    images: tuple[tuple[str, tuple[float, ...]], ...]  # (XObject name, CTM) per image drawn
    has_visible_text: bool
    has_invisible_text: bool
    other_drawing: bool


LAYOUT_OPERATORS = "q Q cm Tr Tj TJ ' \" Do f F f* S s B B* b b* sh BI"  # only these become Python objects


def _layout(page: pikepdf.Page) -> _PageLayout:
    ctm = [1.0, 0.0, 0.0, 1.0, 0.0, 0.0]
    stack: list[list[float]] = []
    images, visible, invisible, other = [], False, False, False
    mode = 0
    for operands, op in pikepdf.parse_content_stream(page, LAYOUT_OPERATORS):
        name = str(op)
        if name == "q":
            stack.append(ctm[:])
        elif name == "Q" and stack:
            ctm = stack.pop()
        elif name == "cm":
            a, b, c, d, e, f = (float(x) for x in operands)
            m = ctm
            ctm = [a * m[0] + b * m[2], a * m[1] + b * m[3], c * m[0] + d * m[2], c * m[1] + d * m[3],
                   e * m[0] + f * m[2] + m[4], e * m[1] + f * m[3] + m[5]]
        elif name == "Tr":
            mode = int(operands[0])
        elif name in ("Tj", "TJ", "'", '"'):
            if mode == 3:
                invisible = True
            else:
                visible = True
        elif name == "Do":
            images.append((str(operands[0]), tuple(ctm)))
        elif name in ("f", "F", "f*", "S", "s", "B", "B*", "b", "b*", "sh", "BI"):
            other = True
    return _PageLayout(tuple(images), visible, invisible, other)


class PdfSource(Source):
    kind = "pdf"

    def __init__(self, path: Path, limits: ReadLimits):
        self.path, self.limits, self.name = path, limits, path.name
        self._measured: dict = {}  # pdfguard's decoded sizes, by object: a shared stream is measured once
        self._unit = 1.0  # the page being read's /UserUnit
        try:
            self.pdf = open_pdf(path)
        except pikepdf.PasswordError:
            raise EncryptedPdfError(f"{path.name}: PDF is encrypted with a password; remove it before scanning in") from None
        except pikepdf.PdfError as e:
            raise InputError(f"{path.name}: PDF is corrupt or truncated ({_first_line(e)})") from None
        try:
            self._check_document()
            self.page_count = len(self.pdf.pages)
            _check_page_count(self.page_count, limits, path.name)
        except BaseException:
            close_pdf(self.pdf)
            raise

    def _check_document(self) -> None:
        name = self.path.name
        tail = _tail(self.path)
        damaged = any("damaged" in w or "xref" in w.lower() for w in self.pdf.get_warnings())
        if b"%%EOF" not in tail and damaged:
            raise InputError(f"{name}: PDF is truncated (no end-of-file marker; the transfer or scan was cut short)")
        acro = self.pdf.Root.get("/AcroForm")
        if acro is not None and "/XFA" in acro and bool(self.pdf.Root.get("/NeedsRendering", False)):
            raise UnsupportedInputError(f"{name}: XFA-only form: its pages exist only as XML; print it to PDF first")
        try:
            n = len(self.pdf.pages)
        except pikepdf.PdfError as e:
            raise InputError(f"{name}: PDF page tree is corrupt ({_first_line(e)})") from None
        if n == 0:
            raise InputError(f"{name}: PDF has no pages")

    def _read_page(self, index: int) -> SourcePage:
        name = self.path.name
        try:
            page = self.pdf.pages[index]
            pdfguard.check_page(page, self.limits.max_pixels, self.limits.max_stream_bytes, f"{name} page {index + 1}",
                                self._measured)
            rotate = int(page.obj.get("/Rotate", 0)) % 360
            layout = _layout(page)
            box = [float(v) for v in page.cropbox]
            self._unit = user_unit(page.obj.get("/UserUnit", 1))
        except (pikepdf.PdfError, ValueError, TypeError) as e:
            raise InputError(f"{name} page {index + 1}: page content is corrupt ({_first_line(e)})") from None
        # the page's size in points of 1/72 in: a large-format scanner's /UserUnit makes a unit larger
        box_w, box_h = abs(box[2] - box[0]) * self._unit, abs(box[3] - box[1]) * self._unit
        if box_w < 1 or box_h < 1:
            raise InputError(f"{name} page {index + 1}: page has no area ({box_w:.0f}x{box_h:.0f} pt)")
        if layout.has_visible_text:
            return self._born_digital(index, layout, box_w, box_h)
        single = self._single_image(page, layout, box)
        if single is not None:
            return self._extract(index, single, rotate, box_w, box_h)
        return self._render(index, layout, page, box_w, box_h, None)

    def _image_dpi(self, page: pikepdf.Page, layout: _PageLayout) -> float:
        best = 0.0
        for xname, ctm in layout.images:
            xobj = page.resources.get("/XObject", {}).get(xname)
            if xobj is None or xobj.get("/Subtype") != "/Image":
                continue
            drawn_w = math.hypot(ctm[0], ctm[1])
            if drawn_w > 1:
                best = max(best, float(xobj.Width) / (drawn_w * self._unit / 72.0))
        return best

    def _single_image(self, page: pikepdf.Page, layout: _PageLayout, box: list[float]):
        """The one upright image covering the page, if that is all the page draws."""
        if len(layout.images) != 1 or layout.other_drawing:
            return None
        xname, ctm = layout.images[0]
        xobj = page.resources.get("/XObject", {}).get(xname)
        if xobj is None or xobj.get("/Subtype") != "/Image":
            return None
        a, b, c, d, e, f = ctm
        if abs(b) > 1e-6 or abs(c) > 1e-6 or a <= 0 or d <= 0:
            return None  # flipped or rotated image: let poppler draw it
        x0, y0, x1, y1 = min(box[0], box[2]), min(box[1], box[3]), max(box[0], box[2]), max(box[1], box[3])
        tol = 0.02 * max(x1 - x0, y1 - y0)
        if abs(e - x0) > tol or abs(f - y0) > tol or abs(e + a - x1) > tol or abs(f + d - y1) > tol:
            return None
        if any(k in xobj for k in ("/SMask", "/Mask")) or xobj.get("/ImageMask", False):
            return None
        if "/Decode" in xobj and _one_ink_colours(xobj) is None:
            return None
        return xobj

    def _extract(self, index: int, xobj, rotate: int, box_w: float, box_h: float) -> SourcePage:
        name = self.path.name
        width, height = int(xobj.Width), int(xobj.Height)
        _check_pixels(width, height, self.limits, f"{name} page {index + 1}")
        try:
            one_ink = _one_ink_bilevel(self.pdf, xobj)
            if one_ink is not None:
                page_img = one_ink.rotate(-rotate, expand=True) if rotate else one_ink
                dpi = width / (box_w / 72.0)
                return SourcePage(index, page_img, round(dpi, 2), "pdf", None, None, self._dpi_notes(index, dpi))
            pdfimage = pikepdf.PdfImage(xobj)
            filters = pdfimage.filters
            _check_codec_size(xobj, filters, width, height, f"{name} page {index + 1}")
            raw = None
            if filters == ["/DCTDecode"] and pdfimage.mode in ("RGB", "L") and rotate == 0:
                raw = bytes(xobj.read_raw_bytes())
            img = pdfimage.as_pil_image()
            img.load()
        except (pikepdf.PikepdfError, NotImplementedError):
            # not extractable losslessly (DeviceN/Separation, an odd JBIG2 or bit depth...): poppler draws
            # it near the image's own resolution, within the range the other renders use
            dpi = min(max(width / (box_w / 72.0), 200.0), 600.0)
            return self._render(index, None, self.pdf.pages[index], box_w, box_h, dpi)
        except (OSError, ValueError, SyntaxError) as e:
            raise InputError(f"{name} page {index + 1}: image data is corrupt or truncated ({_first_line(e)})") from None
        managed = colour.to_srgb(img, f"page {index + 1}")  # an ICCBased image's profile (pikepdf attaches it)
        if managed.changed:
            raw = None
        img = managed.image
        if rotate:
            img = img.rotate(-rotate, expand=True)
        page_img = normalise_mode(img)
        if page_img.mode != img.mode:
            raw = None
        dpi = width / (box_w / 72.0)  # image space is the unrotated page box
        notes = ([managed.note] if managed.note else []) + self._dpi_notes(index, dpi)
        return SourcePage(index, page_img, round(dpi, 2), "pdf", raw, None, notes)

    def _born_digital(self, index: int, layout: _PageLayout, box_w: float, box_h: float) -> SourcePage:
        page = self.pdf.pages[index]
        dpi = min(max(self._image_dpi(page, layout), 300.0), 600.0)
        src = self._render(index, layout, page, box_w, box_h, dpi)
        src.words = poppler.page_words(self.path, index, src.dpi * self._unit)
        if src.words is None:
            src.warnings.append(f"page {index + 1}: its text layer could not be extracted (pdftotext failed or timed out); "
                             "the page is OCRed instead")
        return src

    def _render(self, index: int, layout: _PageLayout | None, page: pikepdf.Page, box_w: float,
                box_h: float, dpi: float | None) -> SourcePage:
        """Have poppler draw the page at DPI (None: from its images), once the pixels that makes
        (the page box's own width and height) are within the limit."""
        if dpi is None:
            found = self._image_dpi(page, layout) if layout else 0.0
            dpi = min(max(found, 200.0), 600.0) if found else 300.0
        # poppler draws the page in default units (it ignores /UserUnit), at whole dots per inch of them
        resolution = max(1, round(dpi * self._unit))
        dpi = resolution / self._unit  # what that is per physical inch: the pixel limit and the page size
        _check_pixels(round(box_w * dpi / 72), round(box_h * dpi / 72), self.limits, f"{self.path.name} page {index + 1}")
        img = normalise_mode(poppler.render_page(self.path, index, resolution))
        return SourcePage(index, img, dpi, "pdf", None, None, self._dpi_notes(index, dpi))

    @staticmethod
    def _dpi_notes(index: int, dpi: float) -> list[str]:
        return low_resolution_notes(index, dpi, slack=1.0)  # measured from the page box: rounded

    def close(self) -> None:
        close_pdf(self.pdf)


def open_pdf(path: Path) -> pikepdf.Pdf:
    """pikepdf.open(path); for a name that is not UTF-8 (a legacy zip's latin-1 or cp1258 bytes),
    whose path pikepdf cannot hand to qpdf (a TypeError), from the open file instead (close it
    with close_pdf)."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        stream = open(path, "rb")  # noqa: SIM115 - lives as long as the PDF
        try:
            pdf = pikepdf.open(stream)
        except BaseException:
            stream.close()
            raise
        pdf._digitize_stream = stream
        return pdf
    return pikepdf.open(path)


def close_pdf(pdf: pikepdf.Pdf) -> None:
    """Close a PDF from open_pdf, and the file it was read from when open_pdf opened one."""
    stream = getattr(pdf, "_digitize_stream", None)
    pdf.close()
    if stream is not None:
        stream.close()


def user_unit(value) -> float:
    """A page's /UserUnit (PDF 1.6: its unit in 1/72 in, default 1), as a number; a malformed or
    absurd one raises ValueError (the page is then refused as corrupt)."""
    unit = float(value)
    if not 0.01 <= unit <= 75000:  # 75 000: the spec's bound on a page side in units x UserUnit
        raise ValueError(f"/UserUnit {unit:g} out of range")
    return unit


def _tail(path: Path, size: int = 2048) -> bytes:
    with open(path, "rb") as f:
        f.seek(0, 2)
        f.seek(max(0, f.tell() - size))
        return f.read()


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:200] if text else type(err).__name__


def open_source(path: Path | str, limits=None) -> Source:
    """Open any supported input; ``limits`` is ReadLimits or anything with max_pixels/default_dpi."""
    path = Path(path)
    if isinstance(limits, ReadLimits):
        pass
    elif limits is not None:
        stream_mb = getattr(limits, "max_stream_mb", None)
        limits = ReadLimits(limits.max_pixels, limits.default_dpi,
                            ReadLimits.max_stream_bytes if stream_mb is None else int(stream_mb * 1_000_000),
                            getattr(limits, "max_pages", ReadLimits.max_pages))
    else:
        limits = ReadLimits()
    kind = sniff(path)
    with reading(path.name):
        if kind == "pdf":
            return PdfSource(path, limits)
        if kind == "tiff":
            return TiffSource(path, limits)
        return ImageSource(path, kind, limits)
