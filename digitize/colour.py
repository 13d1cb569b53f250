"""A scan's embedded colour profile honoured: its pixels brought to sRGB, the archive's colour space.

Every PDF/A we write declares sRGB as its output intent and its page images DeviceRGB (or grey),
so the archive shows an image's numbers as sRGB colours. A phone photo or a scanner set to Adobe
RGB or Display P3 embeds a profile saying its numbers mean other, more saturated colours: read as
sRGB they come out dull and shifted (a seal's red among them). Its pixels are converted here with
littleCMS (Pillow's ImageCms), relative colorimetric with black-point compensation: colours sRGB
can show are kept, those beyond it are clipped to its edge, a press profile's black stays black.
A profile that is sRGB in all but its bytes (each vendor writes its own) changes nothing, so a
scanner's sRGB JPEG still goes into the PDF as it came. An unreadable profile, or one for another
colour space than the image's, is not used (the numbers are taken as sRGB, as before) and the page
says so; so is one on an image with transparency or a palette (not converted: rare in scans).

Untrusted input: the profile is parsed by littleCMS in the page worker that decodes the image
(memory-capped, killed at its deadline, like every decoder of a scan).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageCms

from .terminal import plain

SAME_AS_SRGB = 2  # largest difference, in 8-bit levels, of a profile's colours taken for sRGB's
# relative colorimetric with black-point compensation: a CMYK press profile's black (~55 % grey in sRGB
# without it) stays black, as the text on the page was; a matrix RGB profile's black is black either way
INTENT = ImageCms.Intent.RELATIVE_COLORIMETRIC
FLAGS = ImageCms.Flags.BLACKPOINTCOMPENSATION
TRANSPARENT_MODES = ("RGBA", "LA", "P", "PA", "RGBa", "La")
CONVERTED_MODES = ("RGB", "CMYK")  # image modes whose profile (of the same colour space) is applied


@dataclass(frozen=True)
class Converted:
    image: Image.Image
    note: str | None  # what was done or not done, for the page's report; None when nothing was
    changed: bool  # pixels differ from the decoded ones (a stored JPEG no longer matches them)


def _srgb() -> ImageCms.ImageCmsProfile:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


def _name(profile: ImageCms.ImageCmsProfile) -> str:
    """The profile's own description, as one plain line of at most 60 characters (it is the file's text)."""
    try:
        described = ImageCms.getProfileDescription(profile) or ""
    except ImageCms.PyCMSError:
        described = ""
    return plain(described)[:60] or "unnamed"


def _space_name(space: str) -> str:
    return space if space.isascii() and space.isprintable() and space else "another colour space"


def _rgb_cube() -> Image.Image:
    """Every combination of 9 levels per channel: where two profiles disagree, some of these do."""
    levels = np.linspace(0, 255, 9).round().astype(np.uint8)
    grid = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), axis=-1).reshape(1, -1, 3)
    return Image.fromarray(grid, "RGB")


def same_as_srgb(profile: ImageCms.ImageCmsProfile) -> bool:
    """Whether an RGB profile maps colours as sRGB does (within SAME_AS_SRGB levels)."""
    cube = _rgb_cube()
    mapped = ImageCms.profileToProfile(cube, profile, _srgb(), renderingIntent=INTENT, outputMode="RGB", flags=FLAGS)
    return int(np.abs(np.asarray(mapped, np.int16) - np.asarray(cube, np.int16)).max()) <= SAME_AS_SRGB


def to_srgb(img: Image.Image, what: str) -> Converted:
    """IMG (decoded, any mode) with its ``icc_profile`` applied: RGB or CMYK pixels in sRGB."""
    icc = img.info.get("icc_profile")
    if icc and img.mode in TRANSPARENT_MODES:
        return Converted(img, f"{what}: its embedded colour profile is not applied to an image with transparency or "
                              f"a palette; its colours are taken as sRGB", False)
    if not icc or img.mode not in CONVERTED_MODES:
        return Converted(img, None, False)
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        space = profile.profile.xcolor_space.strip()
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError, AttributeError):
        return Converted(img, f"{what}: its embedded colour profile is unreadable; its colours are taken as sRGB",
                         False)
    if space != img.mode:
        return Converted(img, f"{what}: its embedded colour profile is for {_space_name(space)}, "
                              f"not {img.mode}; its colours are taken as sRGB", False)
    try:
        if img.mode == "RGB" and same_as_srgb(profile):
            return Converted(img, None, False)
        converted = ImageCms.profileToProfile(img, profile, _srgb(), renderingIntent=INTENT, outputMode="RGB",
                                              flags=FLAGS)
    except (ImageCms.PyCMSError, OSError, ValueError) as e:
        reason = plain(str(e).splitlines()[0] if str(e) else type(e).__name__)[:80]
        return Converted(img, f"{what}: its embedded colour profile cannot be applied ({reason}); its colours are "
                              f"taken as sRGB", False)
    converted.info = {k: v for k, v in img.info.items() if k != "icc_profile"}
    return Converted(converted, f"{what}: converted to sRGB from its embedded colour profile ({_name(profile)})",
                     True)
