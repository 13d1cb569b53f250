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
