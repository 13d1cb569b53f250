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
