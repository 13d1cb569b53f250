"""Resource limits at intake (review intake H1, H2): a file of too many pages, a huge or sparse file, and a
file that keeps running the disk full are refused into failed/ with their reason, never retried forever,
and nothing of a huge file is hashed or copied. No servers, no OCR: processing is stubbed where it would run."""

from __future__ import annotations

import errno
import io
import re
import threading
from pathlib import Path
from types import SimpleNamespace

import pikepdf
import pytest
from pipeline_support import wait_for

from digitize.config import ConvertSettings
from digitize.errors import ResourceError
from pipelines import inbox, jobs, queued, watch
from pipelines.messages import error_kinds

SPARSE_SIZE = 64 * 1024 * 1024  # apparent size; a hole takes no disk space and is never read whole here


def blank_pdf(path: Path, pages: int = 1) -> Path:
    pdf = pikepdf.new()
    for _ in range(pages):
        pdf.add_blank_page()
    pdf.save(path)
    return path


def padded_pdf(path: Path, size: int = SPARSE_SIZE) -> Path:
    """A valid one-page PDF, a hole, then its own startxref and %%EOF again: complete by every end-marker
    check, and qpdf opens it from its tail (review f10)."""
    buf = io.BytesIO()
    pdf = pikepdf.new()
    pdf.add_blank_page()
    pdf.save(buf)
    body = buf.getvalue()
    xref = re.findall(rb"startxref\s+(\d+)", body)[-1]
    tail = b"\nstartxref\n" + xref + b"\n%%EOF\n"
    with open(path, "wb") as f:
        f.write(body)
        f.seek(size - len(tail))
        f.write(tail)
    return path


def keeps_holes(path: Path) -> bool:
    info = path.stat()
    return 0 < info.st_blocks * 512 * 8 < info.st_size


def test_a_file_over_max_input_mb_is_judged_from_its_size_and_a_sparse_one_as_sparse(tmp_path):
    path = padded_pdf(tmp_path / "padded.pdf")
    problem = inbox.completeness_problem(path, ConvertSettings(max_input_mb=1))
    assert problem is not None and problem.kinds[0] == "FileTooLargeError", problem
    assert "max_input_mb" in problem.message
    if keeps_holes(path):
        problem = inbox.completeness_problem(path, ConvertSettings())
        assert problem is not None and problem.kinds[0] == "FileTooLargeError" and "sparse" in problem.message
    assert inbox.completeness_problem(blank_pdf(tmp_path / "small.pdf"), ConvertSettings(max_input_mb=1)) is None


def test_a_pdf_of_too_many_pages_is_refused_by_the_probe(tmp_path):
    problem = inbox.completeness_problem(blank_pdf(tmp_path / "many.pdf", 3), ConvertSettings(max_pages=2))
    assert problem is not None and problem.kinds[0] == "TooManyPagesError", problem
    assert "3 pages exceed the limit of 2" in problem.message


def test_a_job_refuses_a_huge_file_before_hashing_or_copying_it(tmp_path, folder_settings, monkeypatch):
    path = padded_pdf(tmp_path / "padded.pdf")
    folder_settings.convert.max_input_mb = 1
    hashed = []
    monkeypatch.setattr(jobs, "sha256_stream", lambda f: hashed.append(f) or "0" * 64)
    monkeypatch.setattr(jobs, "copy_hashed", lambda *a: hashed.append(a) or "0" * 64)
    result = jobs.process_file(path, folder_settings, archive=object(), root=tmp_path)
    assert result.status is jobs.Status.failed and result.error_kinds[0] == "FileTooLargeError", result
    assert not result.retryable and not result.internal  # quarantined, not retried
    assert hashed == []


def run_until(watcher: watch.Watcher, done, what: str) -> None:
    """Run the watcher in this (main) thread until ``done()`` holds, then stop it."""
    settled = threading.Event()

    def stop_when_settled() -> None:
        try:
            wait_for(done, what)
            settled.set()
        finally:
            watcher.stopping = True

    threading.Thread(target=stop_when_settled, daemon=True).start()
    watcher.run()
    assert settled.is_set()


def test_the_watcher_quarantines_too_many_pages_and_too_large_unprocessed(tmp_path, folder_settings):
    inbox_dir = tmp_path / "inbox"
    inbox_dir.mkdir()
    blank_pdf(inbox_dir / "many.pdf", 3)
    padded_pdf(inbox_dir / "padded.pdf")
    folder_settings.convert.max_pages = 2
    folder_settings.convert.max_input_mb = 1
    calls = []

    def process(path, settings, hint, **kw):
        calls.append(path.name)
        raise AssertionError("never processed")

    failed = inbox_dir / "failed"
    watcher = watch.Watcher(watch.WatchOptions(inbox_dir, poll=0.2, stable_seconds=0.2, rescan=0.5),
                            folder_settings, process)
    run_until(watcher, lambda: (failed / "many.pdf").exists() and (failed / "padded.pdf").exists(),
              "both files quarantined")
    assert calls == []
    assert "3 pages exceed the limit of 2" in (failed / "many.pdf.error.txt").read_text(encoding="utf-8")
    assert "too many pages" in (failed / "many.pdf.error.txt").read_text(encoding="utf-8")
    assert "max_input_mb" in (failed / "padded.pdf.error.txt").read_text(encoding="utf-8")


def test_a_file_that_keeps_filling_the_disk_is_quarantined_after_resource_limit_tries(tmp_path, folder_settings,
                                                                                      monkeypatch):
    monkeypatch.setattr(watch, "RETRY_BACKOFF", (0.05,))
    inbox_dir = tmp_path / "inbox"
    inbox_dir.mkdir()
    blank_pdf(inbox_dir / "big.pdf")
    calls = []

    def process(path, settings, hint, **kw):
        calls.append(path.name)
        fault = ResourceError("out of disk space: No space left on device")
        return jobs.JobResult(str(path), jobs.Status.failed, reason=str(fault), error_kinds=error_kinds(fault),
                              exit_code=int(fault.exit_code))

    failed = inbox_dir / "failed"
    watcher = watch.Watcher(watch.WatchOptions(inbox_dir, poll=0.2, stable_seconds=0.2, rescan=0.5),
                            folder_settings, process)
    run_until(watcher, lambda: (failed / "big.pdf").exists(), "big.pdf quarantined")
    assert len(calls) == watch.RESOURCE_LIMIT
    text = (failed / "big.pdf.error.txt").read_text(encoding="utf-8")
    assert f"{watch.RESOURCE_LIMIT} tries failed, the last out of disk space" in text
    assert "ran out of disk space several times" in text




class _RecordingStore:
    """The object store of a Submitter: records what would be staged."""

    def __init__(self):
        self.put_keys = []

    def put(self, key, path, sha, meta):
        self.put_keys.append(key)

    def close(self):
        pass


def _submitter(settings):
    """A Submitter with no broker and no ledger: a test only reaches them when a file is staged."""
    submitter = object.__new__(queued.Submitter)
    submitter.settings, submitter.batch, submitter.runs = settings, "", {}
    submitter.options = queued.conversion_options(settings)
    submitter.objects = _RecordingStore()
    submitter.ledger = SimpleNamespace(get=lambda job: pytest.fail("a refused file reached the ledger"))
    return submitter


def test_a_queued_batch_refuses_a_huge_file_before_staging_it(tmp_path, folder_settings, monkeypatch):
    path = padded_pdf(tmp_path / "padded.pdf")
    folder_settings.convert.max_input_mb = 1
    copied = []
    real_open = open

    def spying_open(file, mode="r", *a, **kw):  # the temp copy is the only file _stage_copy opens by name
        if "w" in mode:
            copied.append(file)
        return real_open(file, mode, *a, **kw)

    monkeypatch.setattr("builtins.open", spying_open)
    submitter = _submitter(folder_settings)
    job, result = submitter.submit_job(path, None, tmp_path)
    assert job == "" and result.status is jobs.Status.failed, result
    assert result.error_kinds[0] == "FileTooLargeError" and "max_input_mb" in result.reason
    assert not result.retryable  # quarantined (watch) or reported failed (batch), never retried
    assert submitter.objects.put_keys == [] and copied == []


def test_a_full_temp_disk_while_staging_is_a_resource_fault_not_an_unreadable_scan(tmp_path, folder_settings,
                                                                                 monkeypatch):
    path = blank_pdf(tmp_path / "scan.pdf")

    def full(*a):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(queued, "_stage_copy", full)
    _, result = _submitter(folder_settings).submit_job(path, None, tmp_path)
    assert result.status is jobs.Status.failed
    assert result.retryable and result.out_of_space, result  # kept in the inbox and tried again
    assert "cannot read" not in result.reason and "No space left on device" in result.reason
    assert "temp folder" in result.reason
