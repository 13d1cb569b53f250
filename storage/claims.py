"""One writer at a time per original (review rev16batch M1).

A ``pending`` index row alone cannot tell an interrupted store from one still under way: a second writer
of the same original (identical copies in one batch, two machines on one archive, a queue redelivery)
used to "resume" the first's live row and leave a second PDF/A and sidecar in the store, orphaned, and a
second set of events. So :meth:`Archive.store` holds a claim on (original SHA-256, source_pages) from
before it reads the pending row until the row is stored. The claim is a lock its holder's death
releases, never a lease to judge: on PostgreSQL a session advisory lock (dropped with the connection),
on SQLite ``flock`` on a file beside the database (dropped with the process). A pending row whose claim
is free was left by a writer that is gone, and is resumed; a live one is waited for, then found stored.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from pathlib import Path
from typing import Iterator

from digitize.errors import StorageError
from digitize.locks import LockTimeout, held

from .index import Index

log = logging.getLogger("digitize.storage")

CLAIM_WAIT = 900.0  # seconds a writer waits for another's store of the same original (objects of GBs)
NAMESPACE = 0x64696769  # "digi": the first key of PostgreSQL's two-key advisory locks taken here
POLL_MAX = 0.5
CLAIMS_SUFFIX = ".claims"  # SQLite: the folder of lock files beside the database


def _name(original_sha256: str, source_pages: str) -> str:
    return hashlib.sha256(f"{original_sha256}\0{source_pages}".encode()).hexdigest()[:32]


class ClaimBusy(StorageError):
    """Another live writer holds the claim (retryable: it will have stored the document)."""


def _busy(what: str) -> StorageError:
    return ClaimBusy(f"{what} is being stored by another writer; try again later")


@contextlib.contextmanager
def claim(index: Index, original_sha256: str, source_pages: str = "", wait: float = CLAIM_WAIT) -> Iterator[None]:
    """Hold the store claim of one original for the block; a StorageError (retryable) after ``wait``."""
    name = _name(original_sha256, source_pages)
    what = f"original {original_sha256[:16]}" + (f" pages {source_pages}" if source_pages else "")
    said = lambda: log.info("%s is being stored by another writer; waiting for it", what)  # noqa: E731
    if index.dialect == "postgresql":
        with _advisory(index, int(name[:8], 16) - 2**31, wait, said, what):
            yield
    elif index.dialect == "sqlite" and index.where != ":memory:":  # a memory database has one writer
        folder, lock = Path(index.where + CLAIMS_SUFFIX), contextlib.ExitStack()
        try:
            folder.mkdir(mode=0o700, exist_ok=True)
            lock.enter_context(held(folder / name, wait, said))
        except LockTimeout:
            raise _busy(what) from None
        except OSError as e:
            raise StorageError(f"index {index.where}: cannot claim {what}: {e.strerror}") from None
        with lock:  # the store's own errors pass through as they are
            yield
    else:
        yield


@contextlib.contextmanager
def _advisory(index: Index, key: int, wait: float, said, what: str) -> Iterator[None]:
    deadline, pause, told = time.monotonic() + wait, 0.05, False
    while not index._scalar("SELECT pg_try_advisory_lock(?, ?)", (NAMESPACE, key)):
        if not told:
            said()
            told = True
        if time.monotonic() >= deadline:
            raise _busy(what)
        time.sleep(pause)
        pause = min(pause * 2, POLL_MAX)
    try:
        yield
    finally:
        with contextlib.suppress(Exception):  # a lost connection has released it already
            index._scalar("SELECT pg_advisory_unlock(?, ?)", (NAMESPACE, key))
