"""Single sign-on against a real OpenID Connect provider (NAV's mock-oauth2-server, resolved from Maven Central
by setup.sh) started on loopback, with a real `digitize serve`: discovery, PKCE, code exchange, ID-token checks
by Authlib; the identity maps to the local account made by the CLI, whose agency scope then applies."""

from __future__ import annotations

import json
import os
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
    issuer = f"http://127.0.0.1:{port}/province"
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
    yield portal
    portal.stop()


def test_single_sign_on_logs_into_the_local_account_and_its_scope(sso_portal):
    with httpx.Client(base_url=sso_portal.url, follow_redirects=True, timeout=30) as browser:
        login = browser.get("/login")
        assert 'href="/login/oidc' in login.text
        landed = browser.get("/login/oidc", params={"next": f"/cases/{CASE_A}"})
        assert landed.status_code == 200 and str(landed.url).endswith(f"/cases/{CASE_A}"), landed.text[:300]
        assert "officer-sso" in landed.text
        assert browser.get("/admin", follow_redirects=False).status_code == 403  # not the admin it is named like
        assert browser.get(f"/cases/{CASE_B}").status_code == 404
    log = (sso_portal.data_dir.parent / "serve.log").read_text()
    assert "s3cret-value" not in log


def test_users_list_shows_the_binding(sso_portal):
    listed = digitize(sso_portal.data_dir, "users", "list")
    assert "'vneid-0001'" in next(line for line in listed.splitlines() if line.startswith("officer-sso"))


def test_a_disabled_account_cannot_sign_on(sso_portal):
    digitize(sso_portal.data_dir, "users", "disable", "officer-sso")
    with httpx.Client(base_url=sso_portal.url, follow_redirects=True, timeout=30) as browser:
        refused = browser.get("/login/oidc")
        assert refused.status_code == 403 and str(refused.url).split("?")[0].endswith("/login/oidc/callback")
        assert browser.get(f"/cases/{CASE_A}", follow_redirects=False).status_code == 303
