"""Identical files converted at once with one kept folder (review rev16batch M4), real converter and store.

In a local batch two byte-identical scans sort next to each other and run at the same time; both used to
convert into the one kept folder ``<sha>-all`` and the first to store deleted it under the other: a false
"cannot read" failure. Here A is held after its conversion until B either converts too (old code) or waits
for A (fixed); B's conversion then ends only once A has stored and removed the folder.
"""

from __future__ import annotations

import shutil
import threading
import time

import pytest
from scans import page, write_pdf

from pipelines.jobs import Status, close_archives, kept_folder, process_file
from storage.archive import Archive

try:
    from tests.logwatch import LogSeen
except ModuleNotFoundError:
    from logwatch import LogSeen

pytestmark = pytest.mark.integration


def _until(*events: threading.Event, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not any(e.is_set() for e in events) and time.monotonic() < deadline:
        time.sleep(0.01)


def test_the_second_of_two_identical_files_waits_and_skips_instead_of_failing(tmp_path, folder_settings,
                                                                               monkeypatch):
    import digitize.convert

    src = tmp_path / "src"
    src.mkdir()
    write_pdf([page(["Ho so luu tru trang 1"])], src / "a.pdf")
    shutil.copy(src / "a.pdf", src / "b.pdf")
    real = digitize.convert.convert_file
    a_done, b_converting, calls = threading.Event(), threading.Event(), []
    waiting = LogSeen("pipelines.jobs", lambda record: getattr(record, "event", "") == "waiting")

    def convert(*args, **kwargs):
        calls.append(threading.current_thread().name)
        if threading.current_thread().name == "b":
            b_converting.set()
            report = real(*args, **kwargs)
            _until(a_done)  # A stores and removes the kept folder meanwhile, B's report is written after
            return report
        report = real(*args, **kwargs)
        _until(b_converting, waiting.seen)  # B converts alongside (old code) or waits for A (fixed)
        return report

    monkeypatch.setattr(digitize.convert, "convert_file", convert)
    results = {}

    def run(name: str) -> None:
        with Archive.open(folder_settings) as archive:
            results[name] = process_file(src / f"{name}.pdf", folder_settings, root=src, jobs=1, archive=archive,
                                         keep=kept_folder(folder_settings))
        if name == "a":
            a_done.set()

    try:
        with waiting:
            first = threading.Thread(target=run, args=("a",), name="a")
            first.start()
            while not calls and first.is_alive():
                time.sleep(0.01)  # A is converting: B starts now
            second = threading.Thread(target=run, args=("b",), name="b")
            second.start()
            first.join(300)
            second.join(300)
    finally:
        close_archives()
    a, b = results["a"], results["b"]
    assert a.status in (Status.done, Status.unmatched), a.reason
    assert b.status is Status.skipped, b.reason  # was: failed, "cannot read b.pdf: No such file or directory"
    assert calls == ["a"]  # the identical file was not converted a second time
    assert b.documents[0].doc_id == a.documents[0].doc_id
    assert list(kept_folder(folder_settings).iterdir()) == []  # nothing left behind: no folder, no lock


@pytest.mark.parametrize("fails", ["kept-folder lock", "converted copy", "scan"])
def test_an_error_writing_the_kept_folder_is_not_reported_as_reading_the_scan(tmp_path, folder_settings, monkeypatch,
                                                                              fails):
    """Review rev2_batch16b R6: EACCES on the kept folder's lock or on the converted copy written there read
    "cannot read a.pdf: Permission denied", and an archivist would check the scan's permissions in vain."""
    import digitize.convert
    from pipelines import jobs

    src = tmp_path / "src"
    src.mkdir()
    write_pdf([page(["Ho so luu tru"])], src / "a.pdf")

    def denied(name) -> PermissionError:
        return PermissionError(13, "Permission denied", str(name))

    if fails == "kept-folder lock":  # e.g. converted/ left owned by another account
        monkeypatch.setattr(jobs, "held", lambda path, *args: (_ for _ in ()).throw(denied(path)))
    else:  # the converter writes its output there, or (the control) it cannot read its input, the scan
        monkeypatch.setattr(digitize.convert, "convert_file", lambda source, output, *args, **kwargs:
                            (_ for _ in ()).throw(denied(output if fails == "converted copy" else source)))
    try:
        result = process_file(src / "a.pdf", folder_settings, root=src, jobs=1, keep=kept_folder(folder_settings))
    finally:
        close_archives()
    assert result.status is Status.failed
    if fails == "scan":
        assert result.reason.startswith("cannot read a.pdf: Permission denied"), result.reason
    else:
        assert result.reason.startswith("cannot write the converted copy of a.pdf in the data folder's converted/: "
                                        "Permission denied"), result.reason
