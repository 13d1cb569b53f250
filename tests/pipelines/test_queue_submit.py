"""Queue mode's submitting side and commands on real servers: an original is staged (verified) before
anything else happens, storage down means nothing is queued (the watcher keeps the file), and
`digitize queue status` / `queue retry` read and drive the ledger."""

from __future__ import annotations

import base64
import json
import subprocess

import pytest
from pipeline_support import QUEUE_SECRET, ROOT, digitize_cmd, make_settings, settings_env
from scans import page, write_pdf

from digitize.fsutil import sha256_file
from pipelines.jobs import Status, archive_for, close_archives
from pipelines.ledger import Ledger
from pipelines.queued import QUEUE, Submitter
from pipelines.taskauth import sign, verify
from storage.keys import staging_key

pytestmark = pytest.mark.integration


@pytest.fixture
def queue_settings(tmp_path, own_minio, own_redis, postgres_dsn):
    settings = make_settings(tmp_path / "data", own_minio.url("archive"), postgres_dsn)
    settings.queue.url = own_redis.url
    settings.store.retries = 1
    yield settings
    close_archives()


def test_an_original_is_staged_and_verified_before_its_task_is_sent(tmp_path, queue_settings, own_redis):
    (tmp_path / "in").mkdir()
    scan = write_pdf([page(["Hồ sơ"])], tmp_path / "in" / "a.pdf")
    (tmp_path / "in" / "a.json").write_text('{"case_id": "000.00.31.H56-241015-0027"}', encoding="utf-8")
    submitter = Submitter(queue_settings)
    try:
        job, result = submitter.submit_job(scan, None, tmp_path / "in")
        sha = sha256_file(scan)
        assert result.status is Status.done and result.sha256 == sha
        assert archive_for(queue_settings).objects.is_intact(staging_key(sha, job), sha)
        record = submitter.ledger.get(job)
        assert record.state == "waiting" and record.spec["name"] == "a.pdf"
        assert record.spec["sidecar"][0] == "a.json"  # the worker sees no inbox: the sidecar travels along
        assert submitter.ledger.redis.llen(QUEUE) == 1
        message = json.loads(submitter.ledger.redis.lindex(QUEUE, 0))  # what the broker holds: signed
        args, kwargs, _ = json.loads(base64.b64decode(message["body"]))
        verify(QUEUE_SECRET.encode(), *args, kwargs["signature"])
        assert record.signature == kwargs["signature"] and QUEUE_SECRET not in json.dumps(message)
        again_job, _ = submitter.submit_job(scan, None, tmp_path / "in")
        assert again_job == job  # the same content and options are the same job
    finally:
        submitter.close()


def test_a_watch_inbox_submission_carries_its_sidecar_rule_and_agency_scope(tmp_path, queue_settings):
    from storage.access import InboxScope

    (tmp_path / "in").mkdir()
    scan = write_pdf([page(["Hồ sơ"])], tmp_path / "in" / "a.pdf")
    submitter = Submitter(queue_settings)
    try:
        submitter.submit(scan, queue_settings, None, root=tmp_path / "in", shared_inbox=True,
                         allowed=InboxScope.of_agencies(["000.00.31.H56"]))
        spec = json.loads(base64.b64decode(json.loads(submitter.ledger.redis.lindex(QUEUE, 0))["body"]))[0][1]
        assert spec["shared_inbox"] is True and spec["inbox_agencies"] == ["000.00.31.H56"]
    finally:
        submitter.close()


def test_with_storage_down_nothing_is_queued_and_the_file_is_kept(tmp_path, queue_settings, own_minio, own_redis):
    (tmp_path / "in").mkdir()
    scan = write_pdf([page(["Hồ sơ"])], tmp_path / "in" / "a.pdf")
    own_minio.stop()
    submitter = Submitter(queue_settings)
    try:
        result = submitter.submit(scan, queue_settings, None, root=tmp_path / "in")
        assert result.status is Status.failed and result.retryable  # the watcher keeps it in the inbox
        assert submitter.ledger.counts().waiting == 0 and submitter.ledger.redis.llen(QUEUE) == 0
        assert scan.exists()
    finally:
        submitter.close()


def test_queue_status_and_retry_of_failed_jobs(tmp_path, own_redis):
    settings = make_settings(tmp_path / "data", "s3://127.0.0.1:9/unused", "postgresql://x@127.0.0.1:9/unused")
    env = dict(settings_env(settings), DIGITIZE_QUEUE_URL=own_redis.url)
    ledger = Ledger(own_redis.url, QUEUE_SECRET.encode(), reconnect=5.0)
    try:
        spec = {"job": "j1", "key": staging_key("ab" * 32), "sha256": "ab" * 32, "name": "x.pdf", "options": {}}
        ledger.enqueued("j1", "x.pdf", "ab" * 32, spec, signature=sign(QUEUE_SECRET.encode(), "j1", spec))
        ledger.start("j1", "w")
        ledger.end("j1", "failed", "PDF is corrupt", {"status": "failed"})
        ledger.enqueued("j2", "y.pdf", "cd" * 32, dict(spec, job="j2"))
        status = subprocess.run(digitize_cmd("queue", "status", "--json"), env=env, cwd=ROOT, capture_output=True,
                                text=True, timeout=60)
        assert status.returncode == 0, status.stderr
        data = json.loads(status.stdout)
        assert (data["waiting"], data["running"], data["done"], data["failed"]) == (1, 0, 0, 1)
        assert data["failed_jobs"] == [{"job": "j1", "file": "x.pdf", "reason": "PDF is corrupt"}]
        assert data["oldest_waiting_seconds"] is not None and data["workers"] == []
        # a job shown done by someone who can write Redis but has no secret: counted as unverified, not done
        ledger.redis.hset("digitize:q:job:j9", mapping={"state": "done", "result": "{}"})
        ledger.redis.zadd("digitize:q:state:done", {"j9": 1.0})
        data = json.loads(subprocess.run(digitize_cmd("queue", "status", "--json"), env=env, cwd=ROOT,
                                         capture_output=True, text=True, timeout=60).stdout)
        assert (data["done"], data["failed"], data["unverified"]) == (0, 1, 1)
        retry = subprocess.run(digitize_cmd("queue", "retry", "--failed"), env=env, cwd=ROOT, capture_output=True,
                               text=True, timeout=60)
        assert retry.returncode == 0 and "1 job(s) sent again" in retry.stdout, retry.stderr
        assert ledger.get("j1").state == "waiting" and ledger.redis.llen(QUEUE) == 1
        # a failed job planted in the ledger (Redis) by someone without the secret is never signed and sent
        planted = dict(spec, job="j3", key=staging_key("ef" * 32), upload={"id": "u", "sender": {
            "name": "root", "role": "admin", "kind": "user"}})
        ledger.enqueued("j3", "z.pdf", "ef" * 32, planted, signature="v1=" + "0" * 64)
        ledger.fail("j3", "bait")
        forged = subprocess.run(digitize_cmd("queue", "retry", "j3"), env=env, cwd=ROOT, capture_output=True,
                                text=True, timeout=60)
        assert forged.returncode == 0 and "0 job(s) sent again" in forged.stdout, forged.stderr
        assert "not signed with this queue's secret (j3)" in forged.stderr and ledger.redis.llen(QUEUE) == 1
        assert ledger.get("j3").state == "failed"
        none = subprocess.run(digitize_cmd("queue", "retry"), env=env, cwd=ROOT, capture_output=True, text=True)
        assert none.returncode == 1 and "Traceback" not in none.stderr
        # a failed-set member is a job ID anyone who can write Redis chose: printed inert (review L1)
        ledger.redis.hset("digitize:q:job:j\x1b]0;owned\x07", mapping={"state": "failed", "reason": "x"})
        ledger.redis.zadd("digitize:q:state:failed", {"j\x1b]0;owned\x07": 2.0})
        listed = subprocess.run(digitize_cmd("queue", "status", "--failed"), env=env, cwd=ROOT, capture_output=True,
                                text=True, timeout=60)
        assert listed.returncode == 0 and "listed as failed" in listed.stdout, listed.stderr
        assert "\x1b" not in listed.stdout and "\x07" not in listed.stdout
    finally:
        ledger.close()


def test_two_jobs_of_the_same_bytes_each_keep_their_staged_original(tmp_path, queue_settings, monkeypatch):
    """One `_staging/<sha>` per content, deleted by the first job done: a second upload of the scan into another
    case then failed for good, "staged original missing" (review rev16batch M6). Staging is per job now."""
    import pipelines.queued as queued
    from pipelines.jobs import JobResult

    (tmp_path / "in").mkdir()
    scan = write_pdf([page(["Hồ sơ"])], tmp_path / "in" / "a.pdf")
    sender = {"name": "lan", "role": "scanner", "agencies": ["000.00.31.H56"], "kind": "token"}
    submitter = Submitter(queue_settings)
    fetched = []

    def process(path, settings, hint, **kw):
        fetched.append(sha256_file(path))
        return JobResult(str(path), Status.done, sha256_file(path), "")

    try:
        first, _ = submitter.submit_upload(scan, {"case_id": "000.00.31.H56-241015-0027"}, "u1", sender)
        second, _ = submitter.submit_upload(scan, {"case_id": "000.00.31.H56-241016-0003"}, "u2", sender)
        assert first != second
        specs = [submitter.ledger.get(job).spec for job in (first, second)]
        assert specs[0]["key"] != specs[1]["key"]
        for job, spec in zip((first, second), specs):
            assert queued.run_job(queue_settings, submitter.ledger, job, spec, "w/1", 0, process).state == "done"
        assert fetched == [sha256_file(scan)] * 2
        objects = archive_for(queue_settings).objects
        assert not [key for key in objects.list_keys("_staging/")]  # each job removed its own when done
    finally:
        submitter.close()
