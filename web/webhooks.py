"""Webhooks: a signed JSON POST to each configured URL when a document is stored, by any path (watch, batch,
portal or API uploads), never blocking one.

The append-only events log is the outbox: a thread of ``digitize serve`` (of one of its worker processes:
the one holding ``data_dir/webhooks.lock``) reads new ``stored`` events and
delivers them in order, each URL with its own cursor (``data_dir/webhooks.json``), so one slow or broken
receiver delays no other. A failed delivery is retried with doubling backoff up to ``webhook_retries``
attempts, then skipped with a warning (the URL's scheme://host only, never its path or the secret). Receivers check
``X-Digitize-Signature: t=UNIX,v1=HEX`` where HEX = HMAC-SHA256(secret, "UNIX." + body), and may refuse old
``t`` to stop replays.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import http.client
import json
import logging
import os
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from digitize.fsutil import atomic_write_text
from digitize.secrets import mask

from .settings_check import origin

log = logging.getLogger("digitize.webhooks")
TIMEOUT = 10.0
MAX_BACKOFF = 300.0
POLL = 2.0


def where(url: str) -> str:
    """A receiver as logs show it: scheme://host[:port] only (its path or query may be its secret; review web15
    L8), masked too (the one masking function)."""
    return mask(origin(url))


def signature(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # a receiver that redirects has not received
        return None


_opener = urllib.request.build_opener(_NoRedirect)


def post(url: str, body: bytes, secret: str, event_id: int) -> None:
    """One delivery attempt; raises OSError (incl. HTTPError) unless the receiver answered 2xx."""
    headers = {"content-type": "application/json", "user-agent": "digitize-webhooks",
               "x-digitize-event-id": str(event_id), "x-digitize-signature": signature(secret, int(time.time()), body)}
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    with _opener.open(request, timeout=TIMEOUT) as response:
        if not 200 <= response.status < 300:
            raise OSError(f"HTTP {response.status}")


class WebhookDispatcher:
    """One delivery thread per URL, each with its own cursor in ``data_dir/webhooks.json``."""

    def __init__(self, settings, open_archive, sender=post):
        self.urls = list(dict.fromkeys(u.strip() for u in settings.web.webhook_urls.split(",") if u.strip()))
        self.secret = settings.web.webhook_secret
        self.retries = max(1, settings.web.webhook_retries)
        self.backoff = settings.web.webhook_backoff
        self.state_path = Path(settings.data_dir) / "webhooks.json"
        self.open_archive = open_archive
        self.sender = sender
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._leader: threading.Thread | None = None

    def start(self) -> None:
        """Deliver from this process once it holds the data dir's dispatcher lock: of several server
        processes (``[web] workers``) exactly one delivers, and another takes over if it ends."""
        if self.urls:
            self._leader = threading.Thread(target=self._lead, name="digitize-webhook-lock", daemon=True)
            self._leader.start()

    def _lead(self) -> None:
        path = self.state_path.with_name("webhooks.lock")
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError:
                    if self._stop.wait(POLL):
                        return
            for url in self.urls:
                thread = threading.Thread(target=self._run, args=(url,), name="digitize-webhook", daemon=True)
                thread.start()
                self._threads.append(thread)
            self._stop.wait()
            for thread in self._threads:
                thread.join(timeout=TIMEOUT + 5)
        finally:
            os.close(fd)  # the lock goes with it

    def stop(self) -> None:
        self._stop.set()
        if self._leader is not None:
            self._leader.join(timeout=TIMEOUT + 10)

    def _cursor(self, url: str, value: int | None = None, default: int = 0) -> int:
        """Read (value None) or write one URL's cursor; the file is shared by the URLs' threads."""
        with self._lock:
            try:
                saved = json.loads(self.state_path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                saved = {}
            if value is None:
                if url in saved:
                    return int(saved[url])
                value = default  # a new URL starts from now, not from the whole history
            saved[url] = value
            atomic_write_text(self.state_path, json.dumps(saved))
            return value

    def _run(self, url: str) -> None:
        with self.open_archive() as archive:
            after = self._cursor(url, default=archive.index.last_event_id())
            while not self._stop.is_set():
                try:
                    done = self._deliver_new(archive, url, after)
                    if done != after:
                        after = self._cursor(url, done)
                except Exception:  # noqa: BLE001 - the index may be briefly away; try again later
                    log.exception("webhook %s: delivery loop", where(url))
                self._stop.wait(POLL)

    def _deliver_new(self, archive, url: str, after: int) -> int:
        for event_id, event in archive.index.events_after(after, "stored"):
            body = json.dumps(self.payload(archive, event_id, event), ensure_ascii=False).encode("utf-8")
            if not self._deliver(url, body, event_id):
                break  # stopping: this event is sent again next time
            after = event_id
        return after

    @staticmethod
    def payload(archive, event_id: int, event) -> dict:
        doc = archive.index.document(event.doc_id) if event.doc_id is not None else None
        data = {"event": "document.stored", "event_id": event_id, "time": event.time, "case_id": event.case_id,
                "doc_id": event.doc_id}
        if doc is not None:
            data.update(case_id=doc.case_id, sequence=doc.sequence, title=doc.title, pages=doc.pages,
                        original_sha256=doc.original_sha256, pdfa_sha256=doc.pdfa_sha256)
        return data

    def _deliver(self, url: str, body: bytes, event_id: int) -> bool:
        """True once delivered or given up; False if the server is stopping."""
        delay = self.backoff
        for attempt in range(1, self.retries + 1):
            if self._stop.is_set():
                return False
            try:
                self.sender(url, body, self.secret, event_id)
                return True
            except (OSError, ValueError, http.client.HTTPException) as e:  # HTTPException: a receiver answering
                # garbage (BadStatusLine, IncompleteRead, LineTooLong), which urllib passes through unwrapped;
                # it escaped this bound and _run retried the same event every POLL s for ever (review web15 M4)
                reason = f"HTTP {e.code}" if isinstance(e, urllib.error.HTTPError) else type(e).__name__
                if attempt == self.retries:
                    log.warning("webhook %s: event %s not delivered after %d attempts (%s)", where(url),
                                event_id, attempt, reason)
                    return True
                if self._stop.wait(delay):
                    return False
                delay = min(delay * 2, MAX_BACKOFF)
        return True
