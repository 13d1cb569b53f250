"""PDF/A-2b writing with pikepdf (no Ghostscript: Debian 12's 10.0.0 corrupts PDFs with text).

Pages are built one at a time into single-page PDFs on disk by the workers, then merged
here with one shared font, XMP metadata (pdfaid part 2, conformance B), an sRGB output intent
and no encryption, JavaScript or actions, so the output stays signable (PAdES) later.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
from pathlib import Path
from typing import Sequence

import pikepdf
from pikepdf import Array, Dictionary, Name, Pdf, Stream

from . import __version__
from . import textlayer
from .encode import EncodedImage
from .errors import InputError

PRODUCER = f"digitize {__version__}"


@functools.lru_cache(maxsize=1)
def srgb_icc() -> bytes:
    """An sRGB ICC profile made by littleCMS (via Pillow), marked version 2.1 for PDF/A-2 readers."""
    from PIL import ImageCms

    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
    data = bytearray(profile.tobytes())
    data[24:36] = ICC_DATE  # littleCMS stamps "now": fixed, so every output carries the same bytes
    return bytes(data)


ICC_DATE = bytes.fromhex("07e8 0001 0001 0000 0000 0000")  # 2024-01-01 00:00:00 (ICC dateTimeNumber)


def _font(pdf: Pdf, highest_cid: int) -> Dictionary:
    font_file = Stream(pdf, textlayer.glyphless_truetype())
    font_file.Length1 = len(textlayer.glyphless_truetype())
    descriptor = Dictionary(
        Type=Name.FontDescriptor, FontName=Name("/" + textlayer.FONT_NAME), Flags=4,
        FontBBox=Array([0, textlayer.DESCENT, textlayer.ADVANCE, textlayer.ASCENT]), ItalicAngle=0,
        Ascent=textlayer.ASCENT, Descent=textlayer.DESCENT, CapHeight=textlayer.ASCENT, StemV=80,
        FontFile2=pdf.make_indirect(font_file),
    )
    cid_font = Dictionary(
        Type=Name.Font, Subtype=Name.CIDFontType2, BaseFont=Name("/" + textlayer.FONT_NAME),
        CIDSystemInfo=Dictionary(Registry=pikepdf.String("Adobe"), Ordering=pikepdf.String("Identity"), Supplement=0),
        FontDescriptor=pdf.make_indirect(descriptor), DW=textlayer.ADVANCE,
        CIDToGIDMap=pdf.make_indirect(Stream(pdf, textlayer.cid_to_gid_map(highest_cid))),
    )
    return pdf.make_indirect(Dictionary(
        Type=Name.Font, Subtype=Name.Type0, BaseFont=Name("/" + textlayer.FONT_NAME), Encoding=Name("/Identity-H"),
        DescendantFonts=Array([pdf.make_indirect(cid_font)]),
        ToUnicode=pdf.make_indirect(Stream(pdf, textlayer.to_unicode_cmap())),
    ))


def _image_xobject(pdf: Pdf, image: EncodedImage) -> Stream:
    xobj = Stream(pdf, image.data)
    xobj.Type = Name.XObject
    xobj.Subtype = Name.Image
    xobj.Width = image.width
    xobj.Height = image.height
    xobj.ColorSpace = Name(image.colour_space)
    xobj.BitsPerComponent = image.bits
    xobj.Filter = Name(image.filter)
    if image.decode_parms:
        xobj.DecodeParms = Dictionary({k: v for k, v in image.decode_parms.items()})
    return pdf.make_indirect(xobj)


PAGE_MIN_PT, PAGE_MAX_PT = 3.0, 14400.0  # a page box's sides in PDF/A (ISO 19005-2 6.1.13; ISO 32000-1 14.11.2)


def check_page_size(width_px: int, height_px: int, dpi: float, what: str) -> None:
    """Refuse, before any work, a page that no PDF/A can hold at 100 % scale (page size = pixels /
    dpi): an icon-sized image (under 3/72 in a side: 13 px at 300 dpi) or a strip over 200 in long.
    Without this, such a file was OCRed, written and only then failed veraPDF (exit 4, as if the
    converter had broken it)."""
    width_pt, height_pt = width_px * 72.0 / dpi, height_px * 72.0 / dpi
    if min(width_pt, height_pt) < PAGE_MIN_PT:
        raise InputError(f"{what}: {width_px}x{height_px} pixels at {round(dpi, 1):g} dpi is too small for a page "
                         f"({width_pt / 72:.3g} x {height_pt / 72:.3g} in; PDF/A needs at least 3/72 in a side)")
    if max(width_pt, height_pt) > PAGE_MAX_PT:
        raise InputError(f"{what}: {width_px}x{height_px} pixels at {round(dpi, 1):g} dpi is too large for a page "
                         f"({width_pt / 72:.4g} x {height_pt / 72:.4g} in; PDF/A allows at most 200 in a side)")


def write_page_pdf(path: Path, image: EncodedImage, width_pt: float, height_pt: float, text_ops: bytes) -> None:
    """One page: the archival image filling the page, the invisible text layer over it."""
    pdf = Pdf.new()
    xobj = _image_xobject(pdf, image)
    draw = f"q {width_pt:.4f} 0 0 {height_pt:.4f} 0 0 cm /Im0 Do Q\n".encode("ascii")
    resources = Dictionary(XObject=Dictionary(Im0=xobj))
    if text_ops:
        resources.Font = Dictionary({textlayer.FONT_RESOURCE: _font(pdf, textlayer.highest_cid(text_ops))})
    page = Dictionary(
        Type=Name.Page, MediaBox=Array([0, 0, round(width_pt, 4), round(height_pt, 4)]),
        Resources=resources, Contents=pdf.make_stream(draw + text_ops),
    )
    pdf.pages.append(pikepdf.Page(page))
    pdf.save(path, compress_streams=True, object_stream_mode=pikepdf.ObjectStreamMode.generate)


def _xmp_date(when: dt.datetime) -> str:
    return when.isoformat(timespec="seconds")


def merge_pdfa(page_files: Sequence[Path], output: Path, title: str, created: dt.datetime,
               language: str = "vi", subject: str = "") -> None:
    """Merge page PDFs into one PDF/A-2b file at ``output`` (caller makes it atomic).

    The page PDFs stay open until the save so qpdf copies their image streams lazily:
    memory does not grow with the page count.
    """
    out = Pdf.new()
    fonts_of_pages = []
    sources = []
    try:
        for path in page_files:
            src = Pdf.open(path)
            sources.append(src)
            out.pages.append(src.pages[0])
            fonts = out.pages[-1].obj.Resources.get("/Font")
            if fonts is not None:
                fonts_of_pages.append(fonts)
        _share_font(fonts_of_pages)
        _add_pdfa_catalog(out, title, created, language, subject)
        out.save(output, compress_streams=True, object_stream_mode=pikepdf.ObjectStreamMode.generate,
                 deterministic_id=True, min_version="1.7", linearize=False)
    finally:
        for src in sources:
            src.close()
        out.close()


def _share_font(fonts_of_pages: list[Dictionary]) -> None:
    """One text-layer font for all pages: the one whose CID-to-glyph map reaches furthest (each
    page's map ends at its own highest CID), so every page's text stays mapped."""
    if not fonts_of_pages:
        return
    key = textlayer.FONT_RESOURCE
    shared = max((fonts[key] for fonts in fonts_of_pages),
                 key=lambda font: len(font.DescendantFonts[0].CIDToGIDMap.read_bytes()))
    for fonts in fonts_of_pages:
        fonts[key] = shared


def _add_pdfa_catalog(pdf: Pdf, title: str, created: dt.datetime, language: str, subject: str) -> None:
    icc = Stream(pdf, srgb_icc())
    icc.N = 3
    pdf.Root.OutputIntents = Array([pdf.make_indirect(Dictionary(
        Type=Name.OutputIntent, S=Name.GTS_PDFA1, OutputConditionIdentifier=pikepdf.String("sRGB IEC61966-2.1"),
        Info=pikepdf.String("sRGB IEC61966-2.1"), DestOutputProfile=pdf.make_indirect(icc),
    ))])
    pdf.Root.Lang = pikepdf.String(language)
    pdf.Root.MarkInfo = Dictionary(Marked=False)
    with pdf.open_metadata(set_pikepdf_as_editor=False, update_docinfo=True) as meta:
        meta["pdfaid:part"] = "2"
        meta["pdfaid:conformance"] = "B"
        meta["dc:title"] = title
        if subject:
            meta["dc:description"] = subject
        meta["dc:language"] = [language]
        meta["xmp:CreatorTool"] = PRODUCER
        meta["pdf:Producer"] = f"{PRODUCER} (pikepdf {pikepdf.__version__})"
        meta["xmp:CreateDate"] = _xmp_date(created)
        meta["xmp:ModifyDate"] = _xmp_date(created)
        meta["xmp:MetadataDate"] = _xmp_date(created)


def pdf_is_encrypted_or_active(path: os.PathLike) -> list[str]:
    """Things PDF/A-2b forbids that we double-check on our own output (cheap, before veraPDF)."""
    problems = []
    with Pdf.open(path) as pdf:
        if pdf.is_encrypted:
            problems.append("encrypted")
        for key in ("/OpenAction", "/AA", "/Names"):
            if key in pdf.Root:
                problems.append(f"catalog has {key}")
    return problems
