"""PostgreSQL index backend: psycopg 3, tsvectors over Python-tokenised text, GIN indexes."""

from __future__ import annotations

from typing import Any, Sequence

from digitize.errors import StorageError

from .index import Index, search_tokens
from .search import Query

CONNECT_TIMEOUT = 10
MIGRATION_LOCK = 0x6469676974  # "digit": serialises concurrent migrators


class PostgresIndex(Index):
    dialect = "postgresql"
    column_types = {"id": "BIGSERIAL PRIMARY KEY", "ref": "BIGINT", "float": "DOUBLE PRECISION"}

    def __init__(self, dsn: str):
        import psycopg

        from digitize.secrets import mask

        try:
            conn = psycopg.connect(dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT)
        except psycopg.Error as e:
            raise StorageError(f"cannot connect to index {mask(dsn)}: {mask(' '.join(str(e).split()))}") from None
        super().__init__(conn, mask(dsn))

    def _cursor_execute(self, sql: str, params: Sequence[Any]) -> Any:
        return self.conn.execute(sql.replace("?", "%s"), tuple(params) if params else None)

    def _run_script(self, sql: str) -> None:
        self.conn.execute(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
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

    def _match_ids(self, query: Query, exact: bool, limit: int, order: str) -> list[int]:
        column, tokens = ("exact", query.exact) if exact else ("folded", query.folded)
        order_by = {"none": "", "relevance": f"ORDER BY ts_rank({column}, q) DESC, entry_id",
                    "newest": "ORDER BY entry_id DESC"}[order]
        rows = self._execute(f"SELECT entry_id FROM search_entries, plainto_tsquery('simple', ?) q "
                             f"WHERE {column} @@ q {order_by} LIMIT ?", (" ".join(tokens), limit))
        return [r[0] for r in rows.fetchall()]
