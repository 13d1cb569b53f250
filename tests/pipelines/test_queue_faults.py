"""Queue mode with real servers (Redis, MinIO, PostgreSQL) and three `digitize worker` processes:
a worker SIGKILLed mid-task, the broker restarted mid-run, MinIO down for 20 s; every file stored
and indexed exactly once, verify clean, nothing in done/ that is not stored, bad files failed with reasons.

Pages are tiny (A6) and veraPDF is off (as in the other pipeline tests: a JVM would dominate the time);
the page deadline is 20 s so that a visibility timeout of 25 s (longer than it) redelivers the killed
worker's message within the test.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from pipeline_support import QUEUE_SECRET, ROOT, digitize_cmd, make_settings, settings_env, stored_rows, wait_for
from scans import page, write_pdf

from digitize.fsutil import sha256_file

pytestmark = pytest.mark.integration

FILES = 20


def queue_env(settings, redis_url: str) -> dict[str, str]:
    env = settings_env(settings)
    env.update(DIGITIZE_QUEUE_URL=redis_url, DIGITIZE_QUEUE_VISIBILITY_TIMEOUT="25", DIGITIZE_CONVERT_OCR_TIMEOUT="20",
               DIGITIZE_QUEUE_RETRY_BACKOFF="2", DIGITIZE_QUEUE_RETRIES="8")
    return env


def start_worker(base: Path, env: dict[str, str], n: int) -> subprocess.Popen:
    """A worker as on its own machine: its own HOME, temp and data folders; a process group to kill."""
    home = base / f"worker{n}"
    for sub in ("home", "tmp", "data", "run"):
        (home / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
    wenv = dict(env, HOME=str(home / "home"), TMPDIR=str(home / "tmp"), DIGITIZE_DATA_DIR=str(home / "data"),
                XDG_RUNTIME_DIR=str(home / "run"))
    log = open(base / f"worker{n}.log", "ab")
    return subprocess.Popen(digitize_cmd("worker", "--concurrency", "1"), env=wenv, cwd=ROOT, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)


def stop(process: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    if process.poll() is None:
        os.killpg(process.pid, sig)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def ledger_for(redis_url: str):
    from pipelines.ledger import Ledger

    return Ledger(redis_url, QUEUE_SECRET.encode(), reconnect=30.0)


def test_three_workers_survive_a_kill_a_broker_restart_and_a_storage_outage(tmp_path, own_minio, own_redis,
                                                                           postgres_dsn, capsys):
    redis = own_redis
    settings = make_settings(tmp_path / "data", own_minio.url("archive"), postgres_dsn)
    env = queue_env(settings, redis.url)
    src = tmp_path / "src"
    src.mkdir()
    for n in range(FILES):
        write_pdf([page([f"Hồ sơ số {n}", "Giấy đề nghị"])], src / f"scan{n:03d}.pdf")
    (src / "broken.pdf").write_bytes(b"%PDF-1.4\nnot really a pdf\n")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for n in range(3):
        write_pdf([page([f"Quầy {n}"])], inbox / f"desk{n}.pdf")
    workers = [start_worker(tmp_path, env, n) for n in range(3)]
    batch = None
    try:
        watched = subprocess.run(digitize_cmd("watch", str(inbox), "--once"), env=env, cwd=ROOT,
                                 capture_output=True, text=True, timeout=120)
        assert watched.returncode == 0, watched.stderr
        batch = subprocess.Popen(digitize_cmd("batch", str(src), "--queue", "--wait", "--report",
                                              str(tmp_path / "report.json")),
                                 env=env, cwd=ROOT, stderr=open(tmp_path / "batch.log", "wb"))
        ledger = ledger_for(redis.url)

        def running_worker() -> int | None:
            for record in ledger.many(ledger.in_state("running")):
                pid = int(record.worker.split("@")[0].rsplit("-", 1)[-1]) if "@" in record.worker else 0
                if any(w.pid == pid and w.poll() is None for w in workers) and ledger.counts().done >= 2:
                    return pid
            return None

        found: list[int] = []
        wait_for(lambda: bool(found.append(running_worker()) or found[-1]), "a worker converting, two jobs done")
        victim = next(w for w in workers if w.pid == found[-1])
        os.killpg(victim.pid, signal.SIGKILL)  # the worker and its pool die mid-task
        victim.wait()
        ledger.close()

        wait_for(lambda: ledger_for(redis.url).counts().done >= 6, "more jobs done after the kill")
        with capsys.disabled():  # server stops and starts reach the log
            redis.restart(down_seconds=2)  # the broker goes away mid-run and comes back (append-only file kept)

        wait_for(lambda: ledger_for(redis.url).counts().done >= 10, "jobs done after the broker restart")
        with capsys.disabled():
            own_minio.stop()
            time.sleep(20)  # storage down for 20 s: workers retry with backoff
            own_minio.start()

        rc = batch.wait(timeout=300)
        log = (tmp_path / "batch.log").read_text(encoding="utf-8")
        assert rc == 2, log  # one bad input: exit 2, the rest stored
        wait_for(lambda: len(stored_rows(settings)) >= FILES + 3, "the watched files stored too")
    finally:
        if batch is not None and batch.poll() is None:
            batch.kill()
        for worker in workers:
            stop(worker)

    report = json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))
    assert report["summary"]["files"] == FILES + 1 and report["summary"]["failed"] == 1
    failed = [f for f in report["files"] if f["status"] == "failed"]
    assert failed[0]["path"].endswith("broken.pdf") and "corrupt" in failed[0]["reason"]

    rows = stored_rows(settings)  # each file exactly once: duplicates would show here
    names = sorted(r.source_name for r in rows)
    assert names == sorted([f"scan{n:03d}.pdf" for n in range(FILES)] + [f"desk{n}.pdf" for n in range(3)])
    done = list((inbox / "done").rglob("*.pdf"))  # moved only after staging: each one is stored now
    assert len(done) == 3 and {sha256_file(p) for p in done} <= {r.original_sha256 for r in rows}
    verify = subprocess.run(digitize_cmd("verify", "--all"), env=settings_env(settings), cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    logs = "".join((tmp_path / f"worker{n}.log").read_text(encoding="utf-8", errors="replace") for n in range(3))
    assert "job-retry" in logs  # the storage outage was met and retried, not failed
    assert "refused task" not in logs  # a task Celery sent again (retry) keeps its signature and is accepted
