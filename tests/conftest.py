"""Shared fixtures: session-scoped real servers (see tests/servers.py)."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

# pytest puts tests/ first on sys.path (no __init__.py here), where tests/storage and tests/pipelines would
# shadow the real packages as namespace packages; the repository root must win.
ROOT = str(Path(__file__).resolve().parent.parent)
if sys.path[0] != ROOT:
    sys.path.insert(0, ROOT)

# Resident servers of this session (veraPDF validators and converters: the tests' and those of
# `digitize run` subprocesses, which inherit the environment) get a private folder, never the user's
# own, and are stopped at the end; the short idle time ends them soon even if pytest itself is killed.
VALIDATOR_DIR = tempfile.mkdtemp(prefix="digitize-tests-")
os.environ["DIGITIZE_VALIDATOR_DIR"] = VALIDATOR_DIR
os.environ["DIGITIZE_VALIDATOR_IDLE"] = "60"
os.environ["DIGITIZE_CONVERTER_IDLE"] = "60"


def pytest_sessionfinish(session, exitstatus) -> None:
    from digitize import resident

    resident.stop_servers(Path(VALIDATOR_DIR))
    shutil.rmtree(VALIDATOR_DIR, ignore_errors=True)


try:  # tests/ is a package in some layouts and a rootdir-inserted folder in others
    from tests.servers import MinioServer, PostgresServer, RedisServer, start_minio, start_postgres, start_redis
except ModuleNotFoundError:
    from servers import MinioServer, PostgresServer, RedisServer, start_minio, start_postgres, start_redis


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


@pytest.fixture
def own_postgres() -> PostgresServer:
    """A PostgreSQL server for this test alone, so it can be restarted under the code being tested."""
    server = start_postgres()
    yield server
    server.stop()


@pytest.fixture
def own_redis(tmp_path, pytestconfig) -> RedisServer:
    """A Redis server (the queue's broker and ledger) for this test alone, so it can be restarted mid-run."""
    with uncaptured(pytestconfig):
        server = start_redis(tmp_path / "own-redis")
    yield server
    with uncaptured(pytestconfig):
        server.stop()


@pytest.fixture(autouse=True)
def _pillow_pixel_limit():
    """Each read sets Pillow's process-wide bomb limit to its own ``max_pixels`` (digitize/sources.py), as a
    real process does with its one setting; a test reading with a small limit must not leave it for the next
    test in this process (the hard samples' generator makes an 8.7 MP image itself)."""
    from PIL import Image

    before = Image.MAX_IMAGE_PIXELS
    yield
    Image.MAX_IMAGE_PIXELS = before
