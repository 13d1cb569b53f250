"""``digitize batch`` as a real process: storage outage mid-run, resume, and the per-file report."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from pipeline_support import ROOT, digitize_cmd, make_settings, run_cli, settings_env, stored_rows, wait_for
from scans import page, write_pdf

pytestmark = pytest.mark.integration

CASE_A = "000.00.31.H56-241015-0027"
CASE_B = "000.00.31.H56-241016-0003"


def make_tree(src: Path, files: int, pages: int = 2) -> list[Path]:
    src.mkdir(parents=True, exist_ok=True)
    return [write_pdf([page([f"Hồ sơ {n} trang {p + 1}"]) for p in range(pages)], src / f"scan{n:03d}.pdf")
            for n in range(files)]


def log_events(path: Path) -> list[dict]:
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def count_events(path: Path, name: str) -> int:
    return sum(1 for e in log_events(path) if e.get("event") == name)


def test_minio_stopped_mid_batch_is_retried_and_every_file_ends_stored_once(tmp_path, own_minio):
    settings = make_settings(tmp_path / "data", own_minio.url("archive"))
    files = make_tree(tmp_path / "src", 8)
    log = tmp_path / "batch.log"
    batch = subprocess.Popen(digitize_cmd("batch", str(tmp_path / "src"), "--jobs", "2", "--log-json",
                                          "--report", str(tmp_path / "report.json")),
                             env=settings_env(settings), cwd=ROOT, stderr=open(log, "wb"))
    try:
        wait_for(lambda: count_events(log, "stored") >= 1, "the first document to be stored")
        own_minio.process.kill()  # the server dies at once, with uploads in flight
        own_minio.process.wait()
        wait_for(lambda: count_events(log, "storage-retry") >= 1, "the batch to meet the outage")
        own_minio.start()  # same port, same data
        assert batch.wait(timeout=300) == 0, log.read_text()
    finally:
        if batch.poll() is None:
            batch.kill()
    report = json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))
    assert report["summary"]["failed"] == 0 and report["summary"]["files"] == 8
    assert any(e.get("event") == "storage-retry" for e in log_events(log))
    # a conversion storage refused waits in DATA_DIR/converted for the retry (which then only stores; a
    # retry of a file refused before it was converted has nothing to reuse); once stored, nothing waits
    assert not any((Path(settings.data_dir) / "converted").glob("*/*.pdf"))
    rows = stored_rows(settings)
    assert sorted(r.source_name for r in rows) == sorted(f.name for f in files)  # each once, none lost
    assert run_cli(settings, "verify", "--all").returncode == 0  # every object present and intact

    again = run_cli(settings, "batch", str(tmp_path / "src"), "--jobs", "2")
    assert again.returncode == 0 and "8 skipped" in again.stderr
    assert len(stored_rows(settings)) == 8


def test_report_lists_done_unmatched_and_failed_files_with_reasons_and_rerun_resumes(tmp_path):
    settings = make_settings(tmp_path / "data")
    src = tmp_path / "src"
    (src / CASE_A).mkdir(parents=True)
    write_pdf([page(["Đơn đề nghị"])], src / CASE_A / "01-Don_de_nghi.pdf")
    write_pdf([page(["Sổ đăng ký"]), page(["trang 2"])], src / "register-1998.pdf")
    write_pdf([page(["Tờ khai"])], src / "loose.pdf")
    (src / "broken.pdf").write_bytes(b"%PDF-1.4\n garbage without objects\n%%EOF\n")
    (src / "README.txt").write_text("danh mục hồ sơ", encoding="utf-8")  # not a scan: left alone
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("path,case_id,procedure_code,title,organ_id,file_catalog,file_notation,maintenance,rights\n"
                        f"register-1998.pdf,{CASE_B},1.004616,Sổ đăng ký 1998,H56.32,1998,SDK-01,Vĩnh viễn,Hạn chế\n",
                        encoding="utf-8")
    done = run_cli(settings, "batch", str(src), "--manifest", str(manifest), "--report", str(tmp_path / "r.csv"))
    assert done.returncode == 2, done.stderr
    assert "pages/min" in done.stderr and "ETA" in done.stderr and "leaving 1 non-scan file(s) alone" in done.stderr
    rows = {r["path"].rsplit("/", 1)[-1]: r for r in csv.DictReader(open(tmp_path / "r.csv", encoding="utf-8"))}
    assert {name: r["status"] for name, r in rows.items()} == {
        "01-Don_de_nghi.pdf": "done", "register-1998.pdf": "done", "loose.pdf": "unmatched", "broken.pdf": "failed"}
    assert rows["01-Don_de_nghi.pdf"]["case_source"] == "folder"
    assert (rows["register-1998.pdf"]["case_id"], rows["register-1998.pdf"]["case_source"]) == (CASE_B, "manifest")
    assert "no case ID" in rows["loose.pdf"]["reason"] and "corrupt" in rows["broken.pdf"]["reason"]
    [register] = [r for r in stored_rows(settings) if r.source_name == "register-1998.pdf"]
    assert register.archive["FileNotation"] == "SDK-01" and register.procedure_code == "1.004616"

    shutil.copy(src / "loose.pdf", src / "loose-copy.pdf")
    again = run_cli(settings, "batch", str(src), "--manifest", str(manifest), "--report", str(tmp_path / "r.json"))
    summary = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))["summary"]
    assert (summary["skipped"], summary["failed"], summary["pages"]) == (4, 1, 0)  # nothing converted twice
    assert again.returncode == 2


def test_a_worker_killed_mid_file_takes_nothing_with_it(tmp_path):
    """kill -9 of one batch worker: the files it had in flight are redone; every file ends stored once."""
    import psutil

    settings = make_settings(tmp_path / "data")
    make_tree(tmp_path / "src", 4, pages=3)
    log = tmp_path / "batch.log"
    batch = subprocess.Popen(digitize_cmd("batch", str(tmp_path / "src"), "--jobs", "2", "--log-json"),
                             env=settings_env(settings), cwd=ROOT, stderr=open(log, "wb"))
    def converting_worker() -> psutil.Process | None:
        """A batch worker whose forked page worker is running (not the validator JVM)."""
        for worker in psutil.Process(batch.pid).children():
            try:
                if any(p.name() != "java" for p in worker.children()):
                    return worker
            except psutil.Error:  # a short-lived child (a helper tool's process) ended meanwhile
                continue
        return None

    try:
        wait_for(lambda: converting_worker() is not None, "a worker to be running OCR")
        victim = converting_worker()
        assert victim.ppid() == batch.pid  # a pool worker, not the batch itself
        victim.kill()
        assert batch.wait(timeout=300) == 0, log.read_text()
    finally:
        if batch.poll() is None:
            batch.kill()
    assert sorted(r.source_name for r in stored_rows(settings)) == [f"scan{n:03d}.pdf" for n in range(4)]


def _stored(path, hint, root):
    from pipelines.jobs import JobResult, Status

    return JobResult(str(path), Status.done, pages=1)


def test_a_worker_that_died_idle_does_not_stop_the_batch(tmp_path, monkeypatch):
    """A worker killed while it waited for work (the OOM killer picks the largest process: a warm worker)
    breaks the pool with no file in flight, so no failed future replaces it: the next file's submit raised
    BrokenProcessPool and the whole batch ended as an internal error. The pool is replaced and the file runs."""
    import io

    from pools import kill_idle_workers

    from pipelines import batch

    monkeypatch.setattr(batch, "_run_one", _stored)  # the forked workers see it
    runner = batch._Runner(tmp_path, make_settings(tmp_path / "data"), 1, io.StringIO())
    try:
        kill_idle_workers(runner.pool)
        summary = runner.run([batch.BatchItem(tmp_path / "a.pdf", 1)])
    finally:
        runner.pool.shutdown(wait=True, cancel_futures=True)
    assert [(Path(r.path).name, r.status.value) for r in summary.results] == [("a.pdf", "done")]


def test_a_json_report_naming_a_file_that_is_not_utf8_is_valid_json(tmp_path):
    """The text writer's fallback put '\\xe9' inside a JSON string: the batch's JSON report did not parse."""
    import os

    from scans import page, write_pdf

    src = tmp_path / "src"
    src.mkdir()
    write_pdf([page(["Giấy tờ"])], src / "scan.pdf").rename(src / os.fsdecode(b"h\xe9 s\xf3.pdf"))
    settings = make_settings(tmp_path / "data")
    done = run_cli(settings, "batch", str(src), "--report", str(tmp_path / "r.json"))
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    assert report["files"][0]["path"].endswith("h\\xe9 s\\xf3.pdf")
