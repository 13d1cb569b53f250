"""scripts/system-copy.sh: what setup.sh, run as root, installs as the copy of veraPDF every account runs."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the system copy is made by root only")


def system_copy(cache: Path, system: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(ROOT / "scripts" / "system-copy.sh"), str(cache), str(system)],
                          capture_output=True, text=True, timeout=60)


def make_cache(tmp_path: Path, classpath: str) -> Path:
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o755)
    (cache / "verapdf-core.jar").write_bytes(b"PK jar")
    (cache / "digitize-validator.jar").write_bytes(b"PK validator")
    (cache / "verapdf.classpath").write_text(classpath.format(cache=cache))
    return cache


def test_root_copies_its_own_cache(tmp_path):
    cache = make_cache(tmp_path, "{cache}/verapdf-core.jar")
    done = system_copy(cache, tmp_path / "sys")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "sys" / "verapdf" / "verapdf-core.jar").read_bytes() == b"PK jar"
    assert (tmp_path / "sys" / "verapdf.classpath").read_text().strip() == str(tmp_path / "sys/verapdf/verapdf-core.jar")


@pytest.mark.parametrize("plant", ["foreign-cache", "listed-system-file", "symlinked-jar", "foreign-jar"])
def test_root_never_installs_what_another_account_could_plant(tmp_path, plant):
    """Review rev17ops M5: run as root with another user's HOME/DIGITIZE_CACHE, setup.sh installed any file
    that cache's classpath listed (/etc/shadow, world-readable) and that user's jar as root's trusted copy."""
    cache = make_cache(tmp_path, "/etc/hostname:{cache}/verapdf-core.jar" if plant == "listed-system-file"
                       else "{cache}/verapdf-core.jar")
    if plant == "foreign-cache":
        for path in (cache, *cache.iterdir()):
            os.chown(path, 65534, 65534)
    elif plant == "symlinked-jar":
        (cache / "verapdf-core.jar").unlink()
        (cache / "verapdf-core.jar").symlink_to("/etc/hostname")
    elif plant == "foreign-jar":
        os.chown(cache / "digitize-validator.jar", 65534, 65534)
    done = system_copy(cache, tmp_path / "sys")
    assert done.returncode != 0 and "refusing" in done.stderr
    assert not (tmp_path / "sys").exists()
