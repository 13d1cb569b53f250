"""Portal fixtures: a seeded fresh data dir, accounts made by the CLI, a real `digitize serve` on loopback."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from portal_data import AGENCY_A, AGENCY_B, PASSWORD, digitize, digitize_env, seed  # noqa: E402


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


def make_accounts(data_dir: Path) -> dict[str, str]:
    """Users and tokens through the real CLI, as an administrator would."""
    digitize(data_dir, "users", "add", "officer-a", "--role", "officer", "--agency", AGENCY_A, "--password-stdin",
             stdin=PASSWORD + "\n")
    digitize(data_dir, "users", "add", "scanner-a", "--role", "scanner", "--agency", AGENCY_A, "--password-stdin",
             stdin=PASSWORD + "\n")
    digitize(data_dir, "users", "add", "admin", "--role", "admin", "--password-stdin", stdin=PASSWORD + "\n")
    for name, role in [("officer-b", "officer"), ("scanner-b", "scanner")]:
        digitize(data_dir, "users", "add", name, "--role", role, "--agency", AGENCY_B, "--password-stdin",
                 stdin=PASSWORD + "\n")
    tokens = {}
    for name, role, agency in [("onestop-a", "officer", AGENCY_A), ("onestop-b", "officer", AGENCY_B),
                               ("scanner-a", "scanner", AGENCY_A), ("scanner-b", "scanner", AGENCY_B),
                               ("archivist", "archivist", None)]:
        args = ["tokens", "create", name, "--role", role] + (["--agency", agency] if agency else [])
        tokens[name] = digitize(data_dir, *args).strip()
    return tokens


@pytest.fixture(scope="module")
def seeded(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("portal")
    data_dir = root / "data"
    seed(data_dir, root / "work")
    return data_dir, make_accounts(data_dir)


def start_portal(data_dir: Path, tokens: dict[str, str], **env: str) -> Portal:
    """`digitize serve` as a real process on a free loopback port; ``Portal.stop()`` ends it."""
    port = free_port()
    log = open(data_dir.parent / "serve.log", "w")
    process = subprocess.Popen([sys.executable, "-m", "digitize", "serve", "--port", str(port)],
                               env={**digitize_env(data_dir), **env}, stdout=log, stderr=subprocess.STDOUT,
                               cwd=str(data_dir.parent))
    log.close()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(url + "/healthz", timeout=2).read()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail("digitize serve did not start: " + (data_dir.parent / "serve.log").read_text())
            time.sleep(0.2)
    return Portal(url, data_dir, tokens, process)


@pytest.fixture(scope="module")
def portal(seeded) -> Portal:
    data_dir, tokens = seeded
    portal = start_portal(data_dir, tokens)
    yield portal
    portal.stop()
