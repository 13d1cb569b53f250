"""An accepted upload survives a power cut: its bytes and both folder entries are synced before it is
queued (L1). Unit test: nothing is converted."""

from __future__ import annotations

import hashlib
import io
import os
import time
import types

import pytest

from digitize.config import Settings
from storage.access import Principal
from web import uploads

fsutil_write = uploads.atomic_write_text


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
    kept to be retried) and a recent one stay; so does nothing of one whose folder still holds a copy of its
    stored scan (a server killed between saving "stored" and dropping the copy)."""
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
        assert {j.job_id for j in queue.jobs()} == {jobs["failed"], jobs["recent"]}
    finally:
        queue.close()
    assert not (root / jobs["old"]).exists() and not held.exists() and (root / jobs["failed"]).is_dir()
    settings = Settings(data_dir=str(tmp_path / "data"))
    settings.web.upload_job_days = 0  # kept for ever
    write_job(root, jobs["old"], "user:lan", "000.00.31.H56", "done", long_ago, finished_at=long_ago)
    uploads.UploadQueue(settings).close()
    assert (root / jobs["old"]).is_dir()


def _refusing_writes(monkeypatch, after: int) -> list[str]:
    """job.json writes fail with ENOSPC after ``after`` good ones; the names written are listed."""
    import errno

    written: list[str] = []
    real = uploads.atomic_write_text

    def write(path, text):
        if len(written) >= after:
            raise OSError(errno.ENOSPC, "No space left on device")
        written.append(str(path))
        return real(path, text)

    monkeypatch.setattr(uploads, "atomic_write_text", write)
    return written


def test_a_state_write_failure_is_logged_and_releases_the_job(tmp_path, monkeypatch, caplog):
    """Review rev17desk L1: the 'running' state write raised into the worker thread's future, which nobody
    reads: nothing logged, the job 'running' and claimed until the server restarted, and a retry answered
    "this upload is being processed already"."""
    queue = uploads.UploadQueue(Settings(data_dir=str(tmp_path / "data")))
    try:
        scope = types.SimpleNamespace(principal=Principal("lan", "scanner", ("000.00.31.H56",)))
        job, _ = queue.receive(io.BytesIO(b"%PDF-1.4 fake scan bytes %%EOF"), "scan.pdf", scope, None)
        _refusing_writes(monkeypatch, after=1)  # the job's first state (queued) is saved, 'running' is not
        queue.submit(job)
        queue._executor.submit(lambda: None).result()  # the job's run is over
        assert any(job.job_id in r.getMessage() and "No space left" in r.getMessage() for r in caplog.records)
        shown = queue.get(job.job_id)
        assert shown.state == "failed" and "No space left" in shown.reason
        monkeypatch.setattr(uploads, "atomic_write_text", fsutil_write)
        rerun: list[str] = []
        monkeypatch.setattr(queue, "_queue", lambda j: rerun.append(j.job_id))
        queue.retry(shown, None, scope)  # not "being processed already"
        assert rerun == [job.job_id]
    finally:
        queue.close()


def test_finish_saves_the_state_before_dropping_the_scan(tmp_path, monkeypatch):
    """Review rev17desk L1: the kept scan was unlinked before job.json said 'done'; a failed write then left a
    job that was resumed on a scan that was gone ('internal error: IndexError', never retryable)."""
    import json

    import pytest

    queue = uploads.UploadQueue(Settings(data_dir=str(tmp_path / "data")))
    try:
        scope = types.SimpleNamespace(principal=Principal("lan", "scanner", ("000.00.31.H56",)))
        job, scan = queue.receive(io.BytesIO(b"%PDF-1.4 fake scan bytes %%EOF"), "scan.pdf", scope, None)
        job.state, job.documents = "done", [{"case_id": None, "doc_id": 1}]
        _refusing_writes(monkeypatch, after=0)
        with pytest.raises(OSError):
            queue._finish(job)
        assert scan.exists()  # job.json does not say stored: the scan stays
        monkeypatch.setattr(uploads, "atomic_write_text", fsutil_write)
        queue._finish(job)
        assert not scan.exists() and json.loads((scan.parent / "job.json").read_text())["state"] == "done"
    finally:
        queue.close()


def test_a_full_disk_while_receiving_is_a_resource_error_answered_503(tmp_path, monkeypatch):
    """Review rev17desk L1: ENOSPC while an upload was received answered 500 "internal" with a traceback."""
    import errno

    import pytest

    from digitize.errors import ResourceError
    from web.app import error_status

    queue = uploads.UploadQueue(Settings(data_dir=str(tmp_path / "data")))

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    try:
        scope = types.SimpleNamespace(principal=Principal("lan", "scanner", ("000.00.31.H56",)))
        monkeypatch.setattr(os, "fsync", full)
        with pytest.raises(ResourceError, match="No space left") as refused:
            queue.receive(io.BytesIO(b"%PDF-1.4 fake scan bytes %%EOF"), "scan.pdf", scope, None)
        assert error_status(refused.value) == (503, "storage-unavailable")
        assert list(queue.root.iterdir()) == []  # nothing half-received stays
    finally:
        queue.close()


def test_a_dismissed_queue_upload_leaves_no_staged_copy(tmp_path):
    """Review2 r2desk L2: in queue mode a failed upload's original stays staged in the store (only a job that
    ends done deletes it): dismissing it deleted the local scan only, the citizen's scan stayed unlisted."""
    import json

    from pipelines.queued import Submitter
    from storage.keys import staging_key
    from storage.objects import FolderStore

    queue = uploads.UploadQueue(Settings(data_dir=str(tmp_path / "data")))
    store = FolderStore(tmp_path / "store", False)
    submitter = Submitter.__new__(Submitter)  # its store only: no broker or ledger needed to drop a copy
    submitter.settings, submitter.objects = queue.settings, store
    queue._submitter = submitter
    job_id, sha = "0123456789abcdef0123456789abcdef", hashlib.sha256(b"scan").hexdigest()
    qjob = "f" * 32  # a queue job ID
    (queue.root / job_id).mkdir(parents=True)
    (queue.root / job_id / "scan.pdf").write_bytes(b"scan")
    (queue.root / job_id / "job.json").write_text(json.dumps({
        "job_id": job_id, "owner": "user:lan", "case_id": None, "name": "scan.pdf", "size": 4, "sha256": sha,
        "state": "failed", "queue_job": qjob, "sender": {"name": "lan", "role": "scanner", "agencies": []}}))
    (tmp_path / "original").write_bytes(b"scan")
    store.put(staging_key(sha, qjob), tmp_path / "original", sha, {"sha256": sha})
    try:
        job = queue.get(job_id)
        queue.dismiss(job, "user:lan")
    finally:
        queue._submitter = None
        queue.close()
    assert not (queue.root / job_id / "scan.pdf").exists()
    assert not store.exists(staging_key(sha, qjob))


def test_a_full_disk_while_the_form_spools_is_answered_503(tmp_path, monkeypatch):
    """Review2 r2desk L3: a multipart body over 1 MB spools to TMPDIR before queue.receive; ENOSPC there was
    a 500 "internal" with a traceback, not the 503 + Retry-After a full disk gets elsewhere."""
    import errno
    import tempfile

    from fastapi.testclient import TestClient

    from storage import access
    from storage.archive import Archive
    from storage.models import CaseRecord
    from web.app import create_app

    settings, case = Settings(data_dir=str(tmp_path / "data")), "000.00.31.H56-241015-0027"
    with Archive.open(settings) as archive:
        token = access.create_token(archive.index, "scanner-a", "scanner", ["000.00.31.H56"])
        archive.index.upsert_case(CaseRecord(case))

    def full(self, *args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tempfile.SpooledTemporaryFile, "rollover", full)
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as client:
        answer = client.post(f"/api/v1/cases/{case}/documents", headers={"authorization": f"Bearer {token}"},
                             files={"file": ("scan.pdf", b"%PDF-1.4 " + b"x" * (2 << 20), "application/pdf")})
    assert answer.status_code == 503 and answer.headers["retry-after"]
    assert answer.json()["error"] == "storage-unavailable"


def test_a_job_stranded_in_another_process_is_failed_and_retryable_here(tmp_path, monkeypatch):
    """Review2 r2desk L4: a job whose end could not be saved was 'failed' only in the memory of the server
    process it ran in; the others read 'running' for ever (no retry button) and refused its retry."""
    import json

    queue = uploads.UploadQueue(Settings(data_dir=str(tmp_path / "data")))  # started before the failure
    try:
        job_id = "0123456789abcdef0123456789abcdef"  # left 'running', its lock free: the other process gave up
        (queue.root / job_id).mkdir()
        (queue.root / job_id / "scan.pdf").write_bytes(b"%PDF-1.4 kept scan")
        (queue.root / job_id / "job.json").write_text(json.dumps({
            "job_id": job_id, "owner": "user:lan", "case_id": None, "name": "scan.pdf", "size": 18,
            "sha256": "0" * 64, "state": "running", "created_at": "2026-12-01T00:00:00Z",
            "sender": {"name": "lan", "role": "scanner", "agencies": ["000.00.31.H56"]}}))
        (listed,) = queue.jobs()
        assert listed.state == "failed" and queue.get(job_id).state == "failed"
        assert json.loads((queue.root / job_id / "job.json").read_text())["state"] == "failed"
        rerun: list[str] = []
        monkeypatch.setattr(queue, "_queue", lambda j: rerun.append(j.job_id))
        scope = types.SimpleNamespace(principal=Principal("lan", "scanner", ("000.00.31.H56",)))
        queue.retry(listed, None, scope)  # not "only a failed upload ... can be retried"
        assert rerun == [job_id]
    finally:
        queue.close()


def test_a_running_job_held_by_another_process_is_not_taken_as_stranded(tmp_path):
    """The other side of L4: a job another process holds (its flock) is shown as it is saved."""
    import fcntl
    import json

    queue = uploads.UploadQueue(Settings(data_dir=str(tmp_path / "data")))
    job_id = "0123456789abcdef0123456789abcdef"
    (queue.root / job_id).mkdir()
    (queue.root / job_id / "job.json").write_text(json.dumps({
        "job_id": job_id, "owner": "user:lan", "case_id": None, "name": "scan.pdf", "size": 18,
        "sha256": "0" * 64, "state": "running", "created_at": "2026-12-01T00:00:00Z"}))
    with open(queue.root / job_id / "lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        try:
            assert queue.get(job_id).state == "running" and queue.jobs()[0].state == "running"
        finally:
            queue.close()


def test_a_queued_job_of_a_stopped_process_is_resumed_not_failed(tmp_path):
    """Review3 r3desk M1: a sibling's poll saved a stopped server's *queued* (never started) upload as
    'failed', so the restarted server did not resume it and a person had to press retry."""
    import json
    import threading

    settings = Settings(data_dir=str(tmp_path / "data"))
    b = uploads.UploadQueue(settings)  # a live sibling process
    a = uploads.UploadQueue(settings)
    gate = threading.Event()
    a._executor.submit(gate.wait)  # A's runner busy: the upload below is queued, not started
    ran: list[str] = []
    b._run = lambda job: ran.append(job.job_id)  # B runs nothing for real (no converter in a unit test)
    try:
        scope = types.SimpleNamespace(principal=Principal("lan", "scanner", ("000.00.31.H56",)))
        job, _ = a.receive(io.BytesIO(b"%PDF-1.4 fake scan bytes %%EOF"), "scan.pdf", scope, None)
        a.submit(job)
        gate.set()
        a.close()  # stopped gracefully: the job not started, its claim released
        assert b.get(job.job_id).state == "queued"
        b._executor.submit(lambda: None).result()
        assert ran == [job.job_id]  # resumed by the live process, once
        assert json.loads((b.root / job.job_id / "job.json").read_text())["state"] == "queued"
        assert b.jobs()[0].state == "queued" and ran == [job.job_id]  # held now: not taken twice
    finally:
        gate.set()
        a.close()
        b.close()


def _failed_job(queue, job_id: str = "0123456789abcdef0123456789abcdef", **more) -> uploads.UploadJob:
    import json

    (queue.root / job_id).mkdir(parents=True)
    (queue.root / job_id / "scan.pdf").write_bytes(b"%PDF-1.4 kept scan")
    (queue.root / job_id / "job.json").write_text(json.dumps({
        "job_id": job_id, "owner": "user:lan", "case_id": None, "name": "scan.pdf", "size": 18,
        "sha256": "0" * 64, "state": "failed", "created_at": "2026-12-01T00:00:00Z",
        "sender": {"name": "lan", "role": "scanner", "agencies": ["000.00.31.H56"]}, **more}))
    return queue.get(job_id)


def test_a_full_disk_in_retry_or_dismiss_is_a_resource_error_and_leaks_no_claim(tmp_path, monkeypatch):
    """Review3 r3desk L2: a retry whose 'queued' save failed left the job queued in that process's memory and
    its claim held for good (siblings: "being processed already"); a dismiss gave a 500."""
    import json

    from digitize.errors import ResourceError

    queue = uploads.UploadQueue(Settings(data_dir=str(tmp_path / "data")))
    try:
        job = _failed_job(queue)
        scope = types.SimpleNamespace(principal=Principal("lan", "scanner", ("000.00.31.H56",)))
        _refusing_writes(monkeypatch, after=0)
        with pytest.raises(ResourceError):
            queue.retry(job, None, scope)
        assert queue._claims == {} and job.job_id not in queue._jobs
        with pytest.raises(ResourceError):  # not BadArgsError "being processed already"
            queue.retry(queue.get(job.job_id), None, scope)
        with pytest.raises(ResourceError):
            queue.dismiss(queue.get(job.job_id), "user:lan")
        assert queue._claims == {}
        assert json.loads((queue.root / job.job_id / "job.json").read_text())["state"] == "failed"
    finally:
        queue.close()


def test_a_dismissal_saved_but_not_cleaned_up_is_not_an_error(tmp_path, monkeypatch):
    """Review3 r3desk L2/L3: once 'dismissed' is saved, a failing unlink of the scan, or a staged copy that
    cannot be dropped for a reason that is not a DigitizeError, answered 500 and the gate recorded "not
    dismissed after all" while job.json said dismissed."""
    import json
    import pathlib

    queue = uploads.UploadQueue(Settings(data_dir=str(tmp_path / "data")))
    try:
        job = _failed_job(queue, queue_job="f" * 32)
        real_unlink = pathlib.Path.unlink

        def unlink(path, missing_ok=False):
            if path.name == "scan.pdf":
                raise PermissionError(13, "Permission denied")
            return real_unlink(path, missing_ok=missing_ok)

        monkeypatch.setattr(pathlib.Path, "unlink", unlink)

        class Broken:
            def drop_staged(self, sha, queue_job):
                raise RuntimeError("a client library's own error")

        queue._submitter = Broken()
        assert queue.dismiss(job, "user:lan").state == "dismissed"
        assert json.loads((queue.root / job.job_id / "job.json").read_text())["state"] == "dismissed"
        assert queue._claims == {}
    finally:
        queue._submitter = None
        queue.close()


def test_following_a_stale_queue_job_neither_overwrites_a_rerun_nor_drops_its_claim(tmp_path):
    """Review3 r3desk L1: a request thread following a job it had read while its old run was in the queue
    saved that run's 'failed' over the retry's state and released the claim the retry's run held (the claims
    are per process), so a sibling could run the same scan twice at once."""
    import json

    queue = uploads.UploadQueue(Settings(data_dir=str(tmp_path / "data")))
    record = types.SimpleNamespace(job_id="q1", state="failed", run="r1", result=None, reason="old run failed")
    queue._submitter = types.SimpleNamespace(ledger=types.SimpleNamespace(many=lambda ids: [record]))
    try:
        job = _failed_job(queue)
        stale = uploads.UploadJob(**{**json.loads((queue.root / job.job_id / "job.json").read_text()),
                                     "state": "queued", "queue_job": "q1", "queue_run": "r1"})
        assert queue._claim(job.job_id)  # the retry's run here: saved queued, not in the queue yet
        (queue.root / job.job_id / "job.json").write_text(json.dumps({**uploads.asdict(job), "state": "queued"}))
        queue._follow([stale])
        assert job.job_id in queue._claims
        assert json.loads((queue.root / job.job_id / "job.json").read_text())["state"] == "queued"
        queue._release(job.job_id)
        queue._follow([stale])  # nobody holds it now, but job.json is no longer that run's
        assert json.loads((queue.root / job.job_id / "job.json").read_text())["state"] == "queued"
    finally:
        queue._submitter = None
        queue.close()


def _conversion_process_dies(*args):
    os._exit(3)  # as the kernel's OOM killer ends it: no answer, no clean-up


def test_a_dead_conversion_process_s_pool_thread_has_ended_when_its_job_fails(tmp_path, monkeypatch):
    """The broken pool's manager thread closes its wake-up pipe as it ends: left running when the job failed
    and the pool was dropped, it raced the interpreter's exit-time wake-up of it ("Exception ignored ...
    _python_exit ... Bad file descriptor", the batch's CI failure) when the portal stopped next."""
    import multiprocessing
    import threading
    from concurrent.futures import ProcessPoolExecutor, process

    real = process._ExecutorManagerThread.join_executor_internals

    def slow_to_end(thread):  # a loaded machine: the thread ends well after the failed future is seen
        time.sleep(1.0)
        real(thread)

    monkeypatch.setattr(process._ExecutorManagerThread, "join_executor_internals", slow_to_end)
    monkeypatch.setattr(uploads, "convert_upload", _conversion_process_dies)  # the forked worker sees it
    queue = uploads.UploadQueue(Settings(data_dir=str(tmp_path / "data")))
    try:
        job = _failed_job(queue)
        assert queue._claim(job.job_id)
        queue._worker = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork"))
        queue._convert(job)
        assert job.state == "failed" and "died" in job.reason and queue._worker is None
        managers = [t for t in threading.enumerate() if isinstance(t, process._ExecutorManagerThread)]
        assert not managers, "the dead worker's pool thread still runs"
    finally:
        queue.close()


def _converted(*args):
    return "done", "", []


def test_a_conversion_process_that_died_idle_does_not_fail_the_next_upload(tmp_path, monkeypatch):
    """The worker converts uploads one after another; killed while it waited (the OOM killer picks the largest
    process: a worker that just converted a big scan), its pool was broken before the next job was submitted,
    and that job failed as "the conversion process died" without ever running. It runs in a new worker."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from pools import kill_idle_workers

    monkeypatch.setattr(uploads, "convert_upload", _converted)  # the forked workers see it
    monkeypatch.setattr(uploads, "conversion_worker",
                        lambda settings: ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork")))
    queue = uploads.UploadQueue(Settings(data_dir=str(tmp_path / "data")))
    try:
        queue._worker = uploads.conversion_worker(queue.settings)
        kill_idle_workers(queue._worker)  # it converted a job, and died waiting for the next
        job = _failed_job(queue)
        assert queue._claim(job.job_id)
        queue._convert(job)
        assert job.state == "done", job.reason
    finally:
        queue.close()
