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
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

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


class ClaimLost(StorageError):
    """The claim went while its holder was still storing (retryable: the next attempt claims again, then
    resumes the row or finds it stored by the writer that took the claim meanwhile)."""


@dataclass
class Claim:
    """A claim held for a block; ``check()`` before each write that another holder must not overlap."""

    what: str
    still_held: Callable[[], bool] = lambda: True

    def check(self) -> None:
        """ClaimLost when the claim is no longer this writer's (review rev2_batch16b R1): on PostgreSQL a
        lost connection frees it with its session, and the index reconnects silently, so a writer that
        went on would store over another that took the claim meanwhile."""
        if not self.still_held():
            raise ClaimLost(f"{self.what}: its store claim was lost with the index connection; not stored, "
                            "try again")


@contextlib.contextmanager
def claim(index: Index, original_sha256: str, source_pages: str = "", wait: float = CLAIM_WAIT) -> Iterator[Claim]:
    """Hold the store claim of one original for the block; a StorageError (retryable) after ``wait``.
    ``wait`` 0 (verify) only tries: it says nothing about waiting."""
    name = _name(original_sha256, source_pages)
    what = f"original {original_sha256[:16]}" + (f" pages {source_pages}" if source_pages else "")
    said = (lambda: log.info("%s is being stored by another writer; waiting for it", what)) if wait else None
    if index.dialect == "postgresql":
        with _advisory(index, int(name[:8], 16) - 2**31, wait, said, what) as taken:
            yield taken
    elif index.dialect == "sqlite" and index.where != ":memory:":  # a memory database has one writer
        folder, lock = Path(index.where + CLAIMS_SUFFIX), contextlib.ExitStack()
        try:
            folder.mkdir(mode=0o700, exist_ok=True)
            still_held = lock.enter_context(held(folder / name, wait, said))
        except LockTimeout:
            raise _busy(what) from None
        except OSError as e:
            raise StorageError(f"index {index.where}: cannot claim {what}: {e.strerror}") from None
        with lock:  # the store's own errors pass through as they are
            yield Claim(what, still_held)
    else:
        yield Claim(what)


@contextlib.contextmanager
def _advisory(index: Index, key: int, wait: float, said, what: str) -> Iterator[Claim]:
    deadline, pause, told = time.monotonic() + wait, 0.05, False
    while not index._scalar("SELECT pg_try_advisory_lock(?, ?)", (NAMESPACE, key)):
        if not told and said is not None:
            said()
        told = True
        if time.monotonic() >= deadline:
            raise _busy(what)
        time.sleep(pause)
        pause = min(pause * 2, POLL_MAX)
    session = index.reconnects  # a reconnect (storage/index_pg.py) opens a session that does not hold it

    def still_held() -> bool:
        mine = index._scalar("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                             "AND pid = pg_backend_pid() AND classid::bigint = ? AND objid::bigint = ? "
                             "AND objsubid = 2", (NAMESPACE, key & 0xFFFFFFFF))
        return bool(mine) and index.reconnects == session

    try:
        yield Claim(what, still_held)
    finally:
        with contextlib.suppress(Exception):  # a lost connection has released it already
            index._scalar("SELECT pg_advisory_unlock(?, ?)", (NAMESPACE, key))
