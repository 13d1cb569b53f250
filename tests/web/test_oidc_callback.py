"""web/oidc.py's callback with the provider faked (Authlib's two network steps replaced): which account an
identity lands in, and how bad metadata or a bad ID token is refused. The real provider: test_oidc.py."""

from __future__ import annotations

import logging

import pytest
from authlib.integrations.starlette_client import StarletteOAuth2App
from fastapi.testclient import TestClient

from digitize.config import Settings
from storage import access
from storage.archive import Archive
from web.app import create_app

ISSUER = "http://127.0.0.1:9/province"  # never contacted: both network steps are faked


@pytest.fixture
def sso(tmp_path, monkeypatch):
    """(settings, identity): the app's provider returns ``identity`` as the verified ID token's claims."""
    settings = Settings(data_dir=str(tmp_path / "data"))
    settings.web.secure_cookies = False
    settings.web.oidc_issuer, settings.web.oidc_client_id = ISSUER, "digitize-portal"
    with Archive.open(settings) as archive:
        access.add_user(archive.index, "tran.admin", "admin", [], None)  # SSO only, not yet bound
    state = {"claims": {}, "metadata": {"issuer": ISSUER, "token_endpoint": ISSUER + "/token",
                                        "jwks_uri": ISSUER + "/jwks", "authorization_endpoint": ISSUER + "/auth"},
             "exchanged": 0}

    async def metadata(self):
        return state["metadata"]

    async def exchange(self, request, **kwargs):
        state["exchanged"] += 1
        if isinstance(state["claims"], Exception):
            raise state["claims"]
        return {"userinfo": state["claims"]}

    monkeypatch.setattr(StarletteOAuth2App, "load_server_metadata", metadata)
    monkeypatch.setattr(StarletteOAuth2App, "authorize_access_token", exchange)
    return settings, state


def callback(settings):
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        r = client.get("/login/oidc/callback", follow_redirects=False)
        admin = client.get("/admin", follow_redirects=False).status_code
    return r, admin


def subject_of(settings, name):
    with Archive.open(settings) as archive:
        return archive.index.get_user(name).oidc_subject


def test_a_provider_user_named_like_a_new_account_does_not_get_it(sso, caplog):
    """Review web15 H1: the first identity whose preferred_username matched an unbound account was bound to
    it for good (an admin's too); binding is now only an administrator's act."""
    settings, state = sso
    state["claims"] = {"sub": "attacker-0001", "preferred_username": "tran.admin", "email": "tran.admin@x.vn",
                       "email_verified": True}
    with caplog.at_level(logging.WARNING, "digitize.web"):
        r, admin = callback(settings)
    assert r.status_code == 403 and ("Ask an administrator" in r.text or "quản trị viên" in r.text)
    assert admin == 303  # no session
    assert subject_of(settings, "tran.admin") is None
    assert "'attacker-0001'" in caplog.text  # the log names the subject the admin would bind


def test_an_account_bound_by_an_administrator_logs_in_with_its_subject_only(sso):
    settings, state = sso
    with Archive.open(settings) as archive:
        access.bind_oidc(archive.index, "tran.admin", ISSUER, "vneid-0042")
    state["claims"] = {"sub": "vneid-0042", "preferred_username": "anything"}
    r, admin = callback(settings)
    assert r.status_code == 200 and admin == 200
    state["claims"] = {"sub": "vneid-0043", "preferred_username": "tran.admin"}
    assert callback(settings)[0].status_code == 403


@pytest.mark.parametrize("change", ["rebind", "unbind"])
def test_rebinding_or_unbinding_ends_the_sso_sessions_of_the_old_binding(sso, change):
    """Review web15b M2: the session cookie held only the user name, so the wrong person an administrator had
    bound kept the account (an admin's) for up to 12 h after the administrator bound the right subject."""
    settings, state = sso
    with Archive.open(settings) as archive:
        access.bind_oidc(archive.index, "tran.admin", ISSUER, "vneid-0042")
    state["claims"] = {"sub": "vneid-0042"}
    with TestClient(create_app(settings)) as client:
        assert client.get("/login/oidc/callback", follow_redirects=False).status_code == 200
        assert client.get("/admin", follow_redirects=False).status_code == 200
        with Archive.open(settings) as archive:
            if change == "rebind":
                replaced = access.bind_oidc(archive.index, "tran.admin", ISSUER, "vneid-0043")
            else:
                replaced = access.unbind_oidc(archive.index, "tran.admin")
        r = client.get("/admin", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/login")
        assert replaced == (ISSUER, "vneid-0042")
        assert client.get("/login/oidc/callback", follow_redirects=False).status_code == 403  # no new login
        if change == "rebind":  # the right person's login works
            state["claims"] = {"sub": "vneid-0043"}
            assert client.get("/login/oidc/callback", follow_redirects=False).status_code == 200
            assert client.get("/admin", follow_redirects=False).status_code == 200


def test_the_session_cookie_is_strict_and_sign_on_lands_on_the_page_asked_for(sso):
    """Review web15 L4: with OIDC on, the session cookie was SameSite=Lax, so a cross-site link (to a
    download) ran as the officer. Now it is Strict; only the sign-on's state cookie is Lax (short, on the
    sign-on's path), and the callback answers a page of this site that moves on to the target."""
    settings, state = sso
    with Archive.open(settings) as archive:
        access.bind_oidc(archive.index, "tran.admin", ISSUER, "vneid-0042")
    state["claims"] = {"sub": "vneid-0042"}
    with TestClient(create_app(settings)) as client:
        r = client.get("/login/oidc", params={"next": "/admin?x=1"}, follow_redirects=False,
                       headers={"sec-fetch-site": "same-origin"})  # the login page's button
        assert r.status_code == 302 and r.headers["location"].startswith(ISSUER + "/auth?")
        [flow] = r.headers.get_list("set-cookie")
        assert flow.startswith("digitize_sso=") and "samesite=lax" in flow.lower()
        assert "path=/login/oidc" in flow.lower() and "max-age=600" in flow.lower()
        r = client.get("/login/oidc/callback", follow_redirects=False)
        assert r.status_code == 200
        cookies = {c.split("=", 1)[0]: c.lower() for c in r.headers.get_list("set-cookie")}
        assert "samesite=strict" in cookies["digitize_session"] and "httponly" in cookies["digitize_session"]
        assert "1970" in cookies["digitize_sso"]  # the state cookie is deleted
        assert '<meta http-equiv="refresh" content="0; url=/admin?x=1">' in r.text
        assert 'id="continue" href="/admin?x=1"' in r.text and "<script>" not in r.text
        assert "script-src 'self'" in r.headers["content-security-policy"]
        assert client.get("/admin?x=1", follow_redirects=False).status_code == 200
        # a password login's cookie is Strict as well
        r = client.get("/", follow_redirects=False)
        assert "lax" not in " ".join(r.headers.get_list("set-cookie")).lower()


def test_a_password_session_survives_a_binding_of_the_account(sso):
    """Binding decides who logs in through single sign-on, not who knows the password."""
    settings, _ = sso
    with Archive.open(settings) as archive:
        access.add_user(archive.index, "lan.pw", "admin", [], "correct horse battery")
    with TestClient(create_app(settings)) as client:
        import re

        csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text).group(1)
        assert client.post("/login", data={"name": "lan.pw", "password": "correct horse battery", "csrf": csrf},
                           follow_redirects=False).status_code == 303
        with Archive.open(settings) as archive:
            access.bind_oidc(archive.index, "lan.pw", ISSUER, "vneid-0050")
        assert client.get("/admin", follow_redirects=False).status_code == 200


def test_a_binding_is_of_one_issuer_and_a_disabled_account_is_refused(sso):
    settings, state = sso
    with Archive.open(settings) as archive:
        access.bind_oidc(archive.index, "tran.admin", "https://other-idp.example/realm", "vneid-0042")
    state["claims"] = {"sub": "vneid-0042"}
    assert callback(settings)[0].status_code == 403  # the same sub from another provider is another person
    with Archive.open(settings) as archive:
        access.bind_oidc(archive.index, "tran.admin", ISSUER, "vneid-0042")
        archive.index.set_user_disabled("tran.admin", True, access.now_iso())
    assert callback(settings)[0].status_code == 403


@pytest.mark.parametrize("metadata", [
    {"issuer": "https://evil.example/province"},  # another issuer: its ID tokens would be checked against it
    {"issuer": ISSUER + "/"},  # not identical (OIDC Discovery 4.3)
    {},  # none: Authlib would not check `iss` at all
    {"jwks_uri": "http://keys.example/jwks"},  # the keys fetched over plain http, from a non-loopback host
])
def test_a_discovery_document_of_another_issuer_is_refused(sso, metadata, caplog):
    """Review web15 M3: Authlib checks ID tokens against the fetched document's issuer and keys."""
    settings, state = sso
    with Archive.open(settings) as archive:
        access.bind_oidc(archive.index, "tran.admin", ISSUER, "vneid-0042")
    state["claims"] = {"sub": "vneid-0042"}
    if "issuer" in metadata or not metadata:
        state["metadata"].pop("issuer")
    state["metadata"].update(metadata)
    with caplog.at_level(logging.WARNING, "digitize.web"):
        r, admin = callback(settings)
    assert r.status_code == 401 and admin == 303 and state["exchanged"] == 0
    assert "discovery document" in caplog.text
    with TestClient(create_app(settings)) as client:  # the browser is not sent to its endpoints either
        assert client.get("/login/oidc", follow_redirects=False).status_code == 401


def test_a_tampered_id_token_is_a_refusal_not_an_internal_error(sso):
    """Review web15 L5: joserfc's errors (bad signature, nonce, aud, iss) are no OAuthError: they were a 500."""
    from joserfc.errors import BadSignatureError, InvalidClaimError

    settings, state = sso
    for error in (BadSignatureError(), InvalidClaimError("nonce")):
        state["claims"] = error
        r, _ = callback(settings)
        assert r.status_code == 401 and "Traceback" not in r.text, r.text[:300]


@pytest.mark.parametrize("target", ["/\t/evil.example/x", "/\n/evil.example/x", "/\r/evil.example/x",
                                    "/\t\\evil.example/x", "/\x0b/evil.example", "/\x7f/evil.example",
                                    "//evil.example/x", "/\\evil.example/x", "/%09/../\t/evil.example",
                                    "http://evil.example/x", "/login/oidc?next=/", "/login"])
def test_sign_on_never_lands_off_the_site_or_on_the_sign_on_itself(sso, target):
    """Review web16 M1: the landing page writes the target into a meta refresh and a link, where a browser
    drops tab/CR/LF before parsing: ``/<TAB>/evil.example`` became ``//evil.example``, another host. Every
    control character, every target that is not a plain path of this site, and the sign-on's own pages (a
    loop) land on the home page."""
    settings, state = sso
    with Archive.open(settings) as archive:
        access.bind_oidc(archive.index, "tran.admin", ISSUER, "vneid-0042")
    state["claims"] = {"sub": "vneid-0042"}
    with TestClient(create_app(settings)) as client:
        client.get("/login/oidc", params={"next": target}, follow_redirects=False,
                   headers={"sec-fetch-site": "same-origin"})
        r = client.get("/login/oidc/callback", follow_redirects=False)
    assert r.status_code == 200
    assert '<meta http-equiv="refresh" content="0; url=/">' in r.text and 'id="continue" href="/"' in r.text


def test_the_landing_target_is_quoted_as_a_redirect_would_be(sso):
    settings, state = sso
    with Archive.open(settings) as archive:
        access.bind_oidc(archive.index, "tran.admin", ISSUER, "vneid-0042")
    state["claims"] = {"sub": "vneid-0042"}
    with TestClient(create_app(settings)) as client:
        client.get("/login/oidc", params={"next": '/search?q=hồ sơ"x'}, follow_redirects=False,
                   headers={"sec-fetch-site": "same-origin"})
        r = client.get("/login/oidc/callback", follow_redirects=False)
    assert 'url=/search?q=h%E1%BB%93%20s%C6%A1%22x"' in r.text


@pytest.mark.parametrize("headers, honoured", [
    ({"sec-fetch-site": "same-origin"}, True), ({"sec-fetch-site": "none"}, True),  # its button; typed
    ({"origin": "http://testserver"}, True), ({"referer": "http://testserver/login?next=/admin"}, True),
    ({"sec-fetch-site": "cross-site"}, False), ({"sec-fetch-site": "same-site"}, False),
    ({"sec-fetch-site": "cross-site", "referer": "http://testserver/login"}, False),
    ({"referer": "http://evil.example/testserver/"}, False), ({"origin": "http://testserver.evil.example"}, False),
    ({}, False)])
def test_a_sign_on_started_elsewhere_lands_on_the_home_page(sso, headers, honoured):
    """Review web16 M2: a cross-site link to /login/oidc?next=<download> went through a provider that
    remembers the officer, and the landing page carried the new Strict session to the download. The target
    is honoured only when the portal's own page (or the person, typing it) started the sign-on."""
    settings, state = sso
    with Archive.open(settings) as archive:
        access.bind_oidc(archive.index, "tran.admin", ISSUER, "vneid-0042")
    state["claims"] = {"sub": "vneid-0042"}
    download = "/cases/000.00.31.H56-241015-0027/documents/1/pdfa"
    with TestClient(create_app(settings)) as client:
        start = client.get("/login/oidc", params={"next": download}, follow_redirects=False, headers=headers)
        assert start.status_code == 302
        r = client.get("/login/oidc/callback", follow_redirects=False)
    assert r.status_code == 200
    target = download if honoured else "/"
    assert f'<meta http-equiv="refresh" content="0; url={target}">' in r.text


@pytest.fixture
def cli_logging():
    """The CLI's own logging set-up (call it in the test: it writes to the sys.stderr of that moment), the test
    runner's handlers put back after it."""
    from digitize.cli import _setup_logging

    root = logging.getLogger()
    saved = root.handlers[:], root.level
    yield _setup_logging
    root.handlers[:], _ = saved[0], root.setLevel(saved[1])


def test_a_forged_error_in_the_callback_leaves_one_log_line_and_no_escapes(sso, capsys, cli_logging):
    """Review rev17ops M1: Authlib takes ``?error=`` from the query before any check; with a line break it
    wrote a second log line identical to a real one, with an OSC escape in it."""
    from authlib.integrations.base_client import OAuthError

    settings, state = sso
    forged = "x\ndigitize: WARNING: login of tran.admin from 10.0.0.1: ok\x1b]0;owned\x07 \u202eY \x9b31m"
    state["claims"] = OAuthError(error=forged)
    cli_logging(0)
    r, _ = callback(settings)
    err = capsys.readouterr().err
    [line] = [line for line in err.splitlines() if "single sign-on" in line or "login of" in line]
    assert r.status_code == 401 and "single sign-on refused" in line and " digitize: WARNING: " in line
    assert not any(c in err for c in "\x1b\x07\u202e\x9b")
    assert not any(line.startswith(("digitize:", "    digitize:")) for line in err.splitlines())
