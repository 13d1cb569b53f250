"""Queue mode: originals parked in object storage, conversion by ``digitize worker`` processes anywhere.

Submitting (watch, batch): the original is copied from the descriptor the pipeline checked, hashed,
and put under ``_staging/<SHA-256>/<job>`` (the store reads it back and verifies it) *before* the caller may
move the inbox file to done/; only then is the job recorded in the ledger and its task sent. A worker
machine shares nothing with the submitter but the broker, the store and the index.

Running (pipelines/tasks.py calls :func:`run_job`): fetch the original, check its SHA-256, and hand it to
the same :func:`~pipelines.jobs.process_file` that in-process runs use. The rules on the outcome live
here, not in the Celery adapter: a transient fault (storage, index, signer) is retried with backoff a
bounded number of times; bad input fails at once with its reason; a job whose deliveries killed their
worker ``max_deliveries`` times is failed; a job the ledger has as done is not done again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Callable

from digitize.errors import InputError, StorageError, resource_fault
from digitize.fsutil import CHUNK, open_regular, work_dir
from digitize.terminal import printable

from .inbox import input_limit_mb
from .jobs import INTERNAL_EXIT, JobResult, Status, StoredPart, archive_for, kept_folder, process_file
from .ledger import STALE_REASON, UNVERIFIED, Ledger, LeaseHeld, job_id, new_run, superseded
from .logs import event
from .messages import error_kinds
from .metadata import Clue, sidecar_path

log = logging.getLogger("pipelines.queue")

TASK = "digitize.convert"
QUEUE = "digitize"


def enabled(settings) -> bool:
    return bool(settings.queue.url)


def conversion_options(settings) -> dict[str, Any]:
    """What changes the output (all of [convert] but the machine's page parallelism): part of the job's key."""
    options = dataclasses.asdict(settings.convert)
    options.pop("jobs", None)
    return options


def result_from_dict(data: dict[str, Any]) -> JobResult:
    fields = {f.name for f in dataclasses.fields(JobResult)}
    kwargs = {k: v for k, v in data.items() if k in fields}
    kwargs["status"] = Status(kwargs.get("status", "failed"))
    kwargs["error_kinds"] = tuple(kwargs.get("error_kinds", ()))
    kwargs["documents"] = [StoredPart(**d) for d in kwargs.get("documents", [])]
    return JobResult(**kwargs)


# --- submitting ----------------------------------------------------------------------------------------

def _stage_copy(path: Path, root: Path | None, target: Path, max_input_mb: int) -> str:
    """Copy the checked regular file (no symlink followed) to a private temp file; its SHA-256. A huge or
    sparse file (sources.check_input_size, as process_file) is refused before a byte is copied or uploaded."""
    from digitize.sources import check_input_size

    digest = hashlib.sha256()
    with os.fdopen(open_regular(path, root), "rb") as src:
        check_input_size(src.fileno(), max_input_mb, path.name)
        with open(target, "wb") as out:
            for block in iter(lambda: src.read(CHUNK), b""):
                digest.update(block)
                out.write(block)
    return digest.hexdigest()


def _sidecar(path: Path, root: Path | None) -> tuple[str, str] | None:
    """The sidecar's name and text, carried in the message (the worker sees no inbox). Read as local mode reads
    it (metadata._read_sidecar: opened once with O_NOFOLLOW, no symlink from ``root`` down, a regular file of at
    most SIDECAR_MAX_BYTES): a sidecar that is a link, or swapped for one after a check, is a SidecarError, never
    followed (it was read by name after an is_symlink() check: a swap in between sent any readable file, the queue
    secret's included, in clear into the task and the ledger: review rev16batch H1)."""
    from .metadata import _read_sidecar

    found = sidecar_path(path)
    if found is None:
        return None
    return found.name, _read_sidecar(found, root).decode("utf-8", errors="replace")


def sidecar_digest(sidecar: tuple[str, str]) -> str:
    """The SHA-256 of a carried sidecar's text: part of its job's key (another sidecar, another job)."""
    return hashlib.sha256(sidecar[1].encode("utf-8")).hexdigest()


def filing_clues(relative: Path, hint: Clue | None, sidecar: tuple[str, str] | None, shared_inbox: bool,
                 inbox_agencies: list[str] | None) -> dict[str, Any]:
    """What decides where a file is filed, beside its bytes: part of its job's key (review rev16batch M5: keyed by
    content and options only, the same bytes meant for another case, by folder, manifest row or sidecar, were
    "already done" and never filed there). A new job of known bytes costs its worker a fetch: process_file finds
    the stored document and shares it into the case its clues name, as local mode does."""
    return {"name": relative.as_posix(), "hint": [hint.source, dict(hint.values)] if hint else None,
            "sidecar": sidecar_digest(sidecar) if sidecar else "",
            "shared_inbox": bool(shared_inbox), "agencies": sorted(inbox_agencies or [])}


class Submitter:
    """Stages originals and sends their tasks; one per watcher or batch run."""

    def __init__(self, settings, batch: str = ""):
        from .taskauth import queue_secret
        from .tasks import app_for

        self.settings, self.batch = settings, batch
        self.app = app_for(settings)  # checks the settings first: no secret, no submitter
        self.key = queue_secret(settings)
        self.runs: dict[str, str] = {}  # job -> the run ID of this submitter's own submission of it
        self.ledger = Ledger.from_settings(settings)
        self.options = conversion_options(settings)
        self.objects = None  # the object store, opened at the first file: staging needs no index connection

    def close(self) -> None:
        self.ledger.close()
        if self.objects is not None:
            self.objects.close()

    def _store(self):
        if self.objects is None:
            from storage.objects import open_store

            self.objects = open_store(self.settings)
        return self.objects

    def drop_staged(self, sha256: str, job: str) -> None:
        """A job given up without a worker storing it (a dismissed upload): its staged original deleted, since
        only a job that ends done deletes it. Raises StorageError."""
        from storage.keys import staging_key

        self._store().delete(staging_key(sha256, job))

    def submit(self, path: Path, settings=None, hint: Clue | None = None, *, root: Path | None = None,
               shared_inbox: bool = False, allowed=None, **_ignored) -> JobResult:
        """Stage and enqueue one file (the signature of process_file, so the watcher takes either).
        Done means *queued*: the original is safe in the store, the inbox file may go. ``allowed``: a watch
        inbox's InboxScope (its agencies travel in the task), nothing else."""
        from storage.access import InboxScope

        agencies = list(allowed.principal.agencies) if isinstance(allowed, InboxScope) else None
        return self.submit_job(path, hint, root, shared_inbox=shared_inbox, inbox_agencies=agencies)[1]

    def submit_upload(self, path: Path, values: dict[str, Any], upload: str, sender: dict[str, Any]
                      ) -> tuple[str, JobResult]:
        """A portal upload: the same staging and task, plus its sender's principal, against whose upload scope
        (storage.access.UploadScope) the worker checks every part. Keyed by the upload and its clues too, so two
        uploads of one scan (or a retry into another case) are separate jobs; the store keeps one copy. A sidecar
        beside ``path`` (the one a desk retry carried out of the inbox's failed/) travels as watch's does."""
        return self.submit_job(path, Clue("upload", values), None,
                               upload={"id": upload, "sender": sender, "values": values})

    def submit_job(self, path: Path, hint: Clue | None = None, root: Path | None = None,
                   upload: dict[str, Any] | None = None, shared_inbox: bool = False,
                   inbox_agencies: list[str] | None = None) -> tuple[str, JobResult]:
        """The job ID ("" if none) and the submission's result: done (queued), skipped (done before) or failed."""
        started = time.perf_counter()
        job = ""
        path = Path(path)
        relative = path.relative_to(root) if root and path.is_relative_to(root) else Path(path.name)
        sha = ""
        try:
            with work_dir("stage") as tmp:
                sha = _stage_copy(path, root, tmp / "original", input_limit_mb(self.settings.convert))
                sidecar = _sidecar(path, root)  # an upload's too: one failed.take carried from the inbox's failed/
                if upload is not None:  # into its private job folder (review rev17desk M4: it was dropped here)
                    clues = {"upload": upload, **({"sidecar": sidecar_digest(sidecar)} if sidecar else {})}
                else:
                    clues = {"clues": filing_clues(relative, hint, sidecar, shared_inbox, inbox_agencies)}
                job = job_id(sha, "", {**self.options, **clues})
                known = self.ledger.get(job)
                if known is not None and known.state == "done":
                    if self.batch:
                        self.ledger.add_to_batch(self.batch, job)
                    return job, JobResult(str(path), Status.skipped, sha, f"already done as job {job}",
                                          seconds=time.perf_counter() - started)
                if known is not None and self._live(known):  # another submission's, still on its way: followed
                    self.runs[job] = known.run
                    if self.batch:
                        self.ledger.add_to_batch(self.batch, job)
                    return job, JobResult(str(path), Status.done, sha, f"queued as job {job} (already {known.state} "
                                          "for another submission)", seconds=time.perf_counter() - started)
                from storage.keys import staging_key

                key = staging_key(sha, job)  # per job: the first job done deletes only its own
                self._store().put(key, tmp / "original", sha, {"sha256": sha})
            spec = {"job": job, "key": key, "sha256": sha, "name": relative.as_posix(), "options": self.options,
                    "hint": {"source": hint.source, "values": dict(hint.values)} if hint else None,
                    "sidecar": list(sidecar) if sidecar else None}
            if upload is not None:
                spec["upload"] = upload
            if shared_inbox:  # the worker ignores what a shared inbox's sidecar may not say (process_file)
                spec["shared_inbox"] = True
            if inbox_agencies:  # [watch] agencies: the worker files only there
                spec["inbox_agencies"] = inbox_agencies
            self.send(job, spec)
        except (StorageError, InputError) as e:
            return "", JobResult(str(path), Status.failed, sha, str(e), error_kinds=(type(e).__name__, "StorageError")
                             if isinstance(e, StorageError) else (type(e).__name__,), exit_code=int(e.exit_code))
        except OSError as e:
            fault = resource_fault(e, f"cannot stage {path.name} in the temp folder")  # a full TMPDIR: retried
            if fault is not None:
                return "", JobResult(str(path), Status.failed, sha, str(fault), error_kinds=error_kinds(fault),
                                     exit_code=int(fault.exit_code))
            return "", JobResult(str(path), Status.failed, sha, f"cannot read {path.name}: {e.strerror}",
                             error_kinds=("FileAccessError", "OSError"), exit_code=5)
        event(log, "queued", file=str(relative), job=job, sha256=sha)
        return job, JobResult(str(path), Status.done, sha, f"queued as job {job}",
                              seconds=time.perf_counter() - started)

    def _live(self, record) -> bool:
        """Whether a recorded job is on its way under another submission: waiting (sent less than the visibility
        timeout ago, else its message may be lost: sent again) or running under a fresh lease. Two `batch --queue
        --wait` runs over one file re-sent it, each run's record overwrote the other's and each waiter reported
        the other's outcome as failed (review rev16batch L7); now the second follows the first's run."""
        if record.state not in ("waiting", "running") or not record.run or (record.state == "waiting" and
                                                                            not record.sent):
            return False  # a waiting record whose task the broker never took (review rev2_batch16a MEDIUM-1)
        limit = lease_times(self.settings.queue)[1] if record.state == "running" else \
            self.settings.queue.visibility_timeout
        return self.ledger.clock() - record.last_seen() < limit  # stamped by Redis: one clock

    def send(self, job: str, spec: dict[str, Any]) -> None:
        """Record the job as waiting, then publish its task, signed (pipelines/taskauth.py); a broker refusal is
        a storage-class fault."""
        from .taskauth import sign

        spec = {**spec, "run": new_run()}  # this submission's: its ledger records are told from older ones
        self.runs[job] = spec["run"]
        signature = sign(self.key, job, spec)
        self.ledger.enqueued(job, spec["name"], spec["sha256"], spec, self.batch, signature)
        try:
            # argsrepr/kwargsrepr: the headers' readable copy of the arguments, which Celery would otherwise make
            # with its saferepr (~5 CPU-ms a task in the submitter, cProfile), carrying the file's name and the
            # signature into every tool that shows headers; the job ID says which job it is
            self.app.send_task(TASK, args=[job, spec], kwargs={"signature": signature}, queue=QUEUE,
                               task_id=f"{job}-{time.time_ns()}", argsrepr=f"('{job}', ...)", kwargsrepr="{...}")
        except Exception as e:  # noqa: BLE001 - kombu raises many connection types
            refused = StorageError(f"queue broker: cannot send job {job}: {type(e).__name__}: {e}")
            self._unsent(job, spec, refused)
            raise refused from e
        try:
            self.ledger.mark_sent(job, spec["run"])
        except StorageError as e:  # the task is out: a later submission of the file only sends it once more
            event(log, "ledger-unavailable", logging.WARNING, job=job, reason=str(e))

    def _unsent(self, job: str, spec: dict[str, Any], refused: StorageError) -> None:
        """A refused publish leaves no "waiting" record behind that looks on its way: failed with the broker's
        reason (best effort: with the ledger down too, the record stays waiting but never flagged sent, so the
        next submission sends it again instead of following it)."""
        from digitize.secrets import mask

        reason = f"not sent: {mask(str(refused))}"
        result = JobResult(spec["name"], Status.failed, spec["sha256"], reason, error_kinds=("StorageError",),
                           exit_code=int(refused.exit_code))
        try:
            self.ledger.unsent(job, spec["run"], reason, result.to_dict())
        except StorageError as e:
            event(log, "ledger-unavailable", logging.WARNING, job=job, reason=str(e))


def retry_jobs(settings, jobs: list[str]) -> tuple[list[str], list[str]]:
    """Send failed (or stuck) jobs again, from the spec the ledger kept; (the jobs sent, those refused because
    their recorded spec does not verify: the ledger is in Redis too, so a spec planted there is never signed)."""
    from .taskauth import UnsignedTask, verify

    submitter = Submitter(settings)
    sent, refused = [], []
    try:
        for record in submitter.ledger.many(jobs):
            if record.spec and record.state != "done":
                try:
                    verify(submitter.key, record.job_id, record.spec, record.signature)
                except UnsignedTask as e:
                    event(log, "retry-refused", logging.WARNING, job=record.job_id, reason=str(e))
                    refused.append(record.job_id)
                    continue
                submitter.send(record.job_id, record.spec)
                sent.append(record.job_id)
    finally:
        submitter.close()
    return sent, refused


def upload_state(record, run: str = "") -> tuple[str, str, list[dict[str, Any]]]:
    """A queued upload's (state, reason, stored documents) as the portal shows an upload job, from its ledger
    record: waiting is "queued"; a finished job's state is its result's status (done, unmatched, skipped...).
    ``run``: the upload's own submission (Submitter.send's run ID): a record of another run (an older sealed
    state put back in Redis) is not this upload's state, shown as unverified and followed still, as
    Ledger.outcomes does for a waiting batch."""
    if run and record.state != UNVERIFIED and record.run != run and not superseded(run, record.run):
        return UNVERIFIED, STALE_REASON, []
    if record.state == UNVERIFIED:  # followed still: a sealed outcome may come
        return UNVERIFIED, record.reason, []
    if record.state not in ("done", "failed"):
        return ("running" if record.state == "running" else "queued"), record.reason, []
    if not record.result:
        return record.state, record.reason, []
    result = result_from_dict(record.result)
    return str(result.status), result.reason, [dataclasses.asdict(d) for d in result.documents]


# --- a queued batch ------------------------------------------------------------------------------------

WAIT_POLL = 0.2  # seconds between looks at the ledger's outcome count while waiting for a batch without end
# notices (Redis refused the subscription, or it broke): a fixed 1 s poll added up to a second to every batch
WAIT_FULL = 5.0  # seconds between reads of every pending job even when nothing was heard (a worker of an older
# version that does not publish its ends, a notice lost while Redis restarted)


class _Follower:
    """How a waiting batch learns of its jobs' outcomes. The workers publish each job's end (Ledger.end_notices):
    the waiter sleeps in one blocking read until one comes and then reads that job's outcome alone, so the
    batch's last result is seen at once (a poll's sleep was ~0.1 s of tail on every batch, up to 0.2 s) and
    a long batch costs no per-poll reads of every pending job. Every WAIT_FULL seconds it reads them all anyway.
    Without notices it polls the ledger's outcome count, as before."""

    def __init__(self, ledger: Ledger):
        self.ledger = ledger
        self.seen: int | None = None  # the outcome count at the last look (polling only)
        self.looked = 0.0  # when every pending job was last read
        self.heard: set[str] = set()
        try:
            self.notices = ledger.end_notices()  # before the first task is sent: no end goes unheard
        except StorageError as e:
            event(log, "ledger-notices-unavailable", logging.WARNING, reason=str(e))
            self.notices = None

    def close(self) -> None:
        if self.notices is not None:
            self.notices.close()

    def outcomes(self, pending: dict[str, Any], runs: dict[str, str] | None = None
                 ) -> dict[str, tuple[str, dict[str, Any]]]:
        """The outcomes of pending jobs that ended since the last call (the ledger's read; StorageError).
        ``runs``: job -> the run ID this waiter submitted (Ledger.outcomes)."""
        now = time.monotonic()
        if now - self.looked >= WAIT_FULL:
            self.looked, self.heard = now, set()
            return self.ledger.outcomes(pending, runs)
        if self.notices is not None:
            heard, self.heard = [job for job in self.heard if job in pending], set()
            return self.ledger.outcomes(heard, runs) if heard else {}
        ends = self.ledger.ends()  # one small read per poll; the pending jobs only when some job ended
        if ends == self.seen:
            return {}
        self.seen, self.looked = ends, now
        return self.ledger.outcomes(pending, runs)

    def wait(self, pending: int) -> None:
        """Until a job may have ended: a notice, the next full read, or (polling) the next poll."""
        if self.notices is not None:
            try:
                self.heard |= self.notices.wait(max(0.05, WAIT_FULL - (time.monotonic() - self.looked)))
                return
            except StorageError as e:  # Redis restarting: poll from now on (the count, then every job)
                event(log, "ledger-notices-lost", logging.WARNING, reason=str(e))
                self.close()
                self.notices, self.seen = None, None
        time.sleep(min(2.0, WAIT_POLL + pending / 5000))


def run_queued_batch(src: Path, items, settings, wait: bool, stream):
    """Stage and enqueue every item; with ``wait``, follow the ledger until each job is done or failed and
    return the same summary a local batch returns (None without ``wait``: the workers carry on alone)."""
    import uuid

    from .batch import BatchSummary, Progress, _ProgressLine

    started = time.monotonic()
    submitter = Submitter(settings, batch=uuid.uuid4().hex[:16])
    summary = BatchSummary()
    pending: dict[str, tuple[Any, JobResult]] = {}
    follower = _Follower(submitter.ledger) if wait else None  # listening before the first task goes out
    try:
        for item in items:
            job, result = submitter.submit_job(item.path, item.hint, src)
            if result.status is Status.done:
                pending[job] = (item, result)
            else:
                summary.results.append(result)
        if follower is None:
            failed = sum(r.status is Status.failed for r in summary.results)
            stream.write(f"batch: {len(pending)} file(s) queued (batch {submitter.batch}), "
                         f"{len(summary.results) - failed} done before, {failed} not queued\n")
            for result in summary.results:
                if result.status is Status.failed:
                    stream.write(f"failed: {printable(result.path)}: {printable(result.reason)}\n")
            return None if not failed else summary
        progress = Progress(len(items), sum(i.size for i in items), started)
        shown = _ProgressLine(progress, stream)
        while pending:
            try:
                outcomes = follower.outcomes(pending, submitter.runs)
            except StorageError as e:  # the broker (and ledger) restarting: keep waiting, then read every job
                event(log, "ledger-unavailable", logging.WARNING, reason=str(e))
                follower.seen, follower.looked, outcomes = None, 0.0, {}
            for job, (state, data) in outcomes.items():
                item, queued = pending.pop(job)
                if state == UNVERIFIED:  # a forged (or pre-signing) outcome: a failure to look at, never done
                    result = JobResult(str(item.path), Status.failed, queued.sha256, data["reason"],
                                       error_kinds=("UnverifiedLedger",), exit_code=int(StorageError.exit_code))
                else:
                    result = result_from_dict(data)
                result.path = str(item.path)
                summary.results.append(result)
                progress.add(result, item.size)
                shown.show()
            if pending:
                follower.wait(len(pending))
        shown.show(final=True)
    finally:
        if follower is not None:
            follower.close()
        submitter.close()
    summary.seconds = time.monotonic() - started
    return summary


# --- running (a worker) --------------------------------------------------------------------------------

@dataclass
class Outcome:
    state: str  # "done", "failed", "retry"; "wait" (another live delivery runs it), "dropped" (superseded)
    result: JobResult
    delay: float = 0.0  # before the retry, or the look again of a "wait"


NAME_BYTES = 200  # a folder or file name of the submitter's, at most, under the worker's temp root
PATH_BYTES = 1024  # the whole relative path, at most: its tail is kept (the case folder and the file's name)


def _fit(part: str) -> str:
    """One name cut to NAME_BYTES of UTF-8, its extension kept (the converter reads the type from it)."""
    if len(part.encode("utf-8")) <= NAME_BYTES:
        return part
    stem, dot, ext = part.rpartition(".")
    ext = ext if dot and stem and len(ext) <= 10 else ""
    room = NAME_BYTES - len(ext.encode("utf-8")) - 1
    cut = (stem if ext else part).encode("utf-8")[:room].decode("utf-8", errors="ignore")
    return f"{cut}.{ext}" if ext else cut


def _relative(name: str) -> PurePosixPath:
    """The submitter's relative path, only as folders under the worker's temp root (never an escape), and only
    as much of it as fits there: each name at most NAME_BYTES, the tail of PATH_BYTES (a deep path that was fine
    on the submitter's share gave ENAMETOOLONG under the worker's temp root: review rev16batch M3)."""
    parts = [_fit(p) for p in PurePosixPath(name).parts if p not in ("", ".", "..", "/")]
    kept: list[str] = []
    for part in reversed(parts):
        if kept and sum(len(p.encode("utf-8")) + 1 for p in [*kept, part]) > PATH_BYTES:
            break
        kept.insert(0, part)
    return PurePosixPath(*kept) if kept else PurePosixPath("original")


def _download(objects, key: str, path: Path) -> str:
    """The staged original into the delivery's private temp folder (a new file, O_EXCL): its SHA-256. A scratch
    copy, not an output: no fsync (ObjectStore.download's atomic write syncs the file and its folder, two
    disk flushes in every task's path, ~50 ms each on a busy disk); a delivery that dies loses only the folder."""
    digest = hashlib.sha256()
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600), "wb") as out:
        for block in objects.read_chunks(key):
            digest.update(block)
            out.write(block)
    return digest.hexdigest()


def _fetch(settings, spec: dict[str, Any], root: Path) -> Path:
    path = root / _relative(spec["name"])
    path.parent.mkdir(parents=True, exist_ok=True)
    got = _download(archive_for(settings).objects, spec["key"], path)
    if got != spec["sha256"]:
        raise StorageError(f"staged original {spec['key']} read back with SHA-256 {got}, expected {spec['sha256']}")
    if spec.get("sidecar"):
        name, text = spec["sidecar"]
        name = PurePosixPath(name).name
        if name.endswith(".json") and not name.startswith("."):  # beside the original, nowhere else
            (path.parent / name).write_text(text, encoding="utf-8")
    return path


def _upload_scope(spec: dict[str, Any]):
    """An upload's parts are filed only within its sender's scope, a watch inbox's within its [watch] agencies,
    checked by storage.access as in-process."""
    if "upload" not in spec:
        if spec.get("inbox_agencies"):
            from storage.access import InboxScope

            return InboxScope.of_agencies(spec["inbox_agencies"])
        return None
    from storage.access import UploadScope

    return UploadScope.of((spec["upload"] or {}).get("sender") or {})


@contextlib.contextmanager
def _scratch():
    """The delivery's private temp folder and None, or None and the OSError that kept it from being made (a full
    temp disk): run_job turns that into an outcome as it does a failed fetch."""
    folder, unmade = None, None
    try:
        folder = work_dir("queued")
        tmp = folder.__enter__()
    except OSError as e:
        unmade = e
    if unmade is not None:
        yield None, unmade
        return
    try:
        yield tmp, None
    finally:
        with contextlib.suppress(OSError):
            folder.__exit__(None, None, None)


def _fetch_failure(spec: dict[str, Any], error: OSError) -> JobResult:
    """A fetch that failed on the worker's own disk: a full disk or quota is a ResourceError (retried, as
    process_file's), anything else fails the job with one line (review rev16batch M3: it escaped run_job and left
    the job "running" for ever, and `batch --wait` waiting)."""
    what = "cannot fetch the original into the worker's temp folder"
    fault = resource_fault(error, what)
    if fault is not None:
        return JobResult(spec["name"], Status.failed, spec["sha256"], str(fault), error_kinds=error_kinds(fault),
                         exit_code=int(fault.exit_code))
    return JobResult(spec["name"], Status.failed, spec["sha256"], f"{what}: {error.strerror or error}",
                     error_kinds=("FileAccessError", "OSError"), exit_code=5)


def lease_times(queue) -> tuple[float, float]:
    """(renew every, lease) in seconds: a running delivery renews its lease in the ledger every so often; one
    not renewed for LEASE is taken for dead. Both well below the visibility timeout, after which kombu hands an
    unacked message out again although its worker is alive and converting (a file longer than it was converted
    twice, and its fourth hand-out failed as a poison file: review rev16batch M2): a live delivery's lease is
    then fresh and the new delivery waits; a dead one's is stale and it is taken over."""
    timeout = queue.visibility_timeout
    return min(60.0, timeout / 5), timeout / 2


def _holder_dead(holder: str, me: str) -> bool:
    """Whether the delivery holding a lease was a process of this very worker node that is gone: a killed pool
    child, whose message Celery hands out again at once (reject_on_worker_lost), long before its lease ends."""
    node, _, process = holder.rpartition("/")
    pid, dot, _nonce = process.partition(".")  # "PID.random" (tasks._worker_name), or an earlier version's "PID"
    if not node or node != me.rpartition("/")[0] or not pid.isdigit():
        return False
    if int(pid) == os.getpid():  # this PID's earlier process (its random part differs), or this process itself
        return bool(dot) and holder != me
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:  # alive, another user's (not ours to judge)
        return False
    return False


class _Leases:
    """The leases of this process's running deliveries, renewed by one thread per process (started at the first
    lease, again after a fork): a thread per delivery cost each delivery two thread hand-offs, ~14 ms of wall
    time on a busy machine (bench/queue_delivery_bench.py). A renewal that fails is logged and tried again at
    the next beat (a lost beat only lets a redelivery take over sooner)."""

    def __init__(self):
        self.lock = threading.Condition()
        self.held: dict[int, tuple[Ledger, str, str, str, float]] = {}  # token -> (ledger, job, worker, run, every)
        self.due: dict[int, float] = {}
        self.pid = 0
        self.count = 0

    def _run(self) -> None:
        while True:
            with self.lock:
                now = time.monotonic()
                ready = [(token, self.held[token]) for token, when in self.due.items() if when <= now]
                for token, held in ready:
                    self.due[token] = now + held[4]
                wait = min(self.due.values(), default=now + 60.0) - now
                if not ready:
                    self.lock.wait(max(0.01, wait))
                    continue
            for _, (ledger, job, worker, run, _every) in ready:
                try:
                    ledger.beat(job, worker, run)
                except Exception as e:  # noqa: BLE001 - see the class's doc
                    event(log, "lease-renewal-failed", logging.WARNING, job=job, reason=str(e))

    def holds(self, job: str) -> bool:
        """Whether a delivery of this very process is running JOB now."""
        with self.lock:
            return self.pid == os.getpid() and any(held[1] == job for held in self.held.values())

    @contextlib.contextmanager
    def hold(self, ledger: Ledger, job: str, worker: str, run: str, every: float):
        with self.lock:
            if self.pid != os.getpid():  # none yet, or the parent's (a forked pool child has no threads)
                self.pid, self.held, self.due = os.getpid(), {}, {}
                threading.Thread(target=self._run, name="queue-leases", daemon=True).start()
            self.count += 1
            token = self.count
            self.held[token], self.due[token] = (ledger, job, worker, run, every), time.monotonic() + every
            self.lock.notify()
        try:
            yield
        finally:
            with self.lock:
                self.held.pop(token, None)
                self.due.pop(token, None)


_leases = _Leases()
os.register_at_fork(after_in_child=_leases.__init__)  # a child starts with no leases and an unheld lock


def _held(job: str, spec: dict[str, Any], holder: str, delay: float) -> Outcome:
    """A delivery of a job another live delivery runs: not converted in parallel; looked at again after DELAY
    (then done: a no-op; its holder dead: taken over)."""
    event(log, "job-held", job=job, file=spec["name"], worker=holder, retry_in=delay)
    return Outcome("wait", JobResult(spec["name"], Status.skipped, spec["sha256"],
                                     f"running on {holder or 'another worker'}; looked at again in {delay:.0f} s"),
                   delay)


LIMITS = ("max_memory_mb", "max_pixels", "max_stream_mb", "max_pages", "max_input_mb")  # 0 = no limit


def _stricter(mine: int, theirs: Any) -> int:
    """The stricter of two limits where 0 means none: a task's "none" (or junk) never lifts the worker's."""
    try:
        theirs = int(theirs)
    except (TypeError, ValueError, OverflowError):
        return mine
    if theirs <= 0:
        return mine
    return theirs if mine <= 0 else min(mine, theirs)


def task_convert(own, options: dict[str, Any]):
    """The worker's [convert] with the task's output-shaping options (language, dpi, quality...) over it, but
    never a looser limit than its own (review rev16batch L5: a task's options overrode them all, so a key holder
    such as the portal's host could lift every worker's bomb limits and memory cap, turn veraPDF off, or set an
    OCR deadline beyond the worker's visibility timeout): each LIMIT the stricter of the two, veraPDF on if
    either says so, the OCR deadline and page parallelism the worker's own."""
    changes: dict[str, Any] = {}
    for name, value in (options or {}).items():
        if not hasattr(own, name) or name in ("jobs", "ocr_timeout"):
            continue
        mine = getattr(own, name)
        if name in LIMITS:
            changes[name] = _stricter(mine, value)
        elif name == "validate":
            changes[name] = bool(mine) or value is True
        else:
            changes[name] = value
    return dataclasses.replace(own, **changes)


def _transient(result: JobResult) -> bool:
    return result.retryable or result.internal


def run_job(settings, ledger: Ledger, job: str, spec: dict[str, Any], worker: str, tries: int,
            process: Callable[..., JobResult] = process_file) -> Outcome:
    """One delivery of a job; ``tries`` = retries already made. Never raises for the file's faults."""
    queue = settings.queue
    run = spec.get("run", "")
    known = ledger.get(job)
    if known is not None and known.state == "done" and known.run == run:  # a duplicate delivery
        # (redelivered after its ack was lost); a done record of another run is an older state put back: run it
        return Outcome("done", result_from_dict(known.result) if known.result else
                       JobResult(spec["name"], Status.skipped, spec["sha256"], "already done"))
    if known is not None and known.state != UNVERIFIED and superseded(run, known.run):
        # an older submission's task (a replay, or a copy left in the queue) after a newer one was recorded: it
        # walked a done job back to failed (review rev16batch L6); acknowledged, the ledger left alone
        event(log, "job-superseded", logging.WARNING, job=job, file=spec["name"], run=run, current=known.run)
        return Outcome("dropped", JobResult(spec["name"], Status.skipped, spec["sha256"],
                                            "an older submission's task, superseded by a newer one: not run"))
    every, lease = lease_times(queue)
    dead, resumed = "", False
    if known is not None and known.state == "running" and known.run == run:
        if known.worker == worker and not _leases.holds(job):
            # this very process's earlier delivery, which raised after its start (the ledger down past its
            # reconnect time) and is retried here: not a crash and no one to wait for (it waited a whole lease
            # for itself, then counted a crash: review rev2_batch16a MEDIUM-2)
            dead, resumed = worker, True
        elif ledger.clock() - known.heartbeat < lease:  # stamped by Redis (Ledger.beat): one clock
            if not _holder_dead(known.worker, worker):
                return _held(job, spec, known.worker, lease)
            dead = known.worker  # a killed pool child of this node: its lease is taken over at once
    crashes = known.crashes_of(run) if known is not None else 0  # sealed, this run's only
    if resumed:
        crashes = max(0, crashes - 1)  # the earlier delivery's start, which ends with this one
    if crashes >= queue.max_deliveries:
        reason = f"the file stopped its worker {crashes} times (killed or crashed); not retried"
        result = JobResult(spec["name"], Status.failed, spec["sha256"], reason, error_kinds=("crashed",),
                           exit_code=INTERNAL_EXIT)
        ledger.fail(job, reason, result.to_dict(), spec=spec)
        event(log, "job-failed", logging.WARNING, job=job, file=spec["name"], reason=reason)
        return Outcome("failed", result)
    try:
        ledger.start(job, worker, spec, lease=lease, dead=dead, counted=not resumed)
    except LeaseHeld as held:  # another delivery took it between the look and the start
        return _held(job, spec, held.worker, lease)
    try:
        return _deliver(settings, ledger, job, spec, worker, tries, process, every)
    except Exception as e:
        _release(ledger, job, worker, run, e)
        raise


def _release(ledger: Ledger, job: str, worker: str, run: str, error: Exception) -> None:
    """A delivery that raised after its start (the ledger or the store down past their retries, a bug) gives its
    job back as waiting, best effort, before Celery retries it: the retry may land in another process of the
    pool, which would otherwise wait a whole lease for a holder that is not converting and then count a crash
    (review rev2_batch16a MEDIUM-2). With the ledger down too, the record stays running: a retry in this same
    process takes it over at once (run_job), one elsewhere after the lease."""
    from digitize.secrets import mask

    reason = " ".join(mask(f"delivery raised, retried: {type(error).__name__}: {error}").split())
    try:
        ledger.release(job, worker, run, reason)
    except StorageError as e:
        event(log, "ledger-unavailable", logging.WARNING, job=job, reason=str(e))


def _deliver(settings, ledger: Ledger, job: str, spec: dict[str, Any], worker: str, tries: int,
             process: Callable[..., JobResult], every: float) -> Outcome:
    """A started delivery: fetch, convert, record the outcome."""
    queue, run = settings.queue, spec.get("run", "")
    sub = dataclasses.replace(settings, convert=task_convert(settings.convert, spec.get("options", {})))
    hint = Clue(spec["hint"]["source"], spec["hint"]["values"]) if spec.get("hint") else None
    with _leases.hold(ledger, job, worker, run, every), _scratch() as (tmp, unmade):
        try:
            if unmade is not None:
                raise unmade
            path = _fetch(settings, spec, tmp / "src")
        except StorageError as e:
            result = JobResult(spec["name"], Status.failed, spec["sha256"], str(e), error_kinds=("StorageError",),
                               exit_code=int(e.exit_code))
        except OSError as e:  # the worker's own disk (full, quota, a mis-set TMPDIR): an outcome, never a raise
            result = _fetch_failure(spec, e)
        else:
            result = process(path, sub, hint, root=tmp / "src", jobs=1, keep=kept_folder(settings),
                             allowed=_upload_scope(spec), shared_inbox=bool(spec.get("shared_inbox")))
    result.path = spec["name"]
    limit = queue.retries if result.retryable else min(queue.retries, 2)
    if result.status is Status.failed and _transient(result) and tries < limit:
        delay = min(queue.retry_backoff * 2 ** tries, max(1.0, queue.visibility_timeout / 2))
        ledger.end(job, "waiting", f"retry {tries + 1} of {limit} in {delay:.0f} s: {result.reason}", spec=spec)
        event(log, "job-retry", logging.WARNING, job=job, file=spec["name"], retry_in=delay, reason=result.reason)
        return Outcome("retry", result, delay)
    state = "failed" if result.status is Status.failed else "done"
    ledger.end(job, state, result.reason, result.to_dict(), spec=spec)
    if state == "done":
        with contextlib.suppress(StorageError):  # a WORM bucket keeps it; verify ignores the staging area
            archive_for(settings).objects.delete(spec["key"])
    event(log, f"job-{state}", logging.WARNING if state == "failed" else logging.INFO, job=job, file=spec["name"],
          status=str(result.status), pages=result.pages, reason=result.reason)
    return Outcome(state, result)
