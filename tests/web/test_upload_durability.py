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
