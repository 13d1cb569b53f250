"""Session rules of the pages, on fakes (no server): idle timeout, absolute lifetime, revocation."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from storage.index_accounts import UserRecord
from web.auth import SESSION_MAX_AGE, LoginRequired, SessionRevocations, page_principal


class Index:
    def get_user(self, name):
        return UserRecord(name, "officer", ["000.00.31.H56"], None)


def request(**session):
    return SimpleNamespace(session={"user": "an", "sid": "s1", "login": "password", **session})


def test_a_session_in_use_still_ends_at_its_absolute_lifetime(tmp_path):
    """Every request re-signs the cookie with a new 'seen': that alone must not keep a session (or a
    stolen copy of its cookie) alive past SESSION_MAX_AGE from login (review finding)."""
    ended, now = SessionRevocations(tmp_path), time.time()
    assert page_principal(request(seen=now, since=now - 60), Index(), 1800, ended).name == "an"
    with pytest.raises(LoginRequired):
        page_principal(request(seen=now, since=now - SESSION_MAX_AGE - 1), Index(), 1800, ended)
    with pytest.raises(LoginRequired):
        page_principal(request(seen=now), Index(), 1800, ended)  # a cookie from before 'since' existed


def test_a_session_from_before_migration_0007_has_ended(tmp_path):
    """Review web15b M2: a cookie made before sessions said how they logged in may be an SSO login that the
    old name-based binding let in (web15 H1); it cannot be told apart from a password one, so it has ended."""
    ended, now = SessionRevocations(tmp_path), time.time()
    with pytest.raises(LoginRequired):
        page_principal(SimpleNamespace(session={"user": "an", "sid": "s1", "seen": now, "since": now}), Index(),
                       1800, ended)


def test_an_sso_session_holds_only_while_its_binding_does(tmp_path):
    from storage.access import sso_login

    ended, now = SessionRevocations(tmp_path), time.time()
    bound = Index()
    bound.get_user = lambda name: UserRecord(name, "admin", [], None, "vneid-0042", oidc_issuer="https://idp")
    session = dict(seen=now, since=now, login=sso_login("https://idp", "vneid-0042"))
    assert page_principal(request(**session), bound, 1800, ended).name == "an"
    for issuer, subject in (("https://idp", "vneid-0043"), ("https://idp/", "vneid-0042")):
        with pytest.raises(LoginRequired):
            page_principal(request(**{**session, "login": sso_login(issuer, subject)}), bound, 1800, ended)
    with pytest.raises(LoginRequired):  # the account is not bound (any more)
        page_principal(request(**session), Index(), 1800, ended)


def test_idle_and_revoked_sessions_end(tmp_path):
    ended, now = SessionRevocations(tmp_path), time.time()
    with pytest.raises(LoginRequired):
        page_principal(request(seen=now - 1801, since=now - 1801), Index(), 1800, ended)
    ended.revoke("s1")
    with pytest.raises(LoginRequired):
        page_principal(request(seen=now, since=now), Index(), 1800, ended)


# -- API tokens: verified ones kept for at most TOKEN_CACHE_SECONDS (web/auth.py TokenCache) -----------------
class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_the_token_cache_forgets_an_entry_at_its_lifetime_and_stays_bounded():
    from storage.access import Principal
    from web.auth import TOKEN_CACHE_SECONDS, TokenCache

    assert TOKEN_CACHE_SECONDS <= 2.0  # the bound the README and `tokens revoke --help` promise
    clock = Clock()
    cache = TokenCache(ttl=2.0, size=2, clock=clock)
    principal = Principal("a", "officer", ("000.00.31.H56",), "token")
    cache.put("h1", principal, clock())
    clock.now += 1.9
    assert cache.get("h1") is principal
    clock.now += 0.1
    assert cache.get("h1") is None  # re-verified from then on
    for key in ("h1", "h2", "h3"):
        cache.put(key, principal, clock())
    assert cache.get("h1") is None and cache.get("h3") is principal  # oldest dropped beyond `size`


def test_a_revoked_token_is_refused_once_the_cache_lifetime_has_passed(tmp_path, monkeypatch):
    """Review rule for caching verified tokens: revocation still takes effect within a bounded time
    (TOKEN_CACHE_SECONDS), counted from the verification, i.e. from before the revocation; a token
    that was never verified, or was refused, is not kept. The first lookup is slow (the fake clock moves
    1.5 s during it), so a cache that counted its lifetime from after the lookup would fail here."""
    from fastapi.testclient import TestClient

    from digitize.config import Settings
    from storage import access
    from storage.archive import Archive
    from storage.index_accounts import AccountQueries
    from web.app import create_app

    settings = Settings(data_dir=str(tmp_path / "data"))
    with Archive.open(settings) as archive:
        secret = access.create_token(archive.index, "onestop", "officer", ["000.00.31.H56"])
    app = create_app(settings)
    clock = Clock()
    app.state.tokens.clock = clock
    lookup, slow = AccountQueries.token_by_hash, [1.5]

    def slow_first_lookup(self, digest):
        clock.now += slow.pop() if slow else 0.0
        return lookup(self, digest)

    monkeypatch.setattr(AccountQueries, "token_by_hash", slow_first_lookup)
    case = "/api/v1/cases/000.00.31.H56-241015-0027"
    with TestClient(app, base_url="http://127.0.0.1") as client:
        headers = {"authorization": f"Bearer {secret}"}
        before_lookup = clock.now
        assert client.get(case, headers=headers).status_code == 404  # verified (no such case: 404, not 401)
        assert clock.now == before_lookup + 1.5 and not slow
        assert client.get(case, headers={"authorization": f"Bearer {secret}x"}).status_code == 401
        with Archive.open(settings) as archive:
            archive.index.revoke_token("onestop", access.now_iso())
        clock.now = before_lookup + app.state.tokens.ttl - 0.1
        assert client.get(case, headers=headers).status_code == 404  # still within the cache's lifetime
        clock.now = before_lookup + app.state.tokens.ttl  # not (after the lookup) + ttl
        assert client.get(case, headers=headers).status_code == 401
        assert client.get(case, headers=headers).status_code == 401  # a refusal is not cached as a pass


def test_token_cache_seconds_0_verifies_every_api_request_in_the_index(tmp_path):
    """[web] token_cache_seconds = 0: no cache, so a revocation is refused at the very next request (the
    fake clock never moves); the default is the 2 s the README and `tokens revoke --help` promise."""
    from fastapi.testclient import TestClient

    from digitize.config import Settings
    from storage import access
    from storage.archive import Archive
    from web.app import create_app
    from web.auth import TOKEN_CACHE_SECONDS

    assert Settings().web.token_cache_seconds == TOKEN_CACHE_SECONDS == 2.0
    settings = Settings(data_dir=str(tmp_path / "data"))
    settings.web.token_cache_seconds = 0
    with Archive.open(settings) as archive:
        secret = access.create_token(archive.index, "onestop", "officer", ["000.00.31.H56"])
    app = create_app(settings)
    app.state.tokens.clock = Clock()
    case = "/api/v1/cases/000.00.31.H56-241015-0027"
    with TestClient(app, base_url="http://127.0.0.1") as client:
        headers = {"authorization": f"Bearer {secret}"}
        assert client.get(case, headers=headers).status_code == 404  # verified
        with Archive.open(settings) as archive:
            archive.index.revoke_token("onestop", access.now_iso())
        assert client.get(case, headers=headers).status_code == 401  # at once, no time has passed
    assert not app.state.tokens._entries


def test_an_expired_token_is_401_token_expired_and_the_cache_never_outlives_its_expiry(tmp_path, monkeypatch):
    """Review web15 L7: tokens never expired. A clock we control (the wall clock the index's expiry is read
    against, and the cache's): a token verified 1 s before its expiry is kept in the 2 s cache for that 1 s
    only, then refused as 401 ``token_expired`` (a cache that kept it its full 2 s let it work after expiry)."""
    from datetime import datetime, timedelta, timezone

    from fastapi.testclient import TestClient

    from digitize.config import Settings
    from storage import access
    from storage.archive import Archive
    from web.app import create_app

    settings = Settings(data_dir=str(tmp_path / "data"))
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    with Archive.open(settings) as archive:
        secret = access.create_token(archive.index, "onestop", "officer", ["000.00.31.H56"], 30, now=t0)
    expiry = (t0 + timedelta(days=30)).timestamp()
    wall, mono = Clock(), Clock()
    wall.now = expiry - 1.0
    monkeypatch.setattr(access, "_utc_now", lambda: datetime.fromtimestamp(wall.now, timezone.utc))
    app = create_app(settings)
    app.state.tokens.clock, app.state.tokens.now = mono, wall
    case = "/api/v1/cases/000.00.31.H56-241015-0027"

    def tick(seconds):
        wall.now += seconds
        mono.now += seconds

    with TestClient(app, base_url="http://127.0.0.1") as client:
        headers = {"authorization": f"Bearer {secret}"}
        assert client.get(case, headers=headers).status_code == 404  # verified (no such case), cached
        tick(0.9)
        assert client.get(case, headers=headers).status_code == 404  # from the cache, still valid
        tick(0.1)  # the expiry: the cache's 2 s have not passed, the token's time has
        refused = client.get(case, headers=headers)
        assert refused.status_code == 401 and refused.json()["error"] == "token_expired"
        assert "expired at" in refused.json()["message"] and refused.headers["www-authenticate"] == "Bearer"
        assert client.get(case, headers=headers).json()["error"] == "token_expired"  # a refusal is not cached


def test_api_answers_carry_no_session_and_pages_keep_theirs(tmp_path):
    """The session middleware serves the pages only (web/app.py SessionsForPages)."""
    from fastapi.testclient import TestClient

    from digitize.config import Settings
    from web.app import create_app

    settings = Settings(data_dir=str(tmp_path / "data"))
    settings.web.secure_cookies = False
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as client:
        login = client.get("/login")
        assert login.status_code == 200 and "digitize_session" in login.headers.get("set-cookie", "")
        api = client.get("/api/v1/search?q=dat")  # the browser's session cookie goes along
        assert api.status_code == 401 and "set-cookie" not in api.headers
        assert api.headers["content-security-policy"] and api.headers["cache-control"] == "no-store"


def test_the_session_middleware_and_the_error_handlers_agree_on_what_is_the_api(tmp_path):
    """Review perf11c L5a: one helper for both (they used "/api/v1/" and "/api/v1", which differ on
    "/api/v1" itself and "/api/v1x")."""
    from fastapi.testclient import TestClient

    from digitize.config import Settings
    from web.app import create_app, is_api_path

    assert is_api_path("/api/v1") and is_api_path("/api/v1/search")
    assert not is_api_path("/api/v1x") and not is_api_path("/api") and not is_api_path("/search")
    settings = Settings(data_dir=str(tmp_path / "data"))
    settings.web.secure_cookies = False
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as client:
        api = client.get("/api/v1")
        assert api.status_code == 404 and api.json()["error"] == "not-found"
        page = client.get("/api/v1x")  # not the API: the pages' 404 (which needs the session) renders
        assert page.status_code == 404 and page.headers["content-type"].startswith("text/html")


def test_a_search_answer_is_rendered_once_per_page_object():
    from storage.index_accounts import SearchHit, SearchPage
    from web.api import BODY_MAX, search_body

    page = SearchPage(hits=[], total=0, capped=False)
    first = search_body(page, 0, 20)
    assert first == b'{"total":0,"capped":false,"offset":0,"limit":20,"hits":[]}'
    assert search_body(page, 0, 20) is first  # the search cache's same page: the same bytes
    assert search_body(page, 20, 20) != first  # offset and limit are part of the answer
    twin = SearchPage(hits=[], total=1, capped=False)  # another page object, even for the same key
    assert b'"total":1' in search_body(twin, 0, 20)
    huge = SearchPage([SearchHit("000.00.31.H56-241015-0027", 1, 1, "t" * BODY_MAX, 1, "s", True)], 1, False)
    assert len(search_body(huge, 0, 20)) > BODY_MAX and not huge.derived  # rendered, not kept


def test_a_search_answer_goes_with_its_search_cache_entry(tmp_path, monkeypatch):
    """Review perf11c L4: the rendered JSON (and so the page, with applicants' names and snippets) is not
    kept past the search cache's own entry (its age and byte bounds): once the cache lets the page go,
    nothing of the API's holds it."""
    import gc
    import weakref

    from fastapi.testclient import TestClient

    from digitize.config import Settings
    from storage import access
    from storage.archive import Archive
    from web.app import create_app

    settings = Settings(data_dir=str(tmp_path / "data"))
    with Archive.open(settings) as archive:
        secret = access.create_token(archive.index, "onestop", "officer", ["000.00.31.H56"])
    pages, cached = [], access.SEARCH_CACHE.page

    def page(index, key, build):
        got = cached(index, key, build)
        pages.append(weakref.ref(got))
        return got

    monkeypatch.setattr(access.SEARCH_CACHE, "page", page)
    access.SEARCH_CACHE.clear()
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as client:
        headers = {"authorization": f"Bearer {secret}"}
        first = client.get("/api/v1/search?q=dat", headers=headers)
        again = client.get("/api/v1/search?q=dat", headers=headers)
        assert first.status_code == again.status_code == 200 and first.content == again.content
        assert len(pages) == 2 and pages[0]() is pages[1]() is not None  # the cache's same page
        access.SEARCH_CACHE.clear()
        gc.collect()
        assert pages[0]() is None  # gone with the cache's entry


def test_the_first_portal_start_makes_the_data_dir_private_whatever_the_umask(tmp_path):
    """Review rev17ops L1: uploads/ was made with its parents, so a fresh data_dir got 0o777 & ~umask (0755)."""
    import os

    from digitize.config import Settings
    from web.app import create_app

    settings = Settings(data_dir=str(tmp_path / "fresh" / "data"))
    old = os.umask(0o022)
    try:
        create_app(settings)
    finally:
        os.umask(old)
    assert os.stat(settings.data_dir).st_mode & 0o077 == 0
    assert os.stat(os.path.join(settings.data_dir, "web-secret")).st_mode & 0o077 == 0


@pytest.mark.parametrize("how", ["world-writable", "fifo", "huge"])
def test_a_web_secret_file_that_is_no_private_key_file_is_refused(tmp_path, how):
    """Review rev17ops L1: web-secret was read with a plain O_NOFOLLOW open: no regular-file, owner, mode or
    size check (a FIFO hung the start; a key others could write was used)."""
    import os

    from digitize.config import Settings
    from digitize.errors import ConfigError
    from web.auth import session_secret

    settings = Settings(data_dir=str(tmp_path))
    tmp_path.chmod(0o700)
    path = tmp_path / "web-secret"
    if how == "fifo":
        os.mkfifo(path, 0o600)
    else:
        path.write_text("k" * (10_000 if how == "huge" else 64))
        path.chmod(0o666 if how == "world-writable" else 0o600)
    with pytest.raises(ConfigError, match="portal session key"):
        session_secret(settings)
