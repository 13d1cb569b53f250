"""An accepted upload survives a power cut: its bytes and both folder entries are synced before it is
queued (L1). Unit test: nothing is converted."""

from __future__ import annotations

import io
import os
import types

from digitize.config import Settings
from storage.access import Principal
from web import uploads


def test_an_accepted_upload_is_synced_with_its_folder_and_the_folders_entry(tmp_path, monkeypatch):
    synced: list[str] = []
    real = os.fsync

    def spy(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    queue = uploads.UploadQueue(Settings(data_dir=str(tmp_path / "data")))
    try:
        scope = types.SimpleNamespace(principal=Principal("lan", "scanner", ("000.00.31.H56",)))
        job, target = queue.receive(io.BytesIO(b"%PDF-1.4 fake scan bytes %%EOF"), "scan.pdf", scope, None)
    finally:
        queue.close()
    assert str(target) in synced  # the scan's bytes
    assert str(target.parent) in synced  # its name in the job folder
    assert str(queue.root) in synced  # the job folder's name in uploads/
    assert synced.index(str(target)) < synced.index(str(target.parent)) < synced.index(str(queue.root))


def test_a_job_state_write_killed_half_way_is_swept_when_the_next_server_starts(tmp_path):
    """job.json is written through a hidden part file: a server killed mid-write left it in the job
    folder for ever. The next server start removes it once an hour old (a fresh one may be another
    server process's write in progress)."""
    import time

    from digitize import fsutil

    folder = tmp_path / "data/uploads/0123456789abcdef0123456789abcdef"
    folder.mkdir(parents=True)
    old, fresh = folder / ".job.json.0123456789ab.part", folder / ".job.json.ba9876543210.part"
    for part in (old, fresh):
        part.write_text("{")
    then = time.time() - fsutil.PART_AGE - 60
    os.utime(old, (then, then))
    uploads.UploadQueue(Settings(data_dir=str(tmp_path / "data"))).close()
    assert not old.exists() and fresh.exists()


def test_old_stored_jobs_are_pruned_and_failed_ones_kept(tmp_path):
    """Review rev17desk M2: no job folder was ever removed, so every desk view read every upload ever made.
    A stored job (only job.json left) finished longer ago than upload_job_days goes; a failed one (its scan
    kept to be retried), a recent one, and one whose folder still holds a scan stay."""
    import uuid

    from portal_data import write_job
    from storage.index import now_iso

    root = tmp_path / "data" / "uploads"
    long_ago = "2020-01-01T00:00:00.000+00:00"
    jobs = {name: uuid.uuid4().hex for name in ("old", "failed", "recent", "holding")}
    write_job(root, jobs["old"], "user:lan", "000.00.31.H56", "done", long_ago, finished_at=long_ago)
    write_job(root, jobs["failed"], "user:lan", "000.00.31.H56", "failed", long_ago, finished_at=long_ago)
    write_job(root, jobs["recent"], "user:lan", "000.00.31.H56", "done", long_ago, finished_at=now_iso())
    held = write_job(root, jobs["holding"], "user:lan", "000.00.31.H56", "unmatched", long_ago, finished_at=long_ago)
    (held / "scan.pdf").write_bytes(b"%PDF-1.4")
    queue = uploads.UploadQueue(Settings(data_dir=str(tmp_path / "data")))
    try:
        assert {j.job_id for j in queue.jobs()} == {jobs["failed"], jobs["recent"], jobs["holding"]}
    finally:
        queue.close()
    assert not (root / jobs["old"]).exists() and (root / jobs["failed"]).is_dir()
    settings = Settings(data_dir=str(tmp_path / "data"))
    settings.web.upload_job_days = 0  # kept for ever
    write_job(root, jobs["old"], "user:lan", "000.00.31.H56", "done", long_ago, finished_at=long_ago)
    uploads.UploadQueue(settings).close()
    assert (root / jobs["old"]).is_dir()
