"""Who is asking: Bearer tokens for the API, signed session cookies for the pages, CSRF, login throttling.

Sessions are Starlette's SessionMiddleware (itsdangerous-signed cookie, HttpOnly, SameSite=Strict, Secure
by default); the signing is a well-kept library's. The session holds only the user name, a random session
id, times and the CSRF token; logout records the id as ended (:class:`SessionRevocations`), so a copied
cookie dies with it; the user's role and agencies are re-read from the index on every
request, so disabling a user ends its sessions at once. CSRF uses the synchronizer-token pattern (a random
token in the session, echoed by every form): it works for plain HTML forms, which the double-submit
middlewares for Starlette (header-only) do not cover.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
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
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd) as f:
        return f.read().strip()


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


def api_principal(request: Request, index) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise AuthenticationError("an Authorization: Bearer token is required")
    return authenticate_token(index, secret.strip())


def page_principal(request: Request, index, idle: float, ended: SessionRevocations) -> Principal:
    session = request.session
    name, sid = session.get("user"), session.get("sid")
    now = time.time()
    # idle timeout, and an absolute lifetime from login: re-signing the cookie on every request must not
    # make a session (or a copy of its cookie) live for ever
    too_old = now - float(session.get("since", 0)) > SESSION_MAX_AGE
    if not name or not sid or too_old or now - float(session.get("seen", 0)) > idle or ended.revoked(str(sid)):
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
    now = time.time()
    request.session.update(user=principal.name, seen=now, since=now, csrf=secrets.token_urlsafe(32),
                           sid=secrets.token_urlsafe(32))
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


ADDRESS_FACTOR = 10  # an office behind one NAT address shares it: the address limit is this many times higher
NAME_FACTOR = 20  # failures for one name from everywhere before its logins are slowed (never refused)
NAME_DELAY = 2.0  # seconds each login for such a name waits before its password is checked


def address_group(address: str) -> str:
    """What one client controls: an IPv4 address, or an IPv6 /64 (one subscriber's network, in which it can
    pick any of 2**64 addresses). An IPv4-mapped IPv6 address is its IPv4 address."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address  # not an address (a test client's name): as it is
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ipaddress.ip_network(f"{ip}/64", strict=False)) if ip.version == 6 else str(ip)


class LoginThrottle:
    """After ``attempts`` failures for one user name *from one address*, or ten times that from one address
    across all names, logins for that name from that address (or anything from that address) pause for
    ``pause`` seconds. An IPv6 "address" here is its /64 (address_group).

    Failures are never counted per name alone to refuse a login: then anyone could lock an officer out by
    typing wrong passwords for the name from anywhere. A guesser spread over many addresses is slowed
    instead: past ``attempts * NAME_FACTOR`` failures for a name, every login for it waits NAME_DELAY
    seconds (the officer still gets in; argon2id and the 10-character minimum do the rest).

    Limits: the counters live in one process's memory, so with N web workers each limit is N times higher,
    and they start afresh at a restart. Behind a reverse proxy, set ``web.trusted_proxies``, or every client
    shares the proxy's address (and one guesser can pause everyone's logins).
    """

    def __init__(self, attempts: int, pause: float, clock=time.monotonic):
        self.attempts, self.pause, self.clock = attempts, pause, clock
        self._failures: dict[tuple[str, ...], list[float]] = {}
        self._lock = threading.Lock()

    def _limits(self, name: str, address: str) -> list[tuple[tuple[str, ...], int]]:
        """Every counter a login touches, with its limit: the (name, address) pair, then the address."""
        group = address_group(address)
        return [(("pair", name.casefold(), group), self.attempts),
                (("addr", group), self.attempts * ADDRESS_FACTOR)]

    def _name_key(self, name: str) -> tuple[str, ...]:
        return ("name", name.casefold())

    def slowdown(self, name: str) -> float:
        """Seconds a login for ``name`` should wait first: NAME_DELAY while it is being guessed from many
        addresses, else 0."""
        now = self.clock()
        with self._lock:
            guessed = len(self._recent(self._name_key(name), now)) >= self.attempts * NAME_FACTOR
        return NAME_DELAY if guessed else 0.0

    def _recent(self, key: tuple[str, ...], now: float) -> list[float]:
        return [t for t in self._failures.get(key, []) if now - t < self.pause]

    def blocked(self, name: str, address: str) -> bool:
        now = self.clock()
        with self._lock:
            return any(len(self._recent(key, now)) >= limit for key, limit in self._limits(name, address))

    def failed(self, name: str, address: str) -> None:
        now = self.clock()
        with self._lock:
            for key in [*(key for key, _ in self._limits(name, address)), self._name_key(name)]:
                self._failures[key] = [*self._recent(key, now), now][-self.attempts * NAME_FACTOR:]
            if len(self._failures) > 10_000:  # forget counters whose failures all expired
                self._failures = {k: v for k, v in self._failures.items() if self._recent(k, now)}

    def succeeded(self, name: str, address: str) -> None:
        with self._lock:
            self._failures.pop(self._limits(name, address)[0][0], None)
