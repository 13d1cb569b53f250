"""SQLite index backend: one file, WAL journal, FTS5 for the full text (the embedded default)."""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import sqlite3
import time
from pathlib import Path
from typing import Any, Sequence

from digitize.errors import StorageError

from .index import _EVENT_COLUMNS, Index, now_iso, search_tokens
from .models import Event
from .modes import private_file, private_folder
from .search import Query, fts5_match, fts5_scope

log = logging.getLogger(__name__)
BUSY_TIMEOUT_MS = 30_000
GENERATION_SUFFIX = ".search-generation"  # beside the database: see SqliteIndex.search_generation
GENERATION_ROLL = 1 << 20  # bytes of the generation file before it is started afresh (a new inode)
READ_MMAP_BYTES = 0x7FFF0000  # SQLite's default ceiling for mmap_size (2 GiB less 64 KiB); larger files: the rest read
EVENTS_MAX_VARIABLES = 32_000  # SQLite allows 32 766 bound values per statement (3.32+); more: one transaction
PROGRESS_STEPS = 100_000  # virtual machine steps between two looks at a bounded statement's clock (~1 ms)


def use_wal(conn: sqlite3.Connection, wait: float = BUSY_TIMEOUT_MS / 1000) -> None:
    """Switch to the WAL journal, waiting out other processes doing the same (for at most ``wait``
    seconds): on a new database, workers that start together (a batch's, forked at once) race for it,
    and SQLite answers "database is locked" at once there instead of calling its busy handler."""
    deadline = time.monotonic() + wait
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


class SqliteIndex(Index):
    dialect = "sqlite"
    column_types = {"id": "INTEGER PRIMARY KEY AUTOINCREMENT", "ref": "INTEGER", "float": "REAL"}
    _begin_sql = "BEGIN IMMEDIATE"  # take the write lock up front: no upgrade deadlocks between processes

    def __init__(self, path: str, group_readable: bool = False, wait_timeout: float | None = None):
        """``wait_timeout``: the seconds a statement (and the open, migrations included) waits for another
        connection's lock before "database is locked" (a StorageError), and, after the migrations, runs (from
        its execute to its last row fetched) before it is interrupted."""
        if path != ":memory:":
            try:
                private_folder(Path(path).parent, group_readable)
                private_file(path, group_readable)  # SQLite gives -wal and -shm the mode of the database file
            except OSError as e:
                raise StorageError(f"cannot create index folder for {path}: {e.strerror}") from None
        # with ``wait_timeout``, opening waits no longer than that either: a migration under way in another
        # process holds the write lock for its whole run (minutes on a large index), and a portal's request
        # must get its 503 in time, not after the 30 s default
        busy = wait_timeout or BUSY_TIMEOUT_MS / 1000
        try:
            conn = sqlite3.connect(path, isolation_level=None, timeout=busy, check_same_thread=False)
            use_wal(conn, busy)
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
        except sqlite3.Error as e:
            raise StorageError(f"cannot open index {path}: {e}") from None
        self._started, self._run_limit = time.monotonic(), 0.0
        self._generation_path = None if path == ":memory:" else path + GENERATION_SUFFIX
        self._generation_mode = 0o640 if group_readable else 0o600
        self._generation_warned = False
        super().__init__(conn, path)
        self._database_id: tuple[int, int] | None = None
        if self._generation_path is not None:
            with contextlib.suppress(OSError):
                db = os.stat(path)
                self._database_id = (db.st_dev, db.st_ino)  # a database restored over this one is another
                if not os.path.lexists(self._generation_path):
                    self._create_generation(db)
        if wait_timeout:
            conn.execute(f"PRAGMA busy_timeout = {max(1, int(wait_timeout * 1000))}")
            # and how long a statement runs: interrupted ("interrupted", a StorageError) past that many seconds
            self._run_limit = wait_timeout
            conn.set_progress_handler(self._past_deadline, PROGRESS_STEPS)

    def migrate(self) -> list[int]:
        try:
            return super().migrate()
        except StorageError as e:  # busy past the open's wait: say why, in one line (the portal's 503)
            if "locked" not in str(e):
                raise
            raise StorageError(f"index {self.where}: another process is writing or upgrading its schema "
                               "(migration); try again shortly") from e

    def add_events(self, events: list[Event]) -> None:
        """Outside a transaction: the events in ONE statement, committed by it (autocommit). Its write lock,
        INSERT and COMMIT (fsync) happen in one call that does not take the GIL back in between: with
        BEGIN, INSERT, COMMIT as three calls, a busy server process's other threads kept the lock held
        (a switch interval each) while the committing thread waited to run again."""
        if self._depth or not events or len(events) * len(_EVENT_COLUMNS) > EVENTS_MAX_VARIABLES:
            return super().add_events(events)
        for event in events:
            event.time = event.time or now_iso()
        row = f"({', '.join('?' * len(_EVENT_COLUMNS))})"
        self._execute(f"INSERT INTO events ({', '.join(_EVENT_COLUMNS)}) VALUES {', '.join([row] * len(events))}",
                      [getattr(e, n) for e in events for n in _EVENT_COLUMNS])

    def _create_generation(self, db: os.stat_result) -> None:
        """The generation file, owned like the database: made by root (a CLI run as root), it would stay
        root's and the service's bumps would fail (then nobody caches, see search_generation)."""
        with contextlib.suppress(OSError):  # a reader that may not create it just does not cache
            fd = os.open(self._generation_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                         self._generation_mode)
            try:
                _own_like(fd, db)
            finally:
                os.close(fd)

    def map_for_reads(self, size: int = READ_MMAP_BYTES) -> None:
        """Read the database file through a memory map (the OS page cache, shared by every connection and
        process) instead of a read() into each connection's own 2 MB page cache per page: a search probes
        hundreds of scattered rows of a file far larger than that cache (~20 % less CPU for its queries on
        the 100 000-document bench). Writes still go through write(). For a long-lived server's readers:
        an I/O error on the mapped file is a SIGBUS (the process dies and is replaced) rather than an error."""
        self.conn.execute(f"PRAGMA mmap_size = {int(size)}")

    def search_generation(self) -> tuple[int, ...] | None:
        """The database's identity and the generation file's (inode, size, mtime): every committed write
        that may change a search's answer appends a byte to it, from whichever process wrote; None (no
        caching) while it is missing, or is not a regular file this process could bump itself (a file
        only root may write would never move for the service's own writes: fail closed, no caching).

        A file rather than a table: no schema change, and reading it (one stat) costs no query. Its bump
        follows the COMMIT, so whoever sees the new generation also sees the new rows."""
        if self._generation_path is None or self._database_id is None:
            return None
        try:
            st = os.stat(self._generation_path, follow_symlinks=False)
        except OSError:
            return None
        if not stat.S_ISREG(st.st_mode) or not _may_write(st):
            if not self._generation_warned:  # once per connection: fail closed, but say how to fix it
                self._generation_warned = True
                log.warning("index %s: %s is not a regular file this process may write (owner uid %d): search "
                            "results are not cached; remove it or give it the index's owner",
                            self.where, self._generation_path, st.st_uid)
            return None
        return (*self._database_id, st.st_ino, st.st_size, st.st_mtime_ns)

    def _bump_search_generation(self) -> None:
        if self._generation_path is None:
            return
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(self._generation_path, flags, self._generation_mode)
            try:
                os.write(fd, b".")
                size = os.fstat(fd).st_size
                self._own_like_database(fd)  # re-made by root's write (a CLI): still the service's to bump
            finally:
                os.close(fd)
            if size > GENERATION_ROLL:  # start afresh: a new inode, so the value still never repeats
                fresh = f"{self._generation_path}.{os.getpid()}.tmp"
                fd = os.open(fresh, flags | os.O_TRUNC, self._generation_mode)
                try:
                    self._own_like_database(fd)
                finally:
                    os.close(fd)
                os.replace(fresh, self._generation_path)
        except OSError as e:  # committed all the same: remove the file, so no process serves a cached page
            log.warning("index %s: cannot bump the search generation: %s", self.where, e.strerror)
            with contextlib.suppress(OSError):
                os.unlink(self._generation_path)  # every process stops caching (search_generation: None)

    def _own_like_database(self, fd: int) -> None:
        if os.geteuid() == 0:
            with contextlib.suppress(OSError):
                _own_like(fd, os.stat(self.where))

    def _past_deadline(self) -> bool:
        return time.monotonic() - self._started > self._run_limit

    def _cursor_execute(self, sql: str, params: Sequence[Any]) -> Any:
        self._started = time.monotonic()
        return self.conn.execute(sql, tuple(params))

    def _run_script(self, sql: str) -> None:
        # executescript() would COMMIT our transaction first; run the statements one by one instead.
        statement = ""
        for line in sql.splitlines(keepends=True):
            statement += line
            if sqlite3.complete_statement(statement):
                self.conn.execute(statement)
                statement = ""

    def _is_unique_violation(self, error: Exception) -> bool:
        return isinstance(error, sqlite3.IntegrityError) and "UNIQUE" in str(error)

    def _is_db_error(self, error: Exception) -> bool:
        return isinstance(error, sqlite3.Error)

    def _insert_search_entry(self, case_id: str | None, doc_id: int | None, page: int | None, text: str) -> None:
        entry_id = self._scalar("INSERT INTO search_entries (case_id, doc_id, page, text) VALUES (?, ?, ?, ?) "
                                "RETURNING entry_id", (case_id, doc_id, page, text))
        # its full-text row, with its agency tokens, was made by the insert's trigger (migration 0006)
        self._execute("UPDATE search_fts SET exact = ?, folded = ? WHERE rowid = ?", (*search_tokens(text), entry_id))

    def _remove_search_tokens(self, entry_ids: list[int]) -> None:
        self._execute(f"DELETE FROM search_fts WHERE rowid IN ({', '.join('?' * len(entry_ids))})", entry_ids)

    def _match_ids(self, query: Query, exact: bool, limit: int, order: str,
                   agencies: tuple[str, ...] | None = None) -> list[int]:
        match = _match_expr(query, exact, agencies)
        if match is None:
            return []
        order_by = {"none": "", "relevance": "ORDER BY rank", "newest": "ORDER BY rowid DESC"}[order]
        rows = self._execute(f"SELECT rowid FROM search_fts WHERE search_fts MATCH ? {order_by} LIMIT ?", (match, limit))
        return [r[0] for r in rows.fetchall()]

    def _count_matches(self, query: Query, exact: bool, cap: int, agencies: tuple[str, ...] | None = None) -> int:
        # FTS5 walks its doclists cheapest in rowid order (a newest-first walk reads them backwards: ~2x
        # the CPU for a common word's 1 001 matches), and counting in SQL leaves every row out of Python
        match = _match_expr(query, exact, agencies)
        if match is None:
            return 0
        return self._scalar("SELECT count(*) FROM (SELECT rowid FROM search_fts WHERE search_fts MATCH ? LIMIT ?)",
                            (match, cap))


def _match_expr(query: Query, exact: bool, agencies: tuple[str, ...] | None) -> str | None:
    """The FTS5 match expression of a query's exact or folded tokens, limited to ``agencies`` when given
    (only entries of, or shared into, these agencies' cases: see migration 0005); None when no agency."""
    match = fts5_match(query.exact, "exact") if exact else fts5_match(query.folded, "folded")
    if agencies is None:
        return match
    return f"({match}) AND {fts5_scope(agencies)}" if agencies else None

def _own_like(fd: int, db: os.stat_result) -> None:
    """Give a file root makes beside the database the database's owner (a no-op for anyone else)."""
    if os.geteuid() == 0 and db.st_uid != 0:
        os.fchown(fd, db.st_uid, db.st_gid)


def _may_write(st: os.stat_result) -> bool:
    """Whether this process's own bumps can append to a file of this owner and mode (no ACLs: the file is
    made by this module with a plain mode)."""
    uid = os.geteuid()
    if uid == 0:
        return True
    if st.st_uid == uid:
        return bool(st.st_mode & stat.S_IWUSR)
    if st.st_gid in (os.getegid(), *os.getgroups()):
        return bool(st.st_mode & stat.S_IWGRP)
    return bool(st.st_mode & stat.S_IWOTH)
