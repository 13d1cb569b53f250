"""Single sign-on with the province's OpenID Connect provider (Authlib's Starlette client).

Authlib is a well-kept OIDC client: discovery, PKCE, state and nonce, ID-token signature and claim checks.
This module only wires its two steps to the portal: ``/login/oidc`` sends the browser to the provider,
``/login/oidc/callback`` takes the verified identity to storage.access.authenticate_oidc, which maps it to the
local account an administrator bound to its subject (roles and agencies stay local), then starts the same
session as a password login.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from storage.access import AuthenticationError, authenticate_oidc, sso_login

from .auth import client_address, start_session
from .settings_check import safe_transport

log = logging.getLogger("digitize.web")


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
        request.session["after_login"] = local_target(next)
        return await oauth.sso.authorize_redirect(request, str(request.url_for("oidc_callback")))

    @app.get("/login/oidc/callback", name="oidc_callback", include_in_schema=False)
    async def oidc_callback(request: Request) -> Response:
        token = None
        try:
            refused = await provider_refused(request)
            token = None if refused else await oauth.sso.authorize_access_token(request)
        except OAuthError as e:
            refused = e.error or "OAuthError"
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
        target = request.session.pop("after_login", "/")
        start_session(request, principal, sso_login(settings.web.oidc_issuer, subject))  # ends if rebound
        return RedirectResponse(target, status_code=303)
