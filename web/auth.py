"""Who is asking: Bearer tokens for the API, signed session cookies for the pages, CSRF (login throttling:
web/throttle.py).

Sessions are Starlette's SessionMiddleware (itsdangerous-signed cookie, HttpOnly, SameSite=Strict, Secure by
default); the signing is a well-kept library's. The session holds only the user name, a random session id,
times and the CSRF token; logout records the id as ended (:class:`SessionRevocations`), so a copied cookie
dies with it; the user's role and agencies are re-read from the index on every request, so disabling a user
ends its sessions at once; a single sign-on session also keeps (a digest of) the issuer and subject it logged
in with, and ends as soon as the account is bound to another subject or unbound. API tokens are verified
against the index and the verified principal kept for at most ``[web] token_cache_seconds`` in the process
(:class:`TokenCache`), so a revoked token is refused within that time. CSRF uses the synchronizer-token
pattern (a random token in the session, echoed by every form): it works for plain HTML forms, which the
double-submit middlewares for Starlette (header-only) do not cover.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Callable

from fastapi import Request

from digitize.errors import BadArgsError
from storage.access import AuthenticationError, Principal, authenticate_token, principal_for_user, token_hash

SESSION_COOKIE = "digitize_session"
SESSION_MAX_AGE = 12 * 3600  # absolute lifetime of a session cookie
TOKEN_CACHE_SECONDS = 2.0  # a revoked API token is refused at most this long after `digitize tokens revoke`
# (the default of [web] token_cache_seconds, which the portal passes to TokenCache)


class LoginRequired(Exception):
    """A page needs a logged-in user: answered with a redirect to the login page."""


class CsrfError(BadArgsError):
    pass


def session_secret(settings) -> str:
    """The configured key (as :func:`web.settings_check.session_key` reads and checks it), else one random key
    per data dir, created private (0600) on first use."""
    from .settings_check import session_key

    if key := session_key(settings):
        return key
    from storage.modes import private_folder

    path = private_folder(settings.data_dir, settings.store.group_readable) / "web-secret"
    if not os.path.lexists(path):  # written aside, then linked in: worker processes starting together
        temp = path.with_name(f".web-secret.{os.getpid()}.{secrets.token_hex(4)}")  # all read the same key
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(48))
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(temp, path)
            except FileExistsError:
                pass
        finally:
            os.unlink(temp)
    from digitize.secrets import read_secret_file

    return read_secret_file(path, "portal session key")  # a regular private file of ours, at most 4 kB (L1)


class SessionRevocations:
    """Sessions ended by logout, kept server-side so that a copied cookie stops working at once.

    Each session has a random id (``sid``) in its signed cookie; logout leaves a file named by the id's
    SHA-256 in ``data_dir/sessions-ended/`` (0700), which every request checks (one stat). The folder is
    shared by the server's worker processes; entries older than a cookie's lifetime are pruned, since
    the signed cookie has expired by then anyway."""

    def __init__(self, data_dir: str | Path, max_age: float = SESSION_MAX_AGE):
        self.folder = Path(data_dir) / "sessions-ended"
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.max_age = max_age

    def _path(self, sid: str) -> Path:
        return self.folder / hashlib.sha256(sid.encode("utf-8")).hexdigest()

    def revoke(self, sid: str) -> None:
        fd = os.open(self._path(sid), os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        os.fsync(fd)
        os.close(fd)
        self.prune()

    def revoked(self, sid: str) -> bool:
        return os.path.lexists(self._path(sid))

    def prune(self) -> None:
        cutoff = time.time() - self.max_age - 60
        for entry in os.scandir(self.folder):
            try:
                if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                    os.unlink(entry.path)
            except OSError:
                continue


def client_address(request: Request) -> str:
    return request.client.host if request.client else ""


class TokenCache:
    """API tokens verified against the index in the last ``ttl`` seconds, by the token's SHA-256 (the
    secret itself is not kept), so that a request whose token was just verified needs no index lookup
    and no thread hop before its route runs (web/app.py). Only successes are kept: a new token works at
    once, an unknown one is looked up every time. A token revoked (or changed) in the index is refused
    within ``ttl``: every entry is re-verified once it is that old; and no entry outlives its token's
    expiry (``Principal.expires``, wall-clock ``now``): an expired token is refused at once. Bounded to
    ``size`` entries."""

    def __init__(self, ttl: float = TOKEN_CACHE_SECONDS, size: int = 1024,
                 clock: Callable[[], float] = time.monotonic, now: Callable[[], float] = time.time):
        self.ttl, self.size, self.clock, self.now = ttl, size, clock, now
        self._entries: OrderedDict[str, tuple[float, Principal]] = OrderedDict()  # (re-verify at, principal)
        self._lock = threading.Lock()

    def get(self, digest: str) -> Principal | None:
        with self._lock:
            entry = self._entries.get(digest)
            if entry is None:
                return None
            if self.clock() >= entry[0]:
                del self._entries[digest]
                return None
            return entry[1]

    def put(self, digest: str, principal: Principal, since: float) -> None:
        """``since``: the clock before the index was asked (a revocation after it is seen within ttl)."""
        ttl = self.ttl
        if principal.expires is not None:  # (the wall clock: expiries are dates; a step of it shortens this)
            ttl = min(ttl, principal.expires - self.now() + (self.clock() - since))
        if ttl <= 0:
            return
        with self._lock:
            self._entries[digest] = (since + ttl, principal)
            self._entries.move_to_end(digest)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)


def bearer_secret(request: Request) -> str:
    """The request's Bearer token (not yet verified); AuthenticationError if there is none."""
    header = request.headers.get("authorization", "")
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise AuthenticationError("an Authorization: Bearer token is required")
    return secret.strip()


def cached_api_principal(request: Request, cache: TokenCache) -> Principal | None:
    """The token's principal if it was verified within the cache's ttl (no index lookup), else None.
    Never blocks: it runs on the event loop."""
    return cache.get(token_hash(bearer_secret(request)))


def api_principal(request: Request, index, cache: TokenCache | None = None) -> Principal:
    secret = bearer_secret(request)
    since = cache.clock() if cache is not None else 0.0
    principal = authenticate_token(index, secret)
    if cache is not None:
        cache.put(token_hash(secret), principal, since)
    return principal


def page_principal(request: Request, index, idle: float, ended: SessionRevocations) -> Principal:
    session = request.session
    name, sid = session.get("user"), session.get("sid")
    now = time.time()
    # idle timeout, and an absolute lifetime from login: re-signing the cookie on every request must not
    # make a session (or a copy of its cookie) live for ever
    too_old = now - float(session.get("since", 0)) > SESSION_MAX_AGE
    login = session.get("login")  # none: a session from before migration 0007, maybe of an SSO login that
    # the old name-based binding let in (review web15 H1): it cannot be told apart, so it has ended
    if (not name or not sid or not login or too_old or now - float(session.get("seen", 0)) > idle
            or ended.revoked(str(sid))):
        session.pop("user", None)
        raise LoginRequired()
    principal = principal_for_user(index, name, str(login))
    if principal is None:
        session.clear()
        raise LoginRequired()
    session["seen"] = now
    return principal


def csrf_token(request: Request) -> str:
    token = request.session.get("csrf")
    if not token:
        token = request.session["csrf"] = secrets.token_urlsafe(32)
    return token


def check_csrf(request: Request, submitted: str | None) -> None:
    expected = request.session.get("csrf")
    if not expected or not submitted or not hmac.compare_digest(expected, submitted):
        raise CsrfError("the form has expired or did not come from this site; reload the page and try again")


def start_session(request: Request, principal: Principal, login: str) -> None:
    """A fresh session (and CSRF token) at login, so a token planted before login is worthless. ``login``:
    how it logged in (storage.access.PASSWORD_LOGIN or sso_login(issuer, subject)), checked on every request."""
    lang = request.session.get("lang")
    request.session.clear()
    now = time.time()
    request.session.update(user=principal.name, seen=now, since=now, csrf=secrets.token_urlsafe(32),
                           sid=secrets.token_urlsafe(32), login=login)
    if lang:
        request.session["lang"] = lang


def end_session(request: Request, ended: SessionRevocations) -> None:
    """Logout: the session id is revoked server-side (copies of the cookie die too), then the cookie cleared."""
    sid = request.session.get("sid")
    if sid:
        ended.revoke(str(sid))
    lang = request.session.get("lang")
    request.session.clear()
    if lang:
        request.session["lang"] = lang
