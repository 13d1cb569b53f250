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

    def lookup(index, name):
        if stalling.is_set():
            stall.wait()
        return real(index, name)

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
