"""The API on MinIO + PostgreSQL (real servers on loopback): scope, search, ZIP hashes, Range, events."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile

import pytest
from fastapi.testclient import TestClient

from digitize.config import Settings
from portal_data import AGENCY_A, AGENCY_B, CASE_A, CASE_B, TEXT_A, TEXT_B, store_case
from storage import access
from storage.archive import Archive
from web.app import create_app

try:
    from tests.servers import MINIO_PASSWORD, MINIO_USER
except ModuleNotFoundError:
    from servers import MINIO_PASSWORD, MINIO_USER

pytestmark = pytest.mark.integration


def test_api_on_minio_and_postgresql(tmp_path, minio_server, postgres_dsn, unique_bucket):
    settings = Settings(data_dir=str(tmp_path / "data"))
    settings.index.dsn = postgres_dsn
    settings.store.url = minio_server.url(unique_bucket)
    settings.store.access_key, settings.store.secret_key = MINIO_USER, MINIO_PASSWORD
    with Archive.open(settings) as archive:
        store_case(archive, tmp_path, CASE_A, TEXT_A, AGENCY_A)
        store_case(archive, tmp_path, CASE_B, TEXT_B, AGENCY_B)
        a = {"authorization": "Bearer " + access.create_token(archive.index, "a", "officer", [AGENCY_A])}
        b = {"authorization": "Bearer " + access.create_token(archive.index, "b", "officer", [AGENCY_B])}
        docs = archive.documents(CASE_A)
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as api:
        assert api.get(f"/api/v1/cases/{CASE_A}", headers=a).status_code == 200
        assert api.get(f"/api/v1/cases/{CASE_A}", headers=b).status_code == 404
        hits = api.get("/api/v1/search", params={"q": "quyen su dung dat"}, headers=a).json()["hits"]
        assert {h["case_id"] for h in hits} == {CASE_A}
        with zipfile.ZipFile(io.BytesIO(api.get(f"/api/v1/cases/{CASE_A}/dossier.zip", headers=a).content)) as zf:
            manifest = json.loads(zf.read("manifest.json"))
            assert [hashlib.sha256(zf.read(e["file"])).hexdigest() for e in manifest["documents"]] == [
                d.pdfa_sha256 for d in docs]
        part = api.get(f"/api/v1/cases/{CASE_A}/documents/1/pdfa", headers={**a, "range": "bytes=0-9"})
        assert part.status_code == 206 and len(part.content) == 10
        events = api.get(f"/api/v1/cases/{CASE_A}/events", headers=a).json()["events"]
        assert any(e["actor"] == "token:a" for e in events)
        assert all(e["client"] is None for e in events)  # an officer's token: no addresses (review web15 L9)
