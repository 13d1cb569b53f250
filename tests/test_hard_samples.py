"""The held-out hard pages in samples/hard/ (issue 13): index, truth and files agree, and the
seeded generator still makes the committed bytes."""

from __future__ import annotations

import importlib.util
import io
import json
import subprocess
import sys
import unicodedata
import zlib
from pathlib import Path

import numpy as np
import pikepdf
import pytest
from PIL import Image

HARD = Path(__file__).resolve().parent.parent / "samples" / "hard"
INDEX = json.loads((HARD / "samples.json").read_text(encoding="utf-8"))
RECORDS = {r["name"]: r for r in INDEX["samples"]}
META = {"samples.json", "make_samples.py", "texts.py", "README.md", "LICENSE"}


def _generator():
    spec = importlib.util.spec_from_file_location("make_samples", HARD / "make_samples.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_index_lists_exactly_the_sample_files() -> None:
    on_disk = {p.name for p in HARD.iterdir() if p.is_file() and p.name not in META}
    assert on_disk == set(RECORDS)


@pytest.mark.parametrize("name", sorted(RECORDS))
def test_truth_is_nfc_with_one_part_per_output_page(name: str) -> None:
    record = RECORDS[name]
    text = (HARD / record["truth"]).read_text(encoding="utf-8")
    assert text == unicodedata.normalize("NFC", text)
    assert len(text.rstrip("\n").split("\f")) == record["output_pages"]
    assert len(text.split()) > 40  # a page of text, not a caption


@pytest.mark.parametrize("name", sorted(n for n in RECORDS if not n.endswith(".pdf")))
def test_image_size_and_dpi_match_index(name: str) -> None:
    page = RECORDS[name]["pages"][0]
    with Image.open(HARD / name) as image:
        assert image.size == (page["width_px"], page["height_px"])
        assert [round(d) for d in image.info["dpi"]] == page["dpi"]
        assert getattr(image, "n_frames", 1) == 1


def test_jbig2_page_is_devicen_and_poppler_draws_its_text(tmp_path: Path) -> None:
    with pikepdf.open(HARD / "h12_jbig2_devicen.pdf") as pdf:
        image = pdf.pages[0].Resources.XObject.Im0
        assert image.Filter == pikepdf.Name.JBIG2Decode and image.ColorSpace[0] == pikepdf.Name.DeviceN
    out = subprocess.run(["pdftoppm", "-r", "50", "-gray", str(HARD / "h12_jbig2_devicen.pdf")],
                         capture_output=True, check=True)
    assert b"JBIG2" not in out.stderr
    pixels = np.asarray(Image.open(io.BytesIO(out.stdout)))
    assert 0.005 < (pixels < 128).mean() < 0.2  # black text on white paper, not a black or empty page


@pytest.mark.parametrize("name", ["h10_fax_fine.tif", "h12_jbig2_devicen.pdf"])
def test_generator_reproduces_committed_bytes(name: str) -> None:
    make = dict((n, f) for n, _, f in _generator().SAMPLES)[name]
    assert make(np.random.default_rng(zlib.crc32(name.encode()))).data == (HARD / name).read_bytes()
