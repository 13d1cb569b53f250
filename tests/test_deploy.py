"""deploy/: the systemd unit's sandbox, as systemd itself rates it (issue 9, finding 11)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parent.parent / "deploy" / "digitize-watch.service"
TARGET = 3.0  # "OK" in systemd-analyze's words; the issue's ceiling


def exposure(unit: Path) -> float:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze missing: scripts/setup.sh installs Debian's systemd package")
    done = subprocess.run([analyze, "security", "--offline=yes", "--no-pager", str(unit)], capture_output=True,
                          text=True, timeout=120)
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", done.stdout + done.stderr)
    assert found, done.stdout + done.stderr
    return float(found.group(1))


def test_the_watch_unit_is_rated_at_most_3() -> None:
    assert exposure(UNIT) <= TARGET


def test_the_unit_keeps_what_the_issue_asks_for() -> None:
    """The settings a rating could trade away: files private, memory capped, the system read-only."""
    text = UNIT.read_text(encoding="utf-8")
    for line in ("UMask=0027", "StateDirectoryMode=0750", "ProtectSystem=strict", "ProtectHome=yes",
                 "PrivateTmp=yes", "PrivateDevices=yes", "ProtectProc=invisible", "NoNewPrivileges=yes",
                 "SystemCallFilter=@system-service"):
        assert re.search(rf"^{re.escape(line)}$", text, re.M), line
    assert re.search(r"^MemoryMax=\d+[KMG]?$", text, re.M)
    assert re.search(r"^RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6$", text, re.M)


WORKER_UNIT = UNIT.with_name("digitize-worker.service")


def test_the_worker_unit_is_rated_at_most_3_and_keeps_its_limits() -> None:
    assert exposure(WORKER_UNIT) <= TARGET
    text = WORKER_UNIT.read_text(encoding="utf-8")
    assert re.search(r"^ExecStart=\S+digitize worker\b", text, re.M)
    for line in ("UMask=0027", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes", "NoNewPrivileges=yes",
                 "SystemCallFilter=@system-service"):
        assert re.search(rf"^{re.escape(line)}$", text, re.M), line
    assert re.search(r"^MemoryMax=\d+[KMG]?$", text, re.M) and re.search(r"^TasksMax=\d+$", text, re.M)
