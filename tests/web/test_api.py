"""The REST API against a real `digitize serve` on a fresh data dir, with tokens made by the CLI."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import re
import time
import zipfile
from pathlib import Path

import httpx
import pytest

from digitize.errors import BadArgsError
from digitize.identifiers import normalize_case_id
from portal_data import CASE_A, CASE_B, PASSWORD, digitize
from tests.servers import wait_until
from web.auth import TOKEN_CACHE_SECONDS

pytestmark = pytest.mark.integration
SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "01_clean.png"


def client(portal, token: str | None) -> httpx.Client:
    headers = {"authorization": f"Bearer {portal.tokens[token]}"} if token else {}
    return httpx.Client(base_url=portal.url + "/api/v1", headers=headers, timeout=60)


def test_case_record_and_documents_in_order(portal):
    body = client(portal, "onestop-a").get(f"/cases/{CASE_A}").json()
    assert body["case"]["case_id"] == CASE_A and body["case"]["applicant"] == "Nguyễn Văn An"
    assert [d["sequence"] for d in body["documents"]] == [1, 2]
    assert all(len(d["pdfa_sha256"]) == 64 and len(d["original_sha256"]) == 64 for d in body["documents"])


@pytest.mark.parametrize("token", [None, "bad"])
def test_no_token_or_a_bad_one_is_401_without_case_data(portal, token):
    headers = {"authorization": "Bearer dgt_not-a-real-token"} if token == "bad" else {}
    for path in [f"/cases/{CASE_A}", f"/cases/{CASE_A}/dossier.zip", "/search?q=dat"]:
        r = httpx.get(portal.url + "/api/v1" + path, headers=headers)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert r.json()["error"] == "unauthorized" and CASE_A not in r.text


def test_another_agency_gets_404_as_if_the_case_did_not_exist(portal):
    b = client(portal, "onestop-b")
    missing = b.get("/cases/000.00.12.H29-200101-0001").json()
    for path in [f"/cases/{CASE_A}", f"/cases/{CASE_A}/documents/1/pdfa", f"/cases/{CASE_A}/documents/1/original",
                 f"/cases/{CASE_A}/dossier.zip", f"/cases/{CASE_A}/events"]:
        r = b.get(path)
        assert r.status_code == 404, path
        assert r.json()["error"] == missing["error"] == "not-found"
        assert "Nguyễn" not in r.text


def test_bad_case_id_is_400_with_the_cli_explanation(portal):
    r = client(portal, "onestop-a").get("/cases/000.00.31.H56-241315-0027")
    with pytest.raises(BadArgsError) as expected:
        normalize_case_id("000.00.31.H56-241315-0027")
    assert r.status_code == 400
    assert r.json() == {"error": "bad-request", "message": str(expected.value)}
    assert "month 13" in r.json()["message"]


def test_pdfa_download_etag_range_and_304(portal):
    a = client(portal, "onestop-a")
    doc = a.get(f"/cases/{CASE_A}").json()["documents"][0]
    whole = a.get(f"/cases/{CASE_A}/documents/1/pdfa")
    assert whole.status_code == 200 and whole.headers["content-type"] == "application/pdf"
    assert hashlib.sha256(whole.content).hexdigest() == doc["pdfa_sha256"]
    assert whole.headers["etag"] == f'"{doc["pdfa_sha256"]}"'
    assert whole.headers["content-disposition"].startswith('attachment; filename="0001-tai-lieu-1')
    part = a.get(f"/cases/{CASE_A}/documents/1/pdfa", headers={"range": "bytes=0-99"})
    assert part.status_code == 206 and part.content == whole.content[:100]
    assert a.get(f"/cases/{CASE_A}/documents/1/pdfa",
                 headers={"if-none-match": whole.headers["etag"]}).status_code == 304
    original = a.get(f"/cases/{CASE_A}/documents/2/original")
    assert hashlib.sha256(original.content).hexdigest() == a.get(f"/cases/{CASE_A}").json()["documents"][1][
        "original_sha256"]
    assert a.get(f"/cases/{CASE_A}/documents/9/pdfa").status_code == 404


def test_dossier_zip_matches_the_index(portal):
    a = client(portal, "onestop-a")
    docs = a.get(f"/cases/{CASE_A}").json()["documents"]
    r = a.get(f"/cases/{CASE_A}/dossier.zip")
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        manifest = json.loads(zf.read("manifest.json"))
        assert [d["sha256"] for d in manifest["documents"]] == [d["pdfa_sha256"] for d in docs]
        for entry in manifest["documents"]:
            assert hashlib.sha256(zf.read(entry["file"])).hexdigest() == entry["sha256"]


def test_search_without_accents_is_scoped_to_the_token(portal):
    def cases(token, **params):
        body = client(portal, token).get("/search", params={"q": "quyen su dung dat", **params}).json()
        return {h["case_id"] for h in body["hits"]}, body

    assert cases("onestop-a")[0] == {CASE_A}
    assert cases("onestop-b")[0] == {CASE_B}
    assert cases("archivist")[0] == {CASE_A, CASE_B}
    assert cases("archivist", agency="000.00.12.H29")[0] == {CASE_B}
    assert cases("archivist", received_from="2030-01-01")[0] == set()
    hits, body = cases("onestop-a", limit=1)
    assert len(body["hits"]) == 1 and body["total"] > 1
    assert "[" in body["hits"][0]["snippet"]


def test_put_case_upserts_within_scope_only(portal):
    a = client(portal, "onestop-a")
    new = "000.00.31.H56-241020-0101"
    created = a.put(f"/cases/{new}", json={"applicant": "Lê Văn Cường", "received_date": "20/10/2024",
                                           "procedure_code": "1.004616"})
    assert created.status_code == 201 and created.json()["case"]["received_date"] == "2024-10-20"
    updated = a.put(f"/cases/{new}", json={"status": "Đã trả kết quả"})
    assert updated.status_code == 200 and updated.json()["case"]["applicant"] == "Lê Văn Cường"
    assert a.put(f"/cases/{CASE_B}", json={"status": "x"}).status_code == 404
    assert a.put(f"/cases/{new}", json={"received_date": "yesterday"}).status_code == 400
    assert client(portal, "scanner-a").put(f"/cases/{new}", json={"status": "x"}).status_code == 403


def test_put_case_cannot_reach_another_agency_through_an_alias_header(portal):
    """Review rev17desk H1: scope was checked on the path's case, yet a later alias header ("Case ID",
    "ma_ho_so") named the case actually written: agency A's token rewrote (or created) agency B's record."""
    a = client(portal, "onestop-a")
    planted = "000.00.12.H29-241016-0009"
    for body in [{"case_id": CASE_A, "Case ID": CASE_B, "applicant": "x"},
                 {"case_id": "", "ma_ho_so": CASE_B, "applicant": "x"},
                 {"ma_ho_so": planted, "applicant": "x"}]:
        r = a.put(f"/cases/{CASE_A}", json=body)
        assert r.status_code == 400 and r.json()["error"] == "bad-request", (body, r.text)
    b = client(portal, "onestop-b")
    assert b.get(f"/cases/{CASE_B}").json()["case"]["applicant"] == "Trần Thị Bình"
    assert b.get(f"/cases/{planted}").status_code == 404
    assert a.get(f"/cases/{CASE_A}").json()["case"]["applicant"] == "Nguyễn Văn An"


def test_put_case_refuses_a_huge_body(portal):
    """Review rev17desk M3: the body was read whole into the worker's memory, whatever its size."""
    a = client(portal, "onestop-a")
    big = a.put(f"/cases/{CASE_A}", json={"Cột lạ": "x" * (1 << 20), "status": "x"})
    assert big.status_code == 413 and big.json()["error"] == "too-large"
    chunked = a.put(f"/cases/{CASE_A}", content=iter([b'{"status": "', b"x" * (1 << 20), b'"}']),
                    headers={"content-type": "application/json"})
    assert chunked.status_code == 413
    assert a.put(f"/cases/{CASE_A}", content=b"[1, 2]").status_code == 400
    # review2 r2desk M1: nesting deeper than the decoder's recursion limit was a 500 with a traceback
    assert a.put(f"/cases/{CASE_A}", content=b"[" * 3000).status_code == 400
    assert a.put(f"/cases/{CASE_A}", content=b'{"status": ' + b"[" * 3000).status_code == 400
    assert a.put(f"/cases/{CASE_A}", json={"applicant": "x" * 2000}).status_code == 400
    assert a.get(f"/cases/{CASE_A}").json()["case"]["applicant"] == "Nguyễn Văn An"


def test_events_record_actor_and_client_address_shown_to_auditors_only(portal):
    a = client(portal, "onestop-a")
    a.get(f"/cases/{CASE_A}/documents/1/pdfa")
    deadline = time.monotonic() + 10  # another server process may have taken it: committed within ~50 ms
    while True:
        events = a.get(f"/cases/{CASE_A}/events").json()["events"]
        mine = [e for e in events if e["actor"] == "token:onestop-a"]
        if any("downloaded pdfa" in e["detail"] for e in mine) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert any("downloaded pdfa" in e["detail"] for e in mine)
    assert all(e["client"] is None for e in events)  # review web15 L9: an officer's token sees no addresses
    audited = client(portal, "archivist").get(f"/cases/{CASE_A}/events").json()["events"]
    mine = [e for e in audited if e["actor"] == "token:onestop-a"]
    assert mine and all(e["client"] == "127.0.0.1" for e in mine)  # an archivist's does (Perm.audit)


def test_upload_is_converted_stored_and_indexed_in_the_background(portal):
    scanner = client(portal, "scanner-a")
    with open(SAMPLE, "rb") as f:
        r = scanner.post(f"/cases/{CASE_A}/documents", files={"file": ("Đơn đề nghị.png", f, "image/png")})
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    assert r.headers["location"] == f"/api/v1/jobs/{job_id}"
    assert client(portal, "onestop-b").get(f"/jobs/{job_id}").status_code == 404
    deadline = time.monotonic() + 300
    while (job := scanner.get(f"/jobs/{job_id}").json())["state"] in ("queued", "running"):
        assert time.monotonic() < deadline, job
        time.sleep(1)
    assert job["state"] == "done", job
    docs = client(portal, "onestop-a").get(f"/cases/{CASE_A}").json()["documents"]
    stored = [d for d in docs if d["original_sha256"] == hashlib.sha256(SAMPLE.read_bytes()).hexdigest()]
    assert len(stored) == 1 and stored[0]["title"] == "Đơn đề nghị"
    # the kept scan is dropped just after job.json says done (and the job may be read in between): wait for it
    kept = portal.data_dir / "uploads" / job_id
    wait_until(lambda: not any(p.suffix == ".png" for p in kept.iterdir()), "the kept scan's removal", timeout=30)


def test_upload_refusals(portal):
    files = {"file": ("scan.png", SAMPLE.read_bytes(), "image/png")}
    assert client(portal, "onestop-a").post(f"/cases/{CASE_A}/documents", files=files).status_code == 403
    assert client(portal, "scanner-a").post(f"/cases/{CASE_B}/documents", files=files).status_code == 404
    bad = client(portal, "scanner-a").post(f"/cases/{CASE_A}/documents", files={"file": ("x.exe", b"MZ", "x/y")})
    assert bad.status_code == 422 and bad.json()["error"] == "bad-input"
    # no Content-Length (chunked): refused before the body is read, never spooled to disk unbounded
    body = (b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\n\r\n", b"x" * 65536, b"\r\n--b--\r\n")
    chunked = client(portal, "scanner-a").post(f"/cases/{CASE_A}/documents", content=iter(body),
                                               headers={"content-type": "multipart/form-data; boundary=b"})
    assert chunked.status_code in (400, 411) and "Content-Length" in chunked.json()["message"]


def test_openapi_document(portal):
    spec = httpx.get(portal.url + "/api/v1/openapi.json").json()
    assert "/api/v1/cases/{case_id}/dossier.zip" in spec["paths"]
    assert not any(p.startswith("/login") for p in spec["paths"])


def test_a_revoked_token_is_refused(portal):
    digitize(portal.data_dir, "tokens", "create", "short-lived", "--role", "archivist")
    secret = digitize(portal.data_dir, "tokens", "create", "short-lived-2", "--role", "archivist").strip()
    headers = {"authorization": f"Bearer {secret}"}
    assert httpx.get(f"{portal.url}/api/v1/cases/{CASE_A}", headers=headers).status_code == 200
    digitize(portal.data_dir, "tokens", "revoke", "short-lived-2")
    # each server process keeps a verified token for at most TOKEN_CACHE_SECONDS (web/auth.py)
    revoked, status = time.monotonic(), 200
    while status == 200 and time.monotonic() - revoked < TOKEN_CACHE_SECONDS + 1.0:
        status = httpx.get(f"{portal.url}/api/v1/cases/{CASE_A}", headers=headers).status_code
        time.sleep(0.05)
    assert status == 401, "a revoked token was still served past the token cache's lifetime"
    time.sleep(max(0.0, revoked + TOKEN_CACHE_SECONDS - time.monotonic()))
    for _ in range(6):  # every server process, once the cache's lifetime has passed since the revocation
        assert httpx.get(f"{portal.url}/api/v1/cases/{CASE_A}", headers=headers).status_code == 401


def test_a_killed_conversion_fails_its_job_and_the_portal_keeps_serving(portal):
    """Conversion runs in a spawned worker process: killing it (the OOM killer) fails that upload only."""
    import psutil

    scanner = client(portal, "scanner-a")
    scan = SAMPLE.read_bytes() + b"\0"  # new bytes: not already stored
    job_id = scanner.post(f"/cases/{CASE_A}/documents", files={"file": ("kill.png", scan, "image/png")}).json()[
        "job_id"]
    deadline = time.monotonic() + 120
    while scanner.get(f"/jobs/{job_id}").json()["state"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    server = psutil.Process(portal.process.pid)  # serve -> its web worker processes -> their converter
    lock = str(portal.data_dir / "uploads" / job_id / "lock")  # held open by the web worker running the job
    owner = [w for w in server.children() if any(f.path == lock for f in w.open_files())]
    assert len(owner) == 1

    def converters():
        found = []
        for p in owner[0].children():
            with contextlib.suppress(psutil.Error):
                line = " ".join(p.cmdline())
                if "multiprocessing" in line and "resource_tracker" not in line:
                    found.append(p)
        return found
    while not (workers := converters()):  # "running" is recorded just before the converter is spawned
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert len(workers) == 1, [p.cmdline() for p in workers]
    workers[0].kill()
    while (job := scanner.get(f"/jobs/{job_id}").json())["state"] == "running":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert job["state"] == "failed" and "died" in job["reason"]
    while any(f.path == lock for f in owner[0].open_files()):  # read failed, then saved and released: the
        assert time.monotonic() < deadline                     # desk's retry below needs the claim free
        time.sleep(0.1)
    assert (portal.data_dir / "uploads" / job_id / "scan.png").is_file()  # the scan is kept
    assert client(portal, "onestop-a").get(f"/cases/{CASE_A}").status_code == 200

    # the scanning desk links the failed upload to a case and tries again, on the kept scan
    with httpx.Client(base_url=portal.url, timeout=60) as desk:
        csrf = re.search(r'name="csrf" value="([^"]+)"', desk.get("/login").text).group(1)
        desk.post("/login", data={"name": "scanner-a", "password": PASSWORD, "csrf": csrf})
        page = desk.get("/desk").text
        assert f"/desk/jobs/{job_id}/retry" in page
        csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
        assert desk.post(f"/desk/jobs/{job_id}/retry", data={"csrf": csrf, "case_id": CASE_B}).status_code == 404
        assert desk.post(f"/desk/jobs/{job_id}/retry", data={"csrf": csrf, "case_id": CASE_A}).status_code == 303
    while (job := scanner.get(f"/jobs/{job_id}").json())["state"] in ("queued", "running"):
        assert time.monotonic() < deadline + 120
        time.sleep(0.5)
    assert job["state"] == "done" and job["documents"][0]["case_id"] == CASE_A
