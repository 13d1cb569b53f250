"""Where veraPDF is found, and what a run does without it (issue 10, finding 5).

Validation asked for but impossible is a failure (exit 3, one line), never an output reported as
`"compliant": null`; a service account with no home of its own finds the copy setup.sh installs for
every user (DIGITIZE_SYSTEM_DIR, default /usr/local/lib/digitize).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from PIL import Image

from digitize import verapdf
from digitize.errors import ExitCode, MissingDependencyError
from tests.pages import render_text_page

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def scan(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("scan") / "scan.png"
    Image.fromarray(render_text_page(size=(620, 400), font_px=30)).save(path, dpi=(150, 150))
    return path


@pytest.fixture
def without_verapdf(tmp_path) -> dict[str, str]:
    """An environment in which no veraPDF can be found: an empty cache and system folder, none on PATH."""
    env = {k: v for k, v in os.environ.items() if k != "DIGITIZE_VERAPDF"}
    (tmp_path / "empty").mkdir()
    env.update(DIGITIZE_CACHE=str(tmp_path / "empty"), DIGITIZE_SYSTEM_DIR=str(tmp_path / "empty"),
               PATH=os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if not shutil.which("verapdf", path=p)),
               DIGITIZE_DATA_DIR=str(tmp_path / "data"), PYTHONPATH=str(ROOT))
    return env


def digitize(*args: str, env: dict[str, str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "digitize", *args], env=env, capture_output=True, text=True,
                          timeout=300, **kwargs)


def test_run_without_verapdf_fails_with_exit_3_and_one_line(without_verapdf, scan, tmp_path) -> None:
    out = tmp_path / "out.pdf"
    done = digitize("run", "--jobs", "1", str(scan), str(out), env=without_verapdf)
    assert done.returncode == ExitCode.missing_dependency, done.stderr
    assert done.stderr.startswith("digitize: veraPDF not found") and done.stderr.count("\n") == 1, done.stderr
    assert not out.exists()
    ok = digitize("run", "--jobs", "1", "--no-validate", str(scan), str(out), env=without_verapdf)
    assert ok.returncode == 0 and out.is_file(), ok.stderr
    out.unlink()
    off = digitize("run", "--jobs", "1", str(scan), str(out), env={**without_verapdf, "DIGITIZE_CONVERT_VALIDATE": "0"})
    assert off.returncode == 0 and out.is_file(), off.stderr


def test_watch_without_verapdf_fails_with_exit_3_and_one_line(without_verapdf, scan, tmp_path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    shutil.copy(scan, inbox / "000.00.31.H56-241015-0027.png")
    done = digitize("watch", "--once", str(inbox), env=without_verapdf)
    assert done.returncode == ExitCode.missing_dependency, done.stderr
    assert done.stderr.startswith("digitize: veraPDF not found") and done.stderr.count("\n") == 1, done.stderr
    assert (inbox / "000.00.31.H56-241015-0027.png").is_file()  # left for when veraPDF is there


def test_a_system_wide_copy_writable_by_others_is_not_run(tmp_path, monkeypatch) -> None:
    system = tmp_path / "system"
    system.mkdir()
    (tmp_path / "x.jar").write_bytes(b"PK")
    (system / "verapdf.classpath").write_text(f"{tmp_path / 'x.jar'}\n")
    monkeypatch.setenv("DIGITIZE_SYSTEM_DIR", str(system))
    monkeypatch.setenv("DIGITIZE_CACHE", str(tmp_path / "cache"))
    assert verapdf._classpath_file() == system / "verapdf.classpath"
    system.chmod(0o777)
    assert verapdf._classpath_file() == tmp_path / "cache" / "verapdf.classpath"
    system.chmod(0o755)
    os.chown(system / "verapdf.classpath", 65534, 65534)
    assert verapdf._classpath_file() == tmp_path / "cache" / "verapdf.classpath"
    monkeypatch.delenv("DIGITIZE_VERAPDF", raising=False)
    monkeypatch.setattr(verapdf, "command", lambda: None)
    with pytest.raises(MissingDependencyError, match="--no-validate"):
        verapdf.require(True)
    verapdf.require(False)


def test_a_service_account_without_a_home_validates_with_the_system_wide_copy(scan, monkeypatch) -> None:
    """What setup.sh installs is found by a run with no cache of its own, and runs as another user."""
    system = verapdf._system_dir()
    assert (system / "verapdf.classpath").is_file(), f"scripts/setup.sh installs veraPDF in {system}"
    work = Path(tempfile.mkdtemp(prefix="dsvc-"))
    try:
        work.chmod(0o755)
        env = {k: v for k, v in os.environ.items() if k not in ("DIGITIZE_VERAPDF", "DIGITIZE_CACHE")}
        env.update(HOME="/nonexistent", PYTHONPATH=str(ROOT), DIGITIZE_SYSTEM_DIR=str(system))
        done = digitize("run", "--jobs", "1", "--report", str(work / "report.json"), str(scan), str(work / "out.pdf"),
                        env=env)
        assert done.returncode == 0, done.stderr
        report = json.loads((work / "report.json").read_text())
        assert report["pdfa"]["compliant"] is True and report["pdfa"]["validator"].startswith("veraPDF"), report["pdfa"]
        # the same copy, run by a user who is not root (our Python may live under /root; Java does not)
        (work / "out.pdf").chmod(0o644)
        monkeypatch.setenv("DIGITIZE_CACHE", "/nonexistent")
        monkeypatch.delenv("DIGITIZE_VERAPDF", raising=False)
        verapdf._java_install.cache_clear()  # this process found root's cache before
        command, _ = verapdf._stream_command("2b")
        assert str(system) in " ".join(command)
        checked = subprocess.run(command, input=f"{work / 'out.pdf'}\n", capture_output=True, text=True, timeout=300,
                                 user=65534, group=65534, extra_groups=[], cwd="/")
        assert checked.stdout.split() == ["READY", "PASS"], checked.stdout + checked.stderr
    finally:
        verapdf._java_install.cache_clear()
        shutil.rmtree(work, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a folder to another account")
def test_root_never_runs_java_code_from_another_users_cache(tmp_path, monkeypatch) -> None:
    """sudo -E as root with HOME kept: that user's classpath, jars and class archive must not run as root."""
    tmp_path.chmod(0o755)
    fake = tmp_path / "fakehome"
    cache = fake / ".cache" / "digitize"
    cache.mkdir(parents=True)
    (fake / "evil.jar").write_bytes(b"PK")
    real = verapdf._system_dir() / "verapdf.classpath"
    (cache / "verapdf.classpath").write_text(f"{fake / 'evil.jar'}:{real.read_text().strip()}\n")
    (cache / "digitize-validator.jar").write_bytes(b"PK")
    for path in (fake, fake / ".cache", cache, *cache.iterdir(), fake / "evil.jar"):
        os.chown(path, 65534, 65534)
    monkeypatch.setenv("HOME", str(fake))
    monkeypatch.delenv("DIGITIZE_CACHE", raising=False)
    monkeypatch.delenv("DIGITIZE_VERAPDF", raising=False)
    verapdf._java_install.cache_clear()
    try:
        found = verapdf._stream_command("2b")
        if found is not None:
            command, archive = found
            assert str(fake) not in " ".join(command) and not archive.is_relative_to(fake), command
    finally:
        verapdf._java_install.cache_clear()


def test_a_cache_copy_with_a_jar_or_archive_others_can_write_is_not_run(tmp_path, monkeypatch) -> None:
    """Every jar on the classpath and the class archive are code: one writable by others makes the copy unusable."""
    tmp_path.chmod(0o755)
    cache, jars = tmp_path / "cache", tmp_path / "jars"
    cache.mkdir(mode=0o700)
    jars.mkdir()
    (jars / "a.jar").write_bytes(b"PK")
    (cache / "verapdf.classpath").write_text(f"{jars / 'a.jar'}\n")
    (cache / "digitize-validator.jar").write_bytes(b"PK")
    monkeypatch.setenv("DIGITIZE_CACHE", str(cache))
    monkeypatch.setenv("DIGITIZE_SYSTEM_DIR", str(tmp_path / "none"))
    monkeypatch.delenv("DIGITIZE_VERAPDF", raising=False)
    monkeypatch.setattr(verapdf.shutil, "which", lambda name: "/usr/bin/java" if name == "java" else None)
    verapdf._java_install.cache_clear()
    try:
        command, archive = verapdf._java_command()
        assert str(jars / "a.jar") in command
        archive.write_bytes(b"")
        archive.chmod(0o666)  # a class archive anyone could have written is neither mapped nor replaced
        assert verapdf._archive_flags(archive, "t") == ([], None)
        assert not any("SharedArchiveFile" in word for word in verapdf.command())
        for planted in (jars / "a.jar", jars, cache / "digitize-validator.jar"):
            planted.chmod(0o777 if planted.is_dir() else 0o666)
            verapdf._java_install.cache_clear()
            assert verapdf._java_command() is None, planted
            assert verapdf._stream_command("2b") is None, planted
            planted.chmod(0o755 if planted.is_dir() else 0o644)
    finally:
        verapdf._java_install.cache_clear()
