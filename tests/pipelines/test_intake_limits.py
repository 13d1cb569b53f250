"""Resource limits at intake (review intake H1, H2): a file of too many pages, a huge or sparse file, and a
file that keeps running the disk full are refused into failed/ with their reason, never retried forever,
and nothing of a huge file is hashed or copied. No servers, no OCR: processing is stubbed where it would run."""

from __future__ import annotations

import errno
import io
import logging
import re
import shutil
import threading
from pathlib import Path
from types import SimpleNamespace

import pikepdf
import pytest
from pipeline_support import wait_for

from digitize.config import ConvertSettings
from digitize.errors import ResourceError, StorageError
from pipelines import diskroom, inbox, jobs, queued, watch
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


def disk_full(path) -> jobs.JobResult:
    fault = ResourceError("out of disk space: No space left on device")
    return jobs.JobResult(str(path), jobs.Status.failed, reason=str(fault), error_kinds=error_kinds(fault),
                          exit_code=int(fault.exit_code))


def storage_down(path) -> jobs.JobResult:
    fault = StorageError("object store unreachable")
    return jobs.JobResult(str(path), jobs.Status.failed, reason=str(fault), error_kinds=error_kinds(fault),
                          exit_code=int(fault.exit_code))


def stored(path) -> jobs.JobResult:
    return jobs.JobResult(str(path), jobs.Status.done, "0" * 64, "stored")


def quick_watcher(inbox_dir, settings, process, monkeypatch) -> watch.Watcher:
    monkeypatch.setattr(watch, "RETRY_BACKOFF", (0.05,))
    return watch.Watcher(watch.WatchOptions(inbox_dir, poll=0.2, stable_seconds=0.2, rescan=0.5), settings, process)


def inbox_of(tmp_path, monkeypatch, room: bool, *names: str) -> Path:
    """An inbox holding a one-page PDF of each name; the disk has ``room`` after each try (diskroom.has_room)."""
    monkeypatch.setattr(diskroom, "has_room", lambda *folders: room)
    inbox_dir = tmp_path / "inbox"
    inbox_dir.mkdir()
    for name in names:
        blank_pdf(inbox_dir / name)
    return inbox_dir


def test_a_file_that_keeps_filling_the_disk_while_it_has_room_is_quarantined(tmp_path, folder_settings, monkeypatch):
    inbox_dir = inbox_of(tmp_path, monkeypatch, True, "big.pdf")  # room again once its temp files are gone
    calls = []

    def process(path, settings, hint, **kw):
        calls.append(path.name)
        return disk_full(path)

    failed = inbox_dir / "failed"
    run_until(quick_watcher(inbox_dir, folder_settings, process, monkeypatch),
              lambda: (failed / "big.pdf").exists(), "big.pdf quarantined")
    assert len(calls) == watch.RESOURCE_LIMIT
    text = (failed / "big.pdf.error.txt").read_text(encoding="utf-8")
    assert f"the disk filled {watch.RESOURCE_LIMIT} times in a row while processing this file" in text
    assert "needs more free space than the server has" in text


def test_a_long_disk_full_outage_keeps_every_waiting_scan_in_the_inbox(tmp_path, folder_settings, monkeypatch,
                                                                       caplog):
    """The disk stays full after each try (an outage, not a file's doing): nothing is quarantined however long it
    lasts, and the outage is logged once, not once per scan and try (review intake2 M3)."""
    names = ["a.pdf", "b.pdf", "c.pdf"]
    inbox_dir = inbox_of(tmp_path, monkeypatch, False, *names)
    calls: dict[str, int] = {}

    def process(path, settings, hint, **kw):
        calls[path.name] = calls.get(path.name, 0) + 1
        return disk_full(path)

    caplog.set_level(logging.INFO, logger="pipelines")
    tries = watch.RESOURCE_LIMIT + 2
    run_until(quick_watcher(inbox_dir, folder_settings, process, monkeypatch),
              lambda: len(calls) == len(names) and min(calls.values()) >= tries, f"every scan tried {tries} times")
    assert not list((inbox_dir / "failed").glob("*.pdf")) if (inbox_dir / "failed").exists() else True
    assert all((inbox_dir / name).exists() for name in names)
    told = [r for r in caplog.records if getattr(r, "event", None) == "disk-full"]
    assert len(told) == 1 and told[0].levelname == "ERROR"


def test_disk_full_tries_are_counted_apart_from_storage_failures(tmp_path, folder_settings, monkeypatch):
    """A file deferred RESOURCE_LIMIT - 1 times while storage was down is not quarantined on its first
    disk-full try; it is stored once both are over."""
    inbox_dir = inbox_of(tmp_path, monkeypatch, True, "scan.pdf")
    outcomes = [storage_down] * (watch.RESOURCE_LIMIT - 1) + [disk_full, stored]
    calls = []

    def process(path, settings, hint, **kw):
        calls.append(path.name)
        return outcomes[len(calls) - 1](path)

    run_until(quick_watcher(inbox_dir, folder_settings, process, monkeypatch),
              lambda: (inbox_dir / "done" / "scan.pdf").exists(), "scan.pdf stored")
    assert len(calls) == len(outcomes)
    assert not (inbox_dir / "failed" / "scan.pdf").exists()


def test_a_file_that_fills_the_disk_while_other_scans_are_stored_is_quarantined(tmp_path, folder_settings,
                                                                                monkeypatch):
    """The disk is full after its tries too (it never frees quickly), but small scans are stored between
    them: the big one is the cause."""
    inbox_dir = inbox_of(tmp_path, monkeypatch, False, "big.pdf")
    calls = []

    def process(path, settings, hint, **kw):
        calls.append(path.name)
        if path.name != "big.pdf":
            return stored(path)
        blank_pdf(inbox_dir / f"small{len(calls)}.pdf")  # a clerk keeps scanning meanwhile
        return disk_full(path)

    failed = inbox_dir / "failed"
    watcher = quick_watcher(inbox_dir, folder_settings, process, monkeypatch)
    monkeypatch.setattr(watch, "RETRY_BACKOFF", (0.6,))  # the small scans get stable between its tries
    run_until(watcher, lambda: (failed / "big.pdf").exists(), "big.pdf quarantined")
    assert not list(failed.glob("small*.pdf"))
    # the tries that counted: RESOURCE_LIMIT in a row, each after a scan was stored (its first try has no
    # earlier one to compare with, and a try with none stored since the previous one starts the count again)
    tries = [i for i, name in enumerate(calls) if name == "big.pdf"]
    assert len(tries) > watch.RESOURCE_LIMIT
    counted = tries[-watch.RESOURCE_LIMIT - 1:]
    assert all(after - before > 1 for before, after in zip(counted, counted[1:]))


def test_has_room_judges_the_temp_folder_and_each_folder_by_their_free_space(tmp_path, monkeypatch):
    total = 100 * diskroom.OUTAGE_ROOM
    free = {"tmp": total, "data": total}

    def usage(path):
        return shutil._ntuple_diskusage(total, total - free["tmp" if str(path) == str(tmp_path) else "data"],
                                        free["tmp" if str(path) == str(tmp_path) else "data"])

    monkeypatch.setattr(diskroom.tempfile, "gettempdir", lambda: str(tmp_path))
    monkeypatch.setattr(diskroom.shutil, "disk_usage", usage)
    data = tmp_path.parent / "not-made-yet" / "kept"
    assert diskroom.has_room(data)
    free["data"] = diskroom.OUTAGE_ROOM - 1
    assert not diskroom.has_room(data)
    free["data"], free["tmp"] = total, 4096
    assert not diskroom.has_room(data)


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


def test_an_internal_error_logs_the_file_name_on_one_line(tmp_path, folder_settings, monkeypatch, caplog):
    """A name carrying a newline and a fake log line stays inside the one line that names it (review intake2 L3)."""
    path = blank_pdf(tmp_path / "a\n2026-12-02T03:00:00+0000 digitize: INFO: stored file=b.pdf.pdf")

    def broken(self):
        raise RuntimeError("a bug of ours")

    monkeypatch.setattr(jobs._Job, "run", broken)
    caplog.set_level(logging.ERROR, logger="pipelines")
    result = jobs.process_file(path, folder_settings, archive=object(), root=tmp_path)
    assert result.internal
    (record,) = [r for r in caplog.records if r.getMessage().startswith("internal error on")]
    assert "\n" not in record.getMessage() and "stored file=b.pdf" in record.getMessage()
