"""SQLite index backend: one file, WAL journal, FTS5 for the full text (the embedded default)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any, Sequence

from digitize.errors import StorageError

from .index import Index, search_tokens
from .modes import private_file, private_folder
from .search import Query, fts5_match

BUSY_TIMEOUT_MS = 30_000
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
        """``wait_timeout``: after the migrations (which keep the long busy wait), the seconds a statement
        waits for another connection's lock before "database is locked" (a StorageError), and runs (from
        its execute to its last row fetched) before it is interrupted."""
        if path != ":memory:":
            try:
                private_folder(Path(path).parent, group_readable)
                private_file(path, group_readable)  # SQLite gives -wal and -shm the mode of the database file
            except OSError as e:
                raise StorageError(f"cannot create index folder for {path}: {e.strerror}") from None
        try:
            conn = sqlite3.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False)
            use_wal(conn)
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
        except sqlite3.Error as e:
            raise StorageError(f"cannot open index {path}: {e}") from None
        self._started, self._run_limit = time.monotonic(), 0.0
        super().__init__(conn, path)
        if wait_timeout:
            conn.execute(f"PRAGMA busy_timeout = {max(1, int(wait_timeout * 1000))}")
            # and how long a statement runs: interrupted ("interrupted", a StorageError) past that many seconds
            self._run_limit = wait_timeout
            conn.set_progress_handler(self._past_deadline, PROGRESS_STEPS)

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
        self._execute("INSERT INTO search_fts (rowid, exact, folded) VALUES (?, ?, ?)", (entry_id, *search_tokens(text)))

    def _remove_search_tokens(self, entry_ids: list[int]) -> None:
        self._execute(f"DELETE FROM search_fts WHERE rowid IN ({', '.join('?' * len(entry_ids))})", entry_ids)

    def _match_ids(self, query: Query, exact: bool, limit: int, order: str) -> list[int]:
        match = fts5_match(query.exact, "exact") if exact else fts5_match(query.folded, "folded")
        order_by = {"none": "", "relevance": "ORDER BY rank", "newest": "ORDER BY rowid DESC"}[order]
        rows = self._execute(f"SELECT rowid FROM search_fts WHERE search_fts MATCH ? {order_by} LIMIT ?", (match, limit))
        return [r[0] for r in rows.fetchall()]
