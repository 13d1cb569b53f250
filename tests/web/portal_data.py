"""Test data for the portal: two agencies' cases with small real PDFs, and accounts made by the CLI.

Documents are stored through the archive (as the pipelines do) with PDFs drawn by Pillow, so pages render
with poppler; conversion itself is tested elsewhere and, for uploads, by the API and browser tests.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from PIL import Image, ImageDraw

from digitize.config import Settings
from digitize.fsutil import sha256_file
from digitize.records import DocumentReport, PageReport
from storage.archive import Archive, DocumentMeta
from storage.models import CaseRecord

ROOT = Path(__file__).resolve().parents[2]
AGENCY_A, AGENCY_B = "000.00.31.H56", "000.00.12.H29"
CASE_A = f"{AGENCY_A}-241015-0027"
CASE_B = f"{AGENCY_B}-241016-0003"
PASSWORD = "mat-khau-thu-nghiem-2024"
TEXT_A = ["Giấy chứng nhận quyền sử dụng đất thửa số 12", "Bản vẽ sơ đồ thửa đất"]
TEXT_B = ["Đơn đề nghị cấp giấy phép xây dựng quyền sử dụng đất Hà Nội"]


def digitize_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGITIZE_") or k in (
        "DIGITIZE_VALIDATOR_DIR", "DIGITIZE_VALIDATOR_IDLE", "DIGITIZE_CONVERTER_IDLE")}
    env.update(DIGITIZE_DATA_DIR=str(data_dir), PYTHONPATH=str(ROOT), DIGITIZE_WEB_SECURE_COOKIES="false")
    return env


def digitize(data_dir: Path, *args: str, stdin: str = "", env: dict[str, str] | None = None) -> str:
    """Run the real CLI (``python -m digitize``) on this data dir; returns stdout, fails on non-zero exit."""
    done = subprocess.run([sys.executable, "-m", "digitize", *args], input=stdin, capture_output=True, text=True,
                          env={**digitize_env(data_dir), **(env or {})}, cwd=str(data_dir.parent), timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _pdf(path: Path, lines: list[str]) -> None:
    pages = []
    for i, line in enumerate(lines):
        image = Image.new("RGB", (620, 877), (250, 248, 240))
        draw = ImageDraw.Draw(image)
        draw.rectangle((40, 40, 580, 120), outline=(30, 30, 120), width=3)
        draw.text((60, 70), f"page {i + 1}", fill=(0, 0, 0))
        pages.append(image)
    pages[0].save(path, "PDF", resolution=75.0, save_all=True, append_images=pages[1:])


def store_case(archive: Archive, folder: Path, case_id: str, texts: list[str], agency: str) -> None:
    archive.index.upsert_case(CaseRecord(
        case_id, procedure_code="1.004616", procedure_name="Cấp giấy chứng nhận quyền sử dụng đất",
        agency=agency, applicant="Nguyễn Văn An" if case_id == CASE_A else "Trần Thị Bình",
        received_date="2024-10-15", status="Đang xử lý"))
    for n, text in enumerate(texts, start=1):
        original = folder / f"{case_id}-{n}.png"
        image = Image.new("RGB", (40, 40), (n * 40, 10, 10))
        ImageDraw.Draw(image).text((2, 2), case_id[-4:], fill=(255, 255, 255))  # distinct bytes per case
        image.save(original)
        pdfa = folder / f"{case_id}-{n}.pdf"
        _pdf(pdfa, [text, text + " (tiếp)"])
        report = DocumentReport(input_path=str(original), input_sha256=sha256_file(original), input_type="png",
                                output_path=str(pdfa), output_sha256=sha256_file(pdfa),
                                output_bytes=pdfa.stat().st_size,
                                pages=[PageReport(number=p, width_px=620, height_px=877, dpi=75, dpi_source="file",
                                                  colour_mode="rgb", orientation=0, skew_angle=0.0, text_source="ocr",
                                                  ocr_confidence=90.0 + p, word_count=len(text.split()),
                                                  image_encoding="jpeg", image_bytes=1000, text=text)
                                       for p in (1, 2)],
                                pdfa={"flavour": "2b", "compliant": True}, tools={"tesseract": "5.3.0"})
        archive.store(original, pdfa, report, DocumentMeta(case_id=case_id, title=f"Tài liệu {n}: {text[:20]}",
                                                           source_name=original.name))


def seed(data_dir: Path, work: Path) -> Settings:
    """Two cases of two agencies; accounts and tokens are made by the tests through the CLI."""
    settings = Settings(data_dir=str(data_dir))
    work.mkdir(parents=True, exist_ok=True)
    with Archive.open(settings) as archive:
        store_case(archive, work, CASE_A, TEXT_A, AGENCY_A)
        store_case(archive, work, CASE_B, TEXT_B, AGENCY_B)
    return settings


def write_job(uploads: Path, job_id: str, owner: str, agency: str, state: str, created_at: str, **more) -> Path:
    """An upload job folder as the server leaves it (job.json written directly; no conversion ran)."""
    import json

    folder = uploads / job_id
    folder.mkdir(parents=True)
    name, kind = owner.split(":", 1)[1], owner.split(":", 1)[0]
    (folder / "job.json").write_text(json.dumps({
        "job_id": job_id, "owner": owner, "name": "scan.pdf", "size": 10, "sha256": "0" * 64, "state": state,
        "created_at": created_at, "sender": {"name": name, "role": "scanner", "agencies": [agency], "kind": kind},
        "case_id": None, **more}))
    return folder
