"""An upload job outside the asker's scope is never touched: the gate is asked on the job as saved, before
the job is followed in the queue's ledger (which may finish it: save it, drop its scan, release its claim)."""

from __future__ import annotations

import json
import re
import uuid

import pytest
from fastapi.testclient import TestClient

from digitize.config import Settings
from storage import access
from storage.archive import Archive
from web.app import create_app
from web.uploads import UploadQueue

AGENCY_A, AGENCY_B = "000.00.31.H56", "000.00.12.H29"
CASE_B = f"{AGENCY_B}-241016-0003"
PASSWORD = "mat-khau-thu-nghiem-2024"


@pytest.fixture
def portal(tmp_path, monkeypatch):
    settings = Settings(data_dir=str(tmp_path / "data"))
    settings.web.secure_cookies = False
    with Archive.open(settings) as archive:
        tokens = {name: access.create_token(archive.index, name, "scanner", [agency])
                  for name, agency in [("scanner-a", AGENCY_A), ("scanner-b", AGENCY_B)]}
        access.add_user(archive.index, "lan", "scanner", [AGENCY_A], PASSWORD)
    job_id = uuid.uuid4().hex  # agency B's upload, handed to the queue's workers
    folder = tmp_path / "data" / "uploads" / job_id
    folder.mkdir(parents=True)
    (folder / "job.json").write_text(json.dumps({
        "job_id": job_id, "owner": "token:scanner-b", "case_id": CASE_B, "name": "scan.pdf", "size": 10,
        "sha256": "0" * 64, "state": "queued", "created_at": "2026-12-01T00:00:00Z",
        "sender": {"name": "scanner-b", "role": "scanner", "agencies": [AGENCY_B], "kind": "token"},
        "queue_job": "q-" + job_id}))
    followed: list[str] = []
    monkeypatch.setattr(UploadQueue, "_follow", lambda self, jobs: followed.extend(j.job_id for j in jobs))
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as client:
        yield client, tokens, job_id, followed


def test_an_out_of_scope_job_is_not_found_and_never_followed(portal):
    client, tokens, job_id, followed = portal
    answer = client.get(f"/api/v1/jobs/{job_id}", headers={"authorization": f"Bearer {tokens['scanner-a']}"})
    assert answer.status_code == 404
    assert followed == [], "another agency's job was followed in the queue before the gate refused it"
    mine = client.get(f"/api/v1/jobs/{job_id}", headers={"authorization": f"Bearer {tokens['scanner-b']}"})
    assert mine.status_code == 200 and mine.json()["case_id"] == CASE_B
    assert followed == [job_id]


def test_the_desk_follows_only_the_jobs_it_may_show(portal):
    client, _, job_id, followed = portal
    csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text).group(1)
    assert client.post("/login", data={"name": "lan", "password": PASSWORD, "csrf": csrf},
                       follow_redirects=False).status_code == 303
    assert client.get(f"/desk/jobs/{job_id}").status_code == 404
    desk = client.get("/desk")
    assert desk.status_code == 200 and job_id not in desk.text
    assert followed == []


def test_a_sender_moved_to_another_agency_no_longer_sees_its_old_job(portal, tmp_path):
    """Review rev17desk L2: a job stayed visible to its owner's name whatever that account's current rights: an
    account moved to agency B (or a new token given a deleted one's name) still saw agency A's case IDs,
    documents and reasons of every job the old name sent."""
    from portal_data import write_job

    client, tokens, _, _ = portal
    case_a = f"{AGENCY_A}-241015-0027"
    old = uuid.uuid4().hex  # sent by "scanner-b" when that name was agency A's
    write_job(tmp_path / "data" / "uploads", old, "token:scanner-b", AGENCY_A, "done", "2026-12-01T00:00:00Z",
              case_id=case_a, documents=[{"case_id": case_a, "doc_id": 7}], finished_at="2026-12-01T00:01:00Z")
    unmatched = uuid.uuid4().hex  # no case chosen, filed by its QR code into A's case
    write_job(tmp_path / "data" / "uploads", unmatched, "token:scanner-b", AGENCY_A, "done", "2026-12-01T00:00:00Z",
              documents=[{"case_id": case_a, "doc_id": 8}], finished_at="2026-12-01T00:01:00Z")
    for job_id in (old, unmatched):
        now_b = client.get(f"/api/v1/jobs/{job_id}", headers={"authorization": f"Bearer {tokens['scanner-b']}"})
        assert now_b.status_code == 404, job_id
        in_a = client.get(f"/api/v1/jobs/{job_id}", headers={"authorization": f"Bearer {tokens['scanner-a']}"})
        assert in_a.status_code == (200 if job_id == old else 404)  # A's desk: a job into A's case


def test_a_moved_sender_neither_sees_nor_retries_its_old_caseless_failed_upload(portal, tmp_path):
    """Review2 r2desk M2: a failed upload naming no case (none chosen, nothing filed) was its owner's by the
    name alone: the account moved to another agency saw it, and could retry agency A's scan into its own
    agency's case or dismiss it."""
    from portal_data import write_job

    client, tokens, _, _ = portal
    uploads = tmp_path / "data" / "uploads"
    old_a = uuid.uuid4().hex  # sent by "scanner-b" when that name was agency A's
    write_job(uploads, old_a, "token:scanner-b", AGENCY_A, "failed", "2026-12-01T00:00:00Z", reason="no pages",
              finished_at="2026-12-01T00:01:00Z")
    (uploads / old_a / "scan.pdf").write_bytes(b"%PDF-1.4 kept")
    now_b = client.get(f"/api/v1/jobs/{old_a}", headers={"authorization": f"Bearer {tokens['scanner-b']}"})
    assert now_b.status_code == 404
    old_b = uuid.uuid4().hex  # sent by "lan" when that account was agency B's; lan is agency A's now
    write_job(uploads, old_b, "user:lan", AGENCY_B, "failed", "2026-12-01T00:00:00Z", reason="no pages",
              finished_at="2026-12-01T00:01:00Z")
    (uploads / old_b / "scan.pdf").write_bytes(b"%PDF-1.4 kept")
    csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text).group(1)
    assert client.post("/login", data={"name": "lan", "password": PASSWORD, "csrf": csrf},
                       follow_redirects=False).status_code == 303
    desk = client.get("/desk")
    assert client.get(f"/desk/jobs/{old_b}").status_code == 404 and old_b not in desk.text
    csrf = re.search(r'name="csrf" value="([^"]+)"', desk.text).group(1)
    retry = client.post(f"/desk/jobs/{old_b}/retry", data={"case_id": f"{AGENCY_A}-241015-0027", "csrf": csrf},
                        follow_redirects=False)
    dismiss = client.post(f"/desk/jobs/{old_b}/dismiss", data={"csrf": csrf}, follow_redirects=False)
    assert retry.status_code == 404 and dismiss.status_code == 404
    assert (uploads / old_b / "scan.pdf").exists()
    assert json.loads((uploads / old_b / "job.json").read_text())["state"] == "failed"


def test_archivists_see_retry_and_dismiss_a_departed_senders_caseless_failed_upload(portal, tmp_path, monkeypatch):
    """Review3 r3desk M3: a caseless failed upload was only ever its owner's, so once the sender moved agency
    (or left) nobody could see, retry or dismiss it; and an archivist's retry into no case kept the scanner as
    owner, so a failed re-run was visible to neither of them."""
    from portal_data import write_job

    client, _, _, _ = portal
    settings = Settings(data_dir=str(tmp_path / "data"))
    with Archive.open(settings) as archive:
        access.add_user(archive.index, "mai", "archivist", [], PASSWORD)
        token = access.create_token(archive.index, "motcua", "archivist", [])
    uploads = tmp_path / "data" / "uploads"
    departed, named = uuid.uuid4().hex, uuid.uuid4().hex
    write_job(uploads, departed, "user:lan", AGENCY_B, "failed", "2026-12-01T00:00:00Z", reason="no pages",
              finished_at="2026-12-01T00:01:00Z")  # sent by lan when that account was agency B's
    write_job(uploads, named, "user:lan", AGENCY_A, "failed", "2026-12-01T00:00:00Z", reason="no pages",
              case_id=f"{AGENCY_A}-241015-0027", finished_at="2026-12-01T00:01:00Z")
    for job_id in (departed, named):
        (uploads / job_id / "scan.pdf").write_bytes(b"%PDF-1.4 kept")
    assert client.get(f"/api/v1/jobs/{departed}", headers={"authorization": f"Bearer {token}"}).status_code == 200

    def failing_run(self, job):  # the re-run fails again (no converter in this test)
        job.state, job.reason, job.finished_at = "failed", "no pages", "2026-12-01T00:02:00Z"
        self._finish(job)

    monkeypatch.setattr(UploadQueue, "_run", failing_run)
    csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text).group(1)
    assert client.post("/login", data={"name": "mai", "password": PASSWORD, "csrf": csrf},
                       follow_redirects=False).status_code == 303
    desk = client.get("/desk")
    assert client.get(f"/desk/jobs/{departed}").status_code == 200 and departed in desk.text
    csrf = re.search(r'name="csrf" value="([^"]+)"', desk.text).group(1)
    retried = client.post(f"/desk/jobs/{named}/retry", data={"case_id": "", "csrf": csrf}, follow_redirects=False)
    assert retried.status_code == 303
    client.app.state.uploads._executor.submit(lambda: None).result()
    saved = json.loads((uploads / named / "job.json").read_text())
    assert saved["state"] == "failed" and saved["case_id"] is None and saved["owner"] == "user:mai"
    assert client.get(f"/desk/jobs/{named}").status_code == 200  # the retrier still sees its failed re-run
    dismiss = client.post(f"/desk/jobs/{departed}/dismiss", data={"csrf": csrf, "confirm": "yes"},
                          follow_redirects=False)
    assert dismiss.status_code == 303
    assert json.loads((uploads / departed / "job.json").read_text())["state"] == "dismissed"
