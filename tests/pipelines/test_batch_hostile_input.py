"""Hostile archive folders and manifests against `digitize batch` (review rev16batch L1-L4, L8).

Each case: one line naming the file or row, never a traceback, never a storage retry, never a forged line.
"""

from __future__ import annotations

import csv
import io
import json
import os

import pytest
from pipeline_support import make_settings, run_cli
from scans import page, write_pdf

from digitize.errors import InputError
from pipelines import batch, manifest as manifests
from pipelines.jobs import Status, close_archives, process_file
from pipelines.manifest import read_manifest

CASE = "000.00.31.H56-241015-0027"


def test_a_file_vanishing_between_the_walk_and_the_plan_fails_alone(tmp_path, monkeypatch):
    (tmp_path / "a.pdf").write_bytes(b"%PDF")
    (tmp_path / "b.pdf").write_bytes(b"%PDF")
    real = batch.iter_scans

    def walk_then_move(src, *args, **kwargs):
        found = real(src, *args, **kwargs)
        (tmp_path / "a.pdf").unlink()  # a colleague tidies the share
        return found

    monkeypatch.setattr(batch, "iter_scans", walk_then_move)
    vanished = []
    items, others = batch.plan(tmp_path, None, [], vanished)
    assert [i.path.name for i in items] == ["b.pdf"] and others == []
    assert [(r.status, r.path) for r in vanished] == [(Status.failed, str(tmp_path / "a.pdf"))]
    assert "moved or deleted" in vanished[0].reason and "\n" not in vanished[0].reason


def test_queue_mode_without_wait_reports_a_vanished_file_as_local_mode_does(tmp_path, monkeypatch):
    """Review rev2_batch16b R4: `batch --queue` (no --wait) returned before the vanished files were added:
    no line, no report row, exit 0."""
    from pipelines import queued

    src = tmp_path / "src"
    src.mkdir()
    for name in ("a.pdf", "b.pdf"):
        (src / name).write_bytes(b"%PDF")
    real, sent = batch.iter_scans, []

    def walk_then_move(folder, *args, **kwargs):
        found = real(folder, *args, **kwargs)
        (src / "a.pdf").unlink()
        return found

    def enqueue(src, items, settings, wait, stream):  # every planned file queued; the workers carry on alone
        sent.extend(i.path.name for i in items)
        stream.write(f"batch: {len(items)} file(s) queued\n")
        return None

    monkeypatch.setattr(batch, "iter_scans", walk_then_move)
    monkeypatch.setattr(queued, "run_queued_batch", enqueue)
    report, stream = tmp_path / "r.csv", io.StringIO()
    with pytest.raises(InputError):  # a non-zero exit, as a local batch
        batch.run_batch(src, make_settings(tmp_path / "data"), report=report, stream=stream, queue=True)
    assert sent == ["b.pdf"]
    assert any(line.startswith("failed: ") and "a.pdf" in line and "moved or deleted" in line
               for line in stream.getvalue().splitlines())
    [row] = csv.DictReader(report.open(encoding="utf-8"))
    assert (os.path.basename(row["path"]), row["status"]) == ("a.pdf", "failed")


def test_a_queue_submission_failure_prints_the_name_inert(tmp_path, monkeypatch):
    """Review rev2_batch16b R5: `batch --queue` printed a refused submission's name raw (a forged line)."""
    from pipelines import queued
    from pipelines.jobs import JobResult

    class Refusing:
        batch = "b"

        def __init__(self, settings, batch=""):
            pass

        def submit_job(self, path, hint, root):
            return "", JobResult(str(path), Status.failed, "", f"{path.name}: sidecar refused")

        def close(self):
            pass

    monkeypatch.setattr(queued, "Submitter", Refusing)
    name = "x\n\x1b[2Kbatch: 9 files: 9 done, 0 failed.pdf"
    stream = io.StringIO()
    queued.run_queued_batch(tmp_path, [batch.BatchItem(tmp_path / name, 1)], make_settings(tmp_path / "data"),
                            False, stream)
    assert "\x1b" not in stream.getvalue()
    assert not any(line.startswith("batch: 9 files") for line in stream.getvalue().splitlines())


def test_manifest_field_over_the_csv_limit_is_a_problem_with_its_line(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.pdf").write_bytes(b"%PDF")
    (src / "b.pdf").write_bytes(b"%PDF")
    file = tmp_path / "m.csv"
    file.write_text("path,title\na.pdf," + "x" * 200_000 + "\nb.pdf," + "y" * 3000 + "\n", encoding="utf-8")
    found = read_manifest(file, src)
    assert [(p.line, "unreadable row" in p.message) for p in found.problems][:1] == [(2, True)]
    assert any(p.line == 3 and "title is longer than 2000 characters" in p.message for p in found.problems)


def test_a_manifest_over_the_size_bound_is_refused_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(manifests, "MANIFEST_MAX_BYTES", 100)
    file = tmp_path / "m.csv"
    file.write_text("path,title\n" + "a.pdf,x\n" * 50, encoding="utf-8")
    with pytest.raises(InputError, match="larger than"):
        read_manifest(file, tmp_path)


@pytest.mark.integration
@pytest.mark.parametrize("sequence", [str(10**20), str(2**31)])
def test_an_oversized_sequence_in_a_sidecar_fails_the_file_in_one_line_not_as_storage(tmp_path, backend_settings,
                                                                                      sequence):
    scan = write_pdf([page(["Ho so trang 1"])], tmp_path / f"{CASE}.pdf")
    (tmp_path / f"{CASE}.json").write_text(json.dumps({"sequence": sequence}))
    try:
        result = process_file(scan, backend_settings, None, root=tmp_path)
    finally:
        close_archives()
    assert result.status is Status.failed and not result.retryable and not result.internal, result.reason
    assert "sequence" in result.reason and "from 1 to 99999" in result.reason and "\n" not in result.reason


@pytest.mark.integration
def test_hostile_names_and_links_get_inert_lines_and_links_are_reported(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "x\n\x1b[2Kbatch: 9 files: 9 done, 0 failed.txt").write_text("hi")
    (src / "y\r\x1b[31mforged.pdf").write_bytes(b"%PDF-1.4 broken")
    outside = write_pdf([page(["Ngoai kho"])], tmp_path / "outside.pdf")
    os.symlink(outside, src / "linked.pdf")
    settings = make_settings(tmp_path / "data")
    report = tmp_path / "r.csv"
    r = run_cli(settings, "batch", str(src), "--jobs", "1", "--report", str(report))
    assert r.returncode != 0
    assert "\x1b" not in r.stderr and "Traceback" not in r.stderr
    assert not any(line.startswith("batch: 9 files") for line in r.stderr.splitlines())
    assert not any(line.startswith("\x1b") or "forged.pdf" in line.split(":")[0] for line in r.stderr.splitlines())
    assert "/source/" not in r.stderr  # a reason names the scan, never the worker's private copy
    assert "leaving 1 symbolic link(s) alone, never followed: linked.pdf" in r.stderr
    rows = {os.path.basename(row["path"]): row for row in csv.DictReader(report.open(encoding="utf-8"))}
    assert rows["linked.pdf"]["status"] == "skipped" and "symbolic link" in rows["linked.pdf"]["reason"]
    assert "1 skipped" in r.stderr.splitlines()[-1] or "1 skipped" in r.stderr
