"""Archival image encoding: JPEG passthrough rules, budgeted JPEG, lossless CCITT G4."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import numpy as np
import pikepdf
import pytest
from PIL import Image

from digitize import encode, pdfa
from tests.pages import DPI, noise, render_text_page


def jpeg_bytes(pixels: np.ndarray, mode: str | None = None, **save) -> bytes:
    img = Image.fromarray(pixels)
    if mode:
        img = img.convert(mode)
    buf = io.BytesIO()
    img.save(buf, "JPEG", **save)
    return buf.getvalue()


def page_pdf_image(tmp_path: Path, image: encode.EncodedImage) -> np.ndarray:
    """Write the image as a PDF page, read it back decoded by pikepdf (as a PDF reader would)."""
    path = tmp_path / "page.pdf"
    pdfa.write_page_pdf(path, image, image.width * 72 / DPI, image.height * 72 / DPI, b"")
    with pikepdf.open(path) as pdf:
        (xobj,) = pdf.pages[0].get_images().values()
        return np.asarray(pikepdf.PdfImage(xobj).as_pil_image().convert("L"))


@pytest.fixture(scope="module")
def bilevel() -> np.ndarray:
    page = noise(render_text_page(size=(1240, 900)), 0.002, seed=3)
    return np.where(page > 127, 255, 0).astype(np.uint8)


@pytest.mark.parametrize("mode,space", [("RGB", "/DeviceRGB"), ("L", "/DeviceGray")])
@pytest.mark.parametrize("progressive", [False, True])
def test_passthrough_keeps_scanner_jpeg_bytes(mode, space, progressive):
    data = jpeg_bytes(render_text_page(size=(320, 200), colour=True), mode, progressive=progressive)
    e = encode.passthrough_jpeg(data)
    assert e is not None and e.data is data
    assert (e.width, e.height, e.colour_space, e.bits, e.filter) == (320, 200, space, 8, "/DCTDecode")
    assert e.encoding == "jpeg-passthrough"


@pytest.mark.parametrize("progressive", [False, True])
def test_passthrough_drops_metadata_and_trailing_bytes_but_keeps_the_image_data(progressive):
    """EXIF (a phone's maker, serial, GPS), comments and bytes appended after EOI went into the
    archival stream (review rev17input L5); the pixels must decode exactly the same without them."""
    pixels = render_text_page(size=(320, 200), colour=True)
    exif = Image.Exif()
    exif[0x010F] = "SECRET-GPS-MAKER"  # Make
    data = jpeg_bytes(pixels, "RGB", exif=exif.tobytes(), comment=b"HIDDEN-COMMENT", progressive=progressive,
                      restart_marker_rows=1) + b"TRAILING-PAYLOAD" * 10
    e = encode.passthrough_jpeg(data)
    assert e is not None and e.encoding == "jpeg-passthrough" and (e.width, e.height) == (320, 200)
    for secret in (b"SECRET-GPS-MAKER", b"HIDDEN-COMMENT", b"TRAILING-PAYLOAD"):
        assert secret not in e.data
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(e.data))), np.asarray(Image.open(io.BytesIO(data))))


def test_passthrough_rejects_cmyk():
    data = jpeg_bytes(render_text_page(size=(64, 48), colour=True), "CMYK")
    assert encode.passthrough_jpeg(data) is None


def test_passthrough_rejects_12_bit():
    data = bytearray(jpeg_bytes(np.full((48, 64), 128, np.uint8)))
    sof = data.index(b"\xff\xc0")
    assert data[sof + 4] == 8
    data[sof + 1], data[sof + 4] = 0xC1, 12  # extended sequential, 12-bit samples
    assert encode.passthrough_jpeg(bytes(data)) is None


@pytest.mark.parametrize("data", [b"", b"\xff\xd8", b"\x89PNG\r\n\x1a\n" + bytes(40), b"\xff\xd8\xff\xe0\x00\x10" + bytes(8)])
def test_passthrough_rejects_non_jpeg_and_truncated(data):
    assert encode.passthrough_jpeg(data) is None


def test_page_budget_scales_with_paper_area():
    a4 = encode.page_budget(2481, 3507, 300, 360)
    assert a4 == pytest.approx(360 * 1024, rel=0.01)
    assert encode.page_budget(1240, 1754, 300, 360) == pytest.approx(a4 / 4, rel=0.01)  # A6
    assert encode.page_budget(10, 10, 300, 360) == int(360 * 1024 * 0.05)  # floor for slips and tiny crops
    assert encode.page_budget(1654, 2339, 200, 360) == pytest.approx(a4, rel=0.01)  # 200 dpi: the same A4 budget
    assert encode.page_budget(4962, 7014, 600, 360) == pytest.approx(4 * a4, rel=0.01)  # 600 dpi: by its pixels


def test_a_600_dpi_scan_keeps_a_decent_jpeg_quality():
    """Held to the 300 dpi page's bytes, a grainy 600 dpi A4 page went to JPEG 2000 (~5 s)."""
    text = render_text_page(size=(4962, 7014), font_px=110).astype(np.float32)
    grainy = np.clip(text + np.random.default_rng(3).normal(0, 4, text.shape), 0, 255).astype(np.uint8)
    image = encode.encode_archival(grainy, "grey", 80, encode.page_budget(4962, 7014, 600, 390))
    assert image.filter == "/DCTDecode" and int(image.encoding.removeprefix("jpeg-q")) >= 60, image.encoding


def grainy_page(sigma: float, colour: bool = False, seed: int = 0) -> np.ndarray:
    """A text page with scanner grain of strength ``sigma`` (the pages that used to be re-encoded)."""
    rng = np.random.default_rng(seed)
    page = render_text_page(size=(1240, 1754), colour=colour).astype(np.float32) * 0.9 + 15
    return np.clip(page + rng.normal(0, sigma, page.shape), 0, 255).astype(np.uint8)


def test_jpeg_budget_is_respected_by_a_predicted_quality():
    rng = np.random.default_rng(0)
    photo = np.clip(render_text_page(size=(800, 600), colour=True).astype(np.int16)
                    + rng.normal(0, 25, (600, 800, 3)), 0, 255).astype(np.uint8)
    free = encode.encode_jpeg(photo, 90)
    budget = len(free.data) // 2
    e = encode.encode_jpeg(photo, 90, budget)
    assert len(e.data) <= budget
    assert e.encoding != "jpeg-q90" and e.encoding.startswith("jpeg-q")
    assert (e.width, e.height, e.colour_space) == (800, 600, "/DeviceRGB")
    assert Image.open(io.BytesIO(e.data)).size == (800, 600)


@pytest.mark.parametrize("sigma,colour", [(3, False), (8, False), (12, False), (6, True)])
def test_predicted_size_is_close_to_the_true_size(sigma, colour):
    """The band sample predicts the page's JPEG size at any quality (what makes one pass enough)."""
    page = grainy_page(sigma, colour)
    model = encode.JpegSizeModel(page)
    assert model.image.height < page.shape[0] // 5  # a sample, not the page
    img = Image.fromarray(page)
    for q in (80, 50, 30):
        true = len(encode._jpeg(img, q, optimize=True))
        assert abs(model.size(q) / true - 1) < 0.2, (q, model.size(q), true)


@pytest.mark.parametrize("sigma,colour", [(3, False), (8, False), (12, False), (6, True)])
def test_one_full_encode_plus_at_most_one_correction(monkeypatch, sigma, colour):
    """No trial and error at full size: sample encodes are cheap, page-sized ones at most two;
    and the quality chosen is within a few steps of the best that fits (fidelity)."""
    page = grainy_page(sigma, colour)
    img = Image.fromarray(page)
    budget = len(encode._jpeg(img, 45, optimize=True))  # q45 just fits
    full = []
    real = encode._jpeg

    def counting(image, quality, optimize=False):
        if image.size == img.size:
            full.append(quality)
        return real(image, quality, optimize)

    monkeypatch.setattr(encode, "_jpeg", counting)
    e = encode.encode_jpeg(page, 80, budget)
    assert len(e.data) <= budget and e.filter == "/DCTDecode"
    assert 1 <= len(full) <= 2, full
    assert 45 - 8 <= int(e.encoding.removeprefix("jpeg-q")) <= 45


def test_past_min_jpeg_quality_the_budget_is_met_with_jpeg_2000():
    """JPEG never drops below MIN_QUALITY; a page still over budget becomes JPX at the budget."""
    rng = np.random.default_rng(1)
    static = rng.integers(0, 256, (300, 400), dtype=np.uint8)
    budget = 20_000
    assert len(encode.encode_jpeg(static, encode.MIN_QUALITY).data) > budget  # JPEG cannot meet it
    e = encode.encode_jpeg(static, 80, budget=budget)
    assert (e.encoding, e.filter, e.colour_space) == ("jpx", "/JPXDecode", "/DeviceGray")
    assert len(e.data) <= budget * 1.05


def test_g4_round_trip_is_lossless(tmp_path, bilevel):
    e = encode.encode_bilevel(bilevel)
    assert (e.bits, e.colour_space, e.encoding) == (1, "/DeviceGray", "ccitt-g4")
    assert np.array_equal(page_pdf_image(tmp_path, e), bilevel)


def test_bilevel_polarity_as_rendered_by_poppler(tmp_path, bilevel):
    """Black text stays black in a real renderer (catches a wrong /BlackIs1 or /Decode)."""
    e = encode.encode_bilevel(bilevel)
    pdfa.write_page_pdf(tmp_path / "p.pdf", e, e.width * 72 / DPI, e.height * 72 / DPI, b"")
    subprocess.run(["pdftoppm", "-r", str(int(DPI)), "-gray", str(tmp_path / "p.pdf"), str(tmp_path / "r")],
                   check=True, capture_output=True, timeout=60)
    rendered = np.asarray(Image.open(next(tmp_path.glob("r*.pgm"))))
    assert rendered.shape == bilevel.shape
    assert ((rendered > 127) == (bilevel > 127)).mean() > 0.95  # inverted would be ~0.1


def test_bilevel_uses_ccitt_g4_in_one_strip():
    tall = np.full((3508, 2480), 255, np.uint8)  # A4 at 300 dpi: Pillow would write many strips by default
    tall[1000:1040, 200:2200] = 0
    e = encode.encode_bilevel(tall)
    assert (e.filter, e.encoding) == ("/CCITTFaxDecode", "ccitt-g4")
    assert e.decode_parms["/Columns"] == 2480 and e.decode_parms["/Rows"] == 3508 and e.decode_parms["/K"] == -1
    assert len(e.data) < 2000


def test_flate_fallback_is_lossless_too(tmp_path, bilevel, monkeypatch):
    def no_g4(tiff):
        raise ValueError("unexpected TIFF encoding")

    monkeypatch.setattr(encode, "_tiff_single_strip", no_g4)
    e = encode.encode_bilevel(bilevel)
    assert (e.filter, e.encoding, e.bits) == ("/FlateDecode", "flate", 1)
    assert np.array_equal(page_pdf_image(tmp_path, e), bilevel)


def test_encode_archival_routes_by_colour_mode(bilevel):
    assert encode.encode_archival(bilevel, "bilevel", 80).bits == 1
    grey = encode.encode_archival(render_text_page(size=(200, 100)), "grey", 80)
    assert (grey.bits, grey.colour_space, grey.filter) == (8, "/DeviceGray", "/DCTDecode")


def test_a_page_that_fits_at_min_quality_stays_jpeg():
    rng = np.random.default_rng(2)
    grainy = np.clip(200 + rng.normal(0, 25, (600, 800)), 0, 255).astype(np.uint8)
    at_min = len(encode.encode_jpeg(grainy, encode.MIN_QUALITY).data)
    above = len(encode.encode_jpeg(grainy, encode.MIN_QUALITY + 10).data)
    assert above > at_min
    e = encode.encode_jpeg(grainy, 80, budget=(at_min + above) // 2)
    assert e.filter == "/DCTDecode" and len(e.data) <= (at_min + above) // 2
    assert encode.MIN_QUALITY <= int(e.encoding.removeprefix("jpeg-q")) < encode.MIN_QUALITY + 10


def test_small_images_are_their_own_sample():
    tiny = render_text_page(size=(200, 100))
    sample, factor = encode.band_sample(tiny)
    assert sample is tiny and factor == 1.0
