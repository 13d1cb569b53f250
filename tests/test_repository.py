"""The repository itself: what a clone brings (a clean clone is what CI and the quick start run)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def git(*args: str) -> subprocess.CompletedProcess:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=60)


def test_no_virtual_environment_is_tracked_and_a_linked_one_is_ignored() -> None:
    """A worktree's `.venv` is a symlink to the main checkout's venv; `.venv/` in .gitignore matched
    only a folder, so `git add -A` committed the link. A clone then had `.venv` pointing at a folder
    of another machine and setup.sh stopped ("File exists"); checking it out over a real venv
    replaced that venv with a link to itself."""
    assert git("ls-files", "--", ".venv", ".venv/*").stdout == ""
    assert git("check-ignore", "--no-index", "-q", ".venv").returncode == 0  # a file or link named .venv too
