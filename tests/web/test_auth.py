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
    return SimpleNamespace(session={"user": "an", "sid": "s1", **session})


def test_a_session_in_use_still_ends_at_its_absolute_lifetime(tmp_path):
    """Every request re-signs the cookie with a new 'seen': that alone must not keep a session (or a
    stolen copy of its cookie) alive past SESSION_MAX_AGE from login (review finding)."""
    ended, now = SessionRevocations(tmp_path), time.time()
    assert page_principal(request(seen=now, since=now - 60), Index(), 1800, ended).name == "an"
    with pytest.raises(LoginRequired):
        page_principal(request(seen=now, since=now - SESSION_MAX_AGE - 1), Index(), 1800, ended)
    with pytest.raises(LoginRequired):
        page_principal(request(seen=now), Index(), 1800, ended)  # a cookie from before 'since' existed


def test_idle_and_revoked_sessions_end(tmp_path):
    ended, now = SessionRevocations(tmp_path), time.time()
    with pytest.raises(LoginRequired):
        page_principal(request(seen=now - 1801, since=now - 1801), Index(), 1800, ended)
    ended.revoke("s1")
    with pytest.raises(LoginRequired):
        page_principal(request(seen=now, since=now), Index(), 1800, ended)
