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
        self.down = False  # the last scrape could not read the ledger (its warning given)

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
            if not self.down:  # once per outage: a scrape every few seconds (or anyone's) must not flood the log
                log.warning("queue depth unavailable (until the ledger answers again)")
            self.down = True
        else:
            self.down = False
        yield gauge


MAX_CONNECTIONS = 8  # scrapes served at once; a connection over this is closed at once (review rev17ops M3)


def _server_classes():
    """A small WSGI server of our own for /metrics: prometheus_client's start_http_server starts one thread per
    connection with no socket timeout, so idle connections (from any host that reaches the port) pinned a
    thread each for ever, up to the unit's TasksMax, and then no worker, page worker or tool could start."""
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

    class Handler(WSGIRequestHandler):
        timeout = 5.0  # seconds a client may stay idle or slow (socketserver puts it on the connection)

        def log_message(self, format, *args):  # noqa: A002 - no line per scrape in the journal
            pass

    class Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True

        def __init__(self, address, handler, family):
            self.address_family = family
            self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
            super().__init__(address, handler)

        def process_request(self, request, client_address):
            if not self.slots.acquire(blocking=False):
                self.shutdown_request(request)  # over the bound: closed, no thread
                return
            try:
                super().process_request(request, client_address)
            except BaseException:
                self.slots.release()
                raise

        def process_request_thread(self, request, client_address):
            try:
                super().process_request_thread(request, client_address)
            finally:
                self.slots.release()

    return Server, Handler


def serve(port: int, settings, host: str | None = None):
    """Serve /metrics on ``host`` (default ``[queue] metrics_host``: 127.0.0.1; the unit names the monitoring
    network's address) and ``port``, in a daemon thread; the server (its ``server_address``, ``shutdown``).
    There is no authentication: the port must be reachable only from the monitoring host (README)."""
    import socket

    from prometheus_client import CollectorRegistry, make_wsgi_app
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    registry.register(_QueueDepth(settings))
    host = settings.queue.metrics_host if host is None else host
    server_class, handler = _server_classes()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    server = server_class((host, port), handler, family)
    server.set_app(make_wsgi_app(registry))
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server
