"""Signed queue tasks with real servers (Redis, MinIO, PostgreSQL) and a real `digitize worker`: a task that
no holder of the queue secret made, unsigned or signed with another key, is refused in one log line, failed
in the ledger with its reason, never run (no delivery counted, nothing stored) and never retried; a task the
submitter signed is converted and stored as before."""

from __future__ import annotations

import subprocess
import time
import uuid

import pytest
from pipeline_support import QUEUE_SECRET, ROOT, digitize_cmd, make_settings, settings_env, stop_group, wait_until
from scans import page, write_pdf

from digitize.fsutil import sha256_file
from pipelines.jobs import Status, close_archives
from pipelines.queued import QUEUE, TASK, Submitter
from pipelines.taskauth import sign
from storage.archive import Archive
from storage.keys import staging_key

pytestmark = pytest.mark.integration
CASE = "000.00.31.H56-241015-0027"
WAIT = 300.0


def test_a_worker_refuses_unsigned_and_badly_signed_tasks_and_runs_signed_ones(tmp_path, minio_server,
                                                                              unique_bucket, postgres_dsn, own_redis):
    settings = make_settings(tmp_path / "data", minio_server.url(unique_bucket), postgres_dsn)
    settings.queue.url = own_redis.url
    Archive.open(settings).close()  # the schema first
    good = write_pdf([page(["Đơn đề nghị", "Hồ sơ số 27"])], tmp_path / f"{CASE}.pdf")
    bait = write_pdf([page(["Tờ khai giả"])], tmp_path / "bait.pdf")
    submitter = Submitter(settings)
    worker = None
    try:
        with Archive.open(settings) as archive:  # a staged original the forged tasks name (store access is
            archive.objects.put(staging_key(sha256_file(bait)), bait, sha256_file(bait), {})  # not the point)
        forged = {}
        for kind, signature in [("unsigned", None), ("other-key", sign(b"x" * 32, "", {}))]:
            job = uuid.uuid4().hex
            spec = {"job": job, "key": staging_key(sha256_file(bait)), "sha256": sha256_file(bait),
                    "name": f"{CASE}/{kind}.pdf", "options": submitter.options, "hint": None, "sidecar": None}
            if signature:
                signature = sign(b"x" * 32, job, spec)
            submitter.ledger.enqueued(job, spec["name"], spec["sha256"], spec)  # the broker's Redis is writable
            kwargs = {"signature": signature} if signature else {}
            submitter.app.send_task(TASK, args=[job, spec], kwargs=kwargs, queue=QUEUE, task_id=f"forged-{kind}")
            forged[kind] = job
        good_job, result = submitter.submit_job(good, None, tmp_path)  # signed, sent after the forged ones
        assert result.status is Status.done, result.reason

        env = dict(settings_env(settings), DIGITIZE_QUEUE_URL=own_redis.url)
        wdir = tmp_path / "worker"
        for sub in ("home", "tmp", "data"):
            (wdir / sub).mkdir(parents=True, mode=0o700)
        log = tmp_path / "worker.log"
        with open(log, "ab") as out:
            worker = subprocess.Popen(digitize_cmd("worker", "--concurrency", "1"), cwd=ROOT, stdout=out,
                                      stderr=subprocess.STDOUT, start_new_session=True,
                                      env=dict(env, HOME=str(wdir / "home"), TMPDIR=str(wdir / "tmp"),
                                               DIGITIZE_DATA_DIR=str(wdir / "data")))
        deadline = time.monotonic() + WAIT
        while (record := submitter.ledger.get(good_job)).state not in ("done", "failed"):
            assert time.monotonic() < deadline and worker.poll() is None, log.read_text()[-3000:]
            time.sleep(0.3)
        text = log.read_text()
        assert record.state == "done", (record.reason, text[-3000:])

        unsigned, other = (submitter.ledger.get(forged[k]) for k in ("unsigned", "other-key"))
        assert unsigned.state == "failed" and "not signed" in unsigned.reason, unsigned.reason
        assert other.state == "failed" and "does not match" in other.reason, other.reason
        assert unsigned.starts == other.starts == 0  # never run: not even a delivery counted
        assert unsigned.result["error_kinds"] == ["UnsignedTask"]
        refusals = [line for line in text.splitlines() if "refused task" in line]
        assert len(refusals) == 2 and "forged-unsigned" in refusals[0] and forged["unsigned"] in refusals[0]
        assert QUEUE_SECRET not in text
        # not retried. The good task's own message is acknowledged only after its outcome is in the ledger
        # (late acknowledgement), so it may be out a moment longer (the forged ones, taken before it, are not)
        redis = submitter.ledger.redis
        wait_until(lambda: not redis.hlen("unacked"), "the good task's acknowledgement", timeout=30)
        assert redis.llen(QUEUE) == 0
        with Archive.open(settings) as archive:
            stored = {r.original_sha256 for r in archive.index.stored_documents()}
            assert stored == {sha256_file(good)}  # the bait was never converted nor filed
    finally:
        submitter.close()
        if worker is not None:
            stop_group(worker)
        close_archives()
