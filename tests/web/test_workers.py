"""Several server processes on one data dir (`[web] workers`): every process sees every upload job, a job
is run by exactly one of them, and a job left by a process that ended is resumed by the next one."""

from __future__ import annotations

import threading
import uuid

import psutil
import pytest

from digitize.config import Settings
from portal_data import CASE_A
from web.uploads import UploadJob, UploadQueue


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(data_dir=str(tmp_path / "data"))


def new_job(queue: UploadQueue) -> UploadJob:
    job = UploadJob(uuid.uuid4().hex, "user:lan", CASE_A, "scan.png", 3, "0" * 64, created_at="2024-10-15T00:00:00")
    folder = queue.root / job.job_id
    folder.mkdir(mode=0o700)
    (folder / "scan.png").write_bytes(b"png")
    return job


def test_a_job_taken_by_one_process_is_seen_by_another_and_run_once(settings):
    release, ran = threading.Event(), []

    def slow_run(job):  # stands in for the conversion, which a claimed job is running
        ran.append(("first", job.job_id))
        release.wait(30)

    first = UploadQueue(settings)
    first._run = slow_run
    job = first.submit(new_job(first))
    second = UploadQueue(settings)  # a second worker process starting meanwhile
    second._run = lambda j: ran.append(("second", j.job_id))
    assert second.get(job.job_id) is not None and second.get(job.job_id).state == "queued"
    assert job.job_id in [j.job_id for j in second.jobs()]
    second._resume()
    assert not second._claim(job.job_id)  # held by the first
    release.set()
    first.close()
    second.close()
    assert ran == [("first", job.job_id)]


def test_a_job_left_unfinished_by_an_ended_process_is_resumed_by_the_next(settings):
    ended = UploadQueue(settings)
    ended._run = lambda j: None  # the process died before running it: job.json still says queued
    job = ended.submit(new_job(ended))
    ended._executor.shutdown(wait=True)
    ended._release(job.job_id)  # what the kernel does when the process ends
    ran = []
    original = UploadQueue._run
    UploadQueue._run = lambda self, j: ran.append(j.job_id)
    try:
        UploadQueue(settings).close()
    finally:
        UploadQueue._run = original
    assert ran == [job.job_id]


def test_serve_runs_the_configured_number_of_worker_processes(portal):
    server = psutil.Process(portal.process.pid)
    workers = [p for p in server.children() if "resource_tracker" not in " ".join(p.cmdline())]
    assert len(workers) == 2, [p.cmdline() for p in workers]
