"""Who may see and do what: principals, roles, agency scopes, and the one gate every request goes through.

The portal, the API and the CLI reach the archive only through :class:`Gate`, so there is exactly one place
where scope is decided and every read is recorded (the CLI as :func:`cli_principal`, the local operator):

* a role grants *kinds* of action (read, upload, write case records, link, audit, admin); lacking one is
  :class:`PermissionDenied` (HTTP 403), decided before anything is looked up, so it reveals nothing;
* an agency scope (agency codes, the first part of a case ID) limits officers and scanners to their agencies'
  cases; anything outside it is :class:`~digitize.errors.NotFoundError` (HTTP 404), exactly as if it did not
  exist, in search results too; archivists and admins are not limited by agency;
* every view, download and upload is an event with the actor and the client's address; a case's log shows
  the addresses only to those with :attr:`Perm.audit` (archivists, admins).

Passwords are argon2id hashes (argon2-cffi); API tokens are 256-bit random secrets stored as SHA-256 (a
slow hash buys nothing against that much entropy and would cost every API call). A token expires (default
365 days from its creation; 0 days: never, said when it is made; review web15 L7): an expired one is
:class:`TokenExpired` (HTTP 401 ``token_expired``); one made before migration 0008 keeps no expiry.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import threading
import time
from collections import OrderedDict
from datetime import datetime, timedelta, timezone
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Protocol

from digitize.errors import BadArgsError, DigitizeError, ExitCode, NotFoundError, VerificationError
from digitize.identifiers import normalize_case_id, parse_agency_code
from digitize.terminal import plain

from .index import case_changes, now_iso
from .index_accounts import AccountEvent, HitRow, SearchPage, TokenRecord, UserRecord
from .models import CaseRecord, DocumentRow, Event, SignatureRow
from .search import parse_query

if TYPE_CHECKING:
    import zipfile

    from . import retrieval
    from .archive import Archive

ROLES = ("scanner", "officer", "archivist", "admin")
TOKEN_PREFIX = "dgt_"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
MIN_PASSWORD = 10
# Access events of one process are written one at a time: with SQLite, concurrent writers on several
# connections would otherwise wait in SQLite's busy handler, which sleeps in steps of up to 100 ms.
_EVENT_WRITES = threading.Lock()


class Perm(StrEnum):
    read = "read"  # view and download cases, search
    upload = "upload"  # send scans into a case or unmatched
    write_case = "write-case"  # upsert case records (the one-stop system's push)
    link = "link"  # see unmatched documents and attach them to a case
    audit = "audit"  # batch reports, fixity results
    admin = "admin"  # users, tokens


ROLE_PERMS: dict[str, frozenset[Perm]] = {
    "scanner": frozenset({Perm.upload, Perm.link}),
    "officer": frozenset({Perm.read, Perm.write_case}),
    "archivist": frozenset({Perm.read, Perm.upload, Perm.write_case, Perm.link, Perm.audit}),
    "admin": frozenset(Perm),
}
ALL_AGENCIES_ROLES = frozenset({"archivist", "admin"})


class AuthenticationError(DigitizeError):
    """No credentials, or wrong ones (HTTP 401)."""

    exit_code = ExitCode.bad_args


class TokenExpired(AuthenticationError):
    """An API token past its expiry (HTTP 401 ``token_expired``): the other system needs a new one."""


class PermissionDenied(DigitizeError):
    """The role does not allow this kind of action at all (HTTP 403)."""

    exit_code = ExitCode.bad_args


@dataclass(frozen=True)
class Principal:
    name: str
    role: str
    agencies: tuple[str, ...] = ()
    kind: str = "user"  # "user", "token", "cli" (the local operator: cli_principal) or "inbox"
    expires: float | None = field(default=None, compare=False)  # a token's expiry (epoch seconds); None: never

    @property
    def actor(self) -> str:
        return f"{self.kind}:{self.name}"

    @property
    def all_agencies(self) -> bool:
        return self.role in ALL_AGENCIES_ROLES

    def can(self, perm: Perm) -> bool:
        return perm in ROLE_PERMS.get(self.role, frozenset())

    def covers(self, case_id: str | None) -> bool:
        """True if the case (None: an unmatched document with no agency) is inside this principal's scope."""
        if self.all_agencies:
            return True
        agency = agency_of(case_id) if case_id else None
        return agency is not None and agency in self.agencies


def cli_principal() -> Principal:
    """The local operator running a CLI command: ``cli:<login name of the effective uid>`` (from the password
    database, never from an environment variable a caller sets), with every agency's rights. The CLI
    opens the index and the store with the service's own files and credentials, so whoever can run it
    against the archive can read all of it anyway; the gate does not bar them but records each read under
    their name, as the portal's are (SECURITY.md, "The CLI")."""
    import pwd

    uid = os.geteuid()
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = f"uid{uid}"
    return Principal(name, "admin", (), kind="cli")


@dataclass(frozen=True)
class UploadScope:
    """Where the parts of one principal's upload may be filed, as the conversion job asks it part by part
    (a separator sheet or QR code inside a scan can name another case than the one it was sent to).

    A plain picklable object, so the spawned conversion worker applies the gate's own rule (Principal)."""

    principal: Principal

    @classmethod
    def of(cls, sender: dict) -> "UploadScope":
        """The scope of a sender saved as a dict (a job file, a queue message); none saved: a scope that
        files nothing (no role, no permission)."""
        fields = {"name": "", "role": "", **(sender or {})}
        return cls(Principal(fields["name"], fields["role"], tuple(fields.get("agencies", ())),
                             fields.get("kind", "user")))

    def __call__(self, case_id: str | None, agency: str | None = None) -> bool:
        """``agency``: what the part's clues (a sidecar, say) name as its agency; it decides who sees an
        unmatched part (Gate._covers_unmatched), so without a case ID it must be one of the sender's."""
        if not self.principal.can(Perm.upload):
            return False
        if case_id is None:
            return self.covers_agency(agency)  # unmatched: kept for linking by those who may see it
        try:
            return self.principal.covers(normalize_case_id(case_id))
        except BadArgsError:
            return False

    def covers_agency(self, agency: str | None) -> bool:
        """No agency named, or one of the sender's agency codes (a name or another code is refused)."""
        if not agency or not agency.strip() or self.principal.all_agencies:
            return True
        try:
            return parse_agency_code(agency).code in self.principal.agencies
        except BadArgsError:
            return False

    def at_filing(self, index) -> "FilingScope":
        """This scope as the converter must use it when it files: bound to the sender's *current* rights,
        checked now (so a sender gone since the upload fails the job before anything is converted) and again
        at every question. Raises :class:`UploadRefused`."""
        scope = FilingScope(self, index)
        scope.current()
        return scope


class UploadRefused(PermissionDenied):
    """An upload's sender lost (some of) the right to file it between the upload and its filing."""

    def __init__(self, why: str):
        super().__init__(f"not filed: {why}; the scan is kept for a retry by someone entitled to file it")


def _current_sender(index, sender: Principal) -> Principal:
    """The sender's account or token as it is now; UploadRefused if it is gone, disabled or revoked."""
    who = f"{'API token' if sender.kind == 'token' else 'user'} {sender.name or '(none)'}"
    if sender.kind == "token":
        record = index.token_by_name(sender.name) if sender.name else None
        if record is None or record.revoked_at:
            raise UploadRefused(f"{who} was {'revoked' if record else 'deleted'} after sending it")
        if record.expires_at and datetime.fromisoformat(record.expires_at) <= _utc_now():
            raise UploadRefused(f"{who} expired at {record.expires_at}, after sending it")
        return Principal(record.name, record.role, tuple(record.agencies), "token")
    user = index.get_user(sender.name) if sender.name else None
    if user is None or user.disabled:
        raise UploadRefused(f"{who} was {'disabled' if user else 'deleted'} after sending it")
    return Principal(user.name, user.role, tuple(user.agencies), "user")


def narrowest(snapshot: Principal, current: Principal) -> Principal:
    """The rights both principals have: what the sender had when it sent a scan *and* has now. Only the upload
    right and the agency scope matter to filing: the result's role is the agency-limited side's (if any)."""
    if current.all_agencies and snapshot.all_agencies:
        return Principal(snapshot.name, current.role, (), snapshot.kind)
    if current.all_agencies or snapshot.all_agencies:
        limited = snapshot if current.all_agencies else current
        return Principal(snapshot.name, limited.role, limited.agencies, snapshot.kind)
    agencies = tuple(sorted(set(snapshot.agencies) & set(current.agencies)))
    return Principal(snapshot.name, current.role, agencies, snapshot.kind)


@dataclass(frozen=True)
class InboxScope(UploadScope):
    """What a shared watch inbox may file into (``[watch] agencies``): cases of those agency codes, and
    unmatched parts naming none of another agency, by the same rule as an upload. A fixed list from the
    configuration, not an account: nothing to re-read when the parts are filed."""

    @classmethod
    def of_agencies(cls, agencies) -> "InboxScope":
        return cls(Principal("watch-inbox", "scanner", tuple(agencies), "inbox"))

    def at_filing(self, index) -> "InboxScope":
        return self


@dataclass
class FilingScope:
    """An upload scope asked when its parts are filed (not when the scan was sent): each question re-reads
    the sender's account or token from the index and uses the intersection of the rights it had at upload
    time (the snapshot saved with the job or the task) and those it has now. A sender disabled, deleted,
    revoked, or left without the upload right or any of its agencies is :class:`UploadRefused`: the job
    fails with that reason and nothing is filed; the scan stays for a retry by someone entitled."""

    snapshot: UploadScope
    index: object

    def current(self) -> UploadScope:
        sender = self.snapshot.principal
        now = _current_sender(self.index, sender)
        who = f"{'API token' if sender.kind == 'token' else 'user'} {sender.name}"
        if not sender.can(Perm.upload):
            raise UploadRefused(f"{who} had no right to upload (a {sender.role or 'sender of no role'})")
        if not now.can(Perm.upload):
            raise UploadRefused(f"{who} may no longer upload (now a {now.role})")
        both = narrowest(sender, now)
        if not both.all_agencies and not both.agencies:
            raise UploadRefused(f"{who} no longer has any of the agencies it sent the scan for "
                                f"({', '.join(sender.agencies) or '-'})")
        return UploadScope(both)

    def __call__(self, case_id: str | None, agency: str | None = None) -> bool:
        return self.current()(case_id, agency)


@dataclass
class SearchFilters:
    agency: str = ""
    procedure: str = ""
    received_from: str = ""  # ISO dates, inclusive
    received_to: str = ""
    status: str = ""

    def accept(self, row: HitRow) -> bool:
        if self.agency and (not row.case_id or agency_of(row.case_id) != self.agency.strip().upper()):
            return False
        if self.procedure and not (row.procedure_code or "").startswith(self.procedure.strip()):
            return False
        if self.received_from and not (row.received_date and row.received_date >= self.received_from):
            return False
        if self.received_to and not (row.received_date and row.received_date[:10] <= self.received_to):
            return False
        if self.status and (row.status or "").casefold() != self.status.strip().casefold():
            return False
        return True


class SearchCache:
    """Recent search pages of this process, shared by its requests: most searches repeat (the same words
    typed at many desks), and a page costs several queries and twenty snippets to build.

    Keyed by the index, its search generation (storage/index.py: any committed write that may change an
    answer, from any process, changes it), the principal's scope (role's reach and agencies), the
    normalised query, the filters and the page: a stored, linked or removed document is never missed
    and a hit is never shown outside the scope it was judged for. Bounded in entries; an entry also ages
    out after ``max_age`` seconds, which bounds staleness should a generation bump ever fail (SQLite's
    follows the COMMIT); after ``atomic_max_age`` where the generation commits with the writes themselves
    (PostgreSQL's row, its triggers ENABLE ALWAYS), so no bump can be lost while they are enabled (README:
    a write with triggers disabled needs a manual bump): there the age bound only re-reads popular pages now and
    then (at 60 s, two server processes recomputed ~8 % of a desk's repeated searches). An index
    that has no generation (an in-memory one; PostgreSQL's is a row since migration 9) is not cached.
    Bounded in bytes too (titles come from sidecars): ``max_bytes`` for all pages and the views kept with them (:meth:`keep`), and a page over
    ``page_bytes`` is not kept."""

    def __init__(self, size: int = 512, max_age: float = 60.0, max_bytes: int = 32 << 20,
                 page_bytes: int = 256 << 10, atomic_max_age: float = 600.0):
        self.size, self.max_age, self.max_bytes, self.page_bytes = size, max_age, max_bytes, page_bytes
        self.atomic_max_age = atomic_max_age
        self._pages: OrderedDict[tuple, tuple[float, SearchPage, int]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0
        self.held = 0  # the cached pages' estimated text size: titles come from sidecars, of any length
        self._keys: dict[int, tuple] = {}  # id() of each held page: its key (for :meth:`keep`)

    @staticmethod
    def weight(page: SearchPage) -> int:
        """A page's text, roughly in bytes (what it holds beyond a fixed cost per hit)."""
        return sum(len(h.title) + len(h.snippet) + len(h.case_id or "") + 64 for h in page.hits)

    def page(self, index, key: tuple, build: Callable[[], SearchPage]) -> SearchPage:
        generation = index.search_generation()
        if generation is None:
            return build()
        key = (index.where, generation, *key)
        now = time.monotonic()
        max_age = self.atomic_max_age if getattr(index, "generation_atomic", False) else self.max_age
        with self._lock:
            got = self._pages.get(key)
            if got is not None and now - got[0] <= max_age:
                self._pages.move_to_end(key)
                self.hits += 1
                return got[1]
            self.misses += 1
        page = build()  # outside the lock: searches of other threads go on meanwhile
        weight = self.weight(page) + len(repr(key))  # the key holds the filters as typed: of any length
        if weight > self.page_bytes:  # a page of huge titles is built each time rather than held
            return page
        with self._lock:
            self._drop(key, self._pages.pop(key, None))
            self._pages[key] = (now, page, weight)
            self._keys[id(page)] = key
            self.held += weight
            self._bound()
        return page

    def keep(self, page: SearchPage, name: object, view: bytes) -> None:
        """Keep ``view`` (rendered from ``page``: the API's JSON) in ``page.derived[name]``, counted in the
        byte bound while the cache holds the page (review_lows11 L3: views were held beyond ``max_bytes``,
        up to about as much again). A page the cache does not hold keeps it too: it dies with its request."""
        with self._lock:
            if name in page.derived:  # another thread rendered it too: the same bytes, counted once
                return
            page.derived[name] = view
            key = self._keys.get(id(page))
            got = self._pages.get(key) if key is not None else None
            if got is None or got[1] is not page:
                return
            self._pages[key] = (got[0], page, got[2] + len(view) + 64)  # stays where it was in the order
            self.held += len(view) + 64
            self._bound()

    def _bound(self) -> None:
        """Under the lock: drop the oldest pages until both bounds hold."""
        while len(self._pages) > self.size or self.held > self.max_bytes:
            self._drop(*self._pages.popitem(last=False))

    def _drop(self, key: tuple, entry: tuple[float, SearchPage, int] | None) -> None:
        if entry is not None:
            self.held -= entry[2]
            if self._keys.get(id(entry[1])) == key:  # (one page object under two keys: the later one's; == as a
                # refreshed entry's key is a new, equal tuple: `is` left its id entry behind for ever)
                del self._keys[id(entry[1])]

    def clear(self) -> None:
        with self._lock:
            self._pages.clear()
            self._keys.clear()
            self.held = 0


SEARCH_CACHE = SearchCache()


CHANGE_VALUE_MAX = 200  # characters of an overwritten value kept in the event


def changes_text(changes: list[tuple[str, str | None]]) -> str:
    """The fields an update changed and their previous values, for its event: a wrong or malicious update
    can be undone from the log (review rev17desk L4). Readers of the log may read the case itself."""
    if not changes:
        return "nothing changed"
    return "; ".join(f"{name} was " + (repr(plain(old)[:CHANGE_VALUE_MAX]) if old else "empty")
                     for name, old in changes)


def agency_of(case_id: str) -> str | None:
    """The agency code of a *normalised* case ID (as every stored and scoped one is): everything before the
    last two hyphen-separated parts. Cheap, because search checks it for every candidate."""
    parts = case_id.rsplit("-", 2) if case_id else []
    return parts[0] if len(parts) == 3 and parts[0] else None


def check_role(role: str) -> str:
    if role not in ROLES:
        raise BadArgsError(f"role {role!r} must be one of {', '.join(ROLES)}")
    return role


def check_name(name: str, what: str = "user") -> str:
    if not _NAME.fullmatch(name or ""):
        raise BadArgsError(f"{what} name {name!r} must be 1 to 64 letters, digits or . _ @ - (starting with a letter "
                           "or digit)")
    return name


def parse_agencies(codes: Iterable[str]) -> list[str]:
    return sorted({parse_agency_code(c).code for c in codes})


# -- accounts -----------------------------------------------------------------------------------
def _hasher():
    from argon2 import PasswordHasher

    return PasswordHasher()


_DUMMY_HASH: list[str] = []


def _dummy_hash() -> str:
    """Verified against when the user does not exist, so both answers take the same time."""
    if not _DUMMY_HASH:
        _DUMMY_HASH.append(_hasher().hash(secrets.token_hex(16)))
    return _DUMMY_HASH[0]


def add_user(index, name: str, role: str, agencies: Iterable[str], password: str | None,
             oidc: tuple[str, str] | None = None) -> UserRecord:
    """``oidc``: (issuer, subject) the account is bound to for single sign-on, or None."""
    if password is not None and len(password) < MIN_PASSWORD:
        raise BadArgsError(f"password must have at least {MIN_PASSWORD} characters")
    user = UserRecord(check_name(name), check_role(role), parse_agencies(agencies),
                      _hasher().hash(password) if password is not None else None)
    if oidc is not None:
        user.oidc_issuer, user.oidc_subject = check_issuer(oidc[0]), check_subject(oidc[1])
    if role not in ALL_AGENCIES_ROLES and not user.agencies:
        raise BadArgsError(f"role {role} needs at least one --agency CODE")
    index.add_user(user, now_iso())
    return user


def audited(index, actor: str, client: str | None, action: str, target: str, change: Callable[[], object],
            detail: Callable[[object], str | None] | None = None):
    """Make a change to an account and record who made it, in one transaction (review web15 L3);
    ``detail(result)``: what the event adds to ACTION TARGET (a binding's subject and issuer)."""
    with index.transaction():
        result = change()
        index.add_account_event(AccountEvent(now_iso(), actor, action, target, client or None,
                                             detail=detail(result) if detail else None))
    return result


def describe_binding(binding: tuple[str, str] | None) -> str:
    """(issuer, subject) for events and `users list`; a subject is no secret, and the issuer tells a binding
    made under another [web] oidc_issuer spelling (a trailing slash, a renamed realm) apart."""
    return f"sub {binding[1]!r} of {binding[0]}" if binding else "not bound"


def check_subject(subject: str) -> str:
    """An OIDC ``sub``: at most 255 ASCII characters, none of them a control (OIDC Core 2)."""
    if not subject or len(subject) > 255 or not subject.isascii() or not subject.isprintable():
        raise BadArgsError(f"not a single sign-on subject (1-255 printable ASCII characters): {subject!r}")
    return subject


def check_issuer(issuer: str) -> str:
    if not issuer:
        raise BadArgsError("binding a single sign-on subject needs [web] oidc_issuer set (the provider it is of)")
    return issuer


def bind_oidc(index, name: str, issuer: str, subject: str) -> tuple[str, str] | None:
    """Bind user NAME to the provider's stable subject (an administrator's act, never a login's); returns the
    binding it replaced. The account's single sign-on sessions of any other binding end at their next
    request (:func:`principal_for_user`)."""
    return index.bind_subject(check_name(name), check_issuer(issuer), check_subject(subject), now_iso())


def unbind_oidc(index, name: str) -> tuple[str, str]:
    """Remove user NAME's single sign-on binding (its SSO sessions end at their next request); returns it."""
    before = index.unbind_subject(check_name(name), now_iso())
    if before is None:
        raise BadArgsError(f"user {name} is not bound to a single sign-on subject")
    return before


def authenticate_password(index, name: str, password: str) -> Principal:
    from argon2.exceptions import InvalidHashError, VerificationError as HashMismatch, VerifyMismatchError

    user = index.get_user(name) if _NAME.fullmatch(name or "") else None
    stored = user.password_hash if user and user.password_hash else _dummy_hash()
    try:
        ok = _hasher().verify(stored, password)
    except (VerifyMismatchError, HashMismatch, InvalidHashError):
        ok = False
    if not ok or user is None or user.disabled or not user.password_hash:
        raise AuthenticationError("wrong user name or password")
    return Principal(user.name, user.role, tuple(user.agencies), "user")


def authenticate_oidc(index, issuer: str, subject: str) -> Principal:
    """A single sign-on identity (ID token already verified, from ISSUER) -> the account bound to it.

    Only an administrator binds a subject to an account (``digitize users add --oidc-subject`` or
    ``users bind-oidc``); nothing the provider lets its users choose (``preferred_username``, ``email``)
    ever picks an account, so a provider user who names themself like a new colleague cannot take over
    that colleague's account. Rights always come from the local account, never from the provider.
    """
    user = index.user_by_subject(issuer, subject) if subject and issuer else None
    if user is None:
        raise AuthenticationError(f"single sign-on subject {subject!r} of {issuer} is bound to no account here "
                                  "(an administrator binds it: digitize users bind-oidc NAME SUBJECT)")
    if user.disabled:
        raise AuthenticationError(f"single sign-on subject {subject!r} belongs to user {user.name}, "
                                  "which is disabled")
    return Principal(user.name, user.role, tuple(user.agencies), "user")


PASSWORD_LOGIN = "password"  # what a session made by a password login keeps as its ``login``


def sso_login(issuer: str, subject: str) -> str:
    """What a session made by a single sign-on login keeps as its ``login``: a digest of the binding that let
    it in (the cookie is signed, not encrypted, and stays short)."""
    return "sso:" + hashlib.sha256(f"{issuer}\0{subject}".encode("utf-8")).hexdigest()[:32]


def principal_for_user(index, name: str, login: str | None = None) -> Principal | None:
    """The current rights of a logged-in user (None once disabled or deleted): checked on every request.

    ``login``: how the session logged in (:data:`PASSWORD_LOGIN` or :func:`sso_login`). A single sign-on
    session holds only while the account is still bound to the subject and issuer it logged in with, so
    an administrator who rebinds or unbinds an account (the wrong person's subject was bound) ends that
    person's sessions at their next request, as disabling does (review web15b M2). None: not checked
    (a principal for a task or an upload, not a session)."""
    user = index.get_user(name)
    if user is None or user.disabled:
        return None
    if login is not None and login != PASSWORD_LOGIN:
        bound = sso_login(user.oidc_issuer, user.oidc_subject) if user.oidc_issuer and user.oidc_subject else None
        if login != bound:
            return None
    return Principal(user.name, user.role, tuple(user.agencies), "user")


def token_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


TOKEN_DAYS = 365  # a new token's default lifetime (`digitize tokens create --expires-days`)
MAX_TOKEN_DAYS = 36500


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


def token_expiry(days: int, now: datetime | None = None) -> str | None:
    """The expiry of a token made ``now`` to last ``days`` (ISO 8601 UTC, as the index keeps times); 0: None,
    never."""
    if not 0 <= days <= MAX_TOKEN_DAYS:
        raise BadArgsError(f"--expires-days must be 0 (never) to {MAX_TOKEN_DAYS}, not {days}")
    return None if days == 0 else ((now or _utc_now()) + timedelta(days=days)).isoformat(timespec="seconds")


def create_token(index, name: str, role: str, agencies: Iterable[str], expires_days: int = TOKEN_DAYS,
                 now: datetime | None = None) -> str:
    """Make a token and return its secret: shown once, stored only as its SHA-256; it expires
    ``expires_days`` after ``now`` (0: never)."""
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    record = TokenRecord(check_name(name, "token"), check_role(role), parse_agencies(agencies), token_hash(secret),
                         expires_at=token_expiry(expires_days, now), expiry_recorded=True)
    if role not in ALL_AGENCIES_ROLES and not record.agencies:
        raise BadArgsError(f"a token of role {role} needs at least one --agency CODE")
    index.add_token(record, now.isoformat(timespec="milliseconds") if now else now_iso())
    return secret


def expire_token(index, name: str, days: int, now: datetime | None = None) -> str | None:
    """Make token NAME expire ``days`` after ``now`` (0: never) and return the expiry: how a token made
    before migration 0008, which has none, gets one (review web16 L4); also renews or shortens one."""
    expires_at = token_expiry(days, now)
    index.set_token_expiry(name, expires_at)
    return expires_at


def tokens_without_expiry(index) -> list[str]:
    """The active tokens made before migration 0008: they never expire until `tokens expire` says when."""
    return [t.name for t in index.tokens() if not t.revoked_at and not t.expiry_recorded]


def authenticate_token(index, secret: str, now: datetime | None = None) -> Principal:
    """The token's principal (its ``expires`` set, for caches that must not keep it longer);
    AuthenticationError if unknown or revoked, :class:`TokenExpired` once ``now`` is past its expiry."""
    record = index.token_by_hash(token_hash(secret)) if secret.startswith(TOKEN_PREFIX) else None
    if record is None or record.revoked_at:
        raise AuthenticationError("the API token is unknown or revoked")
    expires = datetime.fromisoformat(record.expires_at).timestamp() if record.expires_at else None
    if expires is not None and (now or _utc_now()).timestamp() >= expires:
        raise TokenExpired(f"the API token expired at {record.expires_at}; ask for a new one")
    return Principal(record.name, record.role, tuple(record.agencies), "token", expires)


def _copy_object(objects, key: str, target: Path) -> str:
    """A private copy for one response, hashed as it is written; no fsync and no rename (unlike
    ObjectStore.download): it is deleted once sent, and a crash leaves nothing anyone would read."""
    digest = hashlib.sha256()
    with open(target, "wb") as out:
        for block in objects.read_chunks(key):
            digest.update(block)
            out.write(block)
    return digest.hexdigest()


class FailedScan(Protocol):
    """What the gate needs of a failed inbox file (pipelines.failed.FailedFile)."""

    ref: str
    agencies: tuple[str, ...]

    @property
    def relative(self) -> str: ...


class JobRecord(Protocol):
    """What the gate needs of an upload job (web.uploads.UploadJob)."""

    job_id: str
    owner: str
    case_id: str | None
    name: str
    sha256: str
    sender: dict
    state: str


class EventSink(Protocol):
    def add(self, event: Event) -> bool: ...

    def flush(self) -> object: ...


# An access whose answer was withheld after its event was sent to the database (the portal's 503: the
# commit came too late; or the request was cancelled before its answer): the append-only log gets this
# compensating event (no schema change: outcome failure, the original's time and detail after the prefix,
# its other fields copied), and :func:`fold_withheld` shows the original as refused when read. A streamed
# answer whose closing event came too late got every piece but the last: CUT_OFF says so. A download whose
# success event was sent ahead of its read (Gate.record_ahead) and then failed its SHA-256 check: CHECK_FAILED,
# committed with the failure's own event, which alone is shown for that attempt (the original is folded away).
WITHHELD = "answer withheld (not sent: a 503, or the request ended, before its event was committed): "
CUT_OFF = "answer cut off (its last piece not sent: the event's commit came late): "
CHECK_FAILED = "check failed (not sent: the object did not match its SHA-256; see the failure's own event): "
_SHOWN = {WITHHELD: " (answer withheld: not sent)", CUT_OFF: " (answer cut off: its last piece not sent)"}
_PREFIXES = (WITHHELD, CUT_OFF, CHECK_FAILED)


def withheld(event: Event, prefix: str = WITHHELD) -> Event:
    return Event(event.event_type, "failure", event.actor, event.tool, doc_id=event.doc_id, case_id=event.case_id,
                 checksum=event.checksum, detail=f"{prefix}{event.time} {event.detail}", time=now_iso(),
                 client=event.client)


def _compensation(event: Event) -> str | None:
    """The prefix of a compensating event, else None."""
    if event.outcome == "failure" and event.detail.startswith(_PREFIXES):
        return next(prefix for prefix in _PREFIXES if event.detail.startswith(prefix))
    return None


def _identity(event: Event, time_detail: str) -> tuple:
    return (event.event_type, event.actor, event.tool, event.doc_id, event.case_id, event.client, event.checksum,
            time_detail)


def fold_withheld(events: list[Event]) -> list[Event]:
    """The log as officers read it: an access later withheld is shown once, as a failure saying so (its
    compensating event is folded into it), never as done; a download's success sent ahead of a read that
    failed its check is not shown at all (the failure's own event, with the SHA-256 read, is that attempt). Each compensating event marks ONE original with
    every field equal (twins, e.g. two identical requests in the same millisecond, of which one was served:
    one stays done; rows equal in every field cannot be told apart, so which one does not matter)."""
    marks: dict[tuple, list[str]] = {}
    for e in events:
        if prefix := _compensation(e):
            marks.setdefault(_identity(e, e.detail[len(prefix):]), []).append(prefix)
    if not marks:
        return events
    shown = []
    for e in events:
        if _compensation(e):
            continue
        if prefixes := marks.get(_identity(e, f"{e.time} {e.detail}")):
            prefix = prefixes.pop()
            if prefix == CHECK_FAILED:
                continue
            e = replace(e, outcome="failure", detail=e.detail + _SHOWN[prefix])
        shown.append(e)
    return shown


@dataclass
class Download:
    """A verified stream of one object (see :meth:`Gate.stream`); iterate it once."""

    doc: DocumentRow
    kind: str
    key: str
    sha256: str
    size: int
    gate: "Gate"
    byte_range: tuple[int, int] | None = None

    @property
    def length(self) -> int:
        first, last = self.byte_range or (0, self.size - 1)
        return max(0, last - first + 1)

    @property
    def part(self) -> str:
        return f" bytes {self.byte_range[0]}-{self.byte_range[1]}" if self.byte_range else ""

    def announce(self) -> None:
        """Record the access before a streamed answer's first byte (the portal commits it before sending
        anything, or answers 503): the stream's closing event, with its SHA-256 outcome, comes only at its
        end, and a client taking every piece but the last, while commits fail, would otherwise hold the file
        unrecorded."""
        self.gate.record("retrieved", f"downloading {self.kind} of document {self.doc.sequence}{self.part}",
                         doc=self.doc)

    def __iter__(self):
        return self._pieces(None)

    def _pieces(self, fail: "Callable[[Event], None] | None"):
        """The checked pieces; the closing event recorded at the end, unless ``fail`` says it was sent ahead
        (:meth:`read`): then a success is already recorded, and a failure is recorded by ``fail``, which
        takes that success back in the same commit."""
        first, last = self.byte_range or (0, self.size - 1)
        digest, offset, held, finished = hashlib.sha256(), 0, b"", False
        actual = ""
        try:
            for block in self.gate.archive.objects.read_chunks(self.key):
                digest.update(block)
                lo, hi = max(first, offset), min(last + 1, offset + len(block))
                if lo < hi:
                    if held:
                        yield held
                    held = block[lo - offset:hi - offset]
                offset += len(block)
            actual = digest.hexdigest()
            finished = True
        finally:
            ok = finished and actual == self.sha256 and offset == self.size
            if not ok or fail is None:
                event = self.gate._event("retrieved", self._closing() + ("" if finished else " (interrupted)"),
                                         doc=self.doc, checksum=actual or None,
                                         outcome="success" if ok else "failure")
                (fail or self.gate._put)(event)  # fail: the success sent ahead is taken back with it
        if not ok:
            raise VerificationError(f"{self.key}: SHA-256 {actual} ({offset} bytes) does not match the index "
                                    f"({self.sha256}, {self.size} bytes); the download was aborted")
        if held:
            yield held

    def _closing(self) -> str:
        return f"downloaded {self.kind} of document {self.doc.sequence}{self.part}"

    def read(self) -> bytes:
        """The whole (range of the) object, returned only once its SHA-256 matched (else VerificationError):
        for objects small enough to hold in memory, a corrupt one is refused before its first byte is sent.

        Its event (the same one a success records afterwards: this detail, the index's SHA-256, which the
        read must match) is sent ahead, before the object is read (:meth:`Gate.record_ahead`), where the
        sink can take it back: its group commit then runs while the object is read and checked and the
        answer goes back to the event loop, instead of starting after them (under load the commit was
        most of a download's tail). The answer still waits for that commit (the portal's
        CommitBeforeAnswer); a failed read or check records the failure as before, and takes the success
        back in the same commit (dropped if not yet written, else compensated: CHECK_FAILED), which the
        500 waits for too."""
        fail = self.gate.record_ahead("retrieved", self._closing(), doc=self.doc, checksum=self.sha256)
        return b"".join(self._pieces(fail))


# -- the gate -----------------------------------------------------------------------------------
@dataclass
class Gate:
    """The archive as one principal may see it; every method checks role, then scope, then records."""

    archive: "Archive"
    principal: Principal
    client: str = ""
    via: str = "portal"  # the way in, named in each event's tool: "portal" (pages and API) or "cli"
    tool: str = field(default="", init=False)
    # where events go: None = written at once; the portal sets its process's batching writer (web/events.py)
    sink: "EventSink | None" = field(default=None, init=False)

    def __post_init__(self) -> None:
        from .archive import TOOL

        self.tool = f"{TOOL} {self.via}"

    @property
    def index(self):
        return self.archive.index

    def require(self, perm: Perm) -> None:
        if not self.principal.can(perm):
            raise PermissionDenied(f"a {self.principal.role} may not {perm.value}")

    def scoped_case_id(self, case_id: str, perm: Perm = Perm.read) -> str:
        """The normalised case ID if this principal may act on it; a bad ID is a BadArgsError (400)."""
        self.require(perm)
        value = normalize_case_id(case_id)
        if not self.principal.covers(value):
            raise NotFoundError(f"case {value} not found")
        return value

    def record(self, kind: str, detail: str, case_id: str | None = None, doc: DocumentRow | None = None,
               checksum: str | None = None, outcome: str = "success") -> None:
        self._put(self._event(kind, detail, case_id, doc, checksum, outcome))

    def _put(self, event: Event) -> None:
        if self.sink is not None and self.sink.add(event):
            return
        self._write_now([event])

    def _write_now(self, events: list[Event]) -> None:
        if events:
            with _EVENT_WRITES:
                self.index.add_events(events)

    def _event(self, kind: str, detail: str, case_id: str | None = None, doc: DocumentRow | None = None,
               checksum: str | None = None, outcome: str = "success") -> Event:
        return Event(kind, outcome, self.principal.actor, self.tool, doc_id=doc.doc_id if doc else None,
                     case_id=case_id or (doc.case_id if doc else None), checksum=checksum, detail=detail,
                     time=now_iso(), client=self.client or None)

    def record_ahead(self, kind: str, detail: str, doc: DocumentRow,
                     checksum: str) -> Callable[[Event], None] | None:
        """Send a success event before the access it records is done (a download's read and SHA-256 check),
        so that its commit overlaps that work; if the access then fails, the call returned records its
        failure event, which takes the success back in the same commit (the answer waits for it). Only
        through a sink that can take an event back (the portal's request events, which also hold the answer
        until the commit) and before the answer started; else None, and the caller records afterwards."""
        take_back = getattr(self.sink, "take_back", None)
        if take_back is None or getattr(self.sink, "started", False):
            return None
        event = self._event(kind, detail, doc=doc, checksum=checksum)
        if not self.sink.add(event):
            return None
        return lambda failure: self._write_now(take_back(event, failure))

    def _add_events(self, events: list[Event]) -> None:
        """To the sink (the portal's request events), else written at once."""
        if self.sink is not None:
            events = [e for e in events if not self.sink.add(e)]
        if events:
            with _EVENT_WRITES:
                self.index.add_events(events)

    # -- reading ---------------------------------------------------------------------------------
    def case(self, case_id: str) -> tuple[CaseRecord, list[DocumentRow]]:
        value = self.scoped_case_id(case_id)
        record = self.archive.case(value)
        docs = self.archive.documents(value)
        self.record("retrieved", "viewed the case record and its document list", case_id=value)
        return record, docs

    def signatures(self, case_id: str, docs: list[DocumentRow] | None = None) -> dict[int, list[SignatureRow]]:
        """The recorded PAdES signatures of the case's documents, by doc_id (unsigned ones are absent);
        ``docs``: that case's documents as :meth:`case` gave them (saves reading them again)."""
        value = self.scoped_case_id(case_id)
        if docs is None or any(d.case_id != value for d in docs):
            docs = self.archive.documents(value)
        return self.archive.signatures([d.doc_id for d in docs if d.doc_id is not None])

    def find_case(self, text: str) -> str | None:
        """The normalised case ID if ``text`` names a case this principal may read, else None (no event)."""
        try:
            value = self.scoped_case_id(text)
            return self.archive.case(value).case_id
        except (BadArgsError, NotFoundError):
            return None

    def document(self, case_id: str, sequence: int) -> DocumentRow:
        value = self.scoped_case_id(case_id)
        doc = self.index.document_in_case(value, sequence)
        if doc is not None:
            return doc
        raise NotFoundError(f"document {sequence} of case {value} not found")

    def fetch(self, case_id: str, sequence: int, kind: str, target: Path, purpose: str = "downloaded") -> DocumentRow:
        """Write one stored object (``pdfa`` or ``original``) to ``target``, SHA-256 checked, and record it."""
        doc = self.document(case_id, sequence)
        key, expected = (doc.original_key, doc.original_sha256) if kind == "original" else (doc.pdfa_key,
                                                                                              doc.pdfa_sha256)
        actual = _copy_object(self.archive.objects, key, target)
        ok = actual == expected
        self.record("retrieved", f"{purpose} {kind} of document {sequence}", doc=doc, checksum=actual,
                    outcome="success" if ok else "failure")
        if not ok:
            target.unlink(missing_ok=True)
            raise VerificationError(f"{key}: SHA-256 {actual} does not match the index ({expected})")
        return doc

    def stream(self, case_id: str, sequence: int, kind: str,
               byte_range: tuple[int, int] | None = None) -> "Download":
        """One stored object sent straight from the store (no copy): its SHA-256 is checked while it streams
        and the last piece is held back until it matched, so a corrupt object never reaches the client
        complete (the iterator raises VerificationError instead, and the server aborts the response).
        ``byte_range`` is (first, last) inclusive, already checked against :attr:`Download.size`."""
        doc = self.document(case_id, sequence)
        key, expected = (doc.original_key, doc.original_sha256) if kind == "original" else (doc.pdfa_key,
                                                                                              doc.pdfa_sha256)
        size = self.archive.objects.size(key)
        return Download(doc, kind, key, expected, size, self, byte_range)

    def unsent(self, doc: DocumentRow, kind: str, why: str, outcome: str = "success") -> None:
        """A download of ``doc`` (from :meth:`document`) answered without its bytes, e.g. 304 "not modified"
        (it confirms the copy the client holds) or 416 "range not satisfiable" (it probes the object): an
        access all the same, recorded like a download with ``why`` in its detail."""
        self.record("retrieved", f"downloaded {kind} of document {doc.sequence} ({why})", doc=doc, outcome=outcome)

    def dossier(self, case_id: str, out: "Path | zipfile.ZipFile", original: bool = False) -> "retrieval.Retrieval":
        """Every document of the case into the folder or the ZIP ``out``, SHA-256 checked; one event per
        document and one for the dossier."""
        value = self.scoped_case_id(case_id)
        got = self.archive.retrieve(value, out, original, actor=self.principal.actor, client=self.client or None,
                                    add_events=self._add_events)  # with the request's: withdrawn with a 503
        where = f"to {out}" if isinstance(out, Path) else "as a ZIP"
        self.record("retrieved", f"downloaded the dossier ({len(got.files)} documents) {where}", case_id=value)
        return got

    def presigned_urls(self, case_id: str, expires: timedelta, original: bool = False) -> list[tuple[DocumentRow, str]]:
        """Links straight to the bucket: issuing them is recorded, each use of one is not (SECURITY.md)."""
        value = self.scoped_case_id(case_id)
        return self.archive.presigned_url(value, expires, original, actor=self.principal.actor, tool=self.tool)

    def verify(self, case_id: str | None, trust: str = ""):
        """The fixity audit (storage/fixity.py) of one case in scope, or of everything (all agencies only)."""
        self.require(Perm.audit)
        value = self.scoped_case_id(case_id, Perm.audit) if case_id else None
        if value is None and not self.principal.all_agencies:
            raise PermissionDenied(f"a {self.principal.role} of some agencies may not audit the whole archive")
        return self.archive.verify(value, actor=self.principal.actor, trust=trust)

    def events(self, case_id: str) -> list[Event]:
        """The case's log: actor, action and time for every reader of the case; the actors' client addresses
        (personal data of other staff) only for those who audit (archivists, admins; review web15 L9)."""
        value = self.scoped_case_id(case_id)
        if self.sink is not None:
            self.sink.flush()  # this process's queued events first, so a reader sees its own view
        events = fold_withheld(self.index.events(case_id=value))
        if self.principal.can(Perm.audit):
            return events
        return [replace(e, client=None) for e in events]

    def search(self, text: str, filters: SearchFilters | None = None, limit: int = 20, offset: int = 0) -> SearchPage:
        self.require(Perm.read)
        filters = filters or SearchFilters()
        query = parse_query(text)  # a query with no words is refused before the cache is looked at
        p = self.principal
        scope = None if p.all_agencies else tuple(sorted(set(p.agencies)))
        return SEARCH_CACHE.page(self.index, (scope, query, tuple(vars(filters).values()), limit, offset), lambda: self.index.search_page(
            text, lambda row: p.covers(row.case_id) and filters.accept(row), limit, offset, scope))

    # -- writing ---------------------------------------------------------------------------------
    def upsert_case(self, case_id: str, fields: dict) -> tuple[bool, CaseRecord]:
        """Upsert a case record from an export-like row (same field names as ``cases import``). The parsed
        record is judged, not the raw keys: any alias header naming another case is refused (review rev17desk H1)."""
        from .cases_import import parse_case_row

        value = self.scoped_case_id(case_id, Perm.write_case)
        record = parse_case_row({**fields, "case_id": value})
        if record.case_id != value:  # parse_case_row refuses disagreeing aliases; this is the scope's own check
            raise BadArgsError(f"the record's case ID {record.case_id} differs from {value}")
        before = self.index.merge_case(record)  # the values overwritten, read by the write itself (review2 L5)
        self.record("ingested", "case record created through the API" if before is None else
                    "case record updated through the API: " + changes_text(case_changes(before, record)),
                    case_id=record.case_id)
        return before is None, self.archive.case(value)

    def accept_upload(self, case_id: str | None, name: str, sha256: str) -> str | None:
        """Check an upload may go to ``case_id`` (None: unmatched) and record its arrival; the case ID back."""
        if case_id:
            value = self.scoped_case_id(case_id, Perm.upload)
        else:
            self.require(Perm.upload)
            value = None
        self.record("ingested", f"upload {name!r} received through the portal", case_id=value, checksum=sha256)
        return value

    def dismiss_upload(self, job: JobRecord, dismiss: Callable[[], object]) -> None:
        """Give up a failed upload the caller found visible (:meth:`visible_job`): ``dismiss()`` deletes its kept
        scan, often the only copy of a document never stored. Only its sender, or an archivist or admin (who
        clear a departed sender's), may: a colleague who may merely see it does not delete it (review2 r2desk
        L1). The event is committed before the deletion, and a compensating failure event follows if the
        dismissal then does not happen: no deletion goes unrecorded, whatever the request's answer."""
        self.require(Perm.upload)
        p = self.principal
        if not (p.all_agencies or (job.owner == p.actor and self._sent_in_scope(job.sender))):
            raise PermissionDenied("only the sender of an upload, or an archivist or admin, may dismiss it")
        if job.state != "failed":  # as last saved; dismiss() asks again under the job's lock
            raise BadArgsError("only a failed upload can be dismissed")
        what = f"upload {job.name!r} (upload job {job.job_id})"
        self._write_now([self._event("ingested", f"{what} dismissed at the desk: its kept scan deleted",
                                     job.case_id, checksum=job.sha256, outcome="failure")])
        try:
            dismiss()
        except BaseException as e:
            why = str(e) if isinstance(e, DigitizeError) else type(e).__name__
            self.record("ingested", f"{what} not dismissed after all: {why}", job.case_id, checksum=job.sha256,
                        outcome="failure")
            raise

    def upload_scope(self) -> UploadScope:
        """The predicate an upload's conversion job checks every part against before storing it."""
        self.require(Perm.upload)
        return UploadScope(self.principal)

    def visible_job(self, case_id: str | None, owner: str, filed: Iterable[str | None] = (),
                    sender: dict | None = None, place_case_id: str | None = None) -> bool:
        """An upload job is visible to whoever sent it, and to those who may upload to its case; to either only
        while every case it names (its own, the one its scan's old place in failed/ named, those its documents
        were ``filed`` in) is in their current scope: an account moved to another agency, or a new one given an
        old name, does not keep seeing the old agency's jobs by its name (review rev17desk L2). A job naming no
        case is its sender's only while the agencies it was sent under (``sender``, saved with the job) are
        still all theirs (review2 r2desk M2): else the name alone would show, retry or dismiss it. Archivists
        and admins (all agencies) see every job, caseless ones too, so a departed sender's failed upload is
        never left to nobody (review3 r3desk M3)."""
        p = self.principal
        if not p.can(Perm.upload) or not all(p.covers(c) for c in (case_id, place_case_id, *filed) if c):
            return False
        return case_id is not None or p.all_agencies or (owner == p.actor and self._sent_in_scope(sender))

    def _sent_in_scope(self, sender: dict | None) -> bool:
        """The scope a job was sent under is inside this principal's (a job saved without one: not)."""
        if self.principal.all_agencies:
            return True
        sent = UploadScope.of(sender if isinstance(sender, dict) else {}).principal
        return not sent.all_agencies and bool(sent.agencies) and set(sent.agencies) <= set(self.principal.agencies)

    def inbox_failures(self, files: Iterable["FailedScan"]) -> list["FailedScan"]:
        """The watch inbox's failed files (pipelines/failed.py) this principal may see and retry: all of them
        for archivists and admins; for others only files attributed to their agencies alone (the agencies
        named by the case IDs and agency code in the file's clues). An unattributable file (no agency named,
        or a sidecar that cannot be read) is for archivists and admins only: least privilege."""
        self.require(Perm.upload)
        return [f for f in files if self._covers_failure(f)]

    def _covers_failure(self, item: "FailedScan") -> bool:
        if self.principal.all_agencies:
            return True
        return bool(item.agencies) and set(item.agencies) <= set(self.principal.agencies)

    def retry_inbox_failure(self, files: Iterable["FailedScan"], ref: str, case_id: str,
                            take: Callable[["FailedScan", str | None], str]) -> str:
        """Link a failed inbox file (named by its opaque ``ref``) to ``case_id`` ("": none) and have it
        converted again: ``take(file, case ID)`` (the upload queue, through the watch job) within this
        principal's upload scope; the job id back. Out of scope, the file or the case, is a 404."""
        self.require(Perm.upload)
        target = self.scoped_case_id(case_id, Perm.upload) if case_id.strip() else None
        item = next((f for f in files if f.ref == ref and self._covers_failure(f)), None)
        if item is None:
            raise NotFoundError("failed file not found")
        job_id = take(item, target)
        self.record("ingested", f"failed inbox file {item.relative!r} taken from the watch folder to be converted "
                    "again" + (f" into {target}" if target else " (no case chosen)") + f" (upload job {job_id})",
                    case_id=target)
        return job_id

    def unmatched(self) -> list[DocumentRow]:
        self.require(Perm.link)
        return [d for d in self.archive.unmatched() if self._covers_unmatched(d)]

    def _covers_unmatched(self, doc: DocumentRow) -> bool:
        if self.principal.all_agencies:
            return True
        if doc.case_id and agency_of(doc.case_id):
            return self.principal.covers(doc.case_id)
        return bool(doc.agency) and doc.agency in self.principal.agencies

    def link(self, doc_id: int, case_id: str) -> DocumentRow:
        """Link an unmatched document to ``case_id``. Only those who may read the archive (archivists, admins)
        may also share a filed document into another case; a scanner's link right is for the unmatched ones it
        sees in :meth:`unmatched`, nothing else (review rev17desk M1)."""
        value = self.scoped_case_id(case_id, Perm.link)
        doc = self.index.document(doc_id) if self.principal.can(Perm.read) else self.index.unmatched_document(doc_id)
        if doc is None or doc.status != "stored" or not self._covers_unmatched(doc):
            raise NotFoundError(f"document {doc_id} not found")
        return self.archive.link(doc_id, value, actor=self.principal.actor)

    # -- administration --------------------------------------------------------------------------
    def accounts(self) -> tuple[list[UserRecord], list[TokenRecord]]:
        self.require(Perm.admin)
        return self.index.users(), self.index.tokens()

    def disable_user(self, name: str) -> None:
        self.require(Perm.admin)
        audited(self.index, self.principal.actor, self.client, "user disabled", name,
                lambda: self.index.set_user_disabled(name, True, now_iso()))
