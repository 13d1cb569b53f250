"""Portal uploads in queue mode, with real servers (Redis, MinIO, PostgreSQL), a real `digitize serve` and a
real `digitize worker`: the API takes the scan (202 + job), stages it in the store and enqueues it; nothing is
converted by the portal; a worker process stores it and the job endpoint (read from the queue's ledger) shows
done and the document. The sender's scope travels with the task: a scan whose separator sheet names another
agency's case fails in the worker, as it does in-process."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pipelines"))

from pipeline_support import QUEUE_SECRET, ROOT, digitize_cmd, make_settings, settings_env, wait_until  # noqa: E402
from pipeline_support import stop_group as stop  # noqa: E402
from portal_server import free_port, wait_until_up  # noqa: E402
from scans import page, write_pdf  # noqa: E402

from digitize.fsutil import sha256_file  # noqa: E402
from pipelines.jobs import close_archives  # noqa: E402
from pipelines.ledger import Ledger  # noqa: E402
from pipelines.separators import render_sheet  # noqa: E402
from storage.archive import Archive  # noqa: E402
from storage.models import CaseRecord  # noqa: E402

pytestmark = pytest.mark.integration
AGENCY_A, AGENCY_B = "000.00.31.H56", "000.00.12.H29"
CASE_A, CASE_B = f"{AGENCY_A}-241015-0027", f"{AGENCY_B}-241016-0003"
WAIT = 300.0


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen(args, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(digitize_cmd(*args), env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def upload(api: httpx.Client, case_id: str, path: Path) -> str:
    with open(path, "rb") as f:
        r = api.post(f"/cases/{case_id}/documents", files={"file": (path.name, f, "application/octet-stream")})
    assert r.status_code == 202, r.text
    return r.json()["job_id"]


def settled(api: httpx.Client, job_id: str) -> dict:
    deadline = time.monotonic() + WAIT
    while (job := api.get(f"/jobs/{job_id}").json())["state"] in ("queued", "running"):
        assert time.monotonic() < deadline, job
        time.sleep(0.5)
    return job


def test_an_api_upload_is_staged_queued_and_stored_by_a_worker(tmp_path, minio_server, unique_bucket, postgres_dsn,
                                                               own_redis):
    settings = make_settings(tmp_path / "portal", minio_server.url(unique_bucket), postgres_dsn)
    settings.queue.url = own_redis.url
    with Archive.open(settings) as archive:  # the schema and the case record first
        archive.index.upsert_case(CaseRecord(CASE_A, agency=AGENCY_A, status="Đang xử lý"))
    close_archives()
    env = dict(settings_env(settings), DIGITIZE_QUEUE_URL=own_redis.url, DIGITIZE_WEB_SECURE_COOKIES="false",
               DIGITIZE_WEB_WORKERS="2")
    tokens = {name: cli(env, "tokens", "create", name, "--role", role, "--agency", agency)
              for name, role, agency in [("scanner-a", "scanner", AGENCY_A), ("officer-a", "officer", AGENCY_A),
                                         ("officer-b", "officer", AGENCY_B)]}
    port = free_port()
    portal = start([sys.executable, "-m", "digitize", "serve", "--port", str(port)], env, tmp_path / "serve.log")
    worker = None
    try:
        wait_until_up(portal, f"http://127.0.0.1:{port}/healthz", 60, tmp_path / "serve.log")
        api = {name: httpx.Client(base_url=f"http://127.0.0.1:{port}/api/v1", timeout=60,
                                  headers={"authorization": f"Bearer {token}"}) for name, token in tokens.items()}
        good = tmp_path / "Đơn đề nghị.png"
        page(["Đơn đề nghị cấp giấy phép", "Hồ sơ số 27"]).save(good)
        foreign = write_pdf([page(["Đơn đề nghị"]), render_sheet(CASE_B).resize((620, 877)), page(["Tờ khai"])],
                            tmp_path / "stack.pdf")  # sent to agency A's case; its separator sheet names B's
        job_id = upload(api["scanner-a"], CASE_A, good)
        foreign_id = upload(api["scanner-a"], CASE_A, foreign)

        ledger = Ledger(own_redis.url, QUEUE_SECRET.encode(), reconnect=5.0)
        try:
            deadline = time.monotonic() + WAIT
            while ledger.counts().waiting < 2:  # staged and enqueued; no worker yet, so nothing converts it
                assert time.monotonic() < deadline, "the uploads were not queued"
                time.sleep(0.2)
        finally:
            ledger.close()
        deadline = time.monotonic() + WAIT  # in the ledger first, then queued in the job itself
        while (job := api["scanner-a"].get(f"/jobs/{job_id}").json())["state"] == "running":
            assert time.monotonic() < deadline, job
            time.sleep(0.2)
        assert job["state"] == "queued" and job["documents"] == []
        assert api["officer-b"].get(f"/jobs/{job_id}").status_code == 404  # the visibility rule is unchanged
        with Archive.open(settings) as archive:
            [staged] = archive.objects.list_keys(f"_staging/{sha256_file(good)}/")  # the job's own copy
            assert archive.objects.is_intact(staged, sha256_file(good))
            assert archive.index.stored_documents() == []  # the portal converted nothing itself

        wdir = tmp_path / "worker"
        for sub in ("home", "tmp", "data"):
            (wdir / sub).mkdir(parents=True, mode=0o700)
        worker = start(digitize_cmd("worker", "--concurrency", "1"),
                       dict(env, HOME=str(wdir / "home"), TMPDIR=str(wdir / "tmp"),
                            DIGITIZE_DATA_DIR=str(wdir / "data")), tmp_path / "worker.log")

        job = settled(api["scanner-a"], job_id)
        assert job["state"] == "done", (job, (tmp_path / "worker.log").read_text()[-3000:])
        assert [d["case_id"] for d in job["documents"]] == [CASE_A] and job["finished_at"]
        docs = api["officer-a"].get(f"/cases/{CASE_A}").json()["documents"]
        assert [d["title"] for d in docs if d["original_sha256"] == sha256_file(good)] == ["Đơn đề nghị"]
        kept = Path(settings.data_dir) / "uploads" / job_id  # dropped just after job.json says done: wait for it
        wait_until(lambda: not any(p.suffix == ".png" for p in kept.iterdir()), "the kept scan's removal", timeout=30)

        refused = settled(api["scanner-a"], foreign_id)
        assert refused["state"] == "failed" and CASE_B in refused["reason"] and "outside" in refused["reason"]
        assert any(p.suffix == ".pdf" for p in (Path(settings.data_dir) / "uploads" / foreign_id).iterdir())  # kept
        with Archive.open(settings) as archive:
            assert all(r.case_id == CASE_A for r in archive.index.stored_documents())  # nothing filed in B's case
    finally:
        if worker is not None:
            stop(worker)
        stop(portal)
        close_archives()
