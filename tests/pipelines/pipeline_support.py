"""Pipeline test helpers: settings for a throwaway archive (folder+SQLite or MinIO+PostgreSQL) and CLI runs.

Real converter, real Tesseract, real servers (from tests/servers.py via the shared conftest); veraPDF
is left to the converter's own tests (a JVM per document would triple these tests' time).
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Callable

from digitize.config import Settings

try:
    from tests.servers import MINIO_PASSWORD, MINIO_USER, start_minio, wait_until
except ModuleNotFoundError:
    from servers import MINIO_PASSWORD, MINIO_USER, start_minio, wait_until

ROOT = Path(__file__).resolve().parents[2]
WAIT = 120.0  # seconds any wait-for-condition may take before the test fails
QUEUE_SECRET = secrets.token_urlsafe(32)  # signs queue tasks (pipelines/taskauth.py); one per test session


def make_settings(data_dir: Path, store_url: str = "", dsn: str = "") -> Settings:
    settings = Settings(data_dir=str(data_dir))
    settings.convert.validate = False
    settings.convert.jobs = 1
    settings.store.url = store_url
    settings.store.access_key = MINIO_USER if store_url.startswith("s3") else ""
    settings.store.secret_key = MINIO_PASSWORD if store_url.startswith("s3") else ""
    settings.index.dsn = dsn
    settings.watch.stable_seconds = 0.5
    settings.watch.rescan = 2.0
    settings.queue.secret = QUEUE_SECRET  # used only when a test sets queue.url
    return settings


def settings_env(settings: Settings) -> dict[str, str]:
    """The same settings as DIGITIZE_* variables, for a CLI in a separate process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGITIZE_")}
    env.update(DIGITIZE_CONFIG="/dev/null", DIGITIZE_DATA_DIR=settings.data_dir,
               DIGITIZE_CONVERT_VALIDATE=str(settings.convert.validate).lower(),
               DIGITIZE_CONVERT_JOBS=str(settings.convert.jobs),
               DIGITIZE_STORE_URL=settings.store.url, DIGITIZE_STORE_ACCESS_KEY=settings.store.access_key,
               DIGITIZE_STORE_SECRET_KEY=settings.store.secret_key, DIGITIZE_INDEX_DSN=settings.index.dsn,
               DIGITIZE_WATCH_STABLE_SECONDS=str(settings.watch.stable_seconds),
               DIGITIZE_WATCH_RESCAN=str(settings.watch.rescan), DIGITIZE_WATCH_ON_SUCCESS=settings.watch.on_success)
    if settings.queue.secret:
        env.update(DIGITIZE_QUEUE_SECRET=settings.queue.secret)
    return env


def digitize_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "digitize.cli", *args]


def stop_group(process: subprocess.Popen) -> None:
    """End a server started with start_new_session=True and its children: SIGTERM, then SIGKILL after 60 s."""
    import signal

    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def run_cli(settings: Settings, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(digitize_cmd(*args), env=settings_env(settings), cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def wait_for(check: Callable[[], bool], what: str) -> None:
    """Poll (never a timed assertion): fails only if ``what`` has not happened after WAIT seconds."""
    wait_until(check, what, timeout=WAIT)


def stored_rows(settings: Settings):
    """Every document row the index holds as stored (duplicates would show here)."""
    from storage.archive import Archive

    with Archive.open(settings) as archive:
        return archive.index.stored_documents()
