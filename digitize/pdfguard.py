"""Decoded-size limits for an untrusted PDF page, checked before anything decodes it.

``max_pixels`` bounds an image by what its dictionary declares, but a stream's filters can hold
far more than that: a 300 KB page whose content stream inflates to 200 MB took 22 GB and three
minutes to parse, and qpdf, Pillow and poppler all decode whatever a stream holds. So before a
page is parsed, extracted or rendered, every stream it draws from (contents, forms, fonts,
patterns, images, annotation appearances) is measured here by decoding it into a counter: memory
bounded by a chunk, work bounded by the cap. The page's non-image streams together may decode to
at most ``max_stream_bytes``; an image to at most what its declared size needs (and its declared
size is within ``max_pixels``). Image codecs (DCT, JPX, JBIG2, CCITT) are not measured here, only
the general-purpose filters in front of them: CCITT decodes to the declared size, but DCT and JPX
decode to their own header's size, which ``sources`` compares with the dictionary before decoding
(and Pillow's own guard is set to ``max_pixels``); JBIG2's page size is jbig2dec's to bound, under
the page worker's address-space limit.
"""

from __future__ import annotations

import base64
import binascii
import zlib

import pikepdf

from .errors import InputError, InputTooLargeError

CHUNK = 1 << 20
IMAGE_CODECS = frozenset({"/DCTDecode", "/JPXDecode", "/JBIG2Decode", "/CCITTFaxDecode", "/DCT", "/CCF"})
ABBREVIATIONS = {"/Fl": "/FlateDecode", "/LZW": "/LZWDecode", "/RL": "/RunLengthDecode", "/AHx": "/ASCIIHexDecode",
                 "/A85": "/ASCII85Decode", "/DCT": "/DCTDecode", "/CCF": "/CCITTFaxDecode"}
# keys that lead away from the page (to other pages, the outline, the page tree)
SKIP_KEYS = frozenset({"/Parent", "/P", "/Dest", "/A", "/AA", "/Next", "/Prev", "/First", "/Last", "/Popup",
                       "/IRT", "/StructParent", "/StructParents", "/PA", "/Thumb", "/B", "/Metadata"})
COMPONENTS = {"/DeviceGray": 1, "/CalGray": 1, "/G": 1, "/DeviceRGB": 3, "/CalRGB": 3, "/RGB": 3, "/Lab": 3,
              "/DeviceCMYK": 4, "/CMYK": 4, "/Indexed": 1, "/I": 1, "/Separation": 1, "/Pattern": 1}


class _Budget:
    """What the page's non-image streams may still decode to."""

    def __init__(self, limit: int, what: str):
        self.limit, self.left, self.what = limit, limit, what

    def spend(self, size: int) -> None:
        self.left -= size
        if self.left < 0:
            raise InputTooLargeError(
                f"{self.what}: its streams decompress to more than {self.limit / 1e6:.0f} MB "
                "(decompression bomb?); raise convert.max_stream_mb if genuine")


def _filters(stream: pikepdf.Stream) -> list[str]:
    f = stream.get("/Filter")
    names = [f] if isinstance(f, pikepdf.Name) else list(f) if isinstance(f, pikepdf.Array) else []
    return [ABBREVIATIONS.get(str(n), str(n)) for n in names]


def _inflate(data: bytes, cap: int, keep: bool) -> tuple[int, bytes]:
    """Inflate at most CAP + 1 bytes: (size, the bytes if KEEP). A damaged tail ends the data, as in qpdf."""
    d = zlib.decompressobj()
    size, out = 0, []
    pending = data
    try:
        while pending and not d.eof:
            block = d.decompress(pending, CHUNK)
            pending = d.unconsumed_tail
            size += len(block)
            if size > cap:
                return size, b""
            if keep:
                out.append(block)
            if not block and not pending:
                break
        block = d.flush() if not d.eof else b""
        size += len(block)
        out.append(block if keep else b"")
    except zlib.error:
        pass
    return size, b"".join(out) if keep else b""


class CraftedStream(ValueError):
    """A stream no encoder writes, built to cost its reader work."""


LZW_IDLE_CLEARS = 64  # clear codes allowed beyond one per 8 bytes out (an encoder writes one per ~3800 codes)


def _lzw(data: bytes, cap: int, early: int) -> tuple[int, bytes]:
    """LZW as PDF uses it (8-bit, clear 256, end 257), stopped past CAP bytes. This loop costs
    ~0.8 CPU-s a MB: a stream of clear codes, which decodes to nothing, is refused as crafted
    instead of being read to its end (and qpdf would decode whatever follows them)."""
    table = [bytes([i]) for i in range(256)] + [b"", b""]
    out, size, width, bits, nbits, prev, clears = [], 0, 9, 0, 0, b"", 0
    for byte in data:
        bits, nbits = (bits << 8) | byte, nbits + 8
        while nbits >= width:
            nbits -= width
            code = (bits >> nbits) & ((1 << width) - 1)
            bits &= (1 << nbits) - 1
            if code == 256:
                table, width, prev, clears = table[:258], 9, b"", clears + 1
                if clears > LZW_IDLE_CLEARS + size // 8:
                    raise CraftedStream("an LZW stream is made of clear codes that decode to nothing")
                continue
            if code == 257:
                return size, b"".join(out)
            if code < len(table):
                entry = table[code]
                if prev:
                    table.append(prev + entry[:1])
            elif prev:
                entry = prev + prev[:1]
                table.append(entry)
            else:
                return size, b"".join(out)  # a corrupt stream ends here, as in decoders
            out.append(entry)
            size += len(entry)
            if size > cap:
                return size, b""
            prev = entry
            if len(table) + early >= (1 << width) and width < 12:
                width += 1
    return size, b"".join(out)


def _run_length(data: bytes, cap: int) -> tuple[int, bytes]:
    out, size, i = [], 0, 0
    while i < len(data):
        n = data[i]
        if n == 128:
            break
        if n < 128:
            chunk = data[i + 1:i + 2 + n]
            i += n + 2
        else:
            chunk = data[i + 1:i + 2] * (257 - n)
            i += 2
        out.append(chunk)
        size += len(chunk)
        if size > cap:
            return size, b""
    return size, b"".join(out)


def _ascii(data: bytes, name: str) -> bytes:
    try:
        if name == "/ASCIIHexDecode":
            text = bytes(c for c in data.split(b">")[0] if c not in b" \t\r\n\f\x00")
            return binascii.unhexlify(text + b"0" * (len(text) % 2))
        return base64.a85decode(data.split(b"~>")[0].replace(b"<~", b""), ignorechars=b" \t\r\n\f\x00")
    except ValueError:
        return b""


def decoded_size(stream: pikepdf.Stream, cap: int) -> int:
    """Bytes STREAM decodes to, up to its image codec if it has one; past CAP it stops early and
    returns a number above CAP. One filter's output is counted, not held; but in a chain (Flate
    after Flate) a filter's output, up to CAP, is held for the next one."""
    filters = _filters(stream)
    if not filters or filters[0] in IMAGE_CODECS:
        return int(stream.get("/Length", 0))  # stored as it decodes (to the codec), nothing to inflate
    parms = stream.get("/DecodeParms")
    data = bytes(stream.read_raw_bytes())
    size = len(data)
    for n, name in enumerate(filters):
        last = n == len(filters) - 1 or filters[n + 1] in IMAGE_CODECS
        if name in IMAGE_CODECS:
            break
        if name == "/FlateDecode":
            size, data = _inflate(data, cap, keep=not last)
        elif name == "/LZWDecode":
            p = parms[n] if isinstance(parms, pikepdf.Array) and n < len(parms) else parms
            early = int(p.get("/EarlyChange", 1)) if isinstance(p, pikepdf.Dictionary) else 1
            size, data = _lzw(data, cap, early)
        elif name == "/RunLengthDecode":
            size, data = _run_length(data, cap)
        elif name in ("/ASCIIHexDecode", "/ASCII85Decode"):
            data = _ascii(data, name)
            size = len(data)
        else:
            break  # Crypt or unknown: nothing past it decodes anywhere
        if size > cap:
            return size
        if last:
            break
    return size


def _components(space) -> int:
    if isinstance(space, pikepdf.Name):
        return COMPONENTS.get(str(space), 4)
    if isinstance(space, pikepdf.Array) and len(space):
        kind = str(space[0])
        if kind == "/ICCBased" and len(space) > 1 and isinstance(space[1], pikepdf.Stream):
            return max(1, min(int(space[1].get("/N", 4)), 32))
        if kind == "/DeviceN" and len(space) > 1 and isinstance(space[1], pikepdf.Array):
            return max(1, min(len(space[1]), 32))
        return COMPONENTS.get(kind, 4)
    return 4


def image_bytes(image: pikepdf.Stream, max_pixels: int, what: str) -> int:
    """The most an image's data may decode to by its own dictionary; refuses images with no size or too many pixels."""
    try:
        width, height = int(image.get("/Width", 0)), int(image.get("/Height", 0))
        bpc = 1 if image.get("/ImageMask", False) else int(image.get("/BitsPerComponent", 8))
        comps = 1 if image.get("/ImageMask", False) else _components(image.get("/ColorSpace"))
    except (TypeError, ValueError, pikepdf.PdfError) as e:
        raise InputError(f"{what}: an image's dictionary is malformed ({e})") from None
    if width <= 0 or height <= 0:
        raise InputError(f"{what}: an image has no valid /Width and /Height ({width}x{height})")
    if width * height > max_pixels:
        raise InputTooLargeError(
            f"{what}: an image of {width}x{height} = {width * height / 1e6:.0f} megapixels exceeds the limit of "
            f"{max_pixels / 1e6:.0f} (decompression bomb?); raise convert.max_pixels if genuine")
    row = (width * comps * max(1, min(bpc, 16)) + 7) // 8
    return (row + 1) * height  # + 1: a PNG predictor's tag byte per row


def _measured_size(stream: pikepdf.Stream, cap: int, measured: dict | None) -> int:
    """decoded_size, remembered in MEASURED (one per file) by object: a stream every page draws
    from (a shared font, form or background) is decoded once per file, not once per page. A size
    that stopped early at a smaller cap is measured again."""
    key = stream.objgen
    if measured is not None and key in measured:
        size, was_cap = measured[key]
        if size <= was_cap or cap <= was_cap:
            return size
    size = decoded_size(stream, cap)
    if measured is not None and key != (0, 0):
        measured[key] = (size, cap)
    return size


def check_page(page: pikepdf.Page, max_pixels: int, max_stream_bytes: int, what: str,
               measured: dict | None = None) -> None:
    """Refuse the page (InputTooLargeError) if any stream it draws from decodes past its limit.
    MEASURED: sizes already measured on this file's other pages (a dict kept by the caller);
    each stream still counts against every page's budget that draws from it."""
    try:
        _check_page(page, max_pixels, max_stream_bytes, what, measured)
    except CraftedStream as e:
        raise InputError(f"{what}: {e}") from None


def _check_page(page: pikepdf.Page, max_pixels: int, max_stream_bytes: int, what: str,
                measured: dict | None) -> None:
    budget = _Budget(max_stream_bytes, what)
    seen: set[tuple[int, int]] = set()
    todo = [page.obj.get("/Contents"), page.resources, page.obj.get("/Annots"), page.obj.get("/Group")]
    while todo:
        obj = todo.pop()
        if not isinstance(obj, (pikepdf.Dictionary, pikepdf.Array, pikepdf.Stream)):
            continue
        if obj.is_indirect:
            if obj.objgen in seen:
                continue
            seen.add(obj.objgen)
        if isinstance(obj, pikepdf.Stream):
            if obj.get("/Subtype") == "/Image":
                allowed = image_bytes(obj, max_pixels, what)
                cap = max(2 * allowed, allowed + CHUNK)
                if _measured_size(obj, cap, measured) > cap:
                    raise InputTooLargeError(f"{what}: an image's data decompresses to more than its "
                                             f"{allowed / 1e6:.1f} MB of pixels (decompression bomb?)")
            else:
                budget.spend(_measured_size(obj, max(budget.left, 0), measured))
            todo.extend(v for k, v in obj.stream_dict.items() if k not in SKIP_KEYS)
        elif isinstance(obj, pikepdf.Dictionary):
            todo.extend(v for k, v in obj.items() if k not in SKIP_KEYS)
        elif isinstance(obj, pikepdf.Array):
            todo.extend(obj)
