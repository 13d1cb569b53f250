"""``digitize watch`` as a real process against real faults: slow writers, kill -9, SIGTERM, bad files, repeats.

Each test runs the CLI in its own process group on a throwaway inbox and archive, and checks the
outcome where it matters: files in done/ or failed/, and stored rows in the index (never two).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from pipeline_support import ROOT, digitize_cmd, run_cli, settings_env, stored_rows, wait_for
from scans import page, write_pdf

from digitize.fsutil import sha256_file

pytestmark = pytest.mark.integration

# A scanner writing over the network: chunks with short gaps and one long stall mid-file.
SLOW_WRITER = """
import os, sys, time
src, dst, chunk, gap, stall = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
data = open(src, "rb").read()
with open(dst, "wb") as f:
    for n, start in enumerate(range(0, len(data), chunk)):
        f.write(data[start:start + chunk]); f.flush(); os.fsync(f.fileno())
        time.sleep(stall if start < len(data) // 2 <= start + chunk else gap)
"""


class WatchProcess:
    """``digitize watch INBOX --log-json`` in its own session, logs to a file."""

    def __init__(self, settings, inbox: Path, *extra: str):
        self.log = inbox.parent / f"watch-{os.urandom(3).hex()}.log"
        self.proc = subprocess.Popen(digitize_cmd("watch", str(inbox), "--log-json", *extra),
                                     env=settings_env(settings), cwd=ROOT, stdout=subprocess.DEVNULL,
                                     stderr=open(self.log, "wb"), start_new_session=True)

    def events(self) -> list[dict]:
        lines = self.log.read_text(encoding="utf-8").splitlines() if self.log.exists() else []
        return [json.loads(line) for line in lines if line.startswith("{")]

    def has_event(self, name: str) -> bool:
        return any(e.get("event") == name for e in self.events())

    def wait(self, timeout: float = 120) -> int:
        return self.proc.wait(timeout=timeout)

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@pytest.fixture
def inbox(tmp_path) -> Path:
    folder = tmp_path / "inbox"
    folder.mkdir()
    return folder


@pytest.fixture
def watchers():
    started: list[WatchProcess] = []
    yield lambda *args: started.append(WatchProcess(*args)) or started[-1]
    for w in started:
        w.cleanup()


def scan_file(path: Path, pages: int, words: str = "Đơn đề nghị") -> Path:
    return write_pdf([page([f"{words} trang {n + 1}"]) for n in range(pages)], path)


def claimed(inbox: Path) -> list[Path]:
    """Scans in the watchers' work folders (taken, not yet in done/ or failed/)."""
    return [p for p in (inbox / ".digitize" / "work").glob("*/*/files/**/*") if p.is_file()]


def rows_for(settings, sha: str):
    return [r for r in stored_rows(settings) if r.original_sha256 == sha]


def test_slowly_written_file_is_never_taken_early_even_across_a_long_stall(tmp_path, inbox, folder_settings, watchers):
    source = scan_file(tmp_path / "source.pdf", 6)
    watcher = watchers(folder_settings, inbox)
    wait_for(lambda: watcher.has_event("watching"), "the watcher to start")
    writer = subprocess.run([sys.executable, "-c", SLOW_WRITER, str(source), str(inbox / "scan.pdf"),
                             str(source.stat().st_size // 12), "0.1", "2.0"], timeout=60)
    assert writer.returncode == 0
    wait_for(lambda: (inbox / "done" / "scan.pdf").exists(), "the scan to reach done/")
    [row] = rows_for(folder_settings, sha256_file(source))  # the whole file, stored once
    assert row.pages == 6
    assert list((inbox / "failed").iterdir()) == []


def test_watcher_killed_mid_file_redoes_it_exactly_once_after_restart(tmp_path, inbox, folder_settings, watchers):
    scan = scan_file(inbox / "scan.pdf", 6)
    sha = sha256_file(scan)
    first = watchers(folder_settings, inbox, "--poll", "0.5")
    wait_for(lambda: first.has_event("taken"), "the watcher to claim the scan")
    os.kill(first.proc.pid, signal.SIGKILL)
    first.wait()
    [kept] = claimed(inbox)  # killed mid-file: the source is untouched, in the dead watcher's work folder
    assert sha256_file(kept) == sha and not any((inbox / "done").iterdir())

    second = watchers(folder_settings, inbox, "--once")
    assert second.wait() == 0
    assert second.has_event("recovering")
    assert (inbox / "done" / "scan.pdf").exists() and not scan.exists()
    assert len(rows_for(folder_settings, sha)) == 1
    assert claimed(inbox) == [] and list((inbox / ".digitize" / "work").iterdir()) == []


def test_sigterm_lets_the_current_file_finish_then_exits_cleanly(inbox, folder_settings, watchers):
    scan = scan_file(inbox / "scan.pdf", 4)
    watcher = watchers(folder_settings, inbox)
    wait_for(lambda: watcher.has_event("taken"), "the watcher to claim the scan")
    watcher.proc.send_signal(signal.SIGTERM)
    assert watcher.wait() == 0
    assert (inbox / "done" / "scan.pdf").exists() and not scan.exists()
    assert claimed(inbox) == [] and len(stored_rows(folder_settings)) == 1


def test_corrupt_truncated_and_foreign_files_are_quarantined_with_reasons_in_both_languages(
        tmp_path, inbox, folder_settings):
    good = scan_file(tmp_path / "good.pdf", 2)
    (inbox / "truncated.pdf").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    (inbox / "garbage.pdf").write_bytes(os.urandom(20_000))
    (inbox / "letter.docx").write_bytes(b"PK\x03\x04" + os.urandom(2000))
    shutil.copy(good, inbox / "good.pdf")
    shutil.copy(good, inbox / "described.pdf")
    (inbox / "described.json").write_text('{"case_id": "000.00.31.H56-241315-0001"}', encoding="utf-8")
    (inbox / "Thumbs.db").write_bytes(b"junk")
    done = run_cli(folder_settings, "watch", str(inbox), "--once")
    assert done.returncode == 0, done.stderr
    failed = inbox / "failed"
    assert sorted(p.name for p in failed.iterdir()) == [
        "described.pdf", "described.pdf.error.txt", "described.pdf.json", "garbage.pdf", "garbage.pdf.error.txt",
        "letter.docx", "letter.docx.error.txt", "truncated.pdf", "truncated.pdf.error.txt"]
    described = (failed / "described.pdf.error.txt").read_text(encoding="utf-8")
    assert "Tệp mô tả kèm theo" in described and "month 13" in described
    truncated = (failed / "truncated.pdf.error.txt").read_text(encoding="utf-8")
    assert "Lý do: Tệp chưa được ghi xong hoặc bị cắt cụt" in truncated
    assert "Reason: The file was never completely written or is truncated" in truncated
    assert "end marker missing" in truncated
    foreign = (failed / "letter.docx.error.txt").read_text(encoding="utf-8")
    assert "Chỉ nhận PDF, TIFF, JPEG, PNG" in foreign and "ZIP/Office" in foreign
    assert (inbox / "done" / "good.pdf").exists() and (inbox / "Thumbs.db").exists()
    assert [r.source_name for r in stored_rows(folder_settings)] == ["good.pdf"]


def test_same_scan_dropped_twice_is_stored_once(tmp_path, inbox, folder_settings):
    scan = scan_file(tmp_path / "scan.pdf", 2)
    shutil.copy(scan, inbox / "a.pdf")
    assert run_cli(folder_settings, "watch", str(inbox), "--once").returncode == 0
    shutil.copy(scan, inbox / "a.pdf")  # the clerk drops it again, under the same and another name
    shutil.copy(scan, inbox / "b.pdf")
    again = run_cli(folder_settings, "watch", str(inbox), "--once")
    assert again.returncode == 0 and "2 skipped" in again.stderr
    assert sorted(p.name for p in (inbox / "done").iterdir()) == ["a.1.pdf", "a.pdf", "b.pdf"]
    assert len(rows_for(folder_settings, sha256_file(scan))) == 1


def test_delete_on_success_removes_scan_and_sidecar_only_after_storing(tmp_path, inbox, folder_settings):
    folder_settings.watch.on_success = "delete"
    scan = scan_file(inbox / "scan.pdf", 1)
    sha = sha256_file(scan)
    (inbox / "scan.json").write_text('{"case_id": "000.00.31.H56-241015-0027"}', encoding="utf-8")
    env_run = run_cli(folder_settings, "watch", str(inbox), "--once")
    assert env_run.returncode == 0, env_run.stderr
    assert sorted(p.name for p in inbox.iterdir()) == [".digitize", "failed"]
    assert list((inbox / "failed").iterdir()) == []
    [row] = rows_for(folder_settings, sha)
    assert row.case_id == "000.00.31.H56-241015-0027"


def test_file_names_that_are_not_utf8_are_stored_or_quarantined_like_any_other(tmp_path, inbox, folder_settings):
    """An old archive's zip unpacked on Linux keeps its cp1258/latin-1 name bytes. Such names stopped
    every step that wrote one down (claim, report, reason, a page worker's error): the good scan was
    deferred for ever and the bad one never reached failed/ ('surrogates not allowed')."""
    good = scan_file(tmp_path / "good.pdf", 1)
    good_name = os.fsdecode(b"000.00.31.H56-241015-0027 bi\xea\xfbn b\xe1n.pdf")
    bad_name = os.fsdecode(b"h\xe9 h\xf3ng.pdf")
    shutil.copy(good, inbox / good_name)
    (inbox / bad_name).write_bytes(b"%PDF-1.7\n" + os.urandom(3000))
    done = run_cli(folder_settings, "watch", str(inbox), "--once")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "surrogates" not in done.stderr
    assert sorted(p.name for p in (inbox / "done").iterdir()) == [good_name], done.stderr
    assert sorted(p.name for p in (inbox / "failed").iterdir()) == [bad_name, bad_name + ".error.txt"]
    reason = (inbox / "failed" / (bad_name + ".error.txt")).read_text(encoding="utf-8")
    assert "h\\xe9 h\\xf3ng.pdf" in reason
    assert [r.case_id for r in stored_rows(folder_settings)] == ["000.00.31.H56-241015-0027"]
