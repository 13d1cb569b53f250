"""An in-process portal upload is filed with its sender's rights as they are when it runs (review finding,
2026-12-01): a job left queued by a server that stopped and resumed by the next one, whose sender was disabled
meanwhile, fails with that reason in the real spawned converter; the scan is kept, nothing is stored."""

from __future__ import annotations

import sys
import time
import uuid
from dataclasses import asdict
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pipelines"))

from scans import page  # noqa: E402

from digitize.config import Settings  # noqa: E402
from pipelines.jobs import close_archives  # noqa: E402
from storage import access  # noqa: E402
from storage.archive import Archive  # noqa: E402
from web.uploads import UploadJob, UploadQueue  # noqa: E402

pytestmark = pytest.mark.integration
AGENCY_A = "000.00.31.H56"
CASE_A = f"{AGENCY_A}-241015-0027"
WAIT = 300.0


@pytest.fixture
def settings(tmp_path) -> Settings:
    settings = Settings(data_dir=str(tmp_path / "data"))
    settings.convert.validate = False
    settings.convert.jobs = 1
    yield settings
    close_archives()


def left_queued(settings, sender: access.Principal) -> UploadJob:
    """What a server that stopped before running an upload leaves: its folder, scan and job.json (queued)."""
    queue = UploadQueue(settings)
    queue._run = lambda job: None  # the process ends before running it
    job = UploadJob(uuid.uuid4().hex, sender.actor, CASE_A, "Đơn.png", 1, "0" * 64, created_at=access.now_iso(),
                    sender=asdict(sender))
    (queue.root / job.job_id).mkdir(mode=0o700)
    page(["Đơn đề nghị cấp giấy phép"]).save(queue.root / job.job_id / "scan.png")
    queue.submit(job)
    queue.close()  # its claim released, as the kernel does when the process ends
    return job


def resumed(settings, job_id: str) -> UploadJob:
    queue = UploadQueue(settings)  # the next server process resumes it and runs it in its converter
    try:
        deadline = time.monotonic() + WAIT
        while not (job := queue.get(job_id)).finished:
            assert time.monotonic() < deadline, job
            time.sleep(0.2)
        return job
    finally:
        queue.close()


@pytest.mark.parametrize("sender_is_active", [False, True])
def test_a_resumed_upload_is_filed_only_if_its_sender_may_still_file_it(settings, sender_is_active):
    with Archive.open(settings) as archive:
        access.add_user(archive.index, "lan", "scanner", [AGENCY_A], None)
        sender = access.principal_for_user(archive.index, "lan")
    job = left_queued(settings, sender)
    if not sender_is_active:
        with Archive.open(settings) as archive:
            archive.index.set_user_disabled("lan", True, access.now_iso())  # after the upload, before it runs
    done = resumed(settings, job.job_id)
    with Archive.open(settings) as archive:
        stored = [r.case_id for r in archive.index.stored_documents()]
    if sender_is_active:
        assert done.state == "done" and stored == [CASE_A], done.reason
        return
    assert done.state == "failed" and "user lan was disabled" in done.reason, done.reason
    assert stored == []
    assert (Path(settings.data_dir) / "uploads" / job.job_id / "scan.png").is_file()  # kept for a retry
