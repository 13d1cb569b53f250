"""PDF/A-2b writing: metadata, output intent, fonts, and the veraPDF gate before OUTPUT appears."""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path

import numpy as np
import pikepdf
import pytest

from digitize import encode, pdfa, textlayer, verapdf
from digitize.convert import ConvertOptions, convert_file
from digitize.errors import OutputValidationError
from digitize.records import Word
from tests.pages import render_text_page

pytestmark = pytest.mark.integration
WHEN = dt.datetime(2024, 10, 15, 8, 30, tzinfo=dt.timezone.utc)


def two_page_pdfa(tmp_path: Path) -> Path:
    page = render_text_page(size=(620, 300), font_px=30)
    words = [(1, Word("Mã", 90, 90, 140, 125, 96.0)), (1, Word("hồ", 150, 90, 190, 125, 96.0)),
             (1, Word("sơ", 200, 90, 240, 125, 96.0))]
    ops = textlayer.content_stream(textlayer.group_lines(words), 300, 72 / 150)
    files = []
    for n, image in enumerate([encode.encode_jpeg(page, 80), encode.encode_bilevel(np.where(page > 128, 255, 0).astype(np.uint8))]):
        f = tmp_path / f"page-{n}.pdf"
        pdfa.write_page_pdf(f, image, 620 * 72 / 150, 300 * 72 / 150, ops)
        files.append(f)
    out = tmp_path / "out.pdf"
    pdfa.merge_pdfa(files, out, "Hồ sơ 000.00.31.H56-241015-0027", WHEN)
    return out


def test_xmp_declares_pdfa_2b_with_title_tool_and_dates(tmp_path) -> None:
    with pikepdf.open(two_page_pdfa(tmp_path)) as pdf:
        meta = pdf.open_metadata()
        assert meta["pdfaid:part"] == "2" and meta["pdfaid:conformance"] == "B"
        assert meta["dc:title"] == "Hồ sơ 000.00.31.H56-241015-0027"
        assert meta["xmp:CreatorTool"].startswith("digitize")
        assert meta["xmp:CreateDate"].startswith("2024-10-15T08:30")
        assert str(pdf.docinfo["/Title"]) == "Hồ sơ 000.00.31.H56-241015-0027"  # kept in sync with XMP


def test_srgb_output_intent_and_one_shared_embedded_font(tmp_path) -> None:
    with pikepdf.open(two_page_pdfa(tmp_path)) as pdf:
        (intent,) = pdf.Root.OutputIntents
        assert intent.S == "/GTS_PDFA1" and int(intent.DestOutputProfile.N) == 3
        fonts = {page.Resources.Font[textlayer.FONT_RESOURCE].objgen for page in pdf.pages}
        assert len(fonts) == 1  # merged pages share one font object
        font = pdf.pages[0].Resources.Font[textlayer.FONT_RESOURCE]
        assert "/FontFile2" in font.DescendantFonts[0].FontDescriptor
        assert not pdf.is_encrypted


def test_merged_file_is_valid_pdfa_2b(tmp_path) -> None:
    (result,) = verapdf.validate([two_page_pdfa(tmp_path)])
    assert result.compliant, result.failures


def test_pages_with_different_highest_cids_share_the_longest_map(tmp_path, monkeypatch) -> None:
    """Each page's CID-to-glyph map ends at its highest CID; the merged file shares the one reaching
    furthest, stays PDF/A-2b and extracts exactly as with the full 65 536-entry map."""
    page = render_text_page(size=(620, 300), font_px=30)
    texts = ["Mã hồ sơ", "Nẵng ỹ", "abc"]  # highest CIDs U+1ED3, U+1EF9, U+0063: the longest map is page 2's

    def build(name: str) -> Path:
        files = []
        for n, text in enumerate(texts):
            words = [(1, Word(w, 90 + 110 * i, 90, 190 + 110 * i, 125, 96.0)) for i, w in enumerate(text.split())]
            f = tmp_path / f"{name}-{n}.pdf"
            pdfa.write_page_pdf(f, encode.encode_jpeg(page, 80), 620 * 72 / 150, 300 * 72 / 150,
                                textlayer.content_stream(textlayer.group_lines(words), 300, 72 / 150))
            files.append(f)
        out = tmp_path / f"{name}.pdf"
        pdfa.merge_pdfa(files, out, "Hồ sơ", WHEN)
        return out

    short = build("short")
    with pikepdf.open(short) as pdf:
        fonts = {page.Resources.Font[textlayer.FONT_RESOURCE].objgen for page in pdf.pages}
        assert len(fonts) == 1
        cid_map = pdf.pages[0].Resources.Font[textlayer.FONT_RESOURCE].DescendantFonts[0].CIDToGIDMap
        assert len(cid_map.read_bytes()) == 2 * (0x1EF9 + 1)
    (result,) = verapdf.validate([short])
    assert result.compliant, result.failures
    full_map = textlayer.cid_to_gid_map
    monkeypatch.setattr(textlayer, "cid_to_gid_map", lambda highest_cid: full_map())  # the old 128 KB map
    full = build("full")

    def text(path: Path) -> str:
        return subprocess.run(["pdftotext", str(path), "-"], capture_output=True, check=True, timeout=60).stdout.decode()

    assert "Nẵng" in text(short) and text(short) == text(full)


def test_verapdf_catches_a_missing_output_intent(tmp_path) -> None:
    out = two_page_pdfa(tmp_path)
    with pikepdf.open(out, allow_overwriting_input=True) as pdf:
        del pdf.Root["/OutputIntents"]
        pdf.save(out)
    (result,) = verapdf.validate([out])
    assert not result.compliant
    assert any(f.startswith("6.2.4") for f in result.failures), result.failures  # DeviceRGB/Gray need an intent


def test_an_output_failing_verapdf_never_appears_at_output(tmp_path, monkeypatch) -> None:
    """If the writer ever regresses, the gate refuses the file and OUTPUT stays absent."""
    real = pdfa._add_pdfa_catalog

    def without_intent(pdf, *args):
        real(pdf, *args)
        del pdf.Root["/OutputIntents"]

    monkeypatch.setattr(pdfa, "_add_pdfa_catalog", without_intent)
    src = tmp_path / "scan.png"
    from PIL import Image

    Image.fromarray(render_text_page(size=(620, 400), font_px=30)).save(src, dpi=(150, 150))
    out = tmp_path / "out.pdf"
    with pytest.raises(OutputValidationError, match="not valid PDF/A-2b"):
        convert_file(src, out, ConvertOptions(validate=True))
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["scan.png"]


def test_streaming_validator_and_command_line_give_the_same_verdicts(tmp_path, monkeypatch) -> None:
    good = two_page_pdfa(tmp_path)
    bad = tmp_path / "plain.pdf"
    plain = pikepdf.new()
    plain.add_blank_page()  # parsable but not PDF/A (no pages: a parse error, named differently by each path)
    plain.save(bad)
    found = verapdf._stream_command("2b")
    assert found is not None, "scripts/setup.sh builds the streaming validator jar"
    stream = verapdf.StreamingValidator(*found)
    try:
        streamed = [stream.validate(p, 300) for p in (good, bad)]
    finally:
        stream.close()
    monkeypatch.setattr(verapdf, "_stream_command", lambda flavour: None)  # force the CLI wrapper
    cli = verapdf.validate([good, bad])
    assert [r.compliant for r in streamed] == [r.compliant for r in cli] == [True, False]
    assert {f.split(":")[0] for f in streamed[1].failures} == {f.split(":")[0] for f in cli[1].failures}


@pytest.mark.parametrize("width, height, dpi, fits", [
    (1, 16, 300, False), (12, 3000, 300, False), (13, 3000, 300, True), (2480, 3508, 300, True),
    (60000, 300, 300, True), (60013, 300, 300, False), (8, 40, 200, False), (9, 9, 72, True),
])
def test_page_sizes_outside_pdfa_page_boundaries_are_refused_with_the_size(width, height, dpi, fits) -> None:
    """ISO 32000-1 14.11.2 / PDF/A 6.1.13-11: 3 to 14 400 units a side; a 1x16 px PNG (Go's
    gray-gradient.png) was OCRed, written, then failed veraPDF with exit 4."""
    from digitize.errors import InputError

    if fits:
        pdfa.check_page_size(width, height, dpi, "x.png page 1")
        return
    with pytest.raises(InputError, match=rf"^x\.png page 1: {width}x{height} pixels at {dpi} dpi is too "):
        pdfa.check_page_size(width, height, dpi, "x.png page 1")
