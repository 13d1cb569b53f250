"""``digitize batch`` and its untrusted files: killed with -9, its workers and their page workers go
with it (issue 10, finding 9); the batch process itself never parses a file (issue 9, finding 5)."""

from __future__ import annotations

import os
import subprocess
import time

import pytest
from pipeline_support import ROOT, digitize_cmd, make_settings, settings_env, wait_for
from scans import page, write_pdf

pytestmark = pytest.mark.integration


def test_kill_9_of_a_batch_leaves_no_worker_behind(tmp_path):
    import psutil

    settings = make_settings(tmp_path / "data")
    (tmp_path / "src").mkdir()
    for n in range(4):
        write_pdf([page([f"Hồ sơ {n} trang {p + 1}"]) for p in range(4)], tmp_path / "src" / f"scan{n}.pdf")
    batch = subprocess.Popen(digitize_cmd("batch", str(tmp_path / "src"), "--jobs", "2"),
                             env=settings_env(settings), cwd=ROOT, stderr=subprocess.DEVNULL)
    family: list[psutil.Process] = []

    def page_workers_running() -> bool:
        """Both kinds of descendant exist: batch workers and, under one, its page worker."""
        found = []
        for p in psutil.Process(batch.pid).children(recursive=True):
            try:  # a short-lived child (a file's page count runs in a worker of its own) may end meanwhile
                if p.name() != "java":
                    found.append((p, p.ppid()))
            except psutil.NoSuchProcess:
                pass
        family[:] = [p for p, _ in found]
        return any(ppid != batch.pid for _, ppid in found)

    try:
        wait_for(page_workers_running, "batch workers with page workers")
        batch.kill()
        batch.wait(timeout=30)
        deadline = time.monotonic() + 30  # a bound, not a timing: they go at once with PR_SET_PDEATHSIG
        while time.monotonic() < deadline and any(_alive(p) for p in family):
            time.sleep(0.2)
        left = [f"{p.pid} {p.name()}" for p in family if _alive(p)]
        assert not left, f"orphans of the killed batch: {left}"
    finally:
        for p in family:  # only processes this test started
            if _alive(p):
                p.kill()
        if batch.poll() is None:
            batch.kill()


def _alive(proc) -> bool:
    import psutil

    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_pages_are_counted_for_ordering_in_a_worker_not_in_the_batch_process(tmp_path, monkeypatch):
    from pipelines import batch

    files = [tmp_path / "a.pdf", tmp_path / "b.pdf"]
    monkeypatch.setattr(batch, "page_count_hint", lambda path: os.getpid())
    counts = batch._page_counts(files)
    assert set(counts) == set(files) and os.getpid() not in counts.values()
