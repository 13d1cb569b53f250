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


@pytest.fixture(scope="module")
def portal(seeded) -> Portal:
    """`digitize serve` as a real process on a free loopback port, stopped after the module."""
    data_dir, tokens = seeded
    port = free_port()
    log = open(data_dir.parent / "serve.log", "w")
    process = subprocess.Popen([sys.executable, "-m", "digitize", "serve", "--port", str(port)],
                               env=digitize_env(data_dir), stdout=log, stderr=subprocess.STDOUT,
                               cwd=str(data_dir.parent))
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
    yield Portal(url, data_dir, tokens, process)
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
    log.close()
