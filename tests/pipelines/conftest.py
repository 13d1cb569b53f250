"""Pipeline test fixtures; the helpers live in pipeline_support.py (a unique name: two conftest modules exist)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from digitize.config import Settings

sys.path.insert(0, str(Path(__file__).parent))  # pipeline_support.py and scans.py beside this file

from pipeline_support import make_settings, start_minio  # noqa: E402


@pytest.fixture
def folder_settings(tmp_path) -> Settings:
    return make_settings(tmp_path / "data")


@pytest.fixture(params=["folder+sqlite", "minio+postgresql"])
def backend_settings(request, tmp_path) -> Settings:
    if request.param == "folder+sqlite":
        return make_settings(tmp_path / "data")
    minio = request.getfixturevalue("minio_server")
    return make_settings(tmp_path / "data", minio.url(request.getfixturevalue("unique_bucket")),
                         request.getfixturevalue("postgres_dsn"))


@pytest.fixture
def own_minio(tmp_path):
    """A MinIO server for this test alone, so it can be stopped and restarted mid-run."""
    server = start_minio(tmp_path / "own-minio")
    yield server
    server.stop()
