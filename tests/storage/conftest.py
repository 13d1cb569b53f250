"""Storage fixtures: an Archive on (folder + SQLite) and on (MinIO + PostgreSQL), and fake documents.

Storage stores bytes, so a document here is a few bytes of "PDF" plus a hand-built DocumentReport;
nothing depends on the converter.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from digitize.config import Settings
from digitize.fsutil import sha256_file
from digitize.records import DocumentReport, PageReport
from storage.archive import Archive, DocumentMeta

try:
    from tests.servers import MINIO_PASSWORD, MINIO_USER
except ModuleNotFoundError:
    from servers import MINIO_PASSWORD, MINIO_USER

CASE = "000.00.31.H56-241015-0027"
BACKENDS = ["folder+sqlite", "minio+postgresql"]


def backend_settings(request, backend: str, tmp_path: Path, **store) -> Settings:
    settings = Settings(data_dir=str(tmp_path / "data"))
    if backend == "minio+postgresql":
        server = request.getfixturevalue("minio_server")
        settings.store.url = server.url(request.getfixturevalue("unique_bucket"))
        settings.store.access_key, settings.store.secret_key = MINIO_USER, MINIO_PASSWORD
        settings.index.dsn = request.getfixturevalue("postgres_dsn")
    for name, value in store.items():
        setattr(settings.store, name, value)
    return settings


@pytest.fixture(params=BACKENDS)
def settings(request, tmp_path) -> Settings:
    return backend_settings(request, request.param, tmp_path)


@pytest.fixture
def archive(settings):
    with Archive.open(settings) as a:
        yield a


@dataclass
class FakeDocument:
    original: Path
    pdfa: Path
    report: DocumentReport
    meta: DocumentMeta


def page(number: int, text: str) -> PageReport:
    return PageReport(number=number, width_px=2480, height_px=3508, dpi=300, dpi_source="file", colour_mode="grey",
                      orientation=0, skew_angle=0.0, text_source="ocr", ocr_confidence=91.5,
                      word_count=len(text.split()), image_encoding="jpeg", image_bytes=1000, text=text)


@pytest.fixture
def make_document(tmp_path):
    """Factory: distinct original bytes per ``name``; the PDF/A bytes can be varied with ``pdfa_salt``."""
    counter = iter(range(1, 10_000))

    def make(pages=("Giấy chứng nhận quyền sử dụng đất",), case_id: str | None = CASE, name: str | None = None,
             pdfa_salt: str = "", **meta) -> FakeDocument:
        name = name or f"scan-{next(counter)}"
        folder = tmp_path / "docs" / name
        folder.mkdir(parents=True, exist_ok=True)
        original = folder / f"{name}.tif"
        original.write_bytes(b"II*\x00 original scan " + name.encode() + b"\xff" * 64)
        pdfa = folder / f"{name}{pdfa_salt}.pdf"
        pdfa.write_bytes(b"%PDF-1.7\n% PDF/A-2b of " + name.encode() + pdfa_salt.encode() + b"\n%%EOF\n")
        report = DocumentReport(input_path=str(original), input_sha256=sha256_file(original), input_type="tiff",
                                output_path=str(pdfa), output_sha256=sha256_file(pdfa),
                                output_bytes=pdfa.stat().st_size, pages=[page(i + 1, t) for i, t in enumerate(pages)],
                                pdfa={"flavour": "2b", "compliant": True}, tools={"tesseract": "5.3.0"})
        meta = DocumentMeta(case_id=case_id, title=meta.pop("title", "Đơn đề nghị"), source_name=original.name,
                            **meta)
        return FakeDocument(original, pdfa, report, meta)

    return make
