"""The web application: one FastAPI app serving the REST API (/api/v1) and the portal pages.

FastAPI/Starlette was chosen because it is a well-kept, typed ASGI stack that gives the OpenAPI document
from the route table, sessions (itsdangerous-signed), Range/ETag file responses and Jinja2 templates
without a second framework; uvicorn serves it. Views only translate HTTP to calls on
:class:`storage.access.Gate` and back: no business rules and no data path of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from contextlib import asynccontextmanager
from functools import partial
from typing import AsyncIterator

import anyio

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.sessions import SessionMiddleware

from digitize import __version__
from digitize.secrets import mask
from digitize.errors import (BadArgsError, ConfigError, DigitizeError, InputError, NotFoundError, ResourceError,
                             StorageError, VerificationError)
from storage.access import AuthenticationError, Gate, PermissionDenied, TokenExpired
from storage.archive import Archive
from storage.index import open_index

from .auth import (SESSION_COOKIE, SESSION_MAX_AGE, CsrfError, LoginRequired, SessionRevocations, TokenCache,
                   session_secret)
from .context import OPEN, ArchivePool, Handoff
from .crosssite import CrossSiteArrivals
from .events import SCOPE_KEY, CommitBeforeAnswer, EventWriter, commit_wait
from .oidc import SSO_PATH
from .throttle import LoginThrottle
from .settings_check import check_web_settings
from .uploads import UploadQueue
from .webhooks import WebhookDispatcher

log = logging.getLogger("digitize.web")
API_PREFIX = "/api/v1"

CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; object-src 'none'; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'self'")
SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "x-frame-options": "SAMEORIGIN",
    "referrer-policy": "no-referrer",
    "permissions-policy": "camera=(), microphone=(), geolocation=()",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
}
HSTS = (b"strict-transport-security", b"max-age=31536000")  # on https answers only (RFC 6797 7.2)

# (exception class, HTTP status, error code), most specific first
ERRORS: list[tuple[type[Exception], int, str]] = [
    (TokenExpired, 401, "token_expired"),
    (AuthenticationError, 401, "unauthorized"),
    (PermissionDenied, 403, "forbidden"),
    (CsrfError, 403, "csrf"),
    (NotFoundError, 404, "not-found"),
    (VerificationError, 500, "fixity-failed"),
    (StorageError, 503, "storage-unavailable"),
    (ResourceError, 503, "storage-unavailable"),  # this server's disk is full: try again later (rev17desk L1)
    (ConfigError, 500, "configuration"),
    (BadArgsError, 400, "bad-request"),
    (InputError, 422, "bad-input"),
    (DigitizeError, 400, "bad-request"),
]
FIXITY_FAILED = "the stored file failed its integrity check and was not sent; the server log has the details"
INTERNAL = "internal error; the server log has the details"
UNAVAILABLE = "the archive did not answer in time or is unavailable; try again in a moment"
RETRY_AFTER = 5  # seconds
HTTP_CODES = {400: "bad-request", 401: "unauthorized", 403: "forbidden", 404: "not-found", 405: "method-not-allowed",
              413: "too-large", 416: "range-not-satisfiable", 422: "bad-request"}


class SecurityHeaders:
    """Adds SECURITY_HEADERS (and ``cache-control: no-store`` outside /static/) to every response that does
    not set them itself. A plain ASGI middleware: Starlette's ``@app.middleware("http")`` (BaseHTTPMiddleware)
    re-streams every response body through a task and a memory channel, a large part of a download's CPU."""

    def __init__(self, app):
        self.app = app
        self.headers = [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        extra = self.headers if scope["path"].startswith("/static/") else [*self.headers, (b"cache-control",
                                                                                            b"no-store")]
        if scope.get("scheme") == "https":  # as the client asked (after a trusted proxy's X-Forwarded-Proto):
            extra = [*extra, HSTS]  # browsers then refuse plain http to this host for a year (review web15 L2)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", ())}
                message["headers"] = [*message.get("headers", ()), *(h for h in extra if h[0] not in present)]
            await send(message)

        await self.app(scope, receive, send_with_headers)


class ThreadsFinishFirst:
    """ASGI middleware: each HTTP request runs in a task of its own under an anyio cancel scope, so a request
    task cancelled natively (``Task.cancel``: a server that cancels the requests of clients that left) turns
    into anyio's cancellation of that child, which waits for a worker thread it is in (Starlette's
    run_in_threadpool does not abandon its thread) before the route's dependencies exit; the request then
    ends cancelled once the child has. Without it, the cancellation reached the route's await at once and its
    gate gave the archive back to the pool while the route's thread still queried through it (the merged
    pool's review): another request could take that index connection. (An anyio task group does the same
    for about twice the CPU: ~55 us a request against ~27, in process, under load. uvicorn only flags a
    client gone, so under ``digitize serve`` nothing else changes.)"""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"].startswith("/static/"):
            return await self.app(scope, receive, send)
        cancel = anyio.CancelScope()

        async def child():
            with cancel:
                await self.app(scope, receive, send)

        task = asyncio.get_running_loop().create_task(child())
        try:
            await _ended(task)  # (a cancel of this await leaves the child running)
        except asyncio.CancelledError:
            cancel.cancel()  # anyio's: delivered once the child is out of its shielded wait for a thread
            while not task.done():
                with contextlib.suppress(asyncio.CancelledError):  # repeated cancels change nothing more
                    await _ended(task)
            if not task.cancelled() and task.exception() is not None:  # retrieved here: one line, not asyncio's
                error = task.exception()  # "Task exception was never retrieved" and its traceback (web16 L6)
                log.warning("%s %s: a cancelled request ended with %s: %s", scope.get("method"), scope["path"],
                            type(error).__name__, mask(str(error))[:200])
            raise
        return task.result()  # the child's exception as raised


def _ended(task: asyncio.Task) -> asyncio.Future:
    """A future done when ``task`` is: awaiting it, unlike the task, does not cancel the task when cancelled."""
    ended = task.get_loop().create_future()
    task.add_done_callback(lambda _: ended.done() or ended.set_result(None))
    return ended


class SessionsForPages:
    """Starlette's SessionMiddleware for the pages only: the API authenticates by Bearer token and never
    reads a session, so its requests skip the cookie parsing and the re-signing send wrapper."""

    def __init__(self, app, **options):
        self.app = app
        self.sessions = SessionMiddleware(app, **options)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and is_api_path(scope["path"]):
            return await self.app(scope, receive, send)
        return await self.sessions(scope, receive, send)


def error_status(error: Exception) -> tuple[int, str]:
    for cls, status, code in ERRORS:
        if isinstance(error, cls):
            return status, code
    return 500, "internal"


def is_api_path(path: str) -> bool:
    """The one test of "an API path", for the session middleware (no session) and the error handlers
    (JSON answers, no page rendered from a session): the two must never disagree."""
    return path == API_PREFIX or path.startswith(API_PREFIX + "/")


def is_api(request: Request) -> bool:
    return is_api_path(request.scope["path"])


def json_error(status: int, code: str, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": code, "message": message}, status_code=status, headers=headers)


# The access dependencies are async generators that make at most ONE hop to the thread pool, which takes an
# archive from the pool and looks up the token's or the session's account there: nothing that may wait
# on the database (or the file system) runs on the event loop, so a stalled index holds only the requests
# that need it (each for at most [web] db_timeout), not the loop that answers all the others. (Sync
# dependencies would cost a hop each, and more for a generator's enter and exit.) The route itself runs
# in a worker thread. Download routes take them with scope="function": the archive goes back to the pool
# when the route returns, not when a slow client has read the last byte (a pool's worth of slow clients
# starved every other request); the stream then reads only the object store (thread-safe for reads) and
# records its event through the process's event writer.
#
# The API's fast path makes no hop at all: a token verified within the last [web] token_cache_seconds
# (web/auth.py TokenCache) and a free archive in the pool are both taken on the event loop without waiting on
# anything (a dict and a queue's get_nowait), so the route's own thread is the request's only hop. A
# full pool's archive is waited for on the event loop too, in arrival order (ArchivePool.take_waiting:
# ArchivePool.give hands a freed archive to the oldest waiter), holding no thread: a waiting request in
# a worker thread cost a hop of its own and held a thread that the archives' holders might need. A
# token not in that cache (or a page's session) is then looked up in one hop with the archive in hand;
# a pool that may still open an archive reserves a slot (OPEN) and opens it in a hop (_open_gate), as does
# a waiter handed the slot of an open that failed.
@asynccontextmanager
async def _gate(request: Request, principal_of, cached=None) -> AsyncIterator[Gate]:
    from .auth import client_address

    pool = request.app.state.pool
    principal = cached() if cached is not None else None
    archive = await pool.take_waiting()  # a full pool's archive is waited for here, in turn, holding no thread
    if archive is not OPEN and principal is not None:
        try:
            gate = archive.gate(principal, client_address(request))
        except BaseException:
            pool.give(archive)  # the fast path's archive goes back on any failure, as _open_gate's does
            raise
    else:  # a request cancelled while its thread opens or uses the archive: the archive (or slot) goes back,
        # once the thread is done with it (given back at once, another request used it meanwhile)
        handoff = Handoff(pool, pool.release if archive is OPEN else partial(pool.give, archive))
        try:
            archive, gate = await run_in_threadpool(handoff.run, _open_gate, pool, principal_of,
                                                    client_address(request), None if archive is OPEN else archive)
        except BaseException:
            handoff.abandon()
            raise
    try:
        yield _with_sink(request, gate)
    finally:
        pool.give(archive)


def _open_gate(pool: ArchivePool, principal_of, client: str, archive: Archive | None) -> tuple[Archive, Gate]:
    """In a worker thread: ``archive`` (None: one opened in the slot reserved for it) and the principal; the
    archive goes back if that fails."""
    if archive is None:
        archive = pool.open_reserved()
    try:
        return archive, archive.gate(principal_of(archive.index), client)
    except BaseException:
        pool.give(archive)
        raise


async def api_gate(request: Request) -> AsyncIterator[Gate]:
    from .auth import api_principal, cached_api_principal

    tokens = request.app.state.tokens
    async with _gate(request, lambda index: api_principal(request, index, tokens),
                     lambda: cached_api_principal(request, tokens)) as gate:
        yield gate


async def page_gate(request: Request) -> AsyncIterator[Gate]:
    from .auth import page_principal

    state = request.app.state
    async with _gate(request, lambda index: page_principal(request, index, state.settings.web.session_idle,
                                                            state.sessions_ended)) as gate:
        yield gate


def _with_sink(request: Request, gate: Gate) -> Gate:
    # group commit by this process's writer; the answer starts once committed (events.CommitBeforeAnswer)
    gate.sink = request.scope.get(SCOPE_KEY) or request.app.state.events
    return gate


def create_app(settings) -> FastAPI:
    check_web_settings(settings)
    from storage.modes import private_folder

    private_folder(settings.data_dir, settings.store.group_readable)  # before any folder in it (rev17ops L1)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        from . import lanes

        lanes.install(app.state, settings.web.search_lane, settings.web.case_lane,  # web/lanes.py
                      settings.web.zip_lane)
        app.state.events.start()
        app.state.webhooks.start()
        yield
        app.state.webhooks.stop()
        app.state.events.close()
        app.state.uploads.close()
        app.state.pool.close()
        app.state.throttle.close()

    app = FastAPI(title="digitize", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=API_PREFIX + "/openapi.json",
                  description="E-dossiers of one-stop-shop offices: case records, documents, search. "
                              "Authorization: Bearer TOKEN (digitize tokens create).")
    app.state.settings = settings
    app.state.pool = ArchivePool(settings)
    app.state.uploads = UploadQueue(settings)
    app.state.events = EventWriter(lambda: open_index(settings.index_dsn, settings.store.group_readable,
                                                      app.state.pool.wait_timeout),
                                   commit_wait(settings.web.db_timeout))
    app.state.webhooks = WebhookDispatcher(settings, app.state.pool.archive)
    app.state.sessions_ended = SessionRevocations(settings.data_dir)
    app.state.tokens = TokenCache(settings.web.token_cache_seconds)  # verified API tokens, each re-verified
    # after [web] token_cache_seconds (0: none kept, every request asks the index)
    app.state.throttle = LoginThrottle(settings.web.login_attempts, settings.web.login_pause,
                                       data_dir=settings.data_dir)  # shared by the server's processes
    app.add_middleware(ThreadsFinishFirst)  # innermost: the routes and their dependencies, in a child task
    app.add_middleware(CommitBeforeAnswer, writer=lambda: app.state.events,
                       unavailable=lambda scope: unavailable(Request(scope)))  # inside the session's
    app.add_middleware(SessionsForPages, secret_key=session_secret(settings), session_cookie=SESSION_COOKIE,
                       max_age=SESSION_MAX_AGE, same_site="strict",  # with OIDC too: its state has a
                       https_only=settings.web.secure_cookies)  # cookie of its own (web/oidc.py SsoStateCookie)
    app.add_middleware(CrossSiteArrivals, session_cookie=SESSION_COOKIE, skip_prefix=SSO_PATH)  # review web16 L3

    app.add_middleware(SecurityHeaders)

    @app.exception_handler(DigitizeError)
    async def digitize_error(request: Request, error: DigitizeError):
        status, code = error_status(error)
        message, headers = str(error), {}
        if status >= 500:
            log.warning("%s %s: %s", request.method, request.url.path, error)
        if status == 503:  # a database wait timed out, a store away: the details (paths, hosts) stay in the log
            message, headers = UNAVAILABLE, {"retry-after": str(RETRY_AFTER)}
        elif status >= 500:  # a failed fixity check names the object key and both hashes: the log only (web15 L6)
            message = FIXITY_FAILED if isinstance(error, VerificationError) else INTERNAL
        if is_api(request) or not hasattr(app.state, "render_error"):
            if status == 401:
                headers["www-authenticate"] = "Bearer"
            return json_error(status, code, message, headers or None)
        response = app.state.render_error(request, status, message)
        response.headers.update(headers)
        return response

    def unavailable(request: Request) -> Response:
        """The 503 that replaces an answer whose access events could not be committed."""
        headers = {"retry-after": str(RETRY_AFTER)}
        if is_api(request) or not hasattr(app.state, "render_error"):
            return json_error(503, "storage-unavailable", UNAVAILABLE, headers)
        response = app.state.render_error(request, 503, UNAVAILABLE)
        response.headers.update(headers)
        return response

    @app.exception_handler(LoginRequired)
    async def login_required(request: Request, error: LoginRequired):
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        from urllib.parse import quote

        return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException):
        code = HTTP_CODES.get(error.status_code, "error")
        if is_api(request) or not hasattr(app.state, "render_error"):
            return json_error(error.status_code, code, str(error.detail), getattr(error, "headers", None))
        return app.state.render_error(request, error.status_code, str(error.detail))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError):
        parts = ["/".join(str(p) for p in e.get("loc", ())) + ": " + e.get("msg", "") for e in error.errors()]
        message = "; ".join(parts) or "invalid request"
        if is_api(request) or not hasattr(app.state, "render_error"):
            return json_error(400, "bad-request", message)
        return app.state.render_error(request, 400, message)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, error: Exception):
        """A bug: logged with its traceback for the operator, a plain message for the client (no details)."""
        log.error("%s %s: internal error", request.method, request.url.path, exc_info=error)
        if is_api(request) or not hasattr(app.state, "render_error"):
            response = json_error(500, "internal", INTERNAL)
        else:
            response = app.state.render_error(request, 500, "internal error")
        # Starlette sends this handler's answer from its outermost error layer, outside SecurityHeaders
        response.headers.update({**SECURITY_HEADERS, "cache-control": "no-store"})
        if request.url.scheme == "https":
            response.headers[HSTS[0].decode()] = HSTS[1].decode()
        return response

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> Response:
        return Response("ok\n", media_type="text/plain")

    from . import api, pages

    app.router.routes.extend(api.router.routes)  # flat route table: the access test walks it route by route
    pages.install(app)
    return app
