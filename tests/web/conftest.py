"""Portal fixtures: a seeded fresh data dir, accounts made by the CLI, a real `digitize serve` on loopback."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from portal_data import AGENCY_A, AGENCY_B, PASSWORD, digitize, seed  # noqa: E402
from portal_server import Portal, start_portal  # noqa: E402


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
    data_dir, tokens = seeded
    portal = start_portal(data_dir, tokens)
    yield portal
    portal.stop()
