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

from storage.access import AuthenticationError, authenticate_oidc

from .auth import client_address, start_session

log = logging.getLogger("digitize.web")


def enabled(settings) -> bool:
    return bool(settings.web.oidc_issuer)


def install(app: FastAPI, settings, render_login) -> None:
    if not enabled(settings):
        return
    from authlib.integrations.starlette_client import OAuth, OAuthError

    oauth = OAuth()
    oauth.register("sso", client_id=settings.web.oidc_client_id, client_secret=settings.web.oidc_client_secret,
                   server_metadata_url=settings.web.oidc_issuer.rstrip("/") + "/.well-known/openid-configuration",
                   client_kwargs={"scope": "openid profile email", "code_challenge_method": "S256"})

    @app.get("/login/oidc", include_in_schema=False)
    async def oidc_login(request: Request, next: str = "/") -> Response:
        from .pages import local_target

        request.session["after_login"] = local_target(next)
        return await oauth.sso.authorize_redirect(request, str(request.url_for("oidc_callback")))

    @app.get("/login/oidc/callback", name="oidc_callback", include_in_schema=False)
    async def oidc_callback(request: Request) -> Response:
        try:
            token = await oauth.sso.authorize_access_token(request)
        except OAuthError as e:
            log.warning("single sign-on refused from %s: %s", client_address(request), e.error)
            return render_login(request, "sso_failed", 401)
        claims = token.get("userinfo") or {}

        def lookup():  # in a worker thread: taking an archive may open one or wait for one
            with request.app.state.pool.archive() as archive:
                return authenticate_oidc(archive.index, settings.web.oidc_issuer, str(claims.get("sub", "")))

        try:
            principal = await run_in_threadpool(lookup)
        except AuthenticationError as e:
            log.warning("single sign-on refused from %s: %s", client_address(request), e)
            return render_login(request, "sso_no_account", 403)
        target = request.session.pop("after_login", "/")
        start_session(request, principal)
        return RedirectResponse(target, status_code=303)
