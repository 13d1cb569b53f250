"""A queued upload's job page follows the run it submitted (Submitter.send's run ID, kept with the upload):
a sealed ledger record of another submission of the same job (an older 'done' put back in Redis by whoever
can write it) is not this upload's state. Real Redis, MinIO and PostgreSQL; the portal in-process; no worker
(the test writes the ledger records a worker would, with the queue's secret)."""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pipelines"))

from pipeline_support import QUEUE_SECRET, make_settings  # noqa: E402
from scans import page  # noqa: E402

from pipelines.jobs import JobResult, Status, close_archives  # noqa: E402
from pipelines.ledger import Ledger  # noqa: E402
from storage import access  # noqa: E402
from storage.archive import Archive  # noqa: E402
from storage.models import CaseRecord  # noqa: E402
from web.app import create_app  # noqa: E402

pytestmark = pytest.mark.integration
AGENCY_A = "000.00.31.H56"
CASE_A = f"{AGENCY_A}-241015-0027"
PASSWORD = "mat-khau-thu-nghiem-2024"


def test_an_older_run_s_sealed_done_record_is_not_the_upload_s_state(tmp_path, minio_server, unique_bucket,
                                                                     postgres_dsn, own_redis):
    settings = make_settings(tmp_path / "portal", minio_server.url(unique_bucket), postgres_dsn)
    settings.queue.url = own_redis.url
    settings.web.secure_cookies = False
    with Archive.open(settings) as archive:
        archive.index.upsert_case(CaseRecord(CASE_A, agency=AGENCY_A, status="Đang xử lý"))
        token = access.create_token(archive.index, "scanner-a", "scanner", [AGENCY_A])
        access.add_user(archive.index, "lan", "scanner", [AGENCY_A], PASSWORD)
    close_archives()
    scan = tmp_path / "scan.png"
    page(["Đơn đề nghị cấp giấy phép"]).save(scan)
    ledger = Ledger(own_redis.url, QUEUE_SECRET.encode(), reconnect=5.0)
    try:
        with TestClient(create_app(settings), base_url="http://127.0.0.1") as client:
            auth = {"authorization": f"Bearer {token}"}
            with open(scan, "rb") as f:
                sent = client.post(f"/api/v1/cases/{CASE_A}/documents", headers=auth,
                                   files={"file": ("scan.png", f, "application/octet-stream")})
            assert sent.status_code == 202, sent.text
            upload = sent.json()["job_id"]
            saved = Path(settings.data_dir) / "uploads" / upload / "job.json"
            deadline = time.monotonic() + 120
            while not (saved.exists() and json.loads(saved.read_text()).get("queue_job")):
                assert time.monotonic() < deadline, "the upload was not queued"
                time.sleep(0.2)
            queued = ledger.get(json.loads(saved.read_text())["queue_job"])
            assert queued is not None and queued.state == "waiting" and queued.run
            ours = queued.spec
            done = JobResult("scan.png", Status.done, queued.sha256, "stored").to_dict()

            # an older submission of the same job, sealed by a worker then, put back over this run's record
            older = {**ours, "run": "0" * 32}
            ledger.enqueued(queued.job_id, queued.name, queued.sha256, older)
            ledger.start(queued.job_id, "old-worker", older)
            ledger.end(queued.job_id, "done", result=done, spec=older)
            assert ledger.get(queued.job_id).state == "done"  # it verifies: sealed with the queue's secret

            job = client.get(f"/api/v1/jobs/{upload}", headers=auth).json()
            assert job["state"] == "unverified" and "another submission" in job["reason"], job
            csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text).group(1)
            assert client.post("/login", data={"name": "lan", "password": PASSWORD, "csrf": csrf},
                               follow_redirects=False).status_code == 303
            desk = client.get(f"/desk/jobs/{upload}")
            assert desk.status_code == 200 and "another submission" in desk.text

            # this run's own outcome is still taken
            ledger.start(queued.job_id, "worker", ours)
            ledger.end(queued.job_id, "done", result=done, spec=ours)
            assert client.get(f"/api/v1/jobs/{upload}", headers=auth).json()["state"] == "done"
    finally:
        ledger.close()
        close_archives()
