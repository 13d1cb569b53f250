"""Hashes and atomic writes: a reader sees no file or the whole file, never a partial one."""

from __future__ import annotations

import hashlib
import io
import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from digitize import fsutil

EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
ABC_SHA256 = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_sha256_known_vectors(tmp_path):
    assert fsutil.sha256_bytes(b"") == EMPTY_SHA256
    assert fsutil.sha256_bytes(b"abc") == ABC_SHA256
    assert fsutil.sha256_stream(io.BytesIO(b"abc")) == ABC_SHA256
    path = tmp_path / "f.bin"
    path.write_bytes(b"abc")
    assert fsutil.sha256_file(path) == ABC_SHA256


def test_sha256_streams_larger_than_one_chunk(tmp_path):
    data = os.urandom(fsutil.CHUNK * 2 + 17)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    assert fsutil.sha256_file(path) == hashlib.sha256(data).hexdigest() == fsutil.sha256_bytes(data)


def leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".part"))


def test_atomic_write_creates_parents_and_leaves_no_temp(tmp_path):
    target = tmp_path / "hồ sơ" / "2024" / "QĐ-127.pdf"
    fsutil.atomic_write_bytes(target, b"%PDF-1.7")
    assert target.read_bytes() == b"%PDF-1.7"
    fsutil.atomic_write_text(target.with_suffix(".txt"), "Đà Nẵng")
    assert target.with_suffix(".txt").read_bytes() == "Đà Nẵng".encode("utf-8")
    assert leftovers(target.parent) == []


def test_atomic_path_replaces_the_whole_file(tmp_path):
    target = tmp_path / "out.pdf"
    target.write_bytes(b"old" * 1000)
    with fsutil.atomic_path(target, suffix=".pdf") as tmp:
        assert tmp.parent == target.parent and tmp.name.endswith(".pdf.part") and tmp != target
        tmp.write_bytes(b"new")
        assert target.read_bytes() == b"old" * 1000  # not visible before the block ends
    assert target.read_bytes() == b"new"
    assert leftovers(tmp_path) == []


def test_failure_leaves_target_untouched_and_removes_temp(tmp_path):
    target = tmp_path / "out.pdf"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with fsutil.atomic_path(target) as tmp:
            tmp.write_bytes(b"half a fi")
            raise RuntimeError("veraPDF said no")
    assert target.read_bytes() == b"old"
    assert leftovers(tmp_path) == []


def test_interrupt_also_cleans_up(tmp_path):
    target = tmp_path / "new.pdf"
    with pytest.raises(KeyboardInterrupt):
        with fsutil.atomic_path(target) as tmp:
            tmp.write_bytes(b"x")
            raise KeyboardInterrupt
    assert not target.exists() and leftovers(tmp_path) == []


def test_output_gets_normal_umask_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        target = tmp_path / "out.pdf"
        fsutil.atomic_write_bytes(target, b"x")
        assert stat.S_IMODE(target.stat().st_mode) == 0o644
    finally:
        os.umask(umask)


def test_work_folders_of_dead_processes_are_swept_and_live_ones_kept(tmp_path) -> None:
    """A conversion killed outright (OOM, kill -9) leaves its page folder; the next process removes it."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    host, namespace = socket.gethostname(), os.stat("/proc/self/ns/pid").st_ino
    old = time.time() - 2 * fsutil.ORPHAN_AGE

    def folder(name: str, age: float = old) -> Path:
        path = tmp_path / name
        path.mkdir()
        (path / "page-00001.pdf").write_bytes(b"%PDF")
        os.utime(path, (age, age))
        return path

    orphan = folder(f"digitize-{dead}-{namespace}@{host}-pages-abc_12x")
    mine = folder(f"digitize-{os.getpid()}-{namespace}@{host}-pages-k2j3h4g5")
    recent = folder(f"digitize-{dead}-{namespace}@{host}-job-q1w2e3r4", age=time.time())
    elsewhere = folder(f"digitize-{dead}-{namespace}@another-host.example-pages-z9x8c7v6")
    other_container = folder(f"digitize-{dead}-{namespace + 1}@{host}-pages-m5n6b7v8")
    no_such_pid = folder(f"digitize-9999999999-{namespace}@{host}-pages-a1s2d3f4")  # not a pid: kept
    unrelated = folder("digitize-tests-abc")
    assert fsutil.sweep_orphans(tmp_path, force=True) == [orphan]
    assert not orphan.exists()
    assert all(p.exists() for p in (mine, recent, elsewhere, other_container, no_such_pid, unrelated))
    assert fsutil.sweep_orphans(tmp_path) == []  # not again within the hour


def test_a_work_folder_is_named_for_its_process_and_removed_after(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(fsutil.tempfile, "tempdir", str(tmp_path))
    with fsutil.work_dir("pages") as tmp:
        found = fsutil.WORK_DIR.match(tmp.name)
        assert found and (int(found[1]), found[3]) == (os.getpid(), socket.gethostname())
        assert tmp.parent == tmp_path
    assert not tmp.exists()


# --- names at NAME_MAX and folders other accounts can write ------------------------------------------

@pytest.mark.parametrize("name", ["h" * 251 + ".pdf", "Đ" * 125 + "x.pdf", "ả" * 83 + ".tiff"],
                         ids=lambda n: f"{len(n.encode())}B")
def test_an_atomic_write_beside_a_name_at_the_limit_uses_a_short_temp_name(tmp_path, name):
    assert 251 <= len(name.encode()) <= 255
    fsutil.atomic_write_text(tmp_path / name, "x")  # the temp name must fit too (Errno 36 before)
    assert (tmp_path / name).read_text() == "x" and [p.name for p in tmp_path.iterdir()] == [name]


def test_fit_name_keeps_the_suffix_whole_characters_and_distinct_names():
    a, b = "Đơn " * 70 + "a.pdf", "Đơn " * 70 + "b.pdf"
    fa, fb = fsutil.fit_name(a, 10), fsutil.fit_name(b, 10)
    assert len(fa.encode()) <= 245 and fa.endswith(".pdf") and fa != fb
    fa.encode().decode("utf-8")  # no half character
    assert fsutil.fit_name("short.pdf", 10) == "short.pdf"


def test_walk_dirs_refuses_a_symlink_and_the_check_refuses_foreign_or_open_folders(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(NotADirectoryError):
        fsutil.walk_dirs(tmp_path, ["link"])
    (tmp_path / "theirs").mkdir()
    os.chown(tmp_path / "theirs", 65534, 65534)
    (tmp_path / "open").mkdir()
    (tmp_path / "open").chmod(0o777)
    from digitize.errors import FileAccessError

    for name in ("theirs", "open"):
        with pytest.raises(FileAccessError):
            fsutil.walk_dirs(tmp_path, [name], check=fsutil.private_dir_check)
    os.close(fsutil.walk_dirs(tmp_path, ["made", "here"], create=True, check=fsutil.private_dir_check))
    assert (tmp_path / "made" / "here").is_dir()


def test_write_text_at_replaces_a_planted_symlink_instead_of_writing_through_it(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("keep")
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "x.error.txt").symlink_to(victim)
    fd = os.open(folder, os.O_RDONLY)
    try:
        fsutil.write_text_at(fd, "x.error.txt", "report")
    finally:
        os.close(fd)
    assert victim.read_text() == "keep" and not (folder / "x.error.txt").is_symlink()
    assert (folder / "x.error.txt").read_text() == "report"


def test_a_pinned_path_reads_the_open_file_under_its_name_whatever_the_name_points_at_now(tmp_path):
    from digitize.fsutil import open_regular, pinned_path

    scan, other = tmp_path / "scan.pdf", tmp_path / "other"
    scan.write_bytes(b"%PDF- the scan")
    other.write_bytes(b"secret")
    fd = open_regular(scan)
    try:
        scan.unlink()
        scan.symlink_to(other)  # swapped after the open
        with pinned_path(fd, "scan.pdf") as pinned:
            assert pinned.name == "scan.pdf" and pinned.read_bytes() == b"%PDF- the scan"
        assert not pinned.parent.exists()
    finally:
        os.close(fd)


def _refuse_folder_fsync(monkeypatch) -> list[str]:
    """os.fsync that refuses folders as some shares do (EINVAL); the kinds synced, in order."""
    real, synced = os.fsync, []

    def fsync(fd):
        kind = "dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"
        synced.append(kind)
        if kind == "dir":
            raise OSError(22, "Invalid argument")
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return synced


def test_fsync_path_strict_raises_and_lax_ignores(tmp_path, monkeypatch):
    """One helper for both callers: strict (failed/ and uploads: a sync they promise) raises, lax
    (atomic writes, the object store: a sync as a bonus) goes on; a path or a descriptor, left open."""
    (tmp_path / "f").write_bytes(b"x")
    fsutil.fsync_path(tmp_path / "f")
    fsutil.fsync_path(tmp_path)
    with pytest.raises(FileNotFoundError):
        fsutil.fsync_path(tmp_path / "gone")
    fsutil.fsync_path(tmp_path / "gone", strict=False)
    synced = _refuse_folder_fsync(monkeypatch)
    with pytest.raises(OSError):
        fsutil.fsync_path(tmp_path)
    fsutil.fsync_path(tmp_path, strict=False)
    fd = os.open(tmp_path, os.O_RDONLY)
    try:
        with pytest.raises(OSError):
            fsutil.fsync_path(fd)
        fsutil.fsync_path(fd, strict=False)
        os.fstat(fd)  # still open
    finally:
        os.close(fd)
    assert synced == ["dir"] * 4
    fsutil.atomic_write_bytes(tmp_path / "out.pdf", b"%PDF")  # an atomic write syncs its folder, leniently
    assert (tmp_path / "out.pdf").read_bytes() == b"%PDF" and synced[-2:] == ["file", "dir"]
    assert leftovers(tmp_path) == []


def test_no_second_fsync_helper_remains():
    """The failed-files module and the upload queue use fsutil's helper, not their own."""
    from pipelines import failed
    from web import uploads

    assert not hasattr(failed, "fsync_path") or failed.fsync_path is fsutil.fsync_path
    assert uploads.fsync_path is fsutil.fsync_path
    assert not hasattr(fsutil, "_fsync_dir")


def test_sweep_parts_removes_only_our_abandoned_part_files(tmp_path):
    """A copy, reason or report killed mid-write leaves a part file for ever unless swept; a fresh one may be
    another watcher's write in progress, and other names, links and other accounts' files are not ours."""
    old = time.time() - fsutil.PART_AGE - 60
    (tmp_path / "case").mkdir()
    ours = [".scan.pdf.0123456789ab.part", ".0123456789ab.part", "case/.report.json.0123456789ab.part",
            "case/.out.pdf.abcdef123456.pdf.part"]
    kept = ["report.part", ".x.part", "scan.pdf", "case/.fresh.pdf.0123456789ab.part", ".foreign.0123456789ab.part",
            ".report.download.part", "case/.job.json.ab_cd12z.part"]  # a browser's, an old mkstemp-style name
    for name in ours + kept:
        (tmp_path / name).write_bytes(b"x")
        if "fresh" not in name:
            os.utime(tmp_path / name, (old, old))
    if os.geteuid() == 0:
        os.chown(tmp_path / ".foreign.0123456789ab.part", 4242, -1)
    else:
        kept.remove(".foreign.0123456789ab.part")
        (tmp_path / ".foreign.0123456789ab.part").unlink()
    target = tmp_path.parent / f"{tmp_path.name}-target"
    target.mkdir()
    (target / ".t.0123456789ab.part").write_bytes(b"not ours to remove")
    os.utime(target / ".t.0123456789ab.part", (old, old))
    (tmp_path / ".link.0123456789ab.part").symlink_to(target / ".t.0123456789ab.part")
    (tmp_path / "linked").symlink_to(target, target_is_directory=True)
    os.utime(tmp_path / ".link.0123456789ab.part", (old, old), follow_symlinks=False)
    removed = fsutil.sweep_parts(tmp_path)
    assert sorted(removed) == sorted(ours)
    assert all(not os.path.lexists(tmp_path / n) for n in ours) and all((tmp_path / n).exists() for n in kept)
    assert (tmp_path / ".link.0123456789ab.part").is_symlink()
    assert (target / ".t.0123456789ab.part").read_bytes() == b"not ours to remove"
    fd = os.open(tmp_path, os.O_RDONLY)
    try:
        assert fsutil.sweep_parts(fd) == []
        assert fsutil.sweep_parts(fd, max_age=0) == ["case/.fresh.pdf.0123456789ab.part"]
    finally:
        os.close(fd)


def test_sweep_parts_of_a_folder_only_leaves_its_subfolders(tmp_path):
    old = time.time() - fsutil.PART_AGE - 60
    (tmp_path / "case").mkdir()
    for name in (".a.pdf.0123456789ab.part", "case/.b.pdf.0123456789ab.part"):
        (tmp_path / name).write_bytes(b"x")
        os.utime(tmp_path / name, (old, old))
    assert fsutil.sweep_parts(tmp_path, tree=False) == [".a.pdf.0123456789ab.part"]
    assert (tmp_path / "case" / ".b.pdf.0123456789ab.part").exists()


def test_sweep_parts_ages_files_by_the_folders_clock_not_ours(tmp_path, monkeypatch):
    """Review hard15 L3: the age was our clock against the share's mtimes; an hour of skew (an SMB server
    stamping local time) made another watcher's live part look abandoned. "Now" comes from a probe file
    written in the folder, and the probe leaves nothing behind."""
    live = tmp_path / ".scan.pdf.0123456789ab.part"
    live.write_bytes(b"being copied")
    real = time.time
    monkeypatch.setattr(fsutil.time, "time", lambda: real() + 2 * fsutil.PART_AGE)  # our clock two hours ahead
    assert fsutil.sweep_parts(tmp_path) == []
    assert os.listdir(tmp_path) == [live.name]


def test_sweep_parts_does_not_read_folders_unchanged_for_long(tmp_path):
    """Review hard15 L3: every start walked all of done/ (years of scans). A folder without subfolders that
    has not changed for PART_RECENT holds no part file made since (making one changes its folder): not read.
    A part file left there by a crash and not swept before that (no watcher running for PART_RECENT) thus stays:
    a known limit (README, Known limits; review2 hard16 L8), not something this test requires."""
    old = time.time() - fsutil.PART_RECENT - 86400
    for case in ("old", "new"):
        (tmp_path / case).mkdir()
        (tmp_path / case / ".scan.pdf.0123456789ab.part").write_bytes(b"x")
        os.utime(tmp_path / case / ".scan.pdf.0123456789ab.part", (old, old))
    os.utime(tmp_path / "old", (old, old))
    listed = []
    real_scandir = os.scandir

    def scandir(fd):
        listed.append(os.readlink(f"/proc/self/fd/{fd}") if isinstance(fd, int) else str(fd))
        return real_scandir(fd)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fsutil.os, "scandir", scandir)
        assert fsutil.sweep_parts(tmp_path) == ["new/.scan.pdf.0123456789ab.part"]
    assert str(tmp_path / "old") not in listed


def test_fit_name_counts_and_keeps_the_bytes_of_a_name_that_is_not_utf8() -> None:
    """A legacy name's odd bytes were measured as if encodable ('surrogates not allowed'); the part
    file beside such an output is named in valid UTF-8, which veraPDF's JVM can open."""
    import os

    from digitize import fsutil

    long_latin1 = os.fsdecode(b"h\xe9" * 200 + b".pdf")
    fitted = fsutil.fit_name(long_latin1)
    raw = os.fsencode(fitted)
    assert len(raw) <= fsutil.NAME_MAX and raw.startswith(b"h\xe9h\xe9") and raw.endswith(b".pdf")
    vietnamese = "Đơn" * 100 + ".pdf"
    assert fsutil.fit_name(vietnamese).encode("utf-8")  # never half a character
    part = fsutil._part_name(os.fsdecode(b"b\xe1n.pdf"))
    assert part.encode("utf-8").startswith(b".b\\xe1n.pdf.") and fsutil.PART_NAMES.match(part)
    assert fsutil.PART_NAMES.match(fsutil._part_name("new\nline.pdf"))  # swept after a crash too
