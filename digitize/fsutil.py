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


WORK_DIR = re.compile(r"^digitize-(\d+)@(.+)-[a-z]+-\w+$")  # digitize-<pid>@<host>-<kind>-<random>
ORPHAN_AGE = 3600.0  # seconds untouched before a dead process's folder is removed
_swept = False


@contextlib.contextmanager
def work_dir(kind: str) -> Iterator[Path]:
    """A private temp folder for one job's intermediate files, removed when done. It is named
    after this process and host, so folders left by processes killed outright (the OOM killer,
    kill -9) are removed by the next process of this machine that makes one."""
    sweep_orphans()
    with tempfile.TemporaryDirectory(prefix=f"digitize-{os.getpid()}@{socket.gethostname()}-{kind}-") as tmp:
        yield Path(tmp)


def sweep_orphans(folder: str | os.PathLike | None = None, force: bool = False) -> list[Path]:
    """Remove the work folders of this host's dead processes, once per process (or when FORCE): the removed."""
    global _swept
    if _swept and not force:
        return []
    _swept = True
    host, now, removed = socket.gethostname(), time.time(), []
    try:
        entries = list(os.scandir(folder or tempfile.gettempdir()))
    except OSError:
        return []
    for entry in entries:
        found = WORK_DIR.match(entry.name)
        if found is None or found[2] != host or _alive(int(found[1])):
            continue
        try:
            if not entry.is_dir(follow_symlinks=False) or now - entry.stat().st_mtime < ORPHAN_AGE:
                continue
        except OSError:
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        removed.append(Path(entry.path))
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # another user's
    return True
