"""Webhooks: a document stored by another process is POSTed, signed, retried, and one dead receiver delays no
other. A real HTTP receiver on loopback; the portal app runs its dispatcher in-process."""

from __future__ import annotations

import hashlib
import hmac
import http.client
import http.server
import json
import logging
import shutil
import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from digitize.config import Settings
from portal_data import AGENCY_A, seed, store_case
from storage.archive import Archive
from web.app import create_app
from web.webhooks import WebhookDispatcher, signature

SECRET = "webhook-test-secret-0123456789abcdef"


class Receiver(http.server.ThreadingHTTPServer):
    def __init__(self, failures: int):
        self.failures = failures
        self.posts: list[tuple[dict, bytes, int]] = []

        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["content-length"]))
                status = 500 if len(server.posts) < server.failures else 204
                server.posts.append(({k.lower(): v for k, v in self.headers.items()}, body, status))
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook"


def wait_for(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


@pytest.fixture
def receivers():
    flaky, good = Receiver(failures=2), Receiver(failures=0)
    yield flaky, good
    for r in (flaky, good):
        r.shutdown()
        r.server_close()


def test_stored_documents_are_posted_signed_and_retried(tmp_path, receivers, caplog):
    caplog.set_level(logging.WARNING, logger="digitize.webhooks")
    flaky, good = receivers
    settings = seed(tmp_path / "data", tmp_path / "work")
    dead = "http://hook:pa55word@127.0.0.1:9/dead"  # port 9: nobody listens; a password in the URL
    settings.web.webhook_urls = f"{dead}, {flaky.url}, {good.url}"
    settings.web.webhook_secret = SECRET
    settings.web.webhook_backoff = 0.2
    settings.web.webhook_retries = 4
    with TestClient(create_app(settings)):
        wait_for(lambda: (tmp_path / "data" / "webhooks.json").is_file()
                 and len(json.loads((tmp_path / "data" / "webhooks.json").read_text())) == 3)
        assert not good.posts  # history before the first start is not replayed
        with Archive.open(Settings(data_dir=str(tmp_path / "data"))) as archive:  # another process, e.g. watch
            shutil.rmtree(tmp_path / "work")
            (tmp_path / "work").mkdir()
            store_case(archive, tmp_path / "work", "000.00.31.H56-241015-0099", ["Văn bản mới"], AGENCY_A)
            doc = archive.documents("000.00.31.H56-241015-0099")[0]
        wait_for(lambda: any(status == 204 for _, _, status in flaky.posts))
        wait_for(lambda: len(good.posts) == 1)
        wait_for(lambda: "not delivered after 4 attempts" in caplog.text)
    assert "pa55word" not in caplog.text and "webhook http://127.0.0.1:9:" in caplog.text  # scheme://host only
    assert "/dead" not in caplog.text
    headers, body, _ = good.posts[0]
    payload = json.loads(body)
    assert payload["event"] == "document.stored" and payload["pdfa_sha256"] == doc.pdfa_sha256
    assert payload["case_id"] == "000.00.31.H56-241015-0099" and payload["sequence"] == 1
    t = int(headers["x-digitize-signature"].split(",")[0][2:])
    assert headers["x-digitize-signature"] == signature(SECRET, t, body)
    expected = hmac.new(SECRET.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    assert headers["x-digitize-signature"].endswith(expected)
    assert [status for _, _, status in flaky.posts] == [500, 500, 204]  # retried with backoff
    assert SECRET not in Path(tmp_path / "data" / "webhooks.json").read_text()


def test_of_several_server_processes_exactly_one_delivers_and_another_takes_over(tmp_path, receivers):
    _, good = receivers
    settings = seed(tmp_path / "data", tmp_path / "work")
    settings.web.webhook_urls = good.url
    settings.web.webhook_secret = SECRET
    state = tmp_path / "data" / "webhooks.json"

    def store(number: str) -> None:
        shutil.rmtree(tmp_path / "work", ignore_errors=True)
        (tmp_path / "work").mkdir()
        with Archive.open(Settings(data_dir=str(tmp_path / "data"))) as archive:
            store_case(archive, tmp_path / "work", f"000.00.31.H56-241015-{number}", ["Văn bản"], AGENCY_A)

    first, second = TestClient(create_app(settings)), TestClient(create_app(settings))  # two workers' apps
    with first:
        wait_for(lambda: state.is_file())
        with second:
            store("0101")
            wait_for(lambda: len(good.posts) == 1)
            time.sleep(3 * 2.0)  # more than a poll of a second dispatcher, were there one
            assert len(good.posts) == 1
            first.__exit__(None, None, None)  # the delivering process ends; the other one takes over
            store("0102")
            wait_for(lambda: len(good.posts) == 2)
            time.sleep(3 * 2.0)
            assert [json.loads(body)["case_id"] for _, body, _ in good.posts] == [
                "000.00.31.H56-241015-0101", "000.00.31.H56-241015-0102"]


@pytest.mark.parametrize("error", [http.client.BadStatusLine("GARBAGE"), http.client.IncompleteRead(b"x", 5),
                                   http.client.LineTooLong("header line")])
def test_a_receiver_answering_garbage_is_retried_within_the_bound(tmp_path, error, caplog):
    """Review web15 M4: http.client's errors are no OSError; they escaped the retries and backoff, and the
    delivery loop logged a traceback and sent the same event every 2 s for ever."""
    calls = []

    def sender(url, body, secret, event_id):
        calls.append(event_id)
        raise error

    settings = Settings(data_dir=str(tmp_path / "data"))
    settings.web.webhook_urls, settings.web.webhook_secret = "http://127.0.0.1:9/hook", SECRET
    settings.web.webhook_retries, settings.web.webhook_backoff = 2, 0.01
    dispatcher = WebhookDispatcher(settings, None, sender=sender)
    with caplog.at_level(logging.WARNING, "digitize.webhooks"):
        assert dispatcher._deliver(settings.web.webhook_urls, b"{}", 7) is True  # given up: the cursor moves on
    assert calls == [7, 7] and "not delivered after 2 attempts" in caplog.text
    assert "Traceback" not in caplog.text


def test_a_webhook_urls_path_and_query_are_masked_as_secrets(tmp_path, caplog):
    """Review web15 L8: a Slack-style /hooks/T/B/SECRET or a ?sig= value is a credential no key name marks;
    webhook_urls was in no masking registry, so logs, errors and `config show` printed it."""
    from digitize import config, secrets

    hook = "https://hooks.example.vn/services/T0001/B0002/XyZsecretPart42"
    signed = "https://motcua.example.vn/in?sig=0a1b2c3d4e5f6789"
    env = {"DIGITIZE_DATA_DIR": str(tmp_path), "DIGITIZE_WEB_WEBHOOK_URLS": f"{hook}, {signed}",
           "DIGITIZE_WEB_WEBHOOK_SECRET": SECRET}
    try:
        settings = config.load_settings(env=env)
        shown = json.dumps(config.settings_as_dict(settings))
        for secret_part in ("XyZsecretPart42", "0a1b2c3d4e5f6789"):
            assert secret_part not in shown and secret_part not in secrets.mask(f"POST {hook} {signed} failed")
        assert "hooks.example.vn" in shown
        assert "DIGITIZE_WEB_WEBHOOK_URLS" in secrets.secret_env_names()  # never handed to a child process

        def refuse(url, body, secret, event_id):
            raise OSError(f"connection reset by {url}")

        settings.web.webhook_retries, settings.web.webhook_backoff = 1, 0.01
        dispatcher = WebhookDispatcher(settings, None, sender=refuse)
        with caplog.at_level(logging.WARNING, "digitize.webhooks"):
            dispatcher._deliver(hook, b"{}", 1)
        assert "webhook https://hooks.example.vn:" in caplog.text and "XyZsecretPart42" not in caplog.text
    finally:
        secrets.forget_all()
