"""Downloads come straight from the store with the SHA-256 checked before they are sent: Range, and a
corrupt object that never reaches the client (a real `digitize serve`)."""

from __future__ import annotations

import hashlib
import os
import stat
import time

import httpx
import pytest

from digitize.config import Settings
from portal_data import CASE_A, seed
from portal_server import start_portal
from storage import access
from storage.archive import Archive

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("downloads")
    data_dir = root / "data"
    seed(data_dir, root / "work")
    with Archive.open(Settings(data_dir=str(data_dir))) as archive:
        token = access.create_token(archive.index, "onestop-a", "officer", ["000.00.31.H56"])
        docs = archive.documents(CASE_A)
    portal = start_portal(data_dir, {"onestop-a": token})
    yield portal, docs
    portal.stop()


def api(portal) -> httpx.Client:
    return httpx.Client(base_url=portal.url + "/api/v1", timeout=60,
                        headers={"authorization": f"Bearer {portal.tokens['onestop-a']}"})


def test_a_download_is_the_stored_object_with_its_length_and_ranges(served):
    portal, docs = served
    with api(portal) as client:
        whole = client.get(f"/cases/{CASE_A}/documents/1/pdfa")
        assert whole.status_code == 200 and hashlib.sha256(whole.content).hexdigest() == docs[0].pdfa_sha256
        assert int(whole.headers["content-length"]) == len(whole.content)
        part = client.get(f"/cases/{CASE_A}/documents/1/pdfa", headers={"range": "bytes=10-19"})
        assert part.status_code == 206 and part.content == whole.content[10:20]
        assert part.headers["content-range"] == f"bytes 10-19/{len(whole.content)}"
        tail = client.get(f"/cases/{CASE_A}/documents/1/pdfa", headers={"range": "bytes=-7"})
        assert tail.status_code == 206 and tail.content == whole.content[-7:]
        outside = client.get(f"/cases/{CASE_A}/documents/1/pdfa", headers={"range": "bytes=99999999-"})
        assert outside.status_code == 416
        stale = client.get(f"/cases/{CASE_A}/documents/1/pdfa", headers={"range": "bytes=0-9", "if-range": '"x"'})
        assert stale.status_code == 200 and stale.content == whole.content


def test_a_corrupt_object_is_refused_before_its_first_byte(served):
    """Objects up to web/files.py's WHOLE_MAX (every one here) are checked whole before they are sent."""
    portal, docs = served
    path = portal.data_dir / "objects" / docs[1].pdfa_key
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # bit rot: same length, other bytes
    os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)
    path.write_bytes(bytes(data))
    with api(portal) as client:
        response = client.get(f"/cases/{CASE_A}/documents/2/pdfa")
        assert response.status_code == 500 and response.json()["error"] == "fixity-failed"
        assert bytes(data[:64]) not in response.content  # none of the (wrong) file
        for detail in (docs[1].pdfa_key, docs[1].pdfa_sha256):  # review web15 L6: the detail is the log's
            assert detail not in response.text

        def failure_recorded() -> bool:  # written by the serving worker's event writer (~50 ms), maybe another worker
            events = client.get(f"/cases/{CASE_A}/events").json()["events"]
            return any(e["outcome"] == "failure" and f"pdfa of document {docs[1].sequence}" in e["detail"]
                       for e in events)

        deadline = time.monotonic() + 10
        while not failure_recorded():
            assert time.monotonic() < deadline, "the failed download was not recorded"
            time.sleep(0.2)
