"""A scan's embedded colour profile honoured (digitize/colour.py), and what reading a file does with it.

The wide-gamut profile is made here: littleCMS's sRGB profile with Adobe RGB (1998)'s primaries
(D50-adapted colorants) written over sRGB's, a valid matrix/TRC profile of another RGB space.
"""

from __future__ import annotations

import io
import struct
import zlib
from importlib import resources

import numpy as np
import pikepdf
import pytest
from PIL import Image, ImageCms

from digitize import colour
from digitize.sources import open_source
from tests.pages import render_text_page

ADOBE_RGB_D50 = {b"rXYZ": (0.6097, 0.3111, 0.0195), b"gXYZ": (0.2053, 0.6257, 0.0609), b"bXYZ": (0.1492, 0.0632, 0.7446)}


def srgb_bytes() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def wide_gamut_profile() -> bytes:
    """sRGB's profile with Adobe RGB's colorants in its rXYZ, gXYZ and bXYZ tags."""
    data = bytearray(srgb_bytes())
    (count,) = struct.unpack(">I", data[128:132])
    found = 0
    for n in range(count):
        sig, offset, _ = struct.unpack(">4sII", data[132 + 12 * n:144 + 12 * n])
        if sig in ADOBE_RGB_D50:
            assert data[offset:offset + 4] == b"XYZ "
            data[offset + 8:offset + 20] = b"".join(struct.pack(">i", round(v * 65536)) for v in ADOBE_RGB_D50[sig])
            found += 1
    assert found == 3
    return bytes(data)


def tagged(profile: bytes, *colours: tuple[int, int, int]) -> Image.Image:
    img = Image.fromarray(np.array([list(colours)], np.uint8), "RGB")
    img.info["icc_profile"] = profile
    return img


def test_a_wide_gamut_photo_is_converted_to_srgb_greys_kept_colours_more_saturated() -> None:
    done = colour.to_srgb(tagged(wide_gamut_profile(), (128, 128, 128), (180, 90, 90), (60, 140, 70)), "page 1")
    assert done.changed and "converted to sRGB" in done.note and done.note.startswith("page 1")
    grey, red, green = np.asarray(done.image, int)[0]
    assert max(grey) - min(grey) <= 1  # the same white point: a neutral stays neutral
    assert red[0] - red[1] > 90 + 15  # Adobe RGB's (180, 90, 90) is a redder red than sRGB's
    assert green[1] - green[0] > 80 + 15
    assert "icc_profile" not in done.image.info


def test_an_srgb_profile_of_another_maker_changes_nothing() -> None:
    vendor = resources.files("pikepdf") / "pdfa" / "data" / "sRGB.icc"  # not littleCMS's bytes
    if not vendor.is_file():
        pytest.skip("pikepdf ships no sRGB profile in this version")
    assert vendor.read_bytes() != srgb_bytes()
    img = tagged(vendor.read_bytes(), (180, 90, 90), (12, 200, 240))
    done = colour.to_srgb(img, "page 1")
    assert (done.image, done.note, done.changed) == (img, None, False)


@pytest.mark.parametrize("profile, said", [(b"not a profile at all", "unreadable"),
                                           (None, "is for Lab, not RGB")])
def test_a_profile_that_cannot_be_used_is_said_and_the_colours_taken_as_srgb(profile, said) -> None:
    lab = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes()
    img = tagged(profile or lab, (180, 90, 90))
    done = colour.to_srgb(img, "page 2")
    assert done.image is img and not done.changed and said in done.note and done.note.startswith("page 2")


def test_an_untagged_or_grey_image_is_left_alone() -> None:
    grey = Image.new("L", (4, 4), 128)
    grey.info["icc_profile"] = wide_gamut_profile()
    for img in (Image.new("RGB", (4, 4), (180, 90, 90)), grey):
        assert colour.to_srgb(img, "page 1") == colour.Converted(img, None, False)


def _jpeg(profile: bytes | None) -> bytes:
    buf = io.BytesIO()
    extra = {"icc_profile": profile} if profile else {}
    Image.fromarray(render_text_page(size=(620, 877), colour=True)).save(buf, "JPEG", quality=90, dpi=(150, 150), **extra)
    return buf.getvalue()


def test_reading_a_wide_gamut_jpeg_converts_it_and_drops_its_stream_an_srgb_one_keeps_it(tmp_path) -> None:
    wide, plain = tmp_path / "wide.jpg", tmp_path / "plain.jpg"
    wide.write_bytes(_jpeg(wide_gamut_profile()))
    plain.write_bytes(_jpeg(srgb_bytes()))
    with open_source(wide) as src:
        page = src.page(0)
    assert page.passthrough_jpeg is None  # its numbers are not sRGB's
    assert any("converted to sRGB from its embedded colour profile" in w for w in page.warnings), page.warnings
    with open_source(plain) as src:
        page = src.page(0)
    assert page.passthrough_jpeg == plain.read_bytes()
    assert not any("colour profile" in w for w in page.warnings)


def _pdf_of_one_image(path, profile: bytes) -> None:
    """A one-page PDF whose page is an RGB image in an ICCBased colour space of PROFILE (150 dpi A4)."""
    pixels = render_text_page(size=(1240, 1754), colour=True)
    with pikepdf.new() as pdf:
        icc = pikepdf.Stream(pdf, profile)
        icc.N = 3
        image = pikepdf.Stream(pdf, zlib.compress(pixels.tobytes()), Type=pikepdf.Name.XObject,
                               Subtype=pikepdf.Name.Image, Width=1240, Height=1754, BitsPerComponent=8,
                               ColorSpace=pikepdf.Array([pikepdf.Name.ICCBased, icc]), Filter=pikepdf.Name.FlateDecode)
        page = pdf.add_blank_page(page_size=(595.3, 841.9))
        page.Resources = pikepdf.Dictionary(XObject=pikepdf.Dictionary(Im0=image))
        page.Contents = pikepdf.Stream(pdf, b"q 595.3 0 0 841.9 0 0 cm /Im0 Do Q")
        pdf.save(path)


def test_an_iccbased_image_in_a_pdf_is_converted_an_srgb_one_is_not(tmp_path) -> None:
    wide, plain = tmp_path / "wide.pdf", tmp_path / "plain.pdf"
    _pdf_of_one_image(wide, wide_gamut_profile())
    _pdf_of_one_image(plain, srgb_bytes())
    with open_source(wide) as src:
        converted = src.page(0)
    with open_source(plain) as src:
        kept = src.page(0)
    assert any("converted to sRGB" in w for w in converted.warnings), converted.warnings
    assert not any("colour profile" in w for w in kept.warnings), kept.warnings
    assert converted.image.size == kept.image.size == (1240, 1754)
    assert not np.array_equal(np.asarray(converted.image), np.asarray(kept.image))


def test_a_tiff_frame_without_a_profile_is_not_given_the_frame_befores(tmp_path) -> None:
    """Pillow keeps an earlier frame's profile in ``info`` when a later frame has none."""
    first = Image.new("RGB", (850, 1100), (180, 90, 90))
    second = Image.new("RGB", (850, 1100), (180, 90, 90))
    path = tmp_path / "two.tif"
    first.info["icc_profile"] = wide_gamut_profile()  # the first frame's alone
    first.save(path, save_all=True, append_images=[second], dpi=(100, 100))
    with Image.open(path) as tif:
        tif.seek(1)
        assert 34675 not in tif.tag_v2 and "icc_profile" in tif.info  # the trap this guards against
    with open_source(path) as src:
        one, two = src.page(0), src.page(1)
    assert one.image.getpixel((5, 5))[0] > 190 and any("converted to sRGB" in w for w in one.warnings)
    assert two.image.getpixel((5, 5)) == (180, 90, 90) and not any("colour profile" in w for w in two.warnings)


GHOSTSCRIPT_CMYK = "/usr/share/color/icc/ghostscript/default_cmyk.icc"  # Ghostscript's, which setup.sh installs


def test_a_cmyk_scan_with_a_press_profile_keeps_its_black_black_and_its_white_white() -> None:
    try:
        profile = open(GHOSTSCRIPT_CMYK, "rb").read()
    except FileNotFoundError:
        pytest.skip("no Ghostscript CMYK profile here (scripts/setup.sh installs ghostscript)")
    img = Image.fromarray(np.array([[[0, 0, 0, 255], [255, 255, 255, 255], [0, 0, 0, 0], [0, 230, 230, 0]]],
                                   np.uint8), "CMYK")
    img.info["icc_profile"] = profile
    done = colour.to_srgb(img, "page 1")
    assert done.changed and done.image.mode == "RGB"
    black, rich, white, red = np.asarray(done.image, int)[0]
    assert max(rich) <= 8 and max(black) <= 45  # without black-point compensation: ~55 and ~32
    assert min(white) >= 250 and red[0] > 180 and red[1] < 80 and red[2] < 80


def test_text_from_the_profile_reaches_the_note_as_one_plain_line() -> None:
    data = bytearray(srgb_bytes())
    data[16:20] = b"A\nB\x1b"  # the header's colour space field
    done = colour.to_srgb(tagged(bytes(data), (180, 90, 90)), "page 1")
    assert done.note and done.note.isprintable() and "\x1b" not in done.note, done.note


def test_a_profile_on_an_image_with_transparency_is_said_not_applied() -> None:
    img = Image.new("RGBA", (4, 4), (180, 90, 90, 255))
    img.info["icc_profile"] = wide_gamut_profile()
    done = colour.to_srgb(img, "page 1")
    assert done.image is img and not done.changed and "transparency" in done.note
