"""PostgreSQL index backend: psycopg 3, tsvectors over Python-tokenised text, GIN indexes.

A long-lived process (a watcher, a batch worker) outlives server restarts: a connection found lost is
replaced before the next statement that does not belong to a transaction already under way, and a
``BEGIN`` or a ``SELECT`` that meets a lost connection is sent again once on a new one. A transaction the
restart cut off fails as a whole (StorageError, the caller's retry), and its retry gets the new connection.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Sequence

from digitize.errors import StorageError

from .index import Index, search_tokens
from .search import Query

CONNECT_TIMEOUT = 10
MIGRATION_LOCK = 0x6469676974  # "digit": serialises concurrent migrators
MIGRATION_LOCK_WAIT = 5.0  # seconds a migration waits for a table lock before it gives up and is tried again
MIGRATION_ATTEMPTS = 3
REPEATABLE = ("BEGIN", "SELECT")  # statements that change nothing when sent again after a lost connection
log = logging.getLogger("digitize.storage")


def _connect(dsn: str):
    import psycopg

    from digitize.secrets import mask

    try:
        return psycopg.connect(dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT)
    except psycopg.Error as e:
        raise StorageError(f"cannot connect to index {mask(dsn)}: {mask(' '.join(str(e).split()))}") from None


class PostgresIndex(Index):
    dialect = "postgresql"
    _lock_rows_sql = " FOR UPDATE"  # READ COMMITTED: a read-then-write needs its row locked (review3 r3desk M2)
    column_types = {"id": "BIGSERIAL PRIMARY KEY", "ref": "BIGINT", "float": "DOUBLE PRECISION"}

    def __init__(self, dsn: str, wait_timeout: float | None = None):
        """``wait_timeout``: bounds the wait for another process's migration (not this one's own run: one
        may rebuild an index), and after the migrations every statement of
        this connection, and of any it reconnects with, is cancelled past that many seconds of running
        (statement_timeout) or of waiting for a lock (lock_timeout): a StorageError, not a stalled caller."""
        from digitize.secrets import mask

        self._dsn = dsn  # kept for reconnecting; never printed (self.where is the masked form)
        self._wait_ms = max(1, int(wait_timeout * 1000)) if wait_timeout else 0
        self.reconnects = 0  # sessions replaced: session locks (storage/claims.py) did not move with them
        conn = _connect(dsn)
        try:
            super().__init__(conn, mask(dsn))
            # the search_generation row (migration 9) exists once migrated; this code's migrations always
            # include it, but a schema held back (a test of older migrations) simply has no caching
            self._generation = bool(self._scalar("SELECT to_regclass('search_generation') IS NOT NULL"))
            self._bound_waits()
        except BaseException:  # a failed migration or setting: the connection is not left to the collector
            conn.close()
            raise

    def _bound_waits(self) -> None:
        if self._wait_ms:  # session settings (autocommit): they outlive every transaction of the connection
            for name in ("statement_timeout", "lock_timeout"):
                self.conn.execute("SELECT set_config(%s, %s, false)", (name, f"{self._wait_ms}ms"))

    def search_generation(self) -> tuple[str, int] | None:
        """The search_generation row (migration 9): the database's own triggers move it at the COMMIT of
        every transaction that wrote a table a search reads, whoever wrote (this code, an older one during
        an upgrade, psql), so the value and the rows it stands for become visible together, to every process
        on every host. Read first, before the search's own statements (each its own READ COMMITTED
        snapshot), a page found is never older than the value it is cached under. None (no caching) inside
        a transaction, where this connection sees its own uncommitted writes; one query, where a miss costs
        dozens."""
        if self._depth or not self._generation:
            return None
        row = self._execute("SELECT epoch, value FROM search_generation").fetchone()
        return (row[0], row[1]) if row else None

    @property
    def generation_atomic(self) -> bool:
        return self._generation

    def _lost(self) -> bool:
        return bool(self.conn.closed or self.conn.broken)

    def _reconnect(self) -> None:
        log.warning("index connection to %s lost; reconnecting", self.where)
        old, self.conn = self.conn, _connect(self._dsn)
        self.reconnects += 1
        old.close()
        self._bound_waits()

    def _cursor_execute(self, sql: str, params: Sequence[Any]) -> Any:
        import psycopg

        if self._depth == 0 and self._lost():  # never in the middle of a transaction: that one is gone
            self._reconnect()
        try:
            return self.conn.execute(sql.replace("?", "%s"), tuple(params) if params else None)
        except psycopg.OperationalError:
            if self._depth or not self._lost() or not sql.lstrip().upper().startswith(REPEATABLE):
                raise
        self._reconnect()
        return self.conn.execute(sql.replace("?", "%s"), tuple(params) if params else None)

    def migrate(self) -> list[int]:
        """Migrators queue for one session lock around the whole check-and-apply: a process that took
        the lock only after finding a migration unapplied would re-run what another just applied. An index
        up to date takes no lock (the lock's wait is unbounded: a server's start must not queue behind it)."""
        if not self.migrations_missing():
            return []
        self._take_migration_lock()
        try:
            return self._migrate_retrying()
        finally:
            self.conn.execute(f"SELECT pg_advisory_unlock({MIGRATION_LOCK})")

    def _migrate_retrying(self) -> list[int]:
        """A migration that alters busy tables waits at most MIGRATION_LOCK_WAIT for their locks (queued behind
        a long search, it would block every portal request behind it); it is rolled back whole and tried again
        a few times, then fails with one line saying to start again (review r2pg L1)."""
        import psycopg

        for attempt in range(1, MIGRATION_ATTEMPTS + 1):
            try:
                return super().migrate()
            except StorageError as e:
                if not isinstance(e.__cause__, (psycopg.errors.LockNotAvailable, psycopg.errors.DeadlockDetected)):
                    raise
                if attempt == MIGRATION_ATTEMPTS:
                    raise StorageError(f"index {self.where}: a schema upgrade (migration) could not lock its tables "
                                       f"within {MIGRATION_LOCK_WAIT:g} s, {attempt} times (long searches or writes "
                                       "hold them); that one was rolled back, start again shortly") from None
                log.warning("index %s: migration waits for tables in use; trying again", self.where)
                time.sleep(attempt)
        return []

    def _take_migration_lock(self) -> None:
        """Queue for the migrators' lock: for at most ``wait_timeout`` when one was given (a portal's request
        must get its 503, not wait out another process's migration), then the migration itself runs, its waits for
        table locks bounded by MIGRATION_LOCK_WAIT (see _migrate_retrying)."""
        import psycopg

        if not self._wait_ms:
            self.conn.execute(f"SELECT pg_advisory_lock({MIGRATION_LOCK})")
            return
        self.conn.execute("SELECT set_config('lock_timeout', %s, false)", (f"{self._wait_ms}ms",))
        try:
            self.conn.execute(f"SELECT pg_advisory_lock({MIGRATION_LOCK})")
        except psycopg.errors.LockNotAvailable:
            raise StorageError(f"index {self.where}: another process is upgrading its schema (migration); "
                               "try again shortly") from None
        finally:
            self.conn.execute("SELECT set_config('lock_timeout', '0', false)")

    def _run_script(self, sql: str) -> None:
        self.conn.execute(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
        self.conn.execute("SELECT set_config('lock_timeout', %s, true)", (f"{int(MIGRATION_LOCK_WAIT * 1000)}ms",))
        self.conn.execute(sql)  # no parameters: psycopg sends the whole script as one simple query

    def _is_unique_violation(self, error: Exception) -> bool:
        import psycopg

        return isinstance(error, psycopg.errors.UniqueViolation)

    def _is_db_error(self, error: Exception) -> bool:
        import psycopg

        return isinstance(error, psycopg.Error)

    def _insert_search_entry(self, case_id: str | None, doc_id: int | None, page: int | None, text: str) -> None:
        self._execute("INSERT INTO search_entries (case_id, doc_id, page, text, exact, folded) "
                      "VALUES (?, ?, ?, ?, to_tsvector('simple', ?), to_tsvector('simple', ?))",
                      (case_id, doc_id, page, text, *search_tokens(text)))

    def _remove_search_tokens(self, entry_ids: list[int]) -> None:
        """Tokens live in the entry row itself: deleting the row removes them."""

    def _match_ids(self, query: Query, exact: bool, limit: int, order: str,
                   agencies: tuple[str, ...] | None = None) -> list[int]:
        where = _match_filter(query, exact, agencies)
        if where is None:
            return []
        column, condition, params = where
        order_by = {"none": "", "relevance": f"ORDER BY ts_rank({column}, q) DESC, entry_id",
                    "newest": "ORDER BY entry_id DESC"}[order]
        rows = self._execute(f"SELECT entry_id FROM search_entries, plainto_tsquery('simple', ?) q "
                             f"WHERE {condition} {order_by} LIMIT ?", (*params, limit))
        return [r[0] for r in rows.fetchall()]

    def _count_matches(self, query: Query, exact: bool, cap: int, agencies: tuple[str, ...] | None = None) -> int:
        # in any order (the planner's cheapest walk), counted in the server: no row reaches Python
        where = _match_filter(query, exact, agencies)
        if where is None:
            return 0
        _, condition, params = where
        return self._scalar(f"SELECT count(*) FROM (SELECT 1 FROM search_entries, plainto_tsquery('simple', ?) q "
                            f"WHERE {condition} LIMIT ?) s", (*params, cap))


def _match_filter(query: Query, exact: bool,
                  agencies: tuple[str, ...] | None) -> tuple[str, str, list[object]] | None:
    """The tsvector column, WHERE condition and parameters of a query's exact or folded tokens, limited to
    ``agencies`` when given (see migration 0005); None when no agency. The array test comes first:
    PostgreSQL keeps the order of equally costed filters, and on the newest-first walk it refuses most rows
    before their tsvector is read (detoasted) and tested."""
    column, tokens = ("exact", query.exact) if exact else ("folded", query.folded)
    params: list[object] = [" ".join(tokens)]
    if agencies is None:
        return column, f"{column} @@ q", params
    if not agencies:
        return None
    return column, f"agencies && ?::text[] AND {column} @@ q", [*params, list(agencies)]
