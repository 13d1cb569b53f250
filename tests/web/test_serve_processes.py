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
