"""Advisory locks between writers on one machine: ``flock`` on a lock file.

A lock is held by an open file, so the kernel releases it however its holder ends (kill -9 included): a
lock never outlives a dead writer, and nothing has to judge whether a holder is still alive (no lease
clock). ``flock`` locks belong to the open file, not the process, so two holders in one process (two
threads, two Archive objects) exclude each other too. The lock file is removed by its holder when it
lets go; a waiter that then wins the lock on the removed file notices (another inode is at the path, or
none) and tries again, so two writers never both believe they hold one name.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path
from typing import Callable, Iterator

POLL = 0.05  # seconds between tries, doubling up to POLL_MAX
POLL_MAX = 0.5


class LockTimeout(Exception):
    """The lock was still held by another writer when the wait ended."""


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (held.st_dev, held.st_ino)


@contextlib.contextmanager
def held(path: Path, wait: float | None = None,
         on_busy: Callable[[], None] | None = None) -> Iterator[Callable[[], bool]]:
    """Hold the exclusive lock named by ``path`` (created 0600, never through a symlink) for the block.

    ``wait``: seconds to wait for a live holder (None: as long as it lives), then LockTimeout;
    ``on_busy`` is called once when the lock is found held (a waiter may say so). The file is removed
    on leaving, while still held. The block gets a check: whether the lock file at ``path`` is still
    the one held (someone may have removed it, and another writer taken a new one)."""
    deadline = None if wait is None else time.monotonic() + wait
    pause, told = POLL, False
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            if not told and on_busy is not None:
                on_busy()
            told = True
            if deadline is not None and time.monotonic() >= deadline:
                raise LockTimeout(str(path)) from None
            time.sleep(pause)
            pause = min(pause * 2, POLL_MAX)
            continue
        except BaseException:
            os.close(fd)
            raise
        if _same_file(fd, path):
            break
        os.close(fd)  # won the lock of a file its holder removed meanwhile: take the current one
    try:
        yield lambda: _same_file(fd, path)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.close(fd)
