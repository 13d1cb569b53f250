"""Login throttling is counted once per data dir: the portal's worker processes (each its own app) share
the failures, a restart keeps them, and the table stays bounded."""

from __future__ import annotations

import re
import sqlite3

import pytest
from fastapi.testclient import TestClient

from digitize.config import Settings
from web import throttle as throttle_module
from web.app import create_app
from web.throttle import FILE_NAME, LoginThrottle


def failed_login(app, name: str, address: str) -> int:
    client = TestClient(app, client=(address, 50000))
    csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text).group(1)
    return client.post("/login", data={"name": name, "password": "not-the-password", "csrf": csrf},
                       follow_redirects=False).status_code


def test_two_apps_over_one_data_dir_share_the_count(tmp_path):
    """Each worker process counted apart: with N workers a guesser had N times the tries."""
    settings = Settings(data_dir=str(tmp_path / "data"))
    settings.web.secure_cookies = False
    settings.web.login_attempts = 3
    first, second = create_app(settings), create_app(settings)  # two worker processes' apps
    assert [failed_login(app, "lan", "10.0.0.7") for app in (first, second, first)] == [401, 401, 401]
    assert failed_login(second, "lan", "10.0.0.7") == 429
    assert failed_login(first, "lan", "10.0.0.7") == 429
    assert failed_login(second, "lan", "10.0.0.8") == 401  # another address is not paused
    assert oct((tmp_path / "data" / FILE_NAME).stat().st_mode & 0o777) == "0o600"


def test_a_restart_keeps_the_count_and_the_pause_ends_it(tmp_path):
    now = [1000.0]
    first = LoginThrottle(2, 300, clock=lambda: now[0], data_dir=tmp_path)
    first.failed("lan", "10.0.0.7")
    first.close()
    again = LoginThrottle(2, 300, clock=lambda: now[0], data_dir=tmp_path)  # the server restarted
    again.failed("lan", "10.0.0.7")
    assert again.blocked("lan", "10.0.0.7")
    now[0] += 301
    assert not again.blocked("lan", "10.0.0.7")
    again.close()
    LoginThrottle(2, 300, clock=lambda: now[0], data_dir=tmp_path).close()  # a start forgets expired failures
    with sqlite3.connect(tmp_path / FILE_NAME) as db:
        assert db.execute("SELECT COUNT(*) FROM failures").fetchone()[0] == 0


def test_the_failures_table_is_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(throttle_module, "MAX_ROWS", 50)
    now = [0.0]
    counts = LoginThrottle(3, 300, clock=lambda: now[0], data_dir=tmp_path)
    for n in range(200):  # one guesser, many names and addresses (3 counters a failure)
        now[0] += 0.01
        counts.failed(f"name-{n}", f"10.1.{n // 250}.{n % 250}")
    counts.close()
    with sqlite3.connect(tmp_path / FILE_NAME) as db:
        rows = db.execute("SELECT COUNT(*) FROM failures").fetchone()[0]
        newest = db.execute("SELECT MAX(at) FROM failures").fetchone()[0]
    assert rows <= 50 and newest == pytest.approx(now[0])  # the newest are kept


def test_one_counter_keeps_only_what_its_limit_counts(tmp_path):
    counts = LoginThrottle(2, 300, data_dir=tmp_path)
    for _ in range(100):
        counts.failed("lan", "10.0.0.7")
    counts.close()
    with sqlite3.connect(tmp_path / FILE_NAME) as db:
        per_counter = [n for (n,) in db.execute("SELECT COUNT(*) FROM failures GROUP BY counter")]
    assert max(per_counter) == 2 * throttle_module.NAME_FACTOR
