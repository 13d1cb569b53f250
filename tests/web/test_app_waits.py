"""A stalled database holds only the requests that need it: the access dependencies look accounts up in a
worker thread, never on the event loop (in-process app, one event loop shared by all requests)."""

from __future__ import annotations

import threading

import pytest
from fastapi.testclient import TestClient

from digitize.config import Settings
from storage import access
from storage.archive import Archive
from web import auth
from web.app import create_app

AGENCY = "000.00.31.H56"
PASSWORD = "mat-khau-thu-nghiem-2024"


@pytest.fixture
def data(tmp_path):
    settings = Settings(data_dir=str(tmp_path / "data"))
    settings.web.secure_cookies = False
    with Archive.open(settings) as archive:
        tokens = {name: access.create_token(archive.index, name, "officer", [AGENCY]) for name in ("slow", "quick")}
        access.add_user(archive.index, "officer-a", "officer", [AGENCY], PASSWORD)
    return settings, tokens


class Stall:
    """Blocks a lookup until released; ``entered`` is set once a request is stuck in it."""

    def __init__(self):
        self.entered, self.release = threading.Event(), threading.Event()

    def wait(self) -> None:
        self.entered.set()
        assert self.release.wait(30), "never released"


def in_thread(call) -> tuple[threading.Thread, list]:
    answers: list = []
    thread = threading.Thread(target=lambda: answers.append(call()), daemon=True)
    thread.start()
    return thread, answers


def others_answer_while_stalled(client: TestClient, stall: Stall, stalled_call, *other_calls) -> None:
    first, stalled = in_thread(stalled_call)
    try:
        assert stall.entered.wait(20), "the stalled request never reached the lookup"
        for call, status in other_calls:
            thread, answers = in_thread(call)
            thread.join(10)
            assert not thread.is_alive(), "a request waited for another request's stalled account lookup"
            assert answers[0].status_code == status
    finally:
        stall.release.set()
    first.join(20)
    assert stalled and stalled[0].status_code == 200


def test_a_stalled_token_lookup_stalls_no_other_request(data, monkeypatch):
    settings, tokens = data
    stall, real = Stall(), auth.authenticate_token

    def lookup(index, secret):
        if secret == tokens["slow"]:
            stall.wait()
        return real(index, secret)

    monkeypatch.setattr(auth, "authenticate_token", lookup)
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as client:
        def bearer(name):
            return {"authorization": f"Bearer {tokens[name]}"}

        others_answer_while_stalled(
            client, stall, lambda: client.get("/api/v1/search?q=dat", headers=bearer("slow")),
            (lambda: client.get("/healthz"), 200),
            (lambda: client.get("/static/app.css"), 200),
            (lambda: client.get("/api/v1/search?q=dat", headers=bearer("quick")), 200))


def test_a_stalled_session_lookup_stalls_no_other_request(data, monkeypatch):
    settings, _ = data
    stall, real = Stall(), auth.principal_for_user
    stalling = threading.Event()

    def lookup(index, name, *how):
        if stalling.is_set():
            stall.wait()
        return real(index, name, *how)

    monkeypatch.setattr(auth, "principal_for_user", lookup)
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as client:
        import re

        csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text).group(1)
        assert client.post("/login", data={"name": "officer-a", "password": PASSWORD, "csrf": csrf},
                           follow_redirects=False).status_code == 303
        stalling.set()
        others_answer_while_stalled(
            client, stall, lambda: client.get("/search"),
            (lambda: client.get("/healthz"), 200),
            (lambda: client.get("/login"), 200))


# -- bounded database waits ([web] db_timeout) ------------------------------------------------------
CASE = f"{AGENCY}-241015-0027"


def answered_within(call, release, seconds: float = 10.0):
    """The answer of ``call`` while a lock is held elsewhere; ``release`` lets it go (and the request end,
    before the app and its connections are closed) if the request is still waiting after ``seconds``."""
    thread, answers = in_thread(call)
    thread.join(seconds)
    if thread.is_alive():
        release()
        thread.join(60)
        raise AssertionError("the request waited on the database without a bound")
    return answers[0]


def test_a_locked_sqlite_index_is_a_503_after_db_timeout_not_a_stalled_request(data):
    """SQLite waited 30 s for another process's write lock (its busy timeout for batch workers)."""
    settings, tokens = data
    settings.web.db_timeout = 0.3
    app = create_app(settings)
    with TestClient(app, base_url="http://127.0.0.1") as client:
        with app.state.pool.archive() as archive:
            assert archive.index.conn.execute("PRAGMA busy_timeout").fetchone()[0] == 300
        import sqlite3

        other = sqlite3.connect(settings.index_dsn[len("sqlite:///"):], isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock (a long batch transaction)
        try:
            put = answered_within(lambda: client.put(f"/api/v1/cases/{CASE}", json={"applicant": "Nguyễn Văn A"},
                                                     headers={"authorization": f"Bearer {tokens['quick']}"}),
                                  lambda: other.execute("ROLLBACK"))
            assert put.status_code == 503 and put.json()["error"] == "storage-unavailable"
            assert "sqlite" not in put.json()["message"] and put.headers["retry-after"]
        finally:
            if other.in_transaction:
                other.execute("ROLLBACK")
            other.close()
        put = client.put(f"/api/v1/cases/{CASE}", json={"applicant": "Nguyễn Văn A"},
                         headers={"authorization": f"Bearer {tokens['quick']}"})
        assert put.status_code == 201


def test_a_cold_pool_opens_while_a_batch_holds_the_index_write_lock(data):
    """Opening an archive ran every migration check in a write transaction, under the 30 s busy wait (the
    portal's wait bound came only after): a cold pool's requests hung behind a batch's long transaction."""
    import sqlite3

    settings, tokens = data
    settings.web.db_timeout = 0.3
    other = sqlite3.connect(settings.index_dsn[len("sqlite:///"):], isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # a batch's transaction, before the portal's first request
    try:
        with TestClient(create_app(settings), base_url="http://127.0.0.1") as client:
            answer = answered_within(lambda: client.get(f"/api/v1/cases/{CASE}",
                                                        headers={"authorization": f"Bearer {tokens['quick']}"}),
                                     lambda: other.execute("ROLLBACK"))
    finally:
        if other.in_transaction:
            other.execute("ROLLBACK")
        other.close()
    assert answer.status_code == 404  # read, answered: no case of that ID


def test_a_cold_pool_answers_503_while_another_process_migrates_the_index(data):
    """Review 11b M3: a migration (minutes on a large index) holds the write lock for its whole run; a pooled
    archive opened meanwhile waited SQLite's 30 s busy timeout, outside db_timeout."""
    import sqlite3

    settings, tokens = data
    settings.web.db_timeout = 0.3
    other = sqlite3.connect(settings.index_dsn[len("sqlite:///"):], isolation_level=None, check_same_thread=False)
    other.execute("DELETE FROM schema_migrations WHERE version = (SELECT max(version) FROM schema_migrations)")
    other.execute("BEGIN IMMEDIATE")  # the migrator, in another process
    try:
        with TestClient(create_app(settings), base_url="http://127.0.0.1") as client:
            answer = answered_within(lambda: client.get(f"/api/v1/cases/{CASE}",
                                                        headers={"authorization": f"Bearer {tokens['quick']}"}),
                                     lambda: other.execute("ROLLBACK"), seconds=8.0)
    finally:
        if other.in_transaction:
            other.execute("ROLLBACK")
        other.close()
    assert answer.status_code == 503 and answer.json()["error"] == "storage-unavailable"
    assert "\n" not in answer.json()["message"]


def test_a_locked_sqlite_index_is_a_503_page_for_the_portal(data):
    settings, _ = data
    settings.web.db_timeout = 0.3
    with Archive.open(settings) as archive:
        access.add_user(archive.index, "admin", "admin", [], PASSWORD)
    app = create_app(settings)
    with TestClient(app, base_url="http://127.0.0.1") as client:
        import re
        import sqlite3

        csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text).group(1)
        assert client.post("/login", data={"name": "admin", "password": PASSWORD, "csrf": csrf},
                           follow_redirects=False).status_code == 303
        csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/admin").text).group(1)  # the session's own
        other = sqlite3.connect(settings.index_dsn[len("sqlite:///"):], isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            page = answered_within(lambda: client.post("/admin/users/officer-a/disable", data={"csrf": csrf},
                                                       follow_redirects=False), lambda: other.execute("ROLLBACK"))
        finally:
            if other.in_transaction:
                other.execute("ROLLBACK")
            other.close()
        assert page.status_code == 503 and page.headers["content-type"].startswith("text/html")
        assert "index.sqlite3" not in page.text and page.headers["retry-after"]


@pytest.mark.integration
def test_postgresql_statements_of_the_portal_are_bounded(tmp_path, postgres_dsn):
    """No statement_timeout was set: a lookup waiting on a lock held elsewhere waited for ever."""
    import psycopg

    settings = Settings(data_dir=str(tmp_path / "data"))
    settings.index.dsn = postgres_dsn
    settings.web.db_timeout = 0.5
    with Archive.open(settings) as archive:
        token = access.create_token(archive.index, "onestop", "officer", [AGENCY])
    app = create_app(settings)
    with TestClient(app, base_url="http://127.0.0.1") as client:
        with app.state.pool.archive() as archive:
            assert archive.index.conn.execute("SHOW statement_timeout").fetchone()[0] == "500ms"
            assert archive.index.conn.execute("SHOW lock_timeout").fetchone()[0] == "500ms"
            with psycopg.connect(postgres_dsn, autocommit=True) as admin:  # the connection is cut (a restart)
                admin.execute("SELECT pg_terminate_backend(%s)", (archive.index.conn.info.backend_pid,))
            assert archive.index.get_user("nobody") is None  # reconnects
            assert archive.index.conn.execute("SHOW statement_timeout").fetchone()[0] == "500ms"
        with psycopg.connect(postgres_dsn) as other:  # a transaction elsewhere holds the tokens table
            other.execute("LOCK TABLE api_tokens IN ACCESS EXCLUSIVE MODE")
            answer = answered_within(lambda: client.get(f"/api/v1/cases/{CASE}",
                                                        headers={"authorization": f"Bearer {token}"}),
                                     other.rollback)
            other.rollback()
        assert answer.status_code == 503 and answer.json()["error"] == "storage-unavailable"
        assert client.get(f"/api/v1/cases/{CASE}", headers={"authorization": f"Bearer {token}"}).status_code == 404
