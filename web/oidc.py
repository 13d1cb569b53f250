"""Single sign-on with the province's OpenID Connect provider (Authlib's Starlette client).

Authlib is a well-kept OIDC client: discovery, PKCE, state and nonce, ID-token signature and claim checks.
This module only wires its two steps to the portal: ``/login/oidc`` sends the browser to the provider,
``/login/oidc/callback`` takes the verified identity to storage.access.authenticate_oidc, which maps it to the
local account an administrator bound to its subject (roles and agencies stay local), then starts the same
session as a password login.

The session cookie is ``SameSite=Strict`` (review web15 L4: a cross-site link to a download must not run as
the officer), so the provider's redirect back, a cross-site navigation, does not carry it: Authlib's state,
nonce and PKCE verifier live in a cookie of their own (:class:`SsoStateCookie`: ``SameSite=Lax``, path
``/login/oidc``, 10 minutes, its own signing key), and the callback answers with a page of this site that
moves on to the target (a meta refresh and a link, no script: the CSP stays), so the first navigation that
needs the new Strict session is same-site and carries it (a redirect would still be part of the
cross-site navigation, and arrive without it). That landing is why the target (``next``) is honoured only for
a sign-on the portal's own page started (:func:`started_here`): a cross-site start lands on the home page.
"""

from __future__ import annotations

import hashlib
import logging
from urllib.parse import urlsplit

from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool
from starlette.middleware.sessions import SessionMiddleware

from storage.access import AuthenticationError, authenticate_oidc, sso_login

from .auth import client_address, session_secret, start_session
from .settings_check import safe_transport

log = logging.getLogger("digitize.web")
SSO_COOKIE = "digitize_sso"
SSO_PATH = "/login/oidc"
SSO_MAX_AGE = 600  # seconds a sign-on may take at the provider
SSO_KEY = "digitize.sso"  # the scope key of the sign-on's own session (Authlib's state and the target)


class SsoStateCookie:
    """ASGI middleware: on ``/login/oidc*`` only, a second signed session (Starlette's SessionMiddleware, on a
    shallow copy of the scope, so the page session in ``scope["session"]`` is untouched) in ``scope[SSO_KEY]``,
    kept in a short ``SameSite=Lax`` cookie: the one thing the provider's cross-site redirect back must carry."""

    def __init__(self, app, secret_key: str, https_only: bool):
        self.app = app
        key = hashlib.sha256(b"digitize sso state\0" + secret_key.encode("utf-8")).hexdigest()  # not the session's
        self.sessions = SessionMiddleware(self._inner, secret_key=key, session_cookie=SSO_COOKIE, path=SSO_PATH,
                                          max_age=SSO_MAX_AGE, same_site="lax", https_only=https_only)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not (scope["path"] == SSO_PATH or scope["path"].startswith(SSO_PATH + "/")):
            return await self.app(scope, receive, send)
        await self.sessions({**scope, SSO_KEY: scope}, receive, send)

    async def _inner(self, shadow, receive, send):
        scope = shadow[SSO_KEY]
        scope[SSO_KEY] = shadow["session"]
        await self.app(scope, receive, send)


def sso_request(request: Request) -> Request:
    """``request`` as Authlib sees it: its ``session`` is the sign-on's own (the Lax cookie)."""
    return Request({**request.scope, "session": request.scope[SSO_KEY]}, request.receive)


def started_here(request: Request) -> bool:
    """Whether the sign-on was started by the portal's own page (its SSO button) or typed by the person:
    only then may it land on the page it names (review web16 M2: a cross-site link to
    ``/login/oidc?next=<download>`` went through a provider that remembers the officer and the landing page
    then carried the new Strict session to the download). The browser's ``Sec-Fetch-Site`` says so; without
    it (an old browser, plain http off loopback), an ``Origin`` or ``Referer`` of the portal does; else not."""
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site in ("same-origin", "none")
    portal = _origin(str(request.base_url))
    return any(_origin(request.headers.get(h, "")) == portal for h in ("origin", "referer"))


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower() if parts.scheme and parts.netloc else ""


def enabled(settings) -> bool:
    return bool(settings.web.oidc_issuer)


def install(app: FastAPI, settings, render_login) -> None:
    if not enabled(settings):
        return
    import httpx
    from authlib.integrations.starlette_client import OAuth, OAuthError
    from authlib.jose.errors import JoseError as AuthlibJoseError
    from joserfc.errors import JoseError

    PROVIDER_ERRORS = (JoseError, AuthlibJoseError, httpx.HTTPError, ValueError)

    app.add_middleware(SsoStateCookie, secret_key=session_secret(settings), https_only=settings.web.secure_cookies)
    oauth = OAuth()
    oauth.register("sso", client_id=settings.web.oidc_client_id, client_secret=settings.web.oidc_client_secret,
                   server_metadata_url=settings.web.oidc_issuer.rstrip("/") + "/.well-known/openid-configuration",
                   client_kwargs={"scope": "openid profile email", "code_challenge_method": "S256"})

    async def provider_refused(request: Request) -> str:
        """Why the discovered provider is not the configured one ("" if it is). Authlib takes the issuer it
        checks ID tokens against, and the keys, from this document: one served by someone else (on an
        unprotected path) would let them mint ID tokens (review web15 M3; OIDC Discovery 4.3)."""
        metadata = await oauth.sso.load_server_metadata()
        if metadata.get("issuer") != settings.web.oidc_issuer:
            return f"the discovery document's issuer {str(metadata.get('issuer'))[:200]!r} is not the configured one"
        for key in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
            if not safe_transport(str(metadata.get(key) or "")):
                return f"the discovery document's {key} is not https"
        return ""

    @app.get("/login/oidc", include_in_schema=False)
    async def oidc_login(request: Request, next: str = "/") -> Response:
        from .pages import local_target

        try:
            refused = await provider_refused(request)
        except PROVIDER_ERRORS as e:
            refused = f"discovery failed: {type(e).__name__}"
        if refused:
            log.warning("single sign-on refused from %s: %s", client_address(request), refused)
            return render_login(request, "sso_failed", 401)
        flow = sso_request(request)
        flow.session.clear()  # one sign-on at a time per browser
        target = local_target(next) if started_here(request) else "/"  # review web16 M2
        flow.session.update(after_login=target, lang=request.session.get("lang"))
        return await oauth.sso.authorize_redirect(flow, str(request.url_for("oidc_callback")))

    @app.get("/login/oidc/callback", name="oidc_callback", include_in_schema=False)
    async def oidc_callback(request: Request) -> Response:
        token = None
        try:
            refused = await provider_refused(request)
            token = None if refused else await oauth.sso.authorize_access_token(sso_request(request))
        except OAuthError as e:
            refused = (e.error or "OAuthError")[:200]  # from the query string, before any check: capped
        except PROVIDER_ERRORS as e:  # a bad ID token (signature, nonce, aud, iss) or the provider away: L5
            refused = f"{type(e).__name__}: {str(e)[:200]}"
        if refused or token is None:
            log.warning("single sign-on refused from %s: %s", client_address(request), refused)
            return render_login(request, "sso_failed", 401)
        claims = token.get("userinfo") or {}

        subject = str(claims.get("sub", ""))

        def lookup():  # in a worker thread: taking an archive may open one or wait for one
            with request.app.state.pool.archive() as archive:
                return authenticate_oidc(archive.index, settings.web.oidc_issuer, subject)

        try:
            principal = await run_in_threadpool(lookup)
        except AuthenticationError as e:
            log.warning("single sign-on refused from %s: %s", client_address(request), e)
            return render_login(request, "sso_no_account", 403)
        from .pages import local_target, render

        flow = request.scope[SSO_KEY]
        target, lang = local_target(flow.get("after_login")), flow.get("lang")
        flow.clear()  # the state cookie is deleted with this answer
        if lang:
            request.session["lang"] = lang  # (start_session keeps it)
        start_session(request, principal, sso_login(settings.web.oidc_issuer, subject))  # ends if rebound
        return render(request, "signed_in.html", target=target)  # same-site from here on: the Strict cookie goes
