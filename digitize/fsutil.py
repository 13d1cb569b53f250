"""File helpers with the two guarantees the brief insists on: hashes computed once, outputs atomic."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import BinaryIO, Iterator

from . import resident

CHUNK = 1 << 20


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_umask()  # what open() would give; mkstemp's 0600 hides outputs on shared folders


def sha256_stream(stream: BinaryIO) -> str:
    h = hashlib.sha256()
    for block in iter(lambda: stream.read(CHUNK), b""):
        h.update(block)
    return h.hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    with open(path, "rb") as f:
        return sha256_stream(f)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temp path beside ``target``; on success fsync and rename it over ``target``.

    Same directory, so the rename is atomic on POSIX filesystems (and SMB/NFS shares):
    a reader sees either no file or the whole file, never a partial one.
    On any exception the temp file is removed and ``target`` is untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix + ".part", dir=target.parent)
    os.fchmod(fd, FILE_MODE)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, target)
        _fsync_dir(target.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def atomic_write_bytes(target: str | os.PathLike, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(target: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(target, text.encode("utf-8"))


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# digitize-<pid>-<pid namespace>@<host>-<kind>-<random>: which process made it, told apart from
# a same-numbered one of another container that shares /tmp and the host name
WORK_DIR = re.compile(r"^digitize-(\d{1,10})-(\d{1,20})@(.+)-[a-z]+-\w+$")
ORPHAN_AGE = 3600.0  # seconds untouched before a dead process's folder is removed
SWEEP_EVERY = 3600.0  # seconds between sweeps of one long-lived process (watch, batch workers)
_last_sweep: float | None = None


def _owner() -> str:
    """This process as work folders name it: pid, pid namespace and host."""
    try:
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        namespace = 0
    return f"{os.getpid()}-{namespace}@{socket.gethostname()}"


@contextlib.contextmanager
def work_dir(kind: str) -> Iterator[Path]:
    """A private temp folder for one job's intermediate files, removed when done. It is named
    after its process, so a folder left by a process killed outright (the OOM killer, kill -9)
    is removed, once untouched for ORPHAN_AGE, by a later sweep of this machine (each process
    sweeps when it makes its first folder, and hourly after)."""
    sweep_orphans()
    with tempfile.TemporaryDirectory(prefix=f"digitize-{_owner()}-{kind}-") as tmp:
        yield Path(tmp)


def sweep_orphans(folder: str | os.PathLike | None = None, force: bool = False) -> list[Path]:
    """Remove the work folders of dead processes of this host and pid namespace (at most every
    SWEEP_EVERY seconds unless FORCE); the folders removed."""
    global _last_sweep
    now = time.monotonic()
    if not force and _last_sweep is not None and now - _last_sweep < SWEEP_EVERY:
        return []
    _last_sweep = now
    mine = _owner().partition("-")[2]  # namespace@host
    removed = []
    try:
        entries = list(os.scandir(folder or tempfile.gettempdir()))
    except OSError:
        return []
    for entry in entries:
        found = WORK_DIR.match(entry.name)
        if found is None or f"{found[2]}@{found[3]}" != mine or _alive(int(found[1])):
            continue
        try:
            if not entry.is_dir(follow_symlinks=False) or time.time() - entry.stat().st_mtime < ORPHAN_AGE:
                continue
        except OSError:
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        if not os.path.lexists(entry.path):
            removed.append(Path(entry.path))
    return removed


def _alive(pid: int) -> bool:
    """Whether PID may be a live process; a number no process can have keeps its folder too."""
    return not 0 < pid < 2**22 or resident.alive(pid)  # 2**22: Linux's pid_max limit
