"""pdfguard: every filter's decoded size is measured exactly (as qpdf decodes it) and a bomb is
stopped at the cap, before anything decodes it whole."""

from __future__ import annotations

import base64
import binascii
import io
import zlib

import numpy as np
import pikepdf
import pytest
from PIL import Image

from digitize import pdfguard
from digitize.errors import InputError, InputTooLargeError

TEXT = b"BT /F1 12 Tf 72 712 Td (Ho so so 0027) Tj ET\n" * 300 + bytes(range(256)) * 4


def lzw(data: bytes) -> bytes:
    """PDF's LZW is TIFF's (MSB first, early change): Pillow's libtiff writes it for us."""
    img = Image.frombytes("L", (len(data), 1), data)
    buf = io.BytesIO()
    img.save(buf, "TIFF", compression="tiff_lzw")
    tiff = Image.open(io.BytesIO(buf.getvalue()))
    offset, count = tiff.tag_v2[273][0], tiff.tag_v2[279][0]
    return buf.getvalue()[offset:offset + count]


def run_length(data: bytes) -> bytes:
    out = bytearray()
    for i in range(0, len(data), 128):
        chunk = data[i:i + 128]
        out += bytes([len(chunk) - 1]) + chunk
    return bytes(out + b"\x80")


ENCODED = {
    "flate": (zlib.compress(TEXT), ["/FlateDecode"]),
    "lzw": (lzw(TEXT), ["/LZWDecode"]),
    "run-length": (run_length(TEXT), ["/RunLengthDecode"]),
    "ascii-hex": (binascii.hexlify(TEXT) + b">", ["/ASCIIHexDecode"]),
    "ascii85+flate": (base64.a85encode(zlib.compress(TEXT)) + b"~>", ["/ASCII85Decode", "/FlateDecode"]),
}


@pytest.mark.parametrize("name", sorted(ENCODED))
def test_decoded_size_is_what_qpdf_decodes(name: str) -> None:
    data, filters = ENCODED[name]
    pdf = pikepdf.new()
    stream = pikepdf.Stream(pdf, data, Filter=pikepdf.Array([pikepdf.Name(f) for f in filters]))
    assert len(stream.read_bytes(pikepdf.StreamDecodeLevel.specialized)) == len(TEXT)
    assert pdfguard.decoded_size(stream, 10 * len(TEXT)) == len(TEXT)
    assert pdfguard.decoded_size(stream, 1000) > 1000  # stopped at the cap


def test_a_nested_flate_bomb_is_stopped_at_the_cap_without_holding_it() -> None:
    inner = zlib.compress(b"\0" * (300 << 20), 9)  # 300 MB
    pdf = pikepdf.new()
    stream = pikepdf.Stream(pdf, zlib.compress(inner, 9),
                            Filter=pikepdf.Array([pikepdf.Name.FlateDecode, pikepdf.Name.FlateDecode]))
    assert len(stream.read_raw_bytes()) < 2_000
    assert pdfguard.decoded_size(stream, 50 << 20) > 50 << 20


def page_with(pdf: pikepdf.Pdf, **resources) -> pikepdf.Page:
    page = pdf.add_blank_page(page_size=(595, 842))
    page.Resources = pikepdf.Dictionary(**resources)
    page.Contents = pdf.make_stream(b"q 595 0 0 842 0 0 cm /Im0 Do Q")
    return page


def grey_image(pdf: pikepdf.Pdf, data: bytes, width: int, height: int) -> pikepdf.Stream:
    return pikepdf.Stream(pdf, zlib.compress(data), Type=pikepdf.Name.XObject, Subtype=pikepdf.Name.Image,
                          Width=width, Height=height, ColorSpace=pikepdf.Name.DeviceGray, BitsPerComponent=8,
                          Filter=pikepdf.Name.FlateDecode)


def test_a_genuine_page_passes() -> None:
    pdf = pikepdf.new()
    pixels = np.full((140, 100), 200, np.uint8).tobytes()
    page = page_with(pdf, XObject=pikepdf.Dictionary(Im0=grey_image(pdf, pixels, 100, 140)))
    pdfguard.check_page(page, 1_000_000, 1_000_000, "scan.pdf page 1")


def test_a_bomb_in_a_form_xobject_or_font_is_found_too() -> None:
    pdf = pikepdf.new()
    form = pikepdf.Stream(pdf, zlib.compress(b" " * (20 << 20), 9), Type=pikepdf.Name.XObject,
                          Subtype=pikepdf.Name.Form, BBox=[0, 0, 10, 10], Filter=pikepdf.Name.FlateDecode)
    page = page_with(pdf, XObject=pikepdf.Dictionary(Fm0=form))
    with pytest.raises(InputTooLargeError, match="max_stream_mb"):
        pdfguard.check_page(page, 1_000_000, 10 << 20, "scan.pdf page 1")


def test_image_data_beyond_its_declared_size_is_refused() -> None:
    pdf = pikepdf.new()
    page = page_with(pdf, XObject=pikepdf.Dictionary(Im0=grey_image(pdf, b"\xff" * (8 << 20), 100, 140)))
    with pytest.raises(InputTooLargeError, match="decompresses to more than"):
        pdfguard.check_page(page, 1_000_000, 100 << 20, "scan.pdf page 1")


def test_an_image_without_a_size_is_malformed_input() -> None:
    pdf = pikepdf.new()
    image = grey_image(pdf, b"\x80" * 100, 10, 10)
    del image.Width
    page = page_with(pdf, XObject=pikepdf.Dictionary(Im0=image))
    with pytest.raises(InputError, match="/Width"):
        pdfguard.check_page(page, 1_000_000, 100 << 20, "scan.pdf page 1")


def clear_codes(n: int) -> bytes:
    """N LZW clear codes (256, 9 bits each): a stream that decodes to nothing, at ~0.8 CPU-s a MB."""
    bits = "100000000" * n
    bits += "0" * (-len(bits) % 8)
    return int(bits, 2).to_bytes(len(bits) // 8, "big")


def test_an_lzw_stream_of_clear_codes_is_refused_not_read_to_its_end() -> None:
    """It decodes to nothing, so no cap stopped it: 2 MB cost 1.6 CPU-s a page (review rev17input L7)."""
    pdf = pikepdf.new()
    form = pikepdf.Stream(pdf, clear_codes(100_000), Type=pikepdf.Name.XObject, Subtype=pikepdf.Name.Form,
                          BBox=[0, 0, 10, 10], Filter=pikepdf.Name.LZWDecode)
    page = page_with(pdf, XObject=pikepdf.Dictionary(Fm0=form))
    with pytest.raises(InputError, match="scan.pdf page 1: an LZW stream is made of clear codes"):
        pdfguard.check_page(page, 1_000_000, 100 << 20, "scan.pdf page 1")
    assert pdfguard.decoded_size(pikepdf.Stream(pdf, lzw(TEXT), Filter=pikepdf.Name.LZWDecode), 1 << 20) == len(TEXT)


def test_a_stream_shared_by_every_page_is_measured_once_per_file(tmp_path, monkeypatch) -> None:
    """A 100 MB stream drawn by all 2000 pages was decoded 2000 times (review rev17input L7)."""
    from digitize.sources import open_source

    pdf = pikepdf.new()
    form = pikepdf.Stream(pdf, lzw(b"0 0 1 1 re f\n" * 50), Type=pikepdf.Name.XObject, Subtype=pikepdf.Name.Form,
                          BBox=[0, 0, 10, 10], Filter=pikepdf.Name.LZWDecode)
    form = pdf.make_indirect(form)
    for _ in range(2):
        page = pdf.add_blank_page(page_size=(72, 72))
        page.Resources = pikepdf.Dictionary(XObject=pikepdf.Dictionary(Fm0=form))
        page.Contents = pdf.make_stream(b"q /Fm0 Do Q")
    pdf.save(tmp_path / "shared.pdf")
    with pikepdf.open(tmp_path / "shared.pdf") as saved:
        shared = saved.pages[0].Resources.XObject.Fm0.objgen
    measured: list[tuple[int, int]] = []
    original = pdfguard.decoded_size

    def counting(stream, cap):
        measured.append(stream.objgen)
        return original(stream, cap)

    monkeypatch.setattr(pdfguard, "decoded_size", counting)
    with open_source(tmp_path / "shared.pdf") as src:
        src.page(0)
        src.page(1)
    assert measured.count(shared) == 1 and len(measured) == 3  # the form once, each page's contents
