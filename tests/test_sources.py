"""Input reading: every kind of file a scanner or an old archive gives, page by page."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
import pikepdf
import pytest
from PIL import Image

from digitize import encode, pdfa
from digitize.convert import ConvertOptions, convert_file
from digitize.errors import InputError, UnsupportedInputError
from digitize.sources import ReadLimits, guess_dpi, normalise_mode, open_source, sniff
from tests.pages import render_text_page

PAGE = render_text_page(size=(1240, 1754))  # A5 at 300 dpi... as pixels; dpi is what the file says


def page_pdf(path: Path, data: bytes, width: int, height: int, *, filter_: str, colour: str = "/DeviceGray",
             bits: int = 8, decode_parms: dict | None = None, rotate: int = 0,
             box: tuple[float, float] = (297.6, 421.0), crop: list | None = None) -> Path:
    """An image-only PDF page drawing one image over the whole MediaBox."""
    pdf = pikepdf.new()
    page = pdf.add_blank_page(page_size=box)
    xobj = pikepdf.Stream(pdf, data, Type=pikepdf.Name.XObject, Subtype=pikepdf.Name.Image, Width=width,
                          Height=height, ColorSpace=pikepdf.Name(colour), BitsPerComponent=bits,
                          Filter=pikepdf.Name(filter_))
    if decode_parms:
        xobj.DecodeParms = pikepdf.Dictionary(decode_parms)
    page.Resources = pikepdf.Dictionary(XObject=pikepdf.Dictionary(Im0=xobj))
    page.Contents = pdf.make_stream(f"q {box[0]} 0 0 {box[1]} 0 0 cm /Im0 Do Q".encode())
    if rotate:
        page.Rotate = rotate
    if crop:
        page.CropBox = pikepdf.Array(crop)
    pdf.save(path)
    return path


def jbig2_bytes(pixels: np.ndarray) -> bytes:
    """An embedded JBIG2 stream (as PDF holds it): a page and one generic region in MMR coding,
    i.e. CCITT G4 runs (from libtiff), so no JBIG2 encoder is needed. 1 = black, as JBIG2 wants."""
    h, w = pixels.shape

    def segment(number: int, kind: int, data: bytes) -> bytes:  # 1-byte page association, no referred-to
        return struct.pack(">IBBBI", number, kind, 0, 1, len(data)) + data

    g4 = encode.encode_bilevel(np.where(pixels > 127, 0, 255).astype(np.uint8))  # G4's white runs = JBIG2's 0
    assert g4.decode_parms["/BlackIs1"]  # i.e. libtiff coded the ink as black runs
    page_info = segment(0, 48, struct.pack(">IIIIBH", w, h, 0, 0, 0, 0))
    region = segment(1, 38, struct.pack(">IIIIB", w, h, 0, 0, 0) + b"\x01" + g4.data)  # flags: MMR
    return page_info + region + segment(2, 49, b"")


def jpeg_bytes(pixels: np.ndarray, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=85, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("head,kind", [(b"%PDF-1.7\n", "pdf"), (b"II*\x00", "tiff"), (b"MM\x00*", "tiff"),
                                        (b"\xff\xd8\xff\xe0", "jpeg"), (b"\x89PNG\r\n\x1a\n", "png")])
def test_files_are_recognised_by_their_bytes_not_their_names(tmp_path, head, kind) -> None:
    f = tmp_path / "scan.bin"
    f.write_bytes(head + b"\x00" * 64)
    assert sniff(f) == kind


def test_a_docx_named_pdf_is_refused_with_what_it_looks_like(tmp_path) -> None:
    f = tmp_path / "scan.pdf"
    f.write_bytes(b"PK\x03\x04" + b"\x00" * 64)
    with pytest.raises(UnsupportedInputError, match="ZIP"):
        sniff(f)


@pytest.mark.parametrize("dpi", [200, 300, 400])
def test_missing_dpi_is_taken_from_the_a4_paper_size(dpi) -> None:
    assert guess_dpi(round(8.27 * dpi), round(11.69 * dpi), 300) == (pytest.approx(dpi, rel=0.01), "paper-size")
    assert guess_dpi(round(11.69 * dpi), round(8.27 * dpi), 300)[1] == "paper-size"  # landscape


def test_odd_sized_image_without_dpi_gets_the_default() -> None:
    assert guess_dpi(1000, 1000, 250) == (250, "default")


@pytest.mark.parametrize("dpi, low", [(200, False), (300, False), (150, True), (199.5, True)])
def test_a_png_at_200_dpi_is_not_called_below_the_minimum(tmp_path, dpi, low) -> None:
    """PNG keeps whole dots per metre: 200 dpi comes back as 199.9996 and was reported as below 200."""
    path = tmp_path / "scan.png"
    Image.new("L", (800, 1000), 255).save(path, dpi=(dpi, dpi))
    with open_source(path, ConvertOptions()) as src:
        page = src.page(0)
    notes = [n for n in page.warnings if "minimum for scanned copies" in n]
    assert bool(notes) is low, notes
    if low:
        assert notes == [f"page 1: {dpi:g} dpi is below the 200 dpi minimum for scanned copies"]


def test_an_icon_sized_image_is_refused_when_read_not_after_ocr(tmp_path) -> None:
    """A 1x16 px image is 0.003 in wide at the assumed 300 dpi: no PDF/A page can be that small."""
    path = tmp_path / "gradient.png"
    Image.new("L", (1, 16), 128).save(path)
    with open_source(path, ConvertOptions()) as src, pytest.raises(InputError, match="too small for a page"):
        src.page(0)
    with pytest.raises(InputError, match=r"^gradient\.png page 1: 1x16 pixels at 300 dpi is too small"):
        convert_file(path, tmp_path / "out.pdf", ConvertOptions(validate=False))
    assert not (tmp_path / "out.pdf").exists()


def test_alpha_is_composited_on_white_paper() -> None:
    rgba = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    rgba.putpixel((0, 0), (0, 0, 0, 255))
    out = normalise_mode(rgba)
    assert out.mode == "L" and out.getpixel((1, 1)) == 255 and out.getpixel((0, 0)) == 0


def test_palette_with_colour_stays_colour_and_grey_palette_becomes_grey() -> None:
    colour = Image.new("RGB", (4, 4), (200, 30, 30)).convert("P")
    assert normalise_mode(colour).mode == "RGB"
    grey = Image.new("L", (4, 4), 90).convert("P")
    assert normalise_mode(grey).mode == "L"


def test_16_bit_grey_is_scaled_to_8_bit_not_clipped() -> None:
    arr = np.array([[0, 32768, 65535]], dtype=np.uint16)
    out = np.asarray(normalise_mode(Image.fromarray(arr)))
    assert out.dtype == np.uint8 and out.tolist() == [[0, 128, 255]]


def test_cmyk_jpeg_without_icc_becomes_rgb(tmp_path) -> None:
    f = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (200, 300), (0, 255, 255, 0)).save(f, "JPEG", dpi=(300, 300))  # red
    page = open_source(f).page(0)
    r, g, b = page.image.getpixel((10, 10))
    assert page.image.mode == "RGB" and r > 200 and g < 60 and b < 60
    assert page.passthrough_jpeg is None  # CMYK must be converted for the sRGB output intent


def test_upright_rgb_jpeg_keeps_the_scanners_stream(tmp_path) -> None:
    f = tmp_path / "scan.jpg"
    f.write_bytes(jpeg_bytes(render_text_page(size=(1240, 1754), colour=True), dpi=(300, 300)))
    page = open_source(f).page(0)
    assert page.passthrough_jpeg == f.read_bytes() and page.dpi == 300 and page.dpi_source == "file"


def test_jpeg_without_dpi_warns_and_uses_the_paper_size(tmp_path) -> None:
    f = tmp_path / "nodpi.jpg"
    a4 = np.full((round(11.69 * 200), round(8.27 * 200)), 255, np.uint8)
    f.write_bytes(jpeg_bytes(a4))
    page = open_source(f).page(0)
    assert page.dpi_source == "paper-size" and page.dpi == pytest.approx(200, rel=0.01)
    assert any("no resolution" in w for w in page.warnings)


def test_multipage_tiff_with_g4_lzw_and_jpeg_pages_reads_each_page(tmp_path) -> None:
    f = tmp_path / "register.tif"
    grey, colour = Image.fromarray(PAGE), Image.fromarray(render_text_page(size=(1240, 1754), colour=True))
    grey.save(f, "TIFF", compression="tiff_lzw", dpi=(300, 300), save_all=True, append_images=[colour, grey])
    with open_source(f) as src:
        assert src.page_count == 3
        assert [src.page(i).image.mode for i in range(3)] == ["L", "RGB", "L"]
    fax = tmp_path / "fax.tif"
    Image.fromarray(PAGE > 128).save(fax, "TIFF", compression="group4", dpi=(300, 300))
    assert open_source(fax).page(0).image.mode == "1"
    for compression in ("tiff_lzw", "jpeg"):
        g = tmp_path / f"{compression}.tif"
        colour.save(g, "TIFF", compression=compression, dpi=(300, 300))
        assert open_source(g).page(0).image.size == (1240, 1754)


def test_fax_resolution_becomes_square_pixels_of_the_same_physical_size(tmp_path) -> None:
    f = tmp_path / "fax.tif"
    Image.fromarray(PAGE[::2] > 128).save(f, "TIFF", compression="group4", dpi=(204, 98))
    page = open_source(f).page(0)
    assert page.dpi == 204
    assert page.image.height / 204 == pytest.approx(PAGE[::2].shape[0] / 98, rel=0.01)


def test_pdf_dct_image_is_extracted_without_recompression(tmp_path) -> None:
    data = jpeg_bytes(PAGE)
    f = page_pdf(tmp_path / "scan.pdf", data, 1240, 1754, filter_="/DCTDecode")
    page = open_source(f).page(0)
    assert page.passthrough_jpeg == data
    assert page.dpi == pytest.approx(1240 / (297.6 / 72), rel=0.001)


def test_pdf_ccitt_g4_image_is_decoded(tmp_path) -> None:
    g4 = encode.encode_bilevel(np.where(PAGE > 128, 255, 0).astype(np.uint8))
    f = page_pdf(tmp_path / "fax.pdf", g4.data, g4.width, g4.height, filter_="/CCITTFaxDecode", bits=1,
                 decode_parms=g4.decode_parms)
    img = np.asarray(open_source(f).page(0).image.convert("L"))
    assert img.shape == PAGE.shape
    assert np.mean((img > 128) == (PAGE > 128)) > 0.999


def test_pdf_jbig2_image_is_decoded(tmp_path) -> None:
    f = page_pdf(tmp_path / "jbig2.pdf", jbig2_bytes(PAGE), 1240, 1754, filter_="/JBIG2Decode", bits=1)
    img = np.asarray(open_source(f).page(0).image.convert("L"))
    assert img.shape == PAGE.shape
    assert np.mean((img > 128) == (PAGE > 128)) > 0.999


def test_a_devicen_jbig2_image_is_rendered_by_poppler_instead_of_failing(tmp_path) -> None:
    """Issue 13: pikepdf cannot transcode DeviceN ("HifiPrintImageNotTranscodableError", exit 15);
    any image it cannot extract losslessly is drawn by poppler instead."""
    pdf_path = page_pdf(tmp_path / "devicen.pdf", jbig2_bytes(PAGE), 1240, 1754, filter_="/JBIG2Decode", bits=1)
    with pikepdf.open(pdf_path, allow_overwriting_input=True) as pdf:
        tint = pikepdf.Stream(pdf, b"{}", FunctionType=4, Domain=[0, 1], Range=[0, 1])
        image = pdf.pages[0].Resources.XObject.Im0
        image.ColorSpace = pikepdf.Array([pikepdf.Name.DeviceN, pikepdf.Array([pikepdf.Name("/Black")]),
                                          pikepdf.Name.DeviceGray, tint])
        pdf.save(pdf_path)
    page = open_source(pdf_path).page(0)
    img = np.asarray(page.image.convert("L").resize((1240, 1754)))
    assert page.dpi_source == "pdf" and page.dpi >= 200
    assert np.mean((img > 128) == (PAGE > 128)) > 0.97  # the text is there, black on white


@pytest.mark.parametrize("kind, alternate, c0, c1, decode", [
    ("/DeviceN", "/DeviceGray", [1], [0], [1, 0]),  # as scanners write it: tint 1 = black ink
    ("/DeviceN", "/DeviceGray", [1], [0], None),
    ("/Separation", "/DeviceCMYK", [0, 0, 0, 0], [0, 0, 0, 1], [1, 0]),
])
def test_a_one_ink_jbig2_image_is_decoded_as_a_bilevel_page(tmp_path, kind, alternate, c0, c1, decode) -> None:
    """A 1-bit image in a one-ink Separation/DeviceN space: its samples decoded losslessly
    (jbig2dec) and mapped through the tint function, not drawn by poppler, whose rendering of
    a JBIG2 MMR region drew streaks down from the letters."""
    pdf_path = page_pdf(tmp_path / "ink.pdf", jbig2_bytes(PAGE), 1240, 1754, filter_="/JBIG2Decode", bits=1)
    with pikepdf.open(pdf_path, allow_overwriting_input=True) as pdf:
        image = pdf.pages[0].Resources.XObject.Im0
        tint = pikepdf.Dictionary(FunctionType=2, Domain=[0, 1], C0=c0, C1=c1, N=1)
        ink = pikepdf.Array([pikepdf.Name("/Black")]) if kind == "/DeviceN" else pikepdf.Name("/Black")
        image.ColorSpace = pikepdf.Array([pikepdf.Name(kind), ink, pikepdf.Name(alternate), tint])
        if decode:
            image.Decode = decode
        pdf.save(pdf_path)
    page = open_source(pdf_path).page(0)
    img = np.asarray(page.image.convert("L"))
    assert page.image.mode == "1" and page.dpi == pytest.approx(1240 / (297.6 / 72), rel=0.001)
    # JBIG2Decode gives sample 0 for the ink: with Decode [1 0] that is tint 1, full ink
    ink_is_dark = decode == [1, 0]
    assert np.mean((img > 128) == ((PAGE > 128) if ink_is_dark else (PAGE <= 128))) > 0.999


def test_pdf_jpeg2000_image_is_decoded(tmp_path) -> None:
    jpx = encode.encode_jpx(PAGE, 200_000)
    f = page_pdf(tmp_path / "jpx.pdf", jpx.data, jpx.width, jpx.height, filter_="/JPXDecode")
    img = np.asarray(open_source(f).page(0).image)
    assert img.shape == PAGE.shape and np.abs(img.astype(int) - PAGE).mean() < 8


def test_pdf_rotate_is_applied_to_the_page_image(tmp_path) -> None:
    f = page_pdf(tmp_path / "rot.pdf", jpeg_bytes(PAGE), 1240, 1754, filter_="/DCTDecode", rotate=90)
    page = open_source(f).page(0)
    assert page.image.size == (1754, 1240)
    assert page.passthrough_jpeg is None  # turned pixels no longer match the stored stream


def test_crop_box_smaller_than_the_image_is_rendered_as_shown(tmp_path) -> None:
    f = page_pdf(tmp_path / "crop.pdf", jpeg_bytes(PAGE), 1240, 1754, filter_="/DCTDecode",
                 crop=[0, 0, 297.6, 210.5])
    page = open_source(f).page(0)
    assert page.image.height == pytest.approx(page.image.width * 210.5 / 297.6, rel=0.02)


def test_born_digital_pdf_keeps_its_own_text(tmp_path) -> None:
    pdf = pikepdf.new()
    page = pdf.add_blank_page(page_size=(595, 842))
    font = pikepdf.Dictionary(Type=pikepdf.Name.Font, Subtype=pikepdf.Name.Type1, BaseFont=pikepdf.Name.Helvetica)
    page.Resources = pikepdf.Dictionary(Font=pikepdf.Dictionary(F1=font))
    page.Contents = pdf.make_stream(b"BT /F1 14 Tf 72 760 Td (Bien ban tiep nhan ho so) Tj ET")
    src = tmp_path / "typed.pdf"
    pdf.save(src)
    sp = open_source(src).page(0)
    assert [w.text for _, w in sp.words] == ["Bien", "ban", "tiep", "nhan", "ho", "so"]
    out = tmp_path / "typed-pdfa.pdf"
    report = convert_file(src, out, ConvertOptions(validate=True))
    assert report.pages[0].text_source == "pdf-text" and "tiep nhan" in report.pages[0].text


def test_earlier_invisible_ocr_is_not_trusted_and_the_page_is_read_again(tmp_path) -> None:
    pdf_path = page_pdf(tmp_path / "old-ocr.pdf", jpeg_bytes(PAGE), 1240, 1754, filter_="/DCTDecode")
    with pikepdf.open(pdf_path, allow_overwriting_input=True) as pdf:
        page = pdf.pages[0]
        font = pikepdf.Dictionary(Type=pikepdf.Name.Font, Subtype=pikepdf.Name.Type1, BaseFont=pikepdf.Name.Helvetica)
        page.Resources.Font = pikepdf.Dictionary(F1=font)
        page.contents_add(pdf.make_stream(b"BT 3 Tr /F1 12 Tf 10 10 Td (garbage old ocr) Tj ET"))
        pdf.save(pdf_path)
    page = open_source(pdf_path).page(0)
    assert page.words is None  # re-OCR, not "garbage old ocr"
    assert page.image.size == (1240, 1754)


def test_pages_are_read_lazily_one_at_a_time(tmp_path) -> None:
    pdf = pikepdf.new()
    for _ in range(30):
        pdf.add_blank_page()
    f = tmp_path / "many.pdf"
    pdf.save(f)
    with open_source(f) as src:
        assert src.page_count == 30  # opening decoded nothing; each page() renders one page


def test_pixel_limit_is_enforced_before_decoding(tmp_path) -> None:
    f = tmp_path / "big.png"
    Image.new("L", (3000, 3000), 255).save(f)
    with pytest.raises(InputError, match="megapixels"):
        open_source(f, ReadLimits(max_pixels=1_000_000)).page(0)


def test_an_exif_orientation_is_applied_and_the_stored_jpeg_not_kept(tmp_path):
    """Pixels turned by the EXIF tag (the page no longer matches the stored stream); a scan without
    the tag is taken as it is, its JPEG kept for pass-through."""
    arr = np.full((40, 60), 255, np.uint8)
    arr[:10, :10] = 0  # a mark at the top left
    exif = Image.Exif()
    exif[0x0112] = 6  # turned 90 degrees clockwise when shown
    Image.fromarray(arr).save(tmp_path / "turned.jpg", exif=exif.tobytes(), dpi=(300, 300), quality=95)
    Image.fromarray(arr).save(tmp_path / "plain.jpg", dpi=(300, 300), quality=95)
    with open_source(tmp_path / "turned.jpg") as src:
        page = src.page(0)
    assert page.image.size == (40, 60) and page.passthrough_jpeg is None
    assert np.asarray(page.image)[:10, -10:].mean() < 60  # the mark went to the top right
    with open_source(tmp_path / "plain.jpg") as src:
        page = src.page(0)
    assert page.image.size == (60, 40) and page.passthrough_jpeg is not None


@pytest.mark.parametrize("name, options", [("fax.jpg", {}), ("fax.tif", {"compression": "tiff_lzw"}),
                                           ("fax-raw.tif", {})])
def test_a_quarter_turn_swaps_unequal_dpi_so_the_page_keeps_its_size(tmp_path, name, options):
    """A 170 x 110 px fax-mode page at 200 x 100 dpi (0.85 x 1.1 in) with Orientation 6 is 1.1 x 0.85 in:
    its dpi turn with it (review rev17input L4: the JPEG came out 110 x 340 at 200 dpi, 0.55 x 1.7 in)."""
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("L", (170, 110), 255).save(tmp_path / name, exif=exif.tobytes(), tiffinfo={274: 6}, dpi=(200, 100),
                                         **options)
    page = open_source(tmp_path / name).page(0)
    assert page.image.size == (220, 170) and page.dpi == 200


@pytest.mark.parametrize("compression", ["raw", "tiff_lzw"])
@pytest.mark.parametrize("orientation, size", [(6, (40, 60)), (2, (60, 40)), (7, (40, 60))])
def test_a_tiff_frames_orientation_tag_is_applied(tmp_path, orientation, size, compression):
    """Orientation 6 turns clockwise, 2 mirrors, 7 does both: the top-left mark always ends at the top
    right (review rev17input L4: an uncompressed TIFF turned a quarter came out scrambled)."""
    arr = np.full((40, 60), 255, np.uint8)
    arr[:10, :10] = 0  # a mark at the top left
    Image.fromarray(arr).save(tmp_path / "scan.tif", tiffinfo={274: orientation}, dpi=(300, 300),
                              compression=compression)
    page = open_source(tmp_path / "scan.tif").page(0)
    dark = np.argwhere(np.asarray(page.image) < 128)
    assert page.image.size == size
    expected = {6: ([0, 30], [9, 39]), 2: ([0, 50], [9, 59]), 7: ([50, 30], [59, 39])}[orientation]
    assert dark.min(0).tolist() == expected[0] and dark.max(0).tolist() == expected[1]


def test_grey_stored_as_rgb_is_told_from_colour_off_the_sampled_pixels():
    """The 64 x 64 sample only hurries a colour page along: one coloured pixel between the sampled
    ones still makes the page colour, and a grey page is checked whole."""
    grey = np.dstack([np.tile(np.arange(256, dtype=np.uint8), (300, 2))] * 3)
    assert normalise_mode(Image.fromarray(grey)).mode == "L"
    tinted = grey.copy()
    tinted[151, 257] = (200, 10, 10)  # not on the sampling grid
    assert normalise_mode(Image.fromarray(tinted)).mode == "RGB"


def _userunit_pdf(path: Path, unit, strips: int = 1, box: tuple[float, float] = (144.0, 180.0)) -> None:
    """An 800x1000 px grey scan drawn over a page box of half its size in points, /UserUnit 2: at
    the physical size the scan is 200 dpi (4 x 5 in). ``strips`` = 2 draws it as two images
    (poppler renders the page)."""
    pix = np.full((1000, 800), 255, np.uint8)
    pix[100:900:50, 100:700] = 0
    pdf = pikepdf.new()
    w, h = box  # points of the default unit: 144 x 180 at /UserUnit 2 = 288 x 360 pt = 4 x 5 in
    xobjects, draw = pikepdf.Dictionary(), b""
    for i in range(strips):
        part = pix[i * 1000 // strips:(i + 1) * 1000 // strips]
        xobjects[f"/Im{i}"] = pikepdf.Stream(pdf, part.tobytes(), Type=pikepdf.Name.XObject, Subtype=pikepdf.Name.Image,
                                             Width=800, Height=part.shape[0], BitsPerComponent=8,
                                             ColorSpace=pikepdf.Name.DeviceGray)
        ph = h / strips
        draw += f"q {w} 0 0 {ph} 0 {h - (i + 1) * ph} cm /Im{i} Do Q ".encode()
    page = pikepdf.Dictionary(Type=pikepdf.Name.Page, MediaBox=[0, 0, w, h], UserUnit=unit,
                              Resources=pikepdf.Dictionary(XObject=xobjects), Contents=pikepdf.Stream(pdf, draw))
    pdf.pages.append(pikepdf.Page(page))
    pdf.save(path)


@pytest.mark.parametrize("strips", [1, 2])
def test_a_pdf_pages_user_unit_gives_its_physical_size(tmp_path, strips) -> None:
    """/UserUnit 2 doubles every unit: the page was archived at half its size (A4 scanned as A6)."""
    path = tmp_path / "large-format.pdf"
    _userunit_pdf(path, 2, strips)
    with open_source(path, ConvertOptions()) as src:
        page = src.page(0)
    assert page.dpi == pytest.approx(200, abs=1)
    assert page.image.width == pytest.approx(800, abs=2) and page.image.height == pytest.approx(1000, abs=2)


@pytest.mark.parametrize("unit", [0, -1, 1e9, pikepdf.Name("/Big")])
def test_an_impossible_user_unit_is_refused_in_one_line(tmp_path, unit) -> None:
    path = tmp_path / "odd.pdf"
    _userunit_pdf(path, unit)
    with open_source(path, ConvertOptions()) as src, pytest.raises(InputError, match="page content is corrupt"):
        src.page(0)


@pytest.mark.parametrize("unit, box", [(0.0118, (14400.0, 18000.0)), (0.5, (576.0, 720.0)), (2.5, (115.2, 144.0))])
def test_a_rendered_page_with_a_user_unit_keeps_its_size_and_the_pixel_limit(tmp_path, unit, box) -> None:
    """poppler draws at whole dots per inch of the default unit: the page's dpi is taken from that,
    so its size stays physical and the pixels counted against the limit are the ones drawn (review
    of s13 M3: at /UserUnit 0.0118 the check saw 3540 px a side, poppler drew 4000)."""
    path = tmp_path / "unit.pdf"
    _userunit_pdf(path, unit, strips=2, box=box)
    with open_source(path, ConvertOptions()) as src:
        page = src.page(0)
    width_in = page.image.width / page.dpi
    assert width_in == pytest.approx(box[0] * unit / 72, rel=0.01)
    limit = ReadLimits(max_pixels=page.image.width * page.image.height - 1)
    with open_source(path, limit) as src, pytest.raises(InputError, match="megapixels exceeds"):
        src.page(0)
