"""Resource limits checked on what a file declares, before its pages are decoded: page count, the
pixels a page becomes once its resolution is made square, later TIFF frames, and the file's size."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pikepdf
import pytest
from PIL import Image, ImageFile

from digitize.convert import ConvertOptions
from digitize import sources
from digitize.errors import InputTooLargeError
from digitize.sources import MAX_DPI, MIN_DPI, SPARSE_MIN_BYTES, ReadLimits, check_input_size, open_source


@pytest.fixture
def decoded(monkeypatch) -> list[tuple[int, int]]:
    """The sizes of the images Pillow decoded (load() of a file-backed image)."""
    sizes: list[tuple[int, int]] = []
    original = ImageFile.ImageFile.load

    def load(self):
        sizes.append(self.size)
        return original(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    return sizes


def blank_pdf(path, pages: int):
    pdf = pikepdf.new()
    for _ in range(pages):
        pdf.add_blank_page()
    pdf.save(path)
    return path


def test_a_pdf_with_more_pages_than_the_limit_is_refused_when_opened(tmp_path) -> None:
    path = blank_pdf(tmp_path / "many.pdf", 3)
    with pytest.raises(InputTooLargeError, match="3 pages exceed the limit of 2 pages.*max_pages"):
        open_source(path, ReadLimits(max_pages=2))
    with open_source(path, ReadLimits(max_pages=3)) as src:
        assert src.page_count == 3
    with open_source(path, ReadLimits(max_pages=0)) as src:  # 0: no limit
        assert src.page_count == 3


def test_the_page_limit_comes_from_the_convert_options(tmp_path) -> None:
    path = blank_pdf(tmp_path / "many.pdf", 3)
    with pytest.raises(InputTooLargeError, match="limit of 2 pages"):
        open_source(path, ConvertOptions(max_pages=2))


def test_a_tiff_with_more_frames_than_the_limit_is_refused_before_any_is_decoded(tmp_path, decoded) -> None:
    path = tmp_path / "many.tif"
    frames = [Image.new("L", (50, 50), 255) for _ in range(3)]
    frames[0].save(path, save_all=True, append_images=frames[1:], dpi=(300, 300))
    decoded.clear()
    with pytest.raises(InputTooLargeError, match="3 pages exceed the limit of 2"):
        open_source(path, ReadLimits(max_pages=2))
    assert decoded == []


def test_unequal_resolution_is_checked_at_the_size_it_becomes_before_decoding(tmp_path, decoded) -> None:
    """400x400 declared is within the limit, but 50x2400 dpi made square is 48 times wider."""
    path = tmp_path / "scan.png"
    Image.new("L", (400, 400), 255).save(path, dpi=(MIN_DPI, MAX_DPI))
    decoded.clear()
    with pytest.raises(InputTooLargeError, match="made square"):
        with open_source(path, ReadLimits(max_pixels=400 * 400)) as src:
            src.page(0)
    assert decoded == []
    with open_source(path, ReadLimits(max_pixels=400 * 400 * 48)) as src:  # allowed: still read
        assert src.page(0).image.width > 400 * 47  # PNG keeps dpi as pixels per metre: ~48x


def test_a_later_tiff_frame_is_checked_before_it_is_decoded(tmp_path, decoded) -> None:
    path = tmp_path / "scan.tif"
    Image.new("L", (100, 100), 255).save(path, save_all=True, append_images=[Image.new("L", (3000, 3000), 255)],
                                         compression="tiff_deflate", dpi=(300, 300))
    with open_source(path, ReadLimits(max_pixels=100 * 100)) as src:
        assert src.page(0).image.size == (100, 100)
        with pytest.raises(InputTooLargeError, match="page 2"):
            src.page(1)
    assert (3000, 3000) not in decoded


def sparse_file(path, size: int, head: bytes = b"%PDF-1.7\n"):
    with open(path, "wb") as f:
        f.write(head)
        f.truncate(size)  # a hole: no disk space taken, never read whole here
    return path


def check(path, max_input_mb: int = 2048, info=None) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        check_input_size(fd, max_input_mb, path.name, info)
        assert os.lseek(fd, 0, os.SEEK_CUR) == 0  # the offset is kept for the reader
    finally:
        os.close(fd)


def test_a_file_over_max_input_mb_is_refused_from_its_size_alone(tmp_path) -> None:
    path = sparse_file(tmp_path / "big.pdf", 2 * 1024 * 1024)
    with pytest.raises(InputTooLargeError, match="exceeds the limit of 1 MB.*max_input_mb"):
        check(path, 1)
    check(path, 2)  # at the limit: taken (sparse, but below SPARSE_MIN_BYTES)
    check(path, 0)  # 0: no limit


def test_a_sparse_file_is_refused_unless_the_file_system_reports_no_blocks(tmp_path) -> None:
    path = sparse_file(tmp_path / "holes.pdf", 64 * 1024 * 1024)
    info = os.stat(path)
    if info.st_blocks * 512 * 8 >= info.st_size:
        pytest.skip("this file system does not keep holes")
    with pytest.raises(InputTooLargeError, match="sparse"):
        check(path)
    check(path, info=SimpleNamespace(st_size=info.st_size, st_blocks=0))  # e.g. some SMB mounts: size only


def test_a_compressed_file_with_few_blocks_but_no_holes_is_not_sparse(tmp_path, monkeypatch) -> None:
    """ZFS or btrfs compression: an uncompressed TIFF of white paper takes few blocks, yet has no holes."""
    monkeypatch.setattr(sources, "SPARSE_MIN_BYTES", 1024 * 1024)  # a small file on disk stands for a large one
    path = tmp_path / "white.tif"
    path.write_bytes(b"II*\x00" + b"\xff" * (2 * 1024 * 1024))
    check(path, info=SimpleNamespace(st_size=path.stat().st_size, st_blocks=8))


def test_a_small_file_with_few_blocks_is_not_called_sparse(tmp_path) -> None:
    """A small file may be stored inline or compressed: under SPARSE_MIN_BYTES it is never judged."""
    path = sparse_file(tmp_path / "tiny.pdf", SPARSE_MIN_BYTES - 1)
    check(path)


def image_page_pdf(path, data: bytes, width: int, height: int, page: tuple[float, float], pdf=None, **image) -> None:
    """A PDF (PDF, or a new one) whose one page is one full-page image: DATA under a dictionary of
    WIDTH x HEIGHT."""
    pdf = pdf if pdf is not None else pikepdf.new()
    pdf.add_blank_page(page_size=page)
    xobj = pikepdf.Stream(pdf, data, Type=pikepdf.Name.XObject, Subtype=pikepdf.Name.Image, Width=width,
                          Height=height, BitsPerComponent=8, **{"ColorSpace": pikepdf.Name.DeviceGray, **image})
    pdf.pages[0].Resources = pikepdf.Dictionary(XObject=pikepdf.Dictionary(Im0=xobj))
    pdf.pages[0].Contents = pdf.make_stream(f"q {page[0]} 0 0 {page[1]} 0 0 cm /Im0 Do Q".encode())
    pdf.save(path)


def jpeg_bytes(size: tuple[int, int]) -> bytes:
    import io

    out = io.BytesIO()
    Image.new("L", size, 200).save(out, "JPEG")
    return out.getvalue()


def test_an_embedded_jpeg_is_checked_at_its_own_headers_size(tmp_path) -> None:
    """The decoder follows the JPEG's SOF, not the image dictionary: a 400x400 JPEG under a 10x10
    dictionary must not be decoded past max_pixels (review rev17input M1)."""
    from digitize.errors import InputError

    path = tmp_path / "sof.pdf"
    image_page_pdf(path, jpeg_bytes((400, 400)), 10, 10, (100, 100), Filter=pikepdf.Name.DCTDecode)
    with pytest.raises(InputError, match="image data is 400x400 pixels, its dictionary says 10x10"):
        open_source(path, ReadLimits()).page(0)
    png = tmp_path / "one.png"
    Image.new("L", (20, 20), 255).save(png)
    open_source(png, ReadLimits()).page(0)  # reading an image file once left Pillow's own guard off
    with pytest.raises(InputTooLargeError, match="megapixels"):
        open_source(path, ReadLimits(max_pixels=10_000)).page(0)
    image_page_pdf(path, jpeg_bytes((40, 30)), 40, 30, (40, 30), Filter=pikepdf.Name.DCTDecode)
    assert open_source(path, ReadLimits()).page(0).image.size == (40, 30)  # agreeing sizes still read


def test_a_non_extractable_image_is_rendered_at_the_pages_real_size_and_a_clamped_dpi(tmp_path, monkeypatch) -> None:
    """An image pikepdf cannot extract (two-ink DeviceN) is drawn by poppler: its pixel check must use
    the page's own height, not its width, at the dpi really asked for (review rev17input M2: a 100 x
    3000 pt page was checked as 2000 x 2000 px and rendered at 1440 dpi as 2000 x 60000)."""
    import zlib

    path = tmp_path / "tall.pdf"
    pdf = pikepdf.new()
    tint = pikepdf.Stream(pdf, b"{pop}", FunctionType=4, Domain=[0, 1, 0, 1], Range=[0, 1])
    space = pikepdf.Array([pikepdf.Name.DeviceN, pikepdf.Array([pikepdf.Name("/A"), pikepdf.Name("/B")]),
                           pikepdf.Name.DeviceGray, tint])
    image_page_pdf(path, zlib.compress(bytes(2000 * 2 * 2)), 2000, 2, (100, 3000), pdf, ColorSpace=space,
                   Filter=pikepdf.Name.FlateDecode)
    asked: list[float] = []

    def render(pdf_path, index, dpi, grey=False):
        asked.append(dpi)
        return Image.new("L", (round(100 * dpi / 72), round(3000 * dpi / 72)), 255)

    monkeypatch.setattr(sources.poppler, "render_page", render)
    with pytest.raises(InputTooLargeError, match="megapixels"):
        open_source(path, ReadLimits(max_pixels=10_000_000)).page(0)
    assert asked == []
    open_source(path, ReadLimits()).page(0)
    assert asked == [600.0]  # 1440 dpi from the image's width, clamped as every other render is
