"""The committed samples are what the demo, the converter tests and the benchmark rely on:
their index, ground truth and files must agree, and the generator must reproduce them."""

from __future__ import annotations

import csv
import importlib.util
import json
import re
import sys
import unicodedata
from pathlib import Path

import pikepdf
import pytest
import zxingcpp
from PIL import Image

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
INDEX = json.loads((SAMPLES / "samples.json").read_text(encoding="utf-8"))
RECORDS = {r["name"]: r for r in INDEX["samples"]}
CASE_ID = re.compile(r"^\d{3}\.\d{2}\.\d{2}\.H\d{2}-\d{6}-\d{4}$")
PROCEDURE = re.compile(r"^\d\.\d{6}\.\d{3}\.\d{2}\.\d{2}\.H\d{2}$")
META = {"samples.json", "manifest.csv", "generate.py", "content.py", "README.md", "LICENSE"}
PIL_MODE = {"grey": {"L", "I;16", "P", "LA"}, "colour": {"RGB"}, "bilevel": {"1"}}


def load_generator():
    spec = importlib.util.spec_from_file_location("samples_generate", SAMPLES / "generate.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def truth_pages(record: dict) -> list[str]:
    return (SAMPLES / record["truth"]).read_text(encoding="utf-8").split("\f")


def pdf_page_count(path: Path) -> int:
    with pikepdf.open(path) as pdf:
        return len(pdf.pages)


def image_page_count(path: Path) -> int:
    with Image.open(path) as image:
        return getattr(image, "n_frames", 1)


def test_index_lists_exactly_the_sample_files() -> None:
    on_disk = {p.name for p in SAMPLES.iterdir() if p.is_file() and p.name not in META}
    assert on_disk == set(RECORDS)
    assert len(RECORDS) >= 10


@pytest.mark.parametrize("name", sorted(RECORDS))
def test_truth_is_nfc_and_has_one_part_per_page(name: str) -> None:
    record = RECORDS[name]
    pages = truth_pages(record)
    assert len(pages) == record["page_count"] == len(record["pages"])
    for page, meta in zip(pages, record["pages"]):
        assert unicodedata.is_normalized("NFC", page)
        assert page.endswith("\n") and len(page.splitlines()) == meta["lines"]
        assert "CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM" in page


@pytest.mark.parametrize("name", sorted(RECORDS))
def test_file_page_count_matches_index(name: str) -> None:
    path = SAMPLES / name
    count = pdf_page_count(path) if path.suffix == ".pdf" else image_page_count(path)
    assert count == RECORDS[name]["page_count"]


@pytest.mark.parametrize("name", sorted(n for n in RECORDS if not n.endswith(".pdf")))
def test_image_size_mode_and_dpi_match_index(name: str) -> None:
    with Image.open(SAMPLES / name) as image:
        for frame, meta in enumerate(RECORDS[name]["pages"]):
            image.seek(frame)
            assert image.size == (meta["width_px"], meta["height_px"])
            assert image.mode in PIL_MODE[meta["colour"]]
            assert [round(d) for d in image.info["dpi"]] == meta["dpi"]


@pytest.mark.parametrize("name", sorted(n for n in RECORDS if n.endswith(".pdf")))
def test_pdf_pages_are_image_only_with_index_geometry(name: str) -> None:
    with pikepdf.open(SAMPLES / name) as pdf:
        for page, meta in zip(pdf.pages, RECORDS[name]["pages"]):
            (image,) = page.get_images().values()
            width_pt = float(page.mediabox[2])
            assert int(image.Width) == meta["width_px"]
            assert round(int(image.Width) * 72 / width_pt) == meta["dpi"][0]
            assert int(page.obj.get("/Rotate", 0)) == meta["pdf_rotate"]
            assert b"BT" not in page.Contents.read_bytes()  # no text layer yet


def test_faults_cover_the_issue_list() -> None:
    pages = [p for r in RECORDS.values() for p in r["pages"]]
    skews = {p["skew"] for p in pages}
    assert {7.0, -12.0} <= skews
    assert {180, 270} <= {p["orientation"] for p in pages}  # 270: fed sideways, content turned 90° cw
    assert {"grey", "colour", "bilevel"} == {p["colour"] for p in pages}
    assert any(p["dpi"] == [150, 150] for p in pages)
    assert any(p["dpi"][0] != p["dpi"][1] for p in pages)  # fax
    assert {"seal", "signature", "shadow", "fade", "qr"} <= {f for p in pages for f in p["faults"]}


def test_truth_covers_vietnamese_tones_and_codes() -> None:
    text = "".join((SAMPLES / r["truth"]).read_text(encoding="utf-8") for r in RECORDS.values())
    marks = {c for c in unicodedata.normalize("NFD", text) if unicodedata.combining(c)}
    tones = {"\u0300", "\u0301", "\u0309", "\u0303", "\u0323"}  # huyền, sắc, hỏi, ngã, nặng
    vowel_marks = {"\u0302", "\u0306", "\u031b"}  # â/ê/ô, ă, ơ/ư
    assert tones | vowel_marks <= marks
    assert "đ" in text and "Đ" in text
    assert "Mã hồ sơ: 000.00.31.H56-241015-0027" in text
    assert "1.004616.000.00.00.H56" in text


def test_manifest_rows_are_valid_and_cover_every_file() -> None:
    with open(SAMPLES / "manifest.csv", encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames == ["path", "case_id", "procedure_code", "title", "organ_id",
                                     "file_catalog", "file_notation", "maintenance", "rights"]
        rows = list(reader)
    assert [r["path"] for r in rows] == list(RECORDS)
    for row in rows:
        assert CASE_ID.match(row["case_id"]) and row["case_id"] == RECORDS[row["path"]]["case_id"]
        assert PROCEDURE.match(row["procedure_code"])
        assert row["title"] and row["case_id"].startswith(row["organ_id"])


def test_receipt_qr_code_carries_the_case_id() -> None:
    with pikepdf.open(SAMPLES / "12_receipt_qr.pdf") as pdf:
        (image,) = pdf.pages[0].get_images().values()
        pil = pikepdf.PdfImage(image).as_pil_image()
    assert [r.text for r in zxingcpp.read_barcodes(pil)] == [RECORDS["12_receipt_qr.pdf"]["case_id"]]


@pytest.mark.parametrize("name", ["05_upside_down.png", "10_fax_g4.tif", "13_pdf_rotate90.pdf"])
def test_generator_reproduces_committed_bytes(name: str) -> None:
    generate = load_generator()
    (sample,) = [s for s in generate.SAMPLES if s.name == name]
    produced, _ = generate.sample_files(sample)
    for relative, data in produced.items():
        assert (SAMPLES / relative).read_bytes() == data, relative


def test_bench_pdf_has_the_requested_page_count(tmp_path: Path) -> None:
    out = tmp_path / "three.pdf"
    assert load_generator().main(["--pages", "3", "--out", str(out)]) == 0
    assert pdf_page_count(out) == 3
