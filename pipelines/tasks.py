"""Celery adapter of queue mode: the app, its one task, and ``digitize worker``. No rules of its own:
what a delivery does is :func:`pipelines.queued.run_job`; this module maps its outcome onto Celery.

Delivery guarantees come from Celery settings, chosen for a task that may run for minutes and must
survive its worker dying: late acknowledgement (the message is acked only after the outcome is
recorded), ``reject_on_worker_lost`` (a killed child's message goes back to the queue), one message
prefetched per process, and a Redis visibility timeout longer than a page's OCR deadline (a message
whose worker vanished is handed out again after it).
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import socket
import tempfile
from typing import Any

from digitize.errors import ConfigError

from .ledger import UNVERIFIED
from .queued import QUEUE, TASK
from .taskauth import UnsignedTask, queue_secret, verify

log = logging.getLogger("pipelines.tasks")

_state: dict[str, Any] = {}  # this process's settings, ledger (opened after the fork) and app


def check_settings(settings) -> None:
    queue = settings.queue
    if not queue.url:
        raise ConfigError("no queue configured: set [queue] url (e.g. redis://HOST:6379/0)")
    if not settings.store_url.startswith(("s3://", "s3s://")) or not settings.index_dsn.startswith("postgres"):
        raise ConfigError("queue mode shares only the broker, an S3 store and a PostgreSQL index between machines: "
                          "set [store] url = s3://... and [index] dsn = postgresql://...")
    if queue.visibility_timeout <= settings.convert.ocr_timeout:
        raise ConfigError(f"queue.visibility_timeout ({queue.visibility_timeout:g} s) must be longer than "
                          f"convert.ocr_timeout ({settings.convert.ocr_timeout:g} s), the longest page deadline")
    queue_secret(settings)  # every task is signed and checked: no secret, no queue mode


def app_for(settings):
    from celery import Celery

    check_settings(settings)
    app = Celery("digitize", broker=settings.queue.url, set_as_current=False)
    app.conf.update(
        task_acks_late=True, task_reject_on_worker_lost=True, worker_prefetch_multiplier=1,
        task_default_queue=QUEUE, task_serializer="json", accept_content=["json"], task_ignore_result=True,
        broker_transport_options={"visibility_timeout": settings.queue.visibility_timeout},
        broker_connection_retry_on_startup=True, broker_connection_max_retries=None,
        worker_cancel_long_running_tasks_on_connection_loss=False, worker_hijack_root_logger=False,
        worker_send_task_events=False, task_send_sent_event=False, broker_heartbeat=0, worker_disable_rate_limits=True,
    )
    app.task(name=TASK, bind=True, max_retries=None, acks_late=True, Request=_request_class())(_convert)
    _state.update(settings=settings, app=app, key=queue_secret(settings))
    return app


def _request_class():
    """Celery's request, less the message's ``timelimit`` header: headers are outside the task's signature, so a
    broker writer replaying a signed task could otherwise have its worker killed mid-job (or never). The task's
    own limits (none: every page has its OCR deadline) apply."""
    from celery.worker.request import Request

    class SignedTaskRequest(Request):
        time_limits = property(lambda self: (None, None), lambda self, value: None)

    return SignedTaskRequest


def _tries(header: Any, limit: int) -> int:
    """Retries already made, from the message's header (outside the signature): bounded to 0..LIMIT, so a forged
    count cannot make retries come at once without end (negative) nor beyond the configured number."""
    try:
        return min(max(int(header or 0), 0), limit)
    except (TypeError, ValueError, OverflowError):
        return 0


def _ledger():
    """One ledger connection per process: a prefork child must not share its parent's socket."""
    from .ledger import Ledger

    if _state.get("ledger_pid") != os.getpid():
        _state["ledger"] = Ledger.from_settings(_state["settings"])
        _state["ledger_pid"] = os.getpid()
    return _state["ledger"]


def node_name() -> str:
    """The worker's Celery node name, "digitize-<random>-<pid>@<host>": the random part tells apart workers whose
    host name and PID agree (containers on the host network, each worker at PID 1), whose leases were otherwise
    judged by a process of the other (review rev2_batch16a LOW-1: taken for dead, converted twice)."""
    return f"digitize-{secrets.token_hex(4)}-{os.getpid()}@{socket.gethostname()}"


_process: dict[str, Any] = {}


def _worker_name(node: str | None) -> str:
    """The node and this process ("digitize-5e1f09a2-41@host/43.9c0d51e7"): which process ran a job, for its
    record and for a timeline of the pool (bench/queue_bench.py measures the idle gaps between one process's
    tasks). The random part, new in each process, makes the name this process's alone: a pool child that reuses
    a dead one's PID is not that one (queued.run_job takes over only its own process's leases at once)."""
    if _process.get("pid") != os.getpid():
        _process.update(pid=os.getpid(), nonce=secrets.token_hex(4))
    return f"{node or socket.gethostname()}/{os.getpid()}.{_process['nonce']}"


def _refuse(request, job: Any, error: UnsignedTask) -> None:
    """An unauthenticated task: not run, not retried (Celery's Ignore: the message is acknowledged, nothing
    requeued; Reject would log a traceback), said in one line. It changes no state but this: a job the ledger
    knows and has not done, whose own stored spec does not verify under this worker's key either, is failed
    with the reason, so a batch waiting on it (or `queue status`) shows why instead of waiting forever when
    machines' secrets differ. A job whose stored spec does verify was submitted by a holder of the key: a
    forged task naming it (anyone who can write the broker can) is only logged and the job left waiting
    for its own, signed task."""
    from celery.exceptions import Ignore

    from . import metrics
    from .jobs import JobResult, Status

    valid = isinstance(job, str) and re.fullmatch(r"[0-9a-f]{32}", job) is not None
    task = str(request.id)
    task = task if re.fullmatch(r"[\w.:@-]{1,100}", task) else "(odd id)"  # the message's own: shown inert
    log.error("refused task %s (job %s): %s; not run", task, job if valid else "(not a job ID)", error)
    reason = f"refused by worker {request.hostname}: {error}"
    try:
        record = _ledger().get(job) if valid else None
        if record is not None and record.state != "done" and _signed_here(job, record):
            log.warning("refused task %s names job %s, which was submitted signed: the job is left to its own task",
                        task, job)
        elif record is not None and record.state != "done":
            trusted = record.state != UNVERIFIED  # else its name and SHA-256 are whoever wrote Redis's
            result = JobResult(record.name if trusted else f"job {job}", Status.failed,
                               record.sha256 if trusted else "", reason, error_kinds=("UnsignedTask",),
                               exit_code=int(error.exit_code))
            _ledger().fail(job, reason, result.to_dict())
            metrics.record("failed", result)
    except Exception:  # noqa: BLE001 - the refusal stands whatever the ledger says
        log.warning("refused task %s: the ledger could not be updated", task)
    raise Ignore(reason)


def _signed_here(job: str, record) -> bool:
    """Whether the ledger's spec and signature for JOB verify under this worker's key (a legitimate job)."""
    try:
        verify(_state["key"], job, record.spec, record.signature)
    except UnsignedTask:
        return False
    return True


def _convert(self, job: str, spec: dict[str, Any], signature: str = "") -> str:
    from celery.exceptions import Ignore

    from . import metrics
    from .queued import run_job

    try:
        verify(_state["key"], job, spec, signature)  # before anything else, the ledger included
    except UnsignedTask as e:
        _refuse(self.request, job, e)
    settings = _state["settings"]
    try:
        outcome = run_job(settings, _ledger(), job, spec, _worker_name(self.request.hostname),
                          _tries(self.request.retries, settings.queue.retries))
    except Exception as e:  # noqa: BLE001 - the ledger unreachable for long, or a bug: send it again later
        log.exception("job %s: delivery failed outside the file's own processing", job)
        if _tries(self.request.retries, settings.queue.retries) >= settings.queue.retries:
            return _give_up(job, spec, e)
        raise self.retry(exc=e, countdown=settings.queue.retry_backoff * 2 ** _tries(self.request.retries, 4),
                         max_retries=settings.queue.retries)
    if outcome.state == "wait":  # another live delivery runs the job: looked at again later, this try not counted
        self.signature_from_request(countdown=outcome.delay, retries=self.request.retries).apply_async()
        raise Ignore(outcome.result.reason)
    if outcome.state == "dropped":  # an older submission's task: acknowledged, nothing recorded
        return outcome.state
    metrics.record(outcome.state, outcome.result)
    if outcome.state == "retry":
        raise self.retry(countdown=outcome.delay, max_retries=None)
    return outcome.state


def _give_up(job: str, spec: dict[str, Any], error: Exception) -> str:
    """The last try of a delivery that kept failing outside the file's processing: the job is failed in the
    ledger with one line before the message is acknowledged (Celery dropped it with no outcome recorded: the
    job stayed "running" for ever and `batch --wait` with it: review rev16batch M3)."""
    from digitize.secrets import mask

    from . import metrics
    from .jobs import INTERNAL, INTERNAL_EXIT, JobResult, Status

    reason = " ".join(mask(f"the delivery kept failing outside the file's processing: {type(error).__name__}: "
                           f"{error}").split())
    result = JobResult(str(spec.get("name") or f"job {job}"), Status.failed, str(spec.get("sha256") or ""), reason,
                       error_kinds=(INTERNAL,), exit_code=INTERNAL_EXIT)
    try:
        _ledger().fail(job, reason, result.to_dict(), spec=spec)
    except Exception:  # noqa: BLE001 - the ledger itself down for that long: said, and the message dropped
        log.error("job %s: given up and not recorded (the queue ledger is unreachable): %s", job, reason)
    metrics.record("failed", result)
    return "failed"


def _child_init(**_kwargs) -> None:
    """As batch's workers: one core per process, its page worker kept from file to file. Celery marks its
    pool processes daemonic, which forbids them children; the converter's page worker is one (killed with
    its parent by pageworkers' own watch), so the flag is cleared."""
    import multiprocessing

    import cv2

    from digitize import pageworkers

    multiprocessing.current_process()._config.pop("daemon", None)
    cv2.setNumThreads(1)
    pageworkers.keep()


def _preload() -> None:
    """The conversion, storage and index code imported once in the parent, before Celery forks its pool:
    each child (and a child replacing a dead one) starts warm and shares these pages, instead of paying the
    imports (~0.5 CPU-s, measured in bench/queue_bench.py) inside its first task, as batch's workers do."""
    import digitize.convert  # noqa: F401
    import digitize.signing  # noqa: F401
    import pipelines.jobs  # noqa: F401
    import pipelines.metrics  # noqa: F401
    import pipelines.pagescan  # noqa: F401
    import storage.archive  # noqa: F401
    import storage.index_pg  # noqa: F401
    import storage.objects  # noqa: F401


def _warm_models(settings) -> None:
    """Tesseract's models for the configured languages loaded in the parent too, before Celery forks its pool:
    a pool process otherwise loads them inside its first conversion (~0.4 CPU-s of its ~0.55 CPU-s first-file
    cost, cProfile), again in every child that replaces a killed one, and each holds its own copy; forked, they
    are shared by all pool processes and their page workers. A task whose options name other languages loads
    those itself, as before. Missing language data stops the worker at start (exit 3) instead of failing files."""
    from digitize import ocr

    ocr.warm(settings.convert.language)


def run_worker(settings, concurrency: int, metrics_port: int = 0, loglevel: str = "INFO") -> None:
    from celery.signals import worker_process_init

    if metrics_port:
        folder = tempfile.mkdtemp(prefix="digitize-metrics-")  # per run: counters of dead runs never add up
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
        import atexit
        import shutil

        atexit.register(shutil.rmtree, folder, True)  # not left in /tmp (outside PrivateTmp) run after run
    from digitize import imaging

    app = app_for(settings)
    if metrics_port:
        from . import metrics

        metrics.serve(metrics_port, settings)
    worker_process_init.connect(_child_init, weak=False)
    imaging.single_threaded()  # no OpenCV thread pool may exist across the fork
    _preload()
    _warm_models(settings)
    name = node_name()
    app.worker_main(["worker", f"--concurrency={concurrency}", "--pool=prefork", f"--loglevel={loglevel}",
                     f"--hostname={name}", f"--queues={QUEUE}", "--without-gossip", "--without-mingle",
                     "--without-heartbeat", "-O", "fair"])  # no event heartbeats: nothing reads them (`queue
    # status` pings the workers), so no events connection and no publish every 2 s beside the conversions
