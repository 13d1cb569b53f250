"""``digitize serve``'s server processes: spawned by uvicorn, they log like the parent (review rev17ops M2)."""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys

from digitize.config import Settings

SECRET = "S3cr3tKeyForTheStoreOnly-0042"


def _server_process(settings: Settings, factory, log_path: str) -> None:
    """What uvicorn's Multiprocess child does: a fresh interpreter calls the factory; then a portal record."""
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(fd, 2)
    sys.stderr = os.fdopen(2, "w", buffering=1)
    factory()
    logging.getLogger("digitize.web").warning("boom %s\nforged", settings.store.secret_key)
    sys.stderr.flush()


def test_a_spawned_server_process_masks_and_formats_its_log(tmp_path):
    from web.cli import AppFactory

    settings = Settings(data_dir=str(tmp_path / "data"))
    settings.store.secret_key = SECRET
    factory = AppFactory(settings)  # made in the parent, as serve_cmd does
    log_path = tmp_path / "server.log"
    child = multiprocessing.get_context("spawn").Process(target=_server_process,
                                                          args=(settings, factory, str(log_path)))
    child.start()
    child.join(120)
    assert child.exitcode == 0
    text = log_path.read_text()
    [line] = [line for line in text.splitlines() if "boom" in line]
    assert SECRET not in text and "boom *** forged" in line and " digitize: WARNING: " in line


PG_PASSWORD, AWS_KEY = "pgSecretPw99-0042", "awsSecretKey-0042-xyz"


def _environ_and_log(log_path: str) -> bytes:
    """In the upload worker: a record with a secret, a line break and ESC, to a file; then what a page worker
    it forks reads in its /proc/self/environ."""
    from digitize import pageworkers

    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(fd, 2)
    logging.getLogger("digitize.web").warning("store failed for %s\nforged \x1b[2J", SECRET)
    return pageworkers.run(_read_environ, [(1,)], processes=1, deadline=60)[0]


def _read_environ(_=None) -> bytes:
    with open("/proc/self/environ", "rb") as f:
        return f.read()


def test_the_upload_worker_masks_its_log_and_hands_no_secret_to_page_workers(tmp_path, monkeypatch):
    """review2 r2ops N1, N2: the spawned upload worker starts like a server process."""
    from pipelines import logs
    from web.uploads import conversion_worker

    monkeypatch.setenv("PGPASSWORD", PG_PASSWORD)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_KEY)
    settings = Settings(data_dir=str(tmp_path / "data"))
    settings.store.secret_key = SECRET
    state = logs.snapshot()
    logs.setup(logging.WARNING)  # the CLI's logging, which the worker must take over
    try:
        pool = conversion_worker(settings)
    finally:
        logs.restore(state)
    try:
        environ = pool.submit(_environ_and_log, str(tmp_path / "worker.log")).result(120)
    finally:
        pool.shutdown()
    text = (tmp_path / "worker.log").read_text()
    assert SECRET not in text and "\x1b" not in text
    [line] = text.splitlines()
    assert " digitize: WARNING: store failed for *** forged" in line
    assert PG_PASSWORD.encode() not in environ and AWS_KEY.encode() not in environ


def _server_environ(factory) -> bytes:
    factory()
    return _read_environ()


def test_a_spawned_server_process_wipes_its_environ_block(tmp_path, monkeypatch):
    """review2 r2ops N1: uvicorn's server processes get a new execve block; the factory zeroes the secrets."""
    from concurrent.futures import ProcessPoolExecutor

    from web.cli import AppFactory

    monkeypatch.setenv("PGPASSWORD", PG_PASSWORD)
    factory = AppFactory(Settings(data_dir=str(tmp_path / "data")))
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        environ = pool.submit(_server_environ, factory).result(120)
    assert PG_PASSWORD.encode() not in environ
