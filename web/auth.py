"""Who is asking: Bearer tokens for the API, signed session cookies for the pages, CSRF, login throttling.

Sessions are Starlette's SessionMiddleware (itsdangerous-signed cookie, HttpOnly, SameSite=Strict, Secure
by default): nothing to store server-side, and the signing is a well-kept library's. The session holds only
the user name, times and the CSRF token; the user's role and agencies are re-read from the index on every
request, so disabling a user ends its sessions at once. CSRF uses the synchronizer-token pattern (a random
token in the session, echoed by every form): it works for plain HTML forms, which the double-submit
middlewares for Starlette (header-only) do not cover.
"""

from __future__ import annotations

import hmac
import os
import secrets
import threading
import time
from pathlib import Path

from fastapi import Request

from digitize.errors import BadArgsError
from storage.access import AuthenticationError, Principal, authenticate_token, principal_for_user

SESSION_COOKIE = "digitize_session"
SESSION_MAX_AGE = 12 * 3600  # absolute lifetime of a session cookie


class LoginRequired(Exception):
    """A page needs a logged-in user: answered with a redirect to the login page."""


class CsrfError(BadArgsError):
    pass


def session_secret(settings) -> str:
    """The configured key, else one random key per data dir, created private (0600) on first use."""
    if settings.web.secret_key:
        return settings.web.secret_key
    path = Path(settings.data_dir) / "web-secret"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        fd = None
    if fd is not None:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(48))
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd) as f:
        return f.read().strip()


def client_address(request: Request) -> str:
    return request.client.host if request.client else ""


def api_principal(request: Request, index) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise AuthenticationError("an Authorization: Bearer token is required")
    return authenticate_token(index, secret.strip())


def page_principal(request: Request, index, idle: float) -> Principal:
    session = request.session
    name = session.get("user")
    now = time.time()
    if not name or now - float(session.get("seen", 0)) > idle:
        session.pop("user", None)
        raise LoginRequired()
    principal = principal_for_user(index, name)
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


def start_session(request: Request, principal: Principal) -> None:
    """A fresh session (and CSRF token) at login, so a token planted before login is worthless."""
    lang = request.session.get("lang")
    request.session.clear()
    request.session.update(user=principal.name, seen=time.time(), csrf=secrets.token_urlsafe(32))
    if lang:
        request.session["lang"] = lang


ADDRESS_FACTOR = 10  # an office behind one NAT address shares it: the address limit is this many times higher


class LoginThrottle:
    """After ``attempts`` failures for one user name (from any address), or ten times that from one address,
    logins for that name (or from that address) pause for ``pause`` seconds."""

    def __init__(self, attempts: int, pause: float, clock=time.monotonic):
        self.attempts, self.pause, self.clock = attempts, pause, clock
        self._failures: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def _keys(self, name: str, address: str) -> list[str]:
        return [f"user:{name.casefold()}", f"addr:{address}"]

    def _recent(self, key: str, now: float) -> list[float]:
        return [t for t in self._failures.get(key, []) if now - t < self.pause]

    def blocked(self, name: str, address: str) -> bool:
        now = self.clock()
        with self._lock:
            user, addr = self._keys(name, address)
            return (len(self._recent(user, now)) >= self.attempts
                    or len(self._recent(addr, now)) >= self.attempts * ADDRESS_FACTOR)

    def failed(self, name: str, address: str) -> None:
        now = self.clock()
        with self._lock:
            for key in self._keys(name, address):
                self._failures[key] = [*self._recent(key, now), now]

    def succeeded(self, name: str, address: str) -> None:
        with self._lock:
            self._failures.pop(self._keys(name, address)[0], None)
