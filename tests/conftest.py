"""Shared fixtures: session-scoped real servers (see tests/servers.py)."""

from __future__ import annotations

import contextlib
import sys
import uuid
from pathlib import Path

import pytest

# pytest puts tests/ first on sys.path (no __init__.py here), where tests/storage and tests/pipelines would
# shadow the real packages as namespace packages; the repository root must win.
ROOT = str(Path(__file__).resolve().parent.parent)
if sys.path[0] != ROOT:
    sys.path.insert(0, ROOT)

try:  # tests/ is a package in some layouts and a rootdir-inserted folder in others
    from tests.servers import MinioServer, PostgresServer, start_minio, start_postgres
except ModuleNotFoundError:
    from servers import MinioServer, PostgresServer, start_minio, start_postgres


def uncaptured(config: pytest.Config):
    """Let server start/stop lines reach the real terminal, so CI logs show the servers ran."""
    capture = config.pluginmanager.getplugin("capturemanager")
    return capture.global_and_fixture_disabled() if capture else contextlib.nullcontext()


@pytest.fixture(scope="session")
def minio_server(tmp_path_factory, pytestconfig) -> MinioServer:
    with uncaptured(pytestconfig):
        server = start_minio(tmp_path_factory.mktemp("minio"))
    yield server
    with uncaptured(pytestconfig):
        server.stop()


@pytest.fixture(scope="session")
def postgres_server(pytestconfig) -> PostgresServer:
    with uncaptured(pytestconfig):
        server = start_postgres()
    yield server
    with uncaptured(pytestconfig):
        server.stop()


@pytest.fixture
def postgres_dsn(postgres_server) -> str:
    """A fresh, empty database per test on the shared server."""
    return postgres_server.create_database("t_" + uuid.uuid4().hex[:12])


@pytest.fixture
def unique_bucket() -> str:
    return "t-" + uuid.uuid4().hex[:16]
