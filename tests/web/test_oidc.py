"""Single sign-on against a real OpenID Connect provider (NAV's mock-oauth2-server, resolved from Maven Central
by setup.sh) started on loopback, with a real `digitize serve`: discovery, PKCE, code exchange, ID-token checks
by Authlib; the identity maps to the local account made by the CLI, whose agency scope then applies."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from portal_server import free_port, start_portal, wait_until_up
from portal_data import AGENCY_A, CASE_A, CASE_B, digitize, seed

pytestmark = pytest.mark.integration
CLASSPATH = Path(os.environ.get("DIGITIZE_CACHE", Path.home() / ".cache" / "digitize")) / "oidc-provider.classpath"
MAIN = "no.nav.security.mock.oauth2.StandaloneMockOAuth2ServerKt"


@pytest.fixture(scope="module")
def provider(tmp_path_factory):
    assert CLASSPATH.is_file(), f"{CLASSPATH} missing: run scripts/setup.sh"
    port = free_port()
    config = {"interactiveLogin": False, "tokenCallbacks": [{"issuerId": "province", "tokenExpiry": 300,
              "requestMappings": [{"requestParam": "grant_type", "match": "*",
                                   "claims": {"sub": "vneid-0001", "preferred_username": "sso-admin",
                                              "aud": ["digitize-portal"]}}]}]}
    env = {**os.environ, "SERVER_HOSTNAME": "127.0.0.1", "SERVER_PORT": str(port), "JSON_CONFIG": json.dumps(config)}
    log_path = tmp_path_factory.mktemp("oidc") / "provider.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen([shutil.which("java") or "java", "-XX:TieredStopAtLevel=1", "-cp",
                                    CLASSPATH.read_text().strip(), MAIN], env=env, stdout=log,
                                   stderr=subprocess.STDOUT)
    # "localhost": another site than the portal's 127.0.0.1, so a browser treats the redirect back as cross-site
    issuer = f"http://localhost:{port}/province"
    wait_until_up(process, issuer + "/.well-known/openid-configuration", 120, log_path)
    yield issuer
    process.terminate()
    process.wait(30)


@pytest.fixture(scope="module")
def sso_portal(provider, tmp_path_factory):
    root = tmp_path_factory.mktemp("sso")
    data_dir = root / "data"
    seed(data_dir, root / "work")
    # SSO only, bound by the administrator to the person's subject at the provider (never by a name it sends)
    listed = digitize(data_dir, "users", "add", "officer-sso", "--role", "officer", "--agency", AGENCY_A,
                      "--oidc-subject", "vneid-0001", env={"DIGITIZE_WEB_OIDC_ISSUER": provider})
    assert "officer-sso added" in listed
    digitize(data_dir, "users", "add", "sso-admin", "--role", "admin")  # the identity's preferred_username: not it
    portal = start_portal(data_dir, {}, DIGITIZE_WEB_OIDC_ISSUER=provider,
                          DIGITIZE_WEB_OIDC_CLIENT_ID="digitize-portal", DIGITIZE_WEB_OIDC_CLIENT_SECRET="s3cret-value")
    portal.issuer_origin = provider.rsplit("/province", 1)[0]
    yield portal
    portal.stop()


def signed_in_target(page: httpx.Response) -> str:
    """The page the callback's same-site answer moves on to (its meta refresh)."""
    found = re.search(r'<meta http-equiv="refresh" content="0; url=([^"]+)">', page.text)
    assert found, page.text[:300]
    return html.unescape(found.group(1))


def test_single_sign_on_logs_into_the_local_account_and_its_scope(sso_portal):
    with httpx.Client(base_url=sso_portal.url, follow_redirects=True, timeout=30) as browser:
        login = browser.get("/login")
        assert 'href="/login/oidc' in login.text
        signed_in = browser.get("/login/oidc", params={"next": f"/cases/{CASE_A}"},
                                headers={"sec-fetch-site": "same-origin"})  # as from the login page's button
        assert signed_in.status_code == 200 and "/login/oidc/callback" in str(signed_in.url), signed_in.text[:300]
        assert "samesite=strict" in signed_in.headers["set-cookie"].lower()
        landed = browser.get(signed_in_target(signed_in))
        assert landed.status_code == 200 and str(landed.url).endswith(f"/cases/{CASE_A}"), landed.text[:300]
        assert "officer-sso" in landed.text
        assert browser.get("/admin", follow_redirects=False).status_code == 403  # not the admin it is named like
        assert browser.get(f"/cases/{CASE_B}").status_code == 404
    log = (sso_portal.data_dir.parent / "serve.log").read_text()
    assert "s3cret-value" not in log


def test_a_browser_signs_on_across_sites_and_lands_on_the_page_asked_for(sso_portal):
    """Review web15 L4: the session cookie is SameSite=Strict with OIDC too; Debian's chromium comes back from
    the provider (another site) and lands on the case it asked for, logged in."""
    from playwright.sync_api import sync_playwright

    from test_browser import ARGS, CHROMIUM

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            context = browser.new_context()
            page = context.new_page()
            page.goto(f"{sso_portal.url}/cases/{CASE_A}")
            assert "/login" in page.url
            page.click("#sso")
            page.wait_for_url(f"{sso_portal.url}/cases/{CASE_A}", timeout=60_000)
            assert "officer-sso" in page.inner_text("header")
            cookies = {c["name"]: c for c in context.cookies()}
            assert cookies["digitize_session"]["sameSite"] == "Strict"
            assert "digitize_sso" not in cookies  # the state cookie is gone once used
            # a page of another site (the provider's) links to the portal
            other_site = f"{sso_portal.issuer_origin}/province/.well-known/openid-configuration"
            downloads = []
            page.on("download", lambda download: downloads.append(download))

            def follow_link_from_another_site(url: str) -> None:
                page.goto(other_site)
                page.set_content(f'<a id="x" href="{url}">link</a>')
                page.click("#x")
                page.wait_for_load_state()
                page.wait_for_timeout(1500)  # the bounce pages' meta refreshes

            # a link to a download does not carry the session (review web15 L4): it ends on the login page,
            # which no longer replaces the signed-in session (review web16 L3)
            follow_link_from_another_site(f"{sso_portal.url}/cases/{CASE_A}/documents/1/pdfa")
            assert "/login" in page.url and not downloads
            # a link to /login/oidc?next=<download> lands on the home page (review web16 M2)
            follow_link_from_another_site(f"{sso_portal.url}/login/oidc?next=/cases/{CASE_A}/documents/1/pdfa")
            assert page.url in (f"{sso_portal.url}/", f"{sso_portal.url}/search") and not downloads, page.url
            # a link to a case opens it for the officer still signed in (review web16 L3: bounced same-site)
            follow_link_from_another_site(f"{sso_portal.url}/cases/{CASE_A}")
            assert page.url == f"{sso_portal.url}/cases/{CASE_A}" and "officer-sso" in page.inner_text("header")
        finally:
            browser.close()


def test_users_list_shows_the_binding(sso_portal):
    listed = digitize(sso_portal.data_dir, "users", "list")
    assert "'vneid-0001'" in next(line for line in listed.splitlines() if line.startswith("officer-sso"))


def test_a_disabled_account_cannot_sign_on(sso_portal):
    digitize(sso_portal.data_dir, "users", "disable", "officer-sso")
    with httpx.Client(base_url=sso_portal.url, follow_redirects=True, timeout=30) as browser:
        refused = browser.get("/login/oidc")
        assert refused.status_code == 403 and str(refused.url).split("?")[0].endswith("/login/oidc/callback")
        assert browser.get(f"/cases/{CASE_A}", follow_redirects=False).status_code == 303
