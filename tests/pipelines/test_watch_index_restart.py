"""PostgreSQL restarted (5 s down) under a running watcher: files dropped afterwards are stored, no restart
of the watcher needed (issue 10, finding 1)."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest
from pipeline_support import ROOT, digitize_cmd, make_settings, settings_env, stored_rows, wait_for
from scans import page, write_pdf

pytestmark = pytest.mark.integration
CASE = "000.00.31.H56-241015-0027"


def test_watcher_stores_files_dropped_after_a_postgresql_restart(tmp_path, own_postgres):
    settings = make_settings(tmp_path / "data", dsn=own_postgres.create_database("records"))
    inbox = tmp_path / "inbox"
    (inbox / CASE).mkdir(parents=True)
    log = tmp_path / "watch.log"
    watcher = subprocess.Popen(digitize_cmd("watch", str(inbox), "--poll", "0.5", "--log-json"),
                               env=settings_env(settings), cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=open(log, "wb"), start_new_session=True)
    try:
        write_pdf([page(["Đơn đề nghị"])], inbox / CASE / "1-don.pdf")
        wait_for(lambda: len(stored_rows(settings)) == 1, "the first scan to be stored")
        own_postgres.restart(down_seconds=5)
        write_pdf([page(["Bản vẽ hiện trạng"])], inbox / CASE / "2-ban-ve.pdf")
        wait_for(lambda: len(stored_rows(settings)) == 2, "the scan dropped after the restart to be stored")
        assert watcher.poll() is None, log.read_text()
        assert "connection is closed" not in log.read_text()
    finally:
        os.killpg(watcher.pid, signal.SIGTERM)
        watcher.wait(timeout=60)
