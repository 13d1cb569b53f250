"""Cross-site arrivals without the Strict session cookie (review web16 L3).

The session cookie is ``SameSite=Strict``, so a link from another site (the province's one-stop system, a
mail) arrives without it. The page then sent the browser to the login page, whose render wrote a fresh
session (its CSRF token) over the signed-in one: the officer was signed out in every tab, by any site at will.
Here, in front of the session middleware:

* a cross-site navigation (GET) to a page that only shows something (``BOUNCED``) gets a tiny page of this
  site that reloads the same URL (meta refresh and a link, no script, no cookie written): that reload is
  same-site and carries the Strict cookie, so an officer already signed in sees the page, and one who is not
  goes to the login page as before;
* any other request from another site without the session cookie (a download, an export, an unknown path, a
  form) runs as before, without a session, but its answer never sets the session cookie, so it cannot
  replace the one the browser keeps. A download is never bounced: a cross-site link must not run it as the
  officer (review web15 L4).

The sign-on's own paths (``/login/oidc*``) are not bounced: the provider's redirect back is cross-site and
must start the session, and a cross-site start must stay cross-site (web/oidc.py started_here); but only a
sign-on that succeeded (a 200 answer) may set the session cookie there: a failed one (a forged callback link,
a refused discovery) renders the login page, whose fresh session must not replace a signed-in one.
"""

from __future__ import annotations

import html
import re
from urllib.parse import quote

# pages that show, never act: bounced to themselves (a new page route stays unbounced until listed here)
# (never /lang/..: it redirects to its ``next``, so its same-site reload would carry the Strict cookie on to a
# download named by another site: review rev3 web16c M1)
BOUNCED = re.compile(r"/(|search|admin|desk|desk/jobs/[^/]+|login|cases/[^/]+"
                     r"|cases/[^/]+/documents/[^/]+/view)")
REDIRECT_SAFE = ":/%#?=@[]!$&'()*+,;"  # what RedirectResponse leaves unquoted (starlette.responses)
PAGE = ('<!doctype html><html><head><meta charset="utf-8"><meta http-equiv="refresh" content="0; url={0}">'
        '<title>digitize</title></head><body><p><a href="{0}">Tiếp tục / Continue</a></p></body></html>')


def _header(scope, name: bytes) -> bytes:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value
    return b""


def from_another_site_without_session(scope, session_cookie: str) -> bool:
    if _header(scope, b"sec-fetch-site") != b"cross-site":
        return False
    cookies = _header(scope, b"cookie").decode("latin-1")
    return not any(part.strip().startswith(session_cookie + "=") for part in cookies.split(";"))


def bounce_target(scope) -> str:
    """The request's own URL as a path of this site (quoted, HTML-escaped), or "" when it is not bounced."""
    path = scope["path"]
    if scope["method"] not in ("GET", "HEAD") or not BOUNCED.fullmatch(path):
        return ""
    if _header(scope, b"sec-fetch-mode") not in (b"navigate", b""):
        return ""
    query = scope.get("query_string", b"").decode("latin-1")
    target = quote(path, safe=REDIRECT_SAFE) + ("?" + quote(query, safe=REDIRECT_SAFE) if query else "")
    return html.escape(target, quote=True)


class CrossSiteArrivals:
    """ASGI middleware, outside the session middleware: see the module's docstring."""

    def __init__(self, app, session_cookie: str, skip_prefix: str):
        self.app, self.cookie, self.skip = app, session_cookie, skip_prefix

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not from_another_site_without_session(scope, self.cookie):
            return await self.app(scope, receive, send)
        sign_on = scope["path"] == self.skip or scope["path"].startswith(self.skip + "/")
        target = "" if sign_on else bounce_target(scope)
        if target:
            body = PAGE.format(target).encode("utf-8")
            await send({"type": "http.response.start", "status": 200, "headers": [
                (b"content-type", b"text/html; charset=utf-8"), (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})
            return
        prefix = (self.cookie + "=").encode("latin-1")

        async def send_without_session(message):
            if message["type"] == "http.response.start" and not (sign_on and message["status"] == 200):
                message["headers"] = [(k, v) for k, v in message.get("headers", ())
                                      if not (k.lower() == b"set-cookie" and v.startswith(prefix))]
            await send(message)

        await self.app(scope, receive, send_without_session)
