"""Downloads answered without their bytes are accesses too: 304 (If-None-Match) and 416 (bad Range) are
recorded like any download, with the actor and the client's address (in-process app)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from portal_data import AGENCY_A, CASE_A, seed
from storage import access
from storage.archive import Archive
from web.app import create_app


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("files")
    settings = seed(root / "data", root / "work")
    with Archive.open(settings) as archive:
        token = access.create_token(archive.index, "onestop-a", "officer", [AGENCY_A])
    with TestClient(create_app(settings), base_url="http://127.0.0.1", client=("10.1.2.3", 50000),
                    headers={"authorization": f"Bearer {token}"}) as client:
        yield client


def download_events(client: TestClient) -> list[dict]:
    events = client.get(f"/api/v1/cases/{CASE_A}/events").json()["events"]
    return [e for e in events if e["event_type"] == "retrieved" and "pdfa of document 1" in e["detail"]]


@pytest.mark.parametrize("headers, status, detail, outcome", [
    ({"if-none-match": "ETAG"}, 304, "not modified", "success"),
    ({"range": "bytes=99999999-"}, 416, "range not satisfiable", "failure"),
], ids=["not-modified", "range-not-satisfiable"])
def test_an_answer_without_bytes_is_an_access_event(served, headers, status, detail, outcome):
    url = f"/api/v1/cases/{CASE_A}/documents/1/pdfa"
    etag = served.get(url).headers["etag"]
    answer = served.get(url, headers={k: v.replace("ETAG", etag) for k, v in headers.items()})
    assert answer.status_code == status and not answer.content
    recorded = [e for e in download_events(served) if detail in e["detail"]]
    assert len(recorded) == 1, download_events(served)
    assert recorded[0]["actor"] == "token:onestop-a"  # (its address is shown to auditors only: web15 L9)
    assert recorded[0]["outcome"] == outcome


@pytest.mark.parametrize("headers", [{"if-none-match": "ETAG"}, {"range": "bytes=99999999-"}],
                         ids=["not-modified", "range-not-satisfiable"])
def test_an_answer_without_bytes_for_another_agency_is_a_404_and_no_event(served, headers):
    """A 304 would confirm that a guessed SHA-256 is another agency's document (and a 416 its size)."""
    from portal_data import CASE_B

    settings = served.app.state.settings
    with Archive.open(settings) as archive:
        doc = archive.documents(CASE_B)[0]
        before = len(archive.index.events(case_id=CASE_B))
    url = f"/api/v1/cases/{CASE_B}/documents/{doc.sequence}/pdfa"
    answer = served.get(url, headers={k: v.replace("ETAG", f'"{doc.pdfa_sha256}"') for k, v in headers.items()})
    assert answer.status_code == 404 and answer.json()["error"] == "not-found"
    assert "etag" not in answer.headers and "content-range" not in answer.headers
    served.app.state.events.flush()
    with Archive.open(settings) as archive:
        assert len(archive.index.events(case_id=CASE_B)) == before


def test_a_slow_download_gives_its_archive_back_before_it_streams(tmp_path, monkeypatch):
    """The archive was held until a streamed answer was sent to its end: a pool's worth of slow clients
    (16 per process) took every archive, and every other request got a 503 after the pool's wait."""
    import hashlib
    import threading

    from storage.objects import FolderStore
    from web import files

    settings = seed(tmp_path / "data", tmp_path / "work")
    with Archive.open(settings) as archive:
        token = access.create_token(archive.index, "onestop-a", "officer", [AGENCY_A])
        sha = archive.documents(CASE_A)[0].pdfa_sha256
    monkeypatch.setattr(files, "WHOLE_MAX", 0)  # every download streams
    streaming, release, real = threading.Event(), threading.Event(), FolderStore.read_chunks

    def slow_client(self, key):  # each block waits, as for a client that reads slowly
        for block in real(self, key):
            streaming.set()
            assert release.wait(30)
            yield block

    monkeypatch.setattr(FolderStore, "read_chunks", slow_client)
    app = create_app(settings)
    app.state.pool._size, app.state.pool.take_timeout = 1, 1.0  # one archive: the slow download's
    with TestClient(app, base_url="http://127.0.0.1", headers={"authorization": f"Bearer {token}"}) as client:
        answers: list = []
        download = threading.Thread(target=lambda: answers.append(
            client.get(f"/api/v1/cases/{CASE_A}/documents/1/pdfa")), daemon=True)
        download.start()
        try:
            assert streaming.wait(20), "the download never started streaming"
            other = client.get(f"/api/v1/cases/{CASE_A}")
        finally:
            release.set()
            download.join(30)
    assert other.status_code == 200, other.text
    assert answers[0].status_code == 200 and hashlib.sha256(answers[0].content).hexdigest() == sha


def test_the_dossier_zip_is_written_once_straight_from_the_store(served, monkeypatch):
    """review rev17cli L4: every document was copied into a work folder, then again into the ZIP: twice the
    dossier in the temp folder the watcher also needs, per request."""
    import hashlib
    import io
    import json
    import zipfile

    from storage.objects import ObjectStore

    def refused(*args, **kwargs):
        raise AssertionError("a second copy of a document on disk")

    monkeypatch.setattr(ObjectStore, "download", refused)
    monkeypatch.setattr(zipfile.ZipFile, "write", refused)
    answer = served.get(f"/api/v1/cases/{CASE_A}/dossier.zip")
    assert answer.status_code == 200, answer.text
    with zipfile.ZipFile(io.BytesIO(answer.content)) as zf:
        manifest = json.loads(zf.read("manifest.json"))
        assert manifest["documents"] and all(hashlib.sha256(zf.read(d["file"])).hexdigest() == d["sha256"]
                                             for d in manifest["documents"])



def test_a_dossier_zip_with_a_corrupt_object_is_a_500_and_leaves_no_zip(tmp_path, monkeypatch):
    """review r2cli N6: a member whose object fails its SHA-256 is closed into the temp ZIP before Mismatch
    propagates; the ZIP must then never be sent nor kept, and the failed retrieval carries the actual checksum."""
    import hashlib
    import os
    import stat
    import tempfile

    settings = seed(tmp_path / "data", tmp_path / "work")
    with Archive.open(settings) as archive:
        token = access.create_token(archive.index, "onestop-a", "officer", [AGENCY_A])
        path = archive.objects.root / archive.documents(CASE_A)[0].pdfa_key
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # bit rot: same length, other bytes
    os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)
    path.write_bytes(bytes(data))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    with TestClient(create_app(settings), base_url="http://127.0.0.1",
                    headers={"authorization": f"Bearer {token}"}) as client:
        answer = client.get(f"/api/v1/cases/{CASE_A}/dossier.zip")
        assert answer.status_code == 500 and answer.json()["error"] == "fixity-failed"
        assert not answer.headers["content-type"].startswith("application/zip")
        assert list((tmp_path / "tmp").rglob("*.zip")) == []
        failed = [e for e in client.get(f"/api/v1/cases/{CASE_A}/events").json()["events"]
                  if e["event_type"] == "retrieved" and e["outcome"] == "failure"]
    assert len(failed) == 1 and failed[0]["checksum"] == hashlib.sha256(bytes(data)).hexdigest()
    assert "not written" in failed[0]["detail"]
