"""Batch progress line and report rows (pure: no conversion)."""

from __future__ import annotations

import csv
import io
import json

from pipelines.batch import BatchSummary, Progress, render_report, report_rows
from pipelines.jobs import JobResult, Status, StoredPart


def _stack_result() -> JobResult:
    parts = [StoredPart("1-2", "7", "000.00.31.H56-241015-0027", "qr", 2, False),
             StoredPart("4-6", "8", None, None, 3, False)]
    return JobResult("in/stack.pdf", Status.unmatched, "ab" * 32, "no case ID", documents=parts, pages=5, seconds=9.0)


def test_progress_reports_rate_and_eta_from_bytes_still_to_convert():
    progress = Progress(total_files=4, total_bytes=400, started=0.0)
    progress.add(JobResult("a", Status.done, pages=3), size=100)
    progress.add(JobResult("b", Status.skipped), size=100)  # skipped bytes are not work left
    assert progress.line(now=60.0) == "[2/4 files] 3 pages, 3.0 pages/min, ETA 0:02:00"
    progress.add(JobResult("c", Status.failed, reason="x"), size=100)
    progress.add(JobResult("d", Status.done, pages=1), size=100)
    assert progress.line(now=120.0).endswith("ETA 0:00:00, 1 failed")


def test_a_split_stack_gives_one_report_row_per_document_with_its_own_status():
    rows = report_rows([_stack_result(), JobResult("in/bad.pdf", Status.failed, reason="PDF is corrupt")])
    assert [(r["path"], r.get("source_pages"), r["status"]) for r in rows] == [
        ("in/stack.pdf", "1-2", "done"), ("in/stack.pdf", "4-6", "unmatched"), ("in/bad.pdf", None, "failed")]
    assert rows[0]["case_id"] == "000.00.31.H56-241015-0027" and rows[1]["case_id"] == ""


def test_csv_and_json_reports_carry_the_same_facts():
    summary = BatchSummary([_stack_result()], seconds=10.0)
    table = list(csv.DictReader(io.StringIO(render_report(summary, as_json=False))))
    data = json.loads(render_report(summary, as_json=True))
    assert [r["source_pages"] for r in table] == ["1-2", "4-6"]
    assert data["summary"]["unmatched"] == 1 and data["summary"]["pages"] == 5
    assert data["files"][0]["documents"][1]["source_pages"] == "4-6"


def test_csv_report_cells_cannot_be_run_as_spreadsheet_formulas():
    """A file name (it starts the reason) or any cell starting with = + - @ TAB CR gets an apostrophe (L2)."""
    evil = JobResult('=HYPERLINK("http://x","open")+0.pdf', Status.failed, reason='=1+1: unsupported')
    others = [JobResult(f"{c}x.pdf", Status.failed, reason=f"{c}cmd|' /C calc'!A0") for c in "+-@\t\r"]
    summary = BatchSummary([evil, *others], seconds=1.0)
    table = list(csv.DictReader(io.StringIO(render_report(summary, as_json=False), newline="")))
    assert table[0]["path"] == '\'=HYPERLINK("http://x","open")+0.pdf' and table[0]["reason"] == "'=1+1: unsupported"
    assert all(row["reason"].startswith("'") and row["path"].startswith("'") for row in table[1:])
    assert json.loads(render_report(summary, as_json=True))["files"][0]["reason"] == "=1+1: unsupported"


def test_files_are_queued_most_pages_first_then_largest(tmp_path):
    from PIL import Image

    from pipelines.batch import BatchItem, longest_first, page_count_hint

    fax = tmp_path / "fax.tif"
    frames = [Image.new("1", (200, 100), 1) for _ in range(3)]
    frames[0].save(fax, save_all=True, append_images=frames[1:], compression="group4")
    photo = tmp_path / "photo.png"
    Image.effect_noise((600, 600), 60).save(photo)  # one page, many more bytes than the fax
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.7 truncated")
    assert page_count_hint(fax) == 3 and page_count_hint(photo) == 1 and page_count_hint(broken) == 1
    items = [BatchItem(p, p.stat().st_size) for p in (photo, broken, fax)]
    assert photo.stat().st_size > fax.stat().st_size
    assert [i.path.name for i in longest_first(items)] == ["fax.tif", "photo.png", "broken.pdf"]
