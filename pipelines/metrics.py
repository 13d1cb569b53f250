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


MAX_CONNECTIONS = 8  # scrapes served at once (review rev17ops M3)
SLOT_WAIT_SECONDS = 2.0  # a connection over the bound waits this long for a slot (the next ones wait in the
# kernel's backlog meanwhile, with no thread), then is closed: a scrape arriving while the threads of connections
# just closed have not yet noticed their end was dropped at once (a CI run's RemoteDisconnected)
IDLE_SECONDS = 5.0  # a client may stay idle or slow this long per read (socketserver puts it on the connection)
CONNECTION_SECONDS = 15.0  # and keep its connection this long in all: a byte every few seconds (slowloris) no
# longer holds a slot for good (review2 r2ops N10)


def _server_classes():
    """A small WSGI server of our own for /metrics: prometheus_client's start_http_server starts one thread per
    connection with no socket timeout, so idle connections (from any host that reaches the port) pinned a
    thread each for ever, up to the unit's TasksMax, and then no worker, page worker or tool could start."""
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

    class Handler(WSGIRequestHandler):
        timeout = IDLE_SECONDS

        def handle(self):
            # wsgiref's handle does not catch what http.server's does: an idle, slow or vanished client raised
            # out of it, and socketserver printed a traceback per connection to stderr (review2 r2ops N3)
            try:
                super().handle()
            except (TimeoutError, ConnectionError):
                pass

        def log_message(self, format, *args):  # noqa: A002 - no line per scrape in the journal
            pass

    class Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True

        def __init__(self, address, handler, family):
            self.address_family = family
            self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
            self.lock, self.open, self.closed = threading.Lock(), {}, threading.Event()
            super().__init__(address, handler)
            threading.Thread(target=self._reap, name="digitize-metrics-deadline", daemon=True).start()

        def process_request(self, request, client_address):
            if not self.slots.acquire(timeout=SLOT_WAIT_SECONDS):
                self.shutdown_request(request)  # still over the bound: closed, no thread
                return
            try:
                super().process_request(request, client_address)
            except BaseException:
                self.slots.release()
                raise

        def process_request_thread(self, request, client_address):
            with self.lock:
                self.open[request] = time.monotonic() + CONNECTION_SECONDS
            try:
                super().process_request_thread(request, client_address)
            finally:
                with self.lock:
                    self.open.pop(request, None)
                self.slots.release()

        def _reap(self):
            """One thread for all connections: each is cut at its deadline (review2 r2ops N10)."""
            while not self.closed.wait(min(1.0, CONNECTION_SECONDS / 4)):
                now = time.monotonic()
                with self.lock:
                    late = [request for request, due in self.open.items() if due <= now]
                for request in late:
                    _cut(request)

        def server_close(self):
            self.closed.set()
            super().server_close()

        def handle_error(self, request, client_address):
            # anything else a client causes: one debug line, never a traceback on stderr (outside the log
            # formatter, and as many as anyone who reaches the port likes; review2 r2ops N3)
            log.debug("metrics request from %s failed", client_address[0], exc_info=True)

    return Server, Handler


def _cut(request) -> None:
    """A connection past CONNECTION_SECONDS: shut down, which wakes its thread from a blocked read."""
    import socket

    try:
        request.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # closed already


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
