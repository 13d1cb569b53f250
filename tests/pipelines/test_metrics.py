"""The worker's /metrics server: loopback by default, bounded threads, idle clients dropped (review rev17ops M3)."""

from __future__ import annotations

import logging
import socket
import threading
import time
import urllib.request

import pytest

from digitize.config import Settings
from pipelines import metrics


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path, monkeypatch):
    """(host, port) of a /metrics server whose ledger (Redis) is away."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    settings = Settings(data_dir=str(tmp_path / "data"))
    settings.queue.url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    port = free_port()
    started = metrics.serve(port, settings)
    yield "127.0.0.1", port
    started.shutdown()
    started.server_close()


def scrape(address) -> int:
    with urllib.request.urlopen(f"http://{address[0]}:{address[1]}/metrics", timeout=30) as r:
        return r.status


def test_metrics_listen_on_loopback_unless_told_otherwise(server):
    import psutil

    [listening] = [c for c in psutil.net_connections("inet") if c.status == "LISTEN" and c.laddr.port == server[1]]
    assert listening.laddr.ip == "127.0.0.1" and Settings().queue.metrics_host == "127.0.0.1"


def test_idle_connections_cannot_pin_a_thread_each_and_a_scrape_answers_after_them(server, monkeypatch, caplog):
    before = threading.active_count()
    idle = [socket.create_connection(server) for _ in range(50)]
    try:
        time.sleep(0.5)
        assert threading.active_count() <= before + 10  # MAX_CONNECTIONS (8), not one per connection (50)
    finally:
        for s in idle:
            s.close()
    with caplog.at_level(logging.WARNING, "pipelines.metrics"):
        assert scrape(server) == 200 and scrape(server) == 200
    assert sum("queue depth unavailable" in r.getMessage() for r in caplog.records) == 1  # once per outage


def test_a_scrape_over_the_bound_waits_for_a_slot_rather_than_being_dropped(server):
    """A scrape that arrives while every slot is held (by connections closing that moment) waits for one: it
    was closed at once, and CI saw RemoteDisconnected when the idle connections' threads had not yet ended."""
    before = threading.active_count()
    idle = [socket.create_connection(server) for _ in range(metrics.MAX_CONNECTIONS)]
    deadline = time.monotonic() + 10
    while threading.active_count() < before + metrics.MAX_CONNECTIONS and time.monotonic() < deadline:
        time.sleep(0.01)  # every slot taken
    release = threading.Timer(0.3, lambda: [s.close() for s in idle])
    release.start()
    try:
        assert scrape(server) == 200
    finally:
        release.join()


@pytest.fixture
def quick_server(tmp_path, monkeypatch):
    """A /metrics server that drops idle clients after 0.2 s and any client after 1 s."""
    monkeypatch.setattr(metrics, "IDLE_SECONDS", 0.2, raising=False)
    monkeypatch.setattr(metrics, "CONNECTION_SECONDS", 1.0, raising=False)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    port = free_port()
    started = metrics.serve(port, Settings(data_dir=str(tmp_path / "data")))
    yield "127.0.0.1", port
    started.shutdown()
    started.server_close()


def closed_by_server(s: socket.socket) -> None:
    s.settimeout(30)
    assert s.recv(100) == b""  # the server closed the connection


def test_idle_and_half_sent_requests_leave_no_traceback(quick_server, capfd):
    """review2 r2ops N3: an idle or slow client is dropped without ~20 lines on stderr (outside logging)."""
    idle = socket.create_connection(quick_server)
    half = socket.create_connection(quick_server)
    half.sendall(b"GET /metr")
    try:
        closed_by_server(idle)
        closed_by_server(half)
        time.sleep(0.2)  # the handler's thread ends after the close
    finally:
        idle.close()
        half.close()
    assert "Traceback" not in capfd.readouterr().err


def test_a_client_sending_a_byte_at_a_time_is_dropped_at_the_deadline(quick_server):
    """review2 r2ops N10: slowloris (a byte before each read times out) holds a slot only CONNECTION_SECONDS."""
    slow = socket.create_connection(quick_server)
    start = time.monotonic()
    try:
        with pytest.raises(OSError):
            while time.monotonic() - start < 30:
                slow.sendall(b"G")
                time.sleep(0.1)
        assert time.monotonic() - start < 30
    finally:
        slow.close()
