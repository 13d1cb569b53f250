"""Index queries for accounts (users, API tokens) and for scoped, filtered, paged search (migration 0003).

A mixin of :class:`storage.index.Index`, kept in its own module so the account tables stay beside their
queries; it uses only the Index plumbing (``_execute``, ``_rows``, ``transaction``) and so runs on both
backends. Who may see what is decided in storage/access.py, never here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from digitize.errors import BadArgsError, NotFoundError

from .models import SearchHit
from .search import highlight, parse_query

SEARCH_CAP = 1000  # candidates considered for one search; scope and filters then apply to these
_CHUNK = 500


@dataclass
class UserRecord:
    name: str
    role: str
    agencies: list[str] = field(default_factory=list)
    password_hash: str | None = None
    oidc_subject: str | None = None  # the single sign-on binding (oidc_bindings, migration 0007): subject
    disabled: bool = False
    created_at: str = ""
    updated_at: str = ""
    oidc_issuer: str | None = None  # and the provider that issues it


@dataclass
class TokenRecord:
    name: str
    role: str
    agencies: list[str] = field(default_factory=list)
    token_hash: str = ""
    created_at: str = ""
    revoked_at: str | None = None
    token_id: int | None = None
    expires_at: str | None = None  # api_token_expiry (migration 0008); None: never expires
    expiry_recorded: bool = False  # False: made before 0008, so no expiry was ever set


@dataclass
class AccountEvent:
    """A change to an account (migration 0007): ACTOR (user:NAME from /admin, cli:OSUSER) did ACTION to TARGET."""

    time: str
    actor: str
    action: str  # "user added", "user bound", "user unbound", "user disabled", "token created", "token revoked"
    target: str
    client: str | None = None
    event_id: int | None = None
    detail: str | None = None  # what was bound or unbound: subject and issuer (not secret; review web15b L4)


@dataclass
class HitRow:
    """A search candidate with the fields scope and filters look at (case record fields may be None)."""

    entry_id: int
    exact: bool
    case_id: str | None
    doc_id: int | None
    sequence: int | None
    title: str
    page: int | None
    text: str  # "" while scope and filters run; read for the page shown
    case_agency: str | None
    procedure_code: str | None
    received_date: str | None
    status: str | None


@dataclass
class SearchPage:
    hits: list[SearchHit]
    total: int  # accepted candidates judged (at most SEARCH_CAP are considered)
    capped: bool  # total is a lower bound: more candidates were left unjudged, or the cap was reached
    # views derived from this page (the API's JSON: web/api.py), kept as long as the page is, so they go when
    # the search cache (storage/access.py) drops it; never compared or printed
    derived: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)


# users with their single sign-on binding (users.oidc_subject of migration 3 is no longer read: see 0007)
_USERS = ("SELECT u.name, u.role, u.agencies, u.password_hash, b.subject AS oidc_subject, b.issuer AS oidc_issuer, "
          "u.disabled, u.created_at, u.updated_at FROM users u LEFT JOIN oidc_bindings b ON b.name = u.name")


def _user(row: dict[str, Any]) -> UserRecord:
    row["agencies"] = json.loads(row["agencies"] or "[]")
    row["disabled"] = bool(row["disabled"])
    return UserRecord(**row)


def _token(row: dict[str, Any]) -> TokenRecord:
    row["agencies"] = json.loads(row["agencies"] or "[]")
    row["expiry_recorded"] = bool(row["expiry_recorded"])
    return TokenRecord(**row)


# tokens with their expiry (migration 0008; none recorded for a token made before it)
_TOKENS = ("SELECT t.token_id, t.name, t.role, t.agencies, t.token_hash, t.created_at, t.revoked_at, e.expires_at, "
           "CASE WHEN e.name IS NULL THEN 0 ELSE 1 END AS expiry_recorded "
           "FROM api_tokens t LEFT JOIN api_token_expiry e ON e.name = t.name")


class AccountQueries:
    """Mixed into Index; see storage/index.py for ``_execute``/``_rows``/``transaction``."""

    # -- users ---------------------------------------------------------------------------------
    def add_user(self, user: UserRecord, now: str) -> None:
        with self.transaction():
            if self._rows("SELECT name FROM users WHERE name = ?", (user.name,)):
                raise BadArgsError(f"user {user.name} already exists")
            self._execute("INSERT INTO users (name, role, agencies, password_hash, disabled, created_at, updated_at) "
                          "VALUES (?, ?, ?, ?, ?, ?, ?)", (user.name, user.role, json.dumps(user.agencies),
                                                           user.password_hash, int(user.disabled), now, now))
            if user.oidc_subject is not None and user.oidc_issuer is not None:
                self._bind(user.name, user.oidc_issuer, user.oidc_subject, now)

    def get_user(self, name: str) -> UserRecord | None:
        rows = self._rows(_USERS + " WHERE u.name = ?", (name,))
        return _user(rows[0]) if rows else None

    def user_by_subject(self, issuer: str, subject: str) -> UserRecord | None:
        """The user an administrator bound to this subject of this issuer (never one bound to another issuer)."""
        rows = self._rows(_USERS + " WHERE b.issuer = ? AND b.subject = ?", (issuer, subject))
        return _user(rows[0]) if rows else None

    def users(self) -> list[UserRecord]:
        return [_user(r) for r in self._rows(_USERS + " ORDER BY u.name")]

    def set_user_disabled(self, name: str, disabled: bool, now: str) -> None:
        with self.transaction():
            if not self.get_user(name):
                raise NotFoundError(f"user {name} not found")
            self._execute("UPDATE users SET disabled = ?, updated_at = ? WHERE name = ?", (int(disabled), now, name))

    def bind_subject(self, name: str, issuer: str, subject: str, now: str) -> tuple[str, str] | None:
        """Tie a user to a single sign-on subject of an issuer (an administrator's act; replaces its binding).
        Returns the (issuer, subject) it replaced, if any."""
        with self.transaction():
            before = self.unbind_subject(name, now)
            self._bind(name, issuer, subject, now)
            return before

    def unbind_subject(self, name: str, now: str) -> tuple[str, str] | None:
        """Remove a user's single sign-on binding; returns the (issuer, subject) it had, or None."""
        with self.transaction():
            user = self.get_user(name)
            if not user:
                raise NotFoundError(f"user {name} not found")
            self._execute("DELETE FROM oidc_bindings WHERE name = ?", (name,))
            self._execute("UPDATE users SET updated_at = ? WHERE name = ?", (now, name))
            if user.oidc_issuer is None or user.oidc_subject is None:
                return None
            return user.oidc_issuer, user.oidc_subject

    def _bind(self, name: str, issuer: str, subject: str, now: str) -> None:
        """A subject belongs to one account: refuse to bind one another user already has."""
        holder = self._rows("SELECT name FROM oidc_bindings WHERE issuer = ? AND subject = ?", (issuer, subject))
        if holder:
            raise BadArgsError(f"single sign-on subject {subject!r} is already bound to user {holder[0]['name']}")
        self._execute("INSERT INTO oidc_bindings (name, issuer, subject, bound_at) VALUES (?, ?, ?, ?)",
                      (name, issuer, subject, now))

    # -- API tokens ----------------------------------------------------------------------------
    def add_token(self, token: TokenRecord, now: str) -> None:
        with self.transaction():
            if self._rows("SELECT name FROM api_tokens WHERE name = ?", (token.name,)):
                raise BadArgsError(f"token {token.name} already exists (revoked tokens keep their name)")
            self._execute("INSERT INTO api_tokens (name, role, agencies, token_hash, created_at) VALUES (?, ?, ?, ?, ?)",
                          (token.name, token.role, json.dumps(token.agencies), token.token_hash, now))
            self._execute("INSERT INTO api_token_expiry (name, expires_at) VALUES (?, ?)",
                          (token.name, token.expires_at))

    def token_by_hash(self, token_hash: str) -> TokenRecord | None:
        rows = self._rows(_TOKENS + " WHERE t.token_hash = ?", (token_hash,))
        return _token(rows[0]) if rows else None

    def token_by_name(self, name: str) -> TokenRecord | None:
        rows = self._rows(_TOKENS + " WHERE t.name = ?", (name,))
        return _token(rows[0]) if rows else None

    def tokens(self) -> list[TokenRecord]:
        return [_token(r) for r in self._rows(_TOKENS + " ORDER BY t.name")]

    def set_token_expiry(self, name: str, expires_at: str | None) -> None:
        """Give a token (one made before 0008 too) the expiry ``expires_at`` (None: never), replacing any."""
        with self.transaction():
            if not self._rows("SELECT name FROM api_tokens WHERE name = ?", (name,)):
                raise NotFoundError(f"token {name} not found")
            self._execute("DELETE FROM api_token_expiry WHERE name = ?", (name,))
            self._execute("INSERT INTO api_token_expiry (name, expires_at) VALUES (?, ?)", (name, expires_at))

    def revoke_token(self, name: str, now: str) -> None:
        with self.transaction():
            if not self._rows("SELECT name FROM api_tokens WHERE name = ?", (name,)):
                raise NotFoundError(f"token {name} not found")
            self._execute("UPDATE api_tokens SET revoked_at = coalesce(revoked_at, ?) WHERE name = ?", (now, name))

    # -- account events --------------------------------------------------------------------------
    def add_account_event(self, event: AccountEvent) -> None:
        self._execute("INSERT INTO account_events (time, actor, client, action, target, detail) "
                      "VALUES (?, ?, ?, ?, ?, ?)",
                      (event.time, event.actor, event.client, event.action, event.target, event.detail))

    def account_events(self, limit: int = 100) -> list[AccountEvent]:
        """The newest first."""
        return [AccountEvent(**r) for r in self._rows(
            "SELECT event_id, time, actor, client, action, target, detail FROM account_events "
            "ORDER BY event_id DESC LIMIT ?",
            (limit,))]

    # -- event feed (webhooks) -----------------------------------------------------------------
    def last_event_id(self) -> int:
        return int(self._scalar("SELECT coalesce(max(event_id), 0) FROM events"))

    def events_after(self, event_id: int, event_type: str, limit: int = 100) -> list[tuple[int, Any]]:
        """(event_id, Event) of one type after ``event_id``, oldest first: the append-only log as an outbox."""
        from .models import Event

        rows = self._rows("SELECT event_id, event_type, outcome, actor, tool, doc_id, case_id, checksum, detail, "
                          "time, client FROM events WHERE event_id > ? AND event_type = ? ORDER BY event_id LIMIT ?",
                          (event_id, event_type, limit))
        return [(r.pop("event_id"), Event(**r)) for r in rows]

    # -- scoped search -------------------------------------------------------------------------
    def _hit_rows(self, candidates: list[tuple[int, bool]], agencies: tuple[str, ...] | None = None) -> list[HitRow]:
        """What scope and filters look at, for every candidate; the text is read later, for one page only.

        A document shared with further dossiers (case_links) gives one row per dossier it belongs to, each
        with that dossier's case and place, so scope and filters judge every place and a hit is shown in
        the dossiers its reader may see (as plain search lists it once per dossier).

        ``agencies``: leave out, in SQL, entries that no reader of only these agencies could see (neither
        their case ID starts with one of them nor is their document shared into another dossier): the
        scope check still judges what is left, so this only saves building and judging rows it would
        refuse (an officer of one agency among nine saw eight of nine candidates refused in Python)."""
        exact = dict(candidates)
        where, extra = "", []
        if agencies is not None:
            where = " AND (" + " OR ".join(["substr(coalesce(e.case_id, d.case_id), 1, ?) = ?"] * len(agencies) + [
                "EXISTS (SELECT 1 FROM case_links l WHERE l.doc_id = e.doc_id)"]) + ")"
            for agency in agencies:
                extra += [len(agency) + 1, agency + "-"]
        found: dict[int, tuple] = {}  # plain tuples: this runs for up to SEARCH_CAP rows per search
        ids = [c[0] for c in candidates]
        for r in self._tuples_in(
                "SELECT e.entry_id, coalesce(e.case_id, d.case_id), e.doc_id, d.sequence, d.title, e.page, "
                "c.agency, coalesce(c.procedure_code, d.procedure_code), c.received_date, c.status, "
                "e.doc_id IS NOT NULL AND EXISTS (SELECT 1 FROM case_links l WHERE l.doc_id = e.doc_id) "
                "FROM search_entries e LEFT JOIN documents d ON d.doc_id = e.doc_id "
                "LEFT JOIN cases c ON c.case_id = coalesce(e.case_id, d.case_id) WHERE e.entry_id IN ({})" + where,
                ids, extra):
            found[r[0]] = r
        # only documents filed in further dossiers (rare) cost the second query
        shared = sorted({r[2] for r in found.values() if r[10]})
        places = self._shared_places(shared) if shared else {}
        rows = []
        for i in ids:
            if (r := found.get(i)) is None:
                continue
            entry_id, case_id, doc_id, sequence, title, page, agency, procedure, received, status, _ = r
            rows.append(HitRow(entry_id, exact[i], case_id, doc_id, sequence, title or "", page, "", agency,
                               procedure, received, status))
            for p in places.get(doc_id, ()) if doc_id is not None else ():
                rows.append(HitRow(entry_id, exact[i], p[0], doc_id, p[1], title or "", page, "", *p[2:]))
        return rows

    def _shared_places(self, doc_ids: list[int]) -> dict[int, list[tuple]]:
        """doc_id -> the further dossiers it is filed in: (case_id, sequence, agency, procedure, received,
        status), the fields scope and filters read."""
        out: dict[int, list[tuple]] = {}
        for r in self._tuples_in(
                "SELECT l.doc_id, l.case_id, l.sequence, c.agency, coalesce(c.procedure_code, d.procedure_code), "
                "c.received_date, c.status FROM case_links l JOIN documents d ON d.doc_id = l.doc_id "
                "LEFT JOIN cases c ON c.case_id = l.case_id WHERE l.doc_id IN ({}) ORDER BY l.link_id", doc_ids):
            out.setdefault(r[0], []).append(tuple(r[1:]))
        return out

    def _tuples_in(self, sql: str, values: list[int], extra: Sequence[Any] = ()) -> list[tuple]:
        """Rows of ``sql`` whose ``IN ({})`` takes ``values``, in chunks (parameter limits), as plain tuples;
        ``extra``: the parameters of placeholders after it."""
        rows: list[tuple] = []
        for start in range(0, len(values), _CHUNK):
            chunk = values[start:start + _CHUNK]
            rows += self._execute(sql.format(", ".join("?" * len(chunk))), [*chunk, *extra]).fetchall()
        return rows

    def _entry_texts(self, entry_ids: list[int]) -> dict[int, str]:
        if not entry_ids:
            return {}
        rows = self._execute(f"SELECT entry_id, text FROM search_entries WHERE entry_id IN "
                             f"({', '.join('?' * len(entry_ids))})", entry_ids).fetchall()
        return {r[0]: r[1] for r in rows}

    def search_page(self, text: str, accept: Callable[[HitRow], bool], limit: int = 20,
                    offset: int = 0, agencies: tuple[str, ...] | None = None) -> SearchPage:
        """Search, keep the candidates ``accept`` lets through (scope and filters), return one page;
        ``agencies``: those ``accept`` is limited to, if it is (see :meth:`_hit_rows`)."""
        if limit < 1 or offset < 0:
            raise BadArgsError("search limit must be 1 or more and offset 0 or more")
        query = parse_query(text)
        first = max(2 * (offset + limit + 1), 50)
        # An officer's candidates are its agencies' own (migration 0005), and an archivist may see them all,
        # so the first few usually fill the page: fetch that many, and all SEARCH_CAP only if they did not
        # (filters, or few own matches). The page, total and capped flag are those of one SEARCH_CAP fetch:
        # the first n of SEARCH_CAP candidates are the n candidates (the order is decided apart from n), one
        # more tells whether further ones exist, and a page filled within the first slice judged is final.
        fetch = min(first + 1, SEARCH_CAP)
        while True:
            candidates = self._search_candidates(query, fetch, agencies)
            more = len(candidates) >= fetch  # the index may hold further candidates
            # Candidates are judged in growing slices, only until the page and one more hit are known (as
            # paging with LIMIT n+1 does): judging all 1 000 of a common word's candidates for every search
            # cost more than the rest of it. The count is then a lower bound ("21+"); exact when all were judged.
            accepted: list[HitRow] = []
            judged, step = 0, first
            while judged < len(candidates) and len(accepted) <= offset + limit:
                accepted += [r for r in self._hit_rows(candidates[judged:judged + step], agencies) if accept(r)]
                judged, step = judged + step, step * 2
            if (len(accepted) > offset + limit and judged <= first) or not more or fetch >= SEARCH_CAP:
                break
            fetch = SEARCH_CAP
        page = accepted[offset:offset + limit]
        texts = self._entry_texts([r.entry_id for r in page])
        hits = [SearchHit(case_id=r.case_id, doc_id=r.doc_id, sequence=r.sequence, title=r.title, page=r.page,
                          snippet=highlight(texts.get(r.entry_id, ""), query), exact=r.exact) for r in page]
        return SearchPage(hits, len(accepted), judged < len(candidates) or more)
