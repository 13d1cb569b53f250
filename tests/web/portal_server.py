"""`digitize serve` as a real process on a free loopback port, for the API, browser and SSO tests."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from portal_data import digitize_env


@dataclass
class Portal:
    url: str
    data_dir: Path
    tokens: dict[str, str]
    process: subprocess.Popen | None = None

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(process: subprocess.Popen, url: str, timeout: float, log: Path) -> None:
    """Poll ``url`` until it answers; a server that exits or stays silent fails the test with its log."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"{process.args[0]} did not start: " + log.read_text())
            time.sleep(0.2)


def start_portal(data_dir: Path, tokens: dict[str, str], **env: str) -> Portal:
    """`digitize serve` as a real process on a free loopback port (two worker processes, as on the 2-core CI
    machine, unless ``DIGITIZE_WEB_WORKERS`` is given); ``Portal.stop()`` ends it."""
    port = free_port()
    log = open(data_dir.parent / "serve.log", "w")
    process = subprocess.Popen([sys.executable, "-m", "digitize", "serve", "--port", str(port)],
                               env={**digitize_env(data_dir), "DIGITIZE_WEB_WORKERS": "2", **env}, stdout=log, stderr=subprocess.STDOUT,
                               cwd=str(data_dir.parent))
    log.close()
    url = f"http://127.0.0.1:{port}"
    wait_until_up(process, url + "/healthz", 60, data_dir.parent / "serve.log")
    return Portal(url, data_dir, tokens, process)
