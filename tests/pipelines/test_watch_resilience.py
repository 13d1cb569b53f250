"""The watcher under faults it must outlive: a second watcher, kill -9 twice, storage down, bad
files, a read-only inbox, a file it may not read. Real ``digitize watch`` processes and files.
"""

from __future__ import annotations

import collections
import io
import json
import os
import re
import signal
import subprocess
import threading
from pathlib import Path

import pytest
from pipeline_support import ROOT, digitize_cmd, make_settings, run_cli, settings_env, stored_rows, wait_for
from scans import page, write_pdf

from digitize.fsutil import sha256_file

pytestmark = pytest.mark.integration


class Watch:
    """``digitize watch INBOX --log-json`` in its own session; ``prefix`` wraps the command (setpriv...)."""

    def __init__(self, settings, inbox: Path, *extra: str, env: dict | None = None):
        self.log = inbox.parent / f"watch-{os.urandom(3).hex()}.log"
        self.out = inbox.parent / f"watch-{os.urandom(3).hex()}.out"
        self.proc = subprocess.Popen(digitize_cmd("watch", str(inbox), "--log-json", *extra),
                                     env={**settings_env(settings), **(env or {})}, cwd=ROOT,
                                     stdout=open(self.out, "wb"), stderr=open(self.log, "wb"),
                                     start_new_session=True)

    def events(self, name: str | None = None) -> list[dict]:
        lines = self.log.read_text(encoding="utf-8").splitlines() if self.log.exists() else []
        found = [json.loads(line) for line in lines if line.startswith("{")]
        return [e for e in found if name is None or e.get("event") == name]

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


@pytest.fixture
def watches():
    started: list[Watch] = []
    yield lambda *a, **k: started.append(Watch(*a, **k)) or started[-1]
    for w in started:
        w.kill()


@pytest.fixture
def inbox(tmp_path) -> Path:
    folder = tmp_path / "inbox"
    folder.mkdir()
    return folder


def one_page(path: Path, words: str) -> Path:
    return write_pdf([page([words])], path)


def files_under(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def test_two_watchers_on_one_inbox_store_each_file_once_and_both_keep_running(inbox, folder_settings, watches):
    folder_settings.convert.language = "eng"
    for n in range(20):
        one_page(inbox / f"scan-{n:02d}.pdf", f"Ho so {n}")
    first = watches(folder_settings, inbox, "--poll", "0.3")
    second = watches(folder_settings, inbox, "--poll", "0.3")
    wait_for(lambda: len(files_under(inbox / "done")) == 20, "20 files in done/")
    assert first.proc.poll() is None and second.proc.poll() is None  # both still running
    rows = stored_rows(folder_settings)
    assert sorted(r.source_name for r in rows) == [f"scan-{n:02d}.pdf" for n in range(20)]
    from storage.archive import Archive

    with Archive.open(folder_settings) as archive:
        kinds = collections.Counter((e.doc_id, e.event_type) for e in archive.index.events())
    assert set(kinds.values()) == {1} and len(kinds) == 20 * 4  # ingested/converted/stored/verified, once each
    taken = [e["file"] for w in (first, second) for e in w.events("taken")]
    assert sorted(taken) == [f"scan-{n:02d}.pdf" for n in range(20)]  # each file taken by one watcher only
    errors = [e for w in (first, second) for e in w.events() if e["level"] == "error"]
    assert files_under(inbox / "failed") == [] and errors == []


def test_killed_in_conversion_then_right_after_storing_the_file_goes_to_done(tmp_path, inbox, folder_settings,
                                                                               watches):
    scan = one_page(inbox / "scan.pdf", "Đơn đề nghị")
    sha = sha256_file(scan)
    first = watches(folder_settings, inbox, "--poll", "0.3")
    wait_for(lambda: first.events("taken"), "the first watcher to take the scan")
    first.kill()  # killed in conversion
    second = watches(folder_settings, inbox, "--poll", "0.3", env={"DIGITIZE_FAULT_PAUSE": "watch-stored"})
    wait_for(lambda: "FAULT-PAUSE watch-stored" in second.out.read_text(), "the redo to store the scan")
    second.kill()  # killed right after "stored", before the move to done/
    third = run_cli(folder_settings, "watch", str(inbox), "--once")
    assert third.returncode == 0, third.stderr
    assert files_under(inbox / "done") == ["scan.pdf"] and files_under(inbox / "failed") == []
    assert [r.original_sha256 for r in stored_rows(folder_settings)] == [sha]


def test_storage_down_keeps_the_conversion_and_the_retry_only_stores(tmp_path, inbox, own_minio, monkeypatch):
    from pipelines import jobs, watch

    monkeypatch.setattr(watch, "ONCE_STORAGE_TRIES", 1)  # give up at once: the test needs one failed store
    settings = make_settings(tmp_path / "data", own_minio.url("archive"))
    one_page(inbox / "scan.pdf", "Đơn đề nghị")
    jobs.archive_for(settings)  # the bucket is open, then the server goes away before the store
    own_minio.stop()
    try:
        summary = watch.Watcher(watch.WatchOptions(inbox, once=True), settings).run()
    finally:
        own_minio.start()  # same port, same data
    assert summary.deferred and summary.deferred[0].retryable  # storage: the file is kept in the inbox for later
    assert (inbox / "scan.pdf").exists()
    kept = list((tmp_path / "data" / "converted").glob("*/report.json"))
    assert len(kept) == 1
    second = run_cli(settings, "watch", str(inbox), "--once", "--log-json")
    assert second.returncode == 0, second.stderr
    events = [json.loads(line) for line in second.stderr.splitlines() if line.startswith("{")]
    assert any(e["event"] == "kept-conversion" for e in events)
    [stored] = [e for e in events if e["event"] in ("done", "unmatched")]
    assert stored["pages"] == 0  # nothing converted again
    assert files_under(inbox / "done") == ["scan.pdf"] and list((tmp_path / "data" / "converted").iterdir()) == []


def truncated_tiff(path: Path) -> Path:
    """A 3-page TIFF cut at three quarters: the scanner stopped mid-write (PIL: 'Missing dimensions')."""
    buf = io.BytesIO()
    first, *rest = [page([f"trang {n}"]).convert("RGB") for n in range(3)]
    first.save(buf, format="TIFF", save_all=True, append_images=rest, compression="tiff_lzw", dpi=(200, 200))
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) * 3 // 4])
    return path


def test_a_truncated_tiff_is_quarantined_and_the_watcher_goes_on(tmp_path, inbox, folder_settings, watches):
    truncated_tiff(inbox / "cut.tif")
    watcher = watches(folder_settings, inbox, "--poll", "0.3")
    one_page(inbox / "good.pdf", "Đơn đề nghị")
    wait_for(lambda: "cut.tif.error.txt" in files_under(inbox / "failed") and files_under(inbox / "done"),
             "the TIFF in failed/ and the good file in done/")
    assert watcher.proc.poll() is None
    reason = (inbox / "failed" / "cut.tif.error.txt").read_text(encoding="utf-8")
    assert "Missing dimensions" in reason or "truncated" in reason


def test_one_file_that_keeps_failing_inside_is_quarantined_and_never_stops_the_watcher(tmp_path, inbox,
                                                                                      folder_settings, monkeypatch):
    """A bug of ours on one file (here: the processing raises): retried, then quarantined; others go on."""
    from pipelines import jobs, watch

    monkeypatch.setattr(watch, "RETRY_BACKOFF", (0.1,))
    one_page(inbox / "bad.pdf", "Đơn")
    one_page(inbox / "good.pdf", "Bản sao")
    calls = collections.Counter()

    def process(path, settings, hint, **kw):
        calls[path.name] += 1
        if path.name == "bad.pdf":
            raise RuntimeError("a bug of ours")
        return jobs.process_file(path, settings, hint, **kw)

    opts = watch.WatchOptions(inbox, poll=0.2, stable_seconds=0.2, rescan=0.5)
    watcher = watch.Watcher(opts, folder_settings, process)
    settled = threading.Event()

    def stop_when_settled() -> None:  # the watcher runs in this (main) thread: it installs a SIGTERM handler
        try:
            wait_for(lambda: (inbox / "failed" / "bad.pdf").exists() and (inbox / "done" / "good.pdf").exists(),
                     "bad.pdf quarantined and good.pdf stored")
            settled.set()
        finally:
            watcher.stopping = True

    threading.Thread(target=stop_when_settled, daemon=True).start()
    watcher.run()  # returns only when stopped: one bad file did not end it
    assert settled.is_set()
    assert calls["bad.pdf"] == watch.INTERNAL_LIMIT
    assert "internal error" in (inbox / "failed" / "bad.pdf.error.txt").read_text(encoding="utf-8")


def test_read_only_inbox_exits_5_with_the_path_in_one_line(tmp_path, folder_settings):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    script = (f"mount -t tmpfs tmpfs {inbox} && cp {one_page(tmp_path / 's.pdf', 'Đơn')} {inbox}/ && "
              f"mount -o remount,ro {inbox} && exec \"$@\"")
    run = subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", *digitize_cmd("watch", str(inbox), "--once")],
                         env=settings_env(folder_settings), cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 5, run.stderr
    [line] = run.stderr.splitlines()
    assert line == f"digitize: cannot use {inbox}/.digitize: Read-only file system"


def test_a_file_the_service_may_not_read_is_said_to_be_a_permission_problem(tmp_path, inbox, folder_settings):
    scan = one_page(inbox / "private.pdf", "Đơn")
    os.chown(scan, 65534, 65534)
    scan.chmod(0o600)
    no_dac = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"]  # root without its read-anything
    run = subprocess.run([*no_dac, *digitize_cmd("watch", str(inbox), "--once")], env=settings_env(folder_settings),
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    reason = (inbox / "failed" / "private.pdf.error.txt").read_text(encoding="utf-8")
    assert "not allowed to read this file" in reason and "permission denied" in reason
    assert "The file is damaged" not in reason and "Scan the dossier again" not in reason


def test_empty_file_is_quarantined_as_the_readme_says_and_the_text_log_has_timestamps(inbox, folder_settings):
    (inbox / "empty.pdf").write_bytes(b"")
    run = run_cli(folder_settings, "watch", str(inbox), "--once")
    assert run.returncode == 0, run.stderr
    assert "empty (0 bytes)" in (inbox / "failed" / "empty.pdf.error.txt").read_text(encoding="utf-8")
    logged = [line for line in run.stderr.splitlines() if "quarantined" in line or "watching" in line]
    assert logged and all(re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4} digitize: ", x) for x in logged)
    assert "empty file (0 bytes)" in (ROOT / "README.md").read_text(encoding="utf-8")  # what the README says
