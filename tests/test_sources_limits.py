"""Resource limits checked on what a file declares, before its pages are decoded: page count, the
pixels a page becomes once its resolution is made square, later TIFF frames, and the file's size."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pikepdf
import pytest
from PIL import Image, ImageFile

from digitize.convert import ConvertOptions
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


def test_a_file_over_max_input_mb_is_refused_from_its_size_alone(tmp_path) -> None:
    info = os.stat(sparse_file(tmp_path / "big.pdf", 2 * 1024 * 1024))
    with pytest.raises(InputTooLargeError, match="exceeds the limit of 1 MB.*max_input_mb"):
        check_input_size(info, 1, "big.pdf")
    check_input_size(info, 2, "big.pdf")  # at the limit: taken (sparse, but below SPARSE_MIN_BYTES)
    check_input_size(info, 0, "big.pdf")  # 0: no limit


def test_a_sparse_file_is_refused_unless_the_file_system_reports_no_blocks(tmp_path) -> None:
    path = sparse_file(tmp_path / "holes.pdf", 64 * 1024 * 1024)
    info = os.stat(path)
    if info.st_blocks * 512 * 8 >= info.st_size:
        pytest.skip("this file system does not keep holes")
    with pytest.raises(InputTooLargeError, match="sparse"):
        check_input_size(info, 2048, "holes.pdf")
    check_input_size(SimpleNamespace(st_size=info.st_size, st_blocks=0), 2048, "holes.pdf")  # e.g. some SMB mounts
    written = SimpleNamespace(st_size=SPARSE_MIN_BYTES, st_blocks=SPARSE_MIN_BYTES // 512)
    check_input_size(written, 2048, "scan.pdf")  # a real file of that size


def test_a_small_file_with_few_blocks_is_not_called_sparse(tmp_path) -> None:
    """A small file may be stored inline or compressed (btrfs, ZFS): under SPARSE_MIN_BYTES it is never judged."""
    check_input_size(SimpleNamespace(st_size=SPARSE_MIN_BYTES - 1, st_blocks=1), 2048, "tiny.pdf")
