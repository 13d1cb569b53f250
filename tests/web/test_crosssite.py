"""web/crosssite.py: a link from another site arrives without the Strict session cookie (review web16 L3).
Its answer must never replace the session the browser keeps; a page that only shows something is reloaded
same-site (where the cookie goes), a download is not. In process, the provider faked (test_oidc_callback)."""

from __future__ import annotations

import re

import httpx
import pytest
from fastapi.testclient import TestClient

from storage import access
from storage.archive import Archive
from test_oidc_callback import ISSUER, sso  # noqa: F401
from web.app import create_app

CASE = "000.00.31.H56-241015-0027"
FROM_ELSEWHERE = {"sec-fetch-site": "cross-site", "sec-fetch-mode": "navigate", "sec-fetch-dest": "document"}


def sign_on(sso, headers=None):  # noqa: F811
    """A TestClient signed in through the (faked) provider, and the callback's answer."""
    settings, state = sso
    with Archive.open(settings) as archive:
        access.bind_oidc(archive.index, "tran.admin", ISSUER, "vneid-0042")
    state["claims"] = {"sub": "vneid-0042"}
    with TestClient(create_app(settings)) as client:
        client.get("/login/oidc", headers=headers, follow_redirects=False)
        landing = client.get("/login/oidc/callback", headers=headers, follow_redirects=False)
        assert landing.status_code == 200
        assert client.get("/admin", follow_redirects=False).status_code == 200
        yield client, landing


@pytest.fixture
def signed_in(sso):  # noqa: F811
    """A TestClient whose cookie jar holds a signed-in session (an SSO login)."""
    for client, _ in sign_on(sso):
        yield client


def without_cookie(client, method: str, url: str, headers=FROM_ELSEWHERE) -> httpx.Response:
    """What a browser sends across sites: no Strict cookie (the jar is kept for the next request)."""
    jar, client.cookies = client.cookies, httpx.Cookies()
    try:
        return client.request(method, url, headers=headers, follow_redirects=False)
    finally:
        client.cookies = jar


def session_cookies(response: httpx.Response) -> list[str]:
    return [c for c in response.headers.get_list("set-cookie") if c.startswith("digitize_session=")]


@pytest.mark.parametrize("url", ["/", f"/cases/{CASE}", f"/login?next=/cases/{CASE}", "/search?q=h%E1%BB%93",
                                 "/admin", f"/cases/{CASE}/documents/1/view"])
def test_a_link_from_another_site_to_a_page_reloads_it_same_site_and_keeps_the_session(signed_in, url):
    r = without_cookie(signed_in, "GET", url)
    assert r.status_code == 200 and not session_cookies(r)  # nothing replaces the signed-in session
    assert f'<meta http-equiv="refresh" content="0; url={url.replace("&", "&amp;")}">' in r.text
    assert "<script" not in r.text and "script-src 'self'" in r.headers["content-security-policy"]
    assert signed_in.get("/admin", follow_redirects=False).status_code == 200  # still signed in


@pytest.mark.parametrize("method, url", [("GET", f"/cases/{CASE}/documents/1/pdfa"),
                                         ("GET", f"/cases/{CASE}/dossier.zip"), ("GET", "/no/such/page"),
                                         ("GET", "//evil.example/x"), ("POST", "/logout"), ("POST", "/login")])
def test_anything_else_from_another_site_runs_without_a_session_and_writes_none(signed_in, method, url):
    """A download is not bounced (review web15 L4: a cross-site link must not run it as the officer): it goes
    to the login page, which is bounced in turn; an error page or a refused form writes no session either."""
    r = without_cookie(signed_in, method, url)
    assert "http-equiv" not in r.text and not session_cookies(r), (r.status_code, r.headers)
    if r.status_code == 303:
        assert r.headers["location"].startswith("/login?next=")
        bounced = without_cookie(signed_in, "GET", r.headers["location"])
        assert "http-equiv" in bounced.text and not session_cookies(bounced)
    assert signed_in.get("/admin", follow_redirects=False).status_code == 200


def test_a_request_with_the_cookie_or_from_this_site_is_not_bounced(signed_in):
    assert "http-equiv" not in signed_in.get("/", headers=FROM_ELSEWHERE).text  # Lax-like arrival with cookie
    r = without_cookie(signed_in, "GET", "/", {"sec-fetch-site": "same-origin", "sec-fetch-mode": "navigate"})
    assert r.status_code == 303  # to the login page, as before
    r = without_cookie(signed_in, "GET", "/", {"sec-fetch-site": "cross-site", "sec-fetch-mode": "no-cors"})
    assert r.status_code == 303 and not session_cookies(r)  # an image or script from another site


def test_the_provider_s_redirect_back_still_starts_the_session(sso):  # noqa: F811
    for _, landing in sign_on(sso, FROM_ELSEWHERE):
        assert session_cookies(landing) and re.search(r'url=/"', landing.text)


def test_a_language_link_from_another_site_cannot_carry_the_session_on_to_a_download(signed_in):
    """Review rev3 web16c M1: /lang/.. redirects to its ``next``; bounced, its same-site reload carried the
    Strict cookie on to a download another site named. Not bounced: it runs without a session, writes none."""
    url = f"/lang/vi?next=/cases/{CASE}/documents/1/pdfa"
    r = without_cookie(signed_in, "GET", url)
    assert "http-equiv" not in r.text and not session_cookies(r)
    assert signed_in.get("/admin", follow_redirects=False).status_code == 200


@pytest.mark.parametrize("url", ["/", f"/cases/{CASE}", "/login", "/search", "/admin", "/desk",
                                 f"/cases/{CASE}/documents/1/view"])
def test_no_bounced_page_redirects_its_reload_to_a_download_named_by_another_site(signed_in, url):
    """What a bounced page's same-site reload (with the session) answers must never send the browser on to a
    ``next`` another site chose."""
    target = f"/cases/{CASE}/documents/1/pdfa"
    bounced = without_cookie(signed_in, "GET", f"{url}?next={target}")
    if "http-equiv" not in bounced.text:
        return  # not bounced: runs without a session (the tests above)
    reload = signed_in.get(f"{url}?next={target}", headers={"sec-fetch-site": "same-origin"},
                           follow_redirects=False)
    assert target not in reload.headers.get("location", "")


def test_a_failed_sign_on_from_another_site_does_not_replace_the_session(signed_in, sso):  # noqa: F811
    """Review rev3 web16c L2: a forged callback link (state unknown) renders the login page, whose fresh session
    replaced the signed-in one; only a sign-on that succeeded may set the session cookie on those paths."""
    from authlib.integrations.base_client.errors import OAuthError

    sso[1]["claims"] = OAuthError("mismatching_state")  # what a forged link's unknown state gives
    r = without_cookie(signed_in, "GET", "/login/oidc/callback?code=x&state=y")
    assert r.status_code != 200 and not session_cookies(r)
    assert signed_in.get("/admin", follow_redirects=False).status_code == 200
