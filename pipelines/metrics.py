"""Prometheus metrics of ``digitize worker`` (``--metrics-port``): pages, seconds per page, failures, queue depth.

Workers are forked processes, so counters use prometheus_client's multiprocess mode (each process writes
its own file in PROMETHEUS_MULTIPROC_DIR, set before any metric exists); the main process serves them,
plus the queue depth read from the ledger at scrape time (records that verify, by state; others as unverified).
"""

from __future__ import annotations

import logging
import threading
import time

from .jobs import JobResult, Status

log = logging.getLogger("pipelines.metrics")
_metrics: dict[str, object] = {}


def _get() -> dict[str, object]:
    if not _metrics:
        from prometheus_client import Counter, Histogram

        _metrics.update(
            pages=Counter("digitize_pages_converted_total", "Pages converted by queue workers"),
            seconds=Histogram("digitize_page_seconds", "Conversion seconds per page",
                              buckets=(0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300)),
            jobs=Counter("digitize_jobs_total", "Job deliveries by outcome", ["outcome"]),
            failures=Counter("digitize_failures_total", "Failed or retried deliveries by cause", ["cause"]),
        )
    return _metrics


def cause(result: JobResult) -> str:
    """The failure's most general known kind: StorageError, InputError, crashed, internal, ..."""
    kinds = result.error_kinds
    for name in ("crashed", "internal", "StorageError", "SigningError", "InputError", "FileAccessError"):
        if name in kinds:
            return name
    return kinds[-1] if kinds else "unknown"


def record(state: str, result: JobResult) -> None:
    try:
        m = _get()
        m["jobs"].labels(state).inc()
        if result.pages:
            m["pages"].inc(result.pages)
            per_page = result.convert_seconds / result.pages
            for _ in range(result.pages):
                m["seconds"].observe(per_page)
        if result.status is Status.failed:
            m["failures"].labels(cause(result)).inc()
    except Exception:  # noqa: BLE001 - metrics never fail a job
        log.exception("could not record metrics")


class _QueueDepth:
    """Jobs per verified state, read from the ledger when Prometheus scrapes: a record whose seal does not
    verify (planted or altered in Redis) is counted as ``unverified``, never in the state it claims. A scrape
    reads only the records written since the last (Ledger.follow: the ledger's change log), the first one and
    one every RECHECK seconds all of them (a record altered in Redis without an entry in the log)."""

    RECHECK = 600.0

    def __init__(self, settings):
        from .ledger import LiveTally

        self.settings = settings
        self.live = LiveTally()
        self.checked = 0.0  # time.monotonic() of the last full read
        self.lock = threading.Lock()  # scrapes may come at once (the server's threads): one reads, the next follows

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        from .ledger import STATES, UNVERIFIED, Ledger

        gauge = GaugeMetricFamily("digitize_queue_jobs", "Jobs in the queue ledger by verified state",
                                  labels=["state"])
        try:
            with self.lock:
                if time.monotonic() - self.checked > self.RECHECK:
                    self.live.reset()
                    self.checked = time.monotonic()
                ledger = Ledger.from_settings(self.settings, reconnect=2.0)
                try:
                    counts = ledger.follow(self.live)
                finally:
                    ledger.close()
            for state in (*STATES, UNVERIFIED):
                gauge.add_metric([state], getattr(counts, state))
        except Exception:  # noqa: BLE001 - a scrape during a broker restart shows no depth, not an error page
            log.warning("queue depth unavailable")
        yield gauge


def serve(port: int, settings) -> None:
    """Serve /metrics on ``port`` (all interfaces: Prometheus scrapes from another machine)."""
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    registry.register(_QueueDepth(settings))
    start_http_server(port, registry=registry)
