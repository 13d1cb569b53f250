"""Scans uploaded through the portal or the API: kept privately, then converted, stored and indexed in the
background by the same job as ``digitize watch`` (pipelines/jobs.py), one at a time, never blocking a request.

The job runs in a separate, *spawned* worker process (kept warm from job to job): the converter forks page
workers, and forking the multi-threaded server could copy a lock some other thread holds into the child;
a converter that crashes or is killed (out of memory) also takes only that worker down, never the portal.

Each upload gets a folder ``data_dir/uploads/<job id>/`` (0700) holding the file under a safe name and
``job.json`` with its state; the file is deleted only once the job stored and verified it, so a failed
upload stays there with its reason (shown on the scanning desk), and a server restart resumes queued jobs.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import multiprocessing
import os
import re
import shutil
import threading
import time
import uuid
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import BinaryIO

from digitize.errors import BadArgsError, DigitizeError, InputError, resource_fault
from digitize.fsutil import atomic_write_text, fsync_path, sweep_parts
from digitize.terminal import plain
from pipelines.jobs import Status
from pipelines.logs import event
from pipelines.queued import enabled as queue_mode
from storage.index import now_iso

log = logging.getLogger("digitize.web")
SUFFIXES = {".pdf", ".tif", ".tiff", ".jpg", ".jpeg", ".png"}
_JOB_ID = re.compile(r"[0-9a-f]{32}")
CHUNK = 1 << 20
PRUNE_EVERY = 3600.0  # s between two prunes of old job folders (also at start)
UNFINISHED = ("queued", "running", "unverified")  # unverified: its ledger record (still followed)
STRANDED = "stopped before its state could be saved (a full disk, or its server stopped): it can be retried"


@dataclass
class UploadJob:
    job_id: str
    owner: str  # the actor who sent it
    case_id: str | None
    name: str  # the file name as sent (display only, never a path)
    size: int
    sha256: str
    state: str = "queued"  # queued, running, done, unmatched, skipped, failed
    reason: str = ""
    documents: list[dict] = field(default_factory=list)
    created_at: str = ""
    finished_at: str = ""
    sender: dict = field(default_factory=dict)  # the sender's Principal: its upload scope binds every part
    queue_job: str = ""  # queue mode: the job in the queue's ledger that converts it (its state is read there)
    queue_run: str = ""  # queue mode: this upload's submission of that job; another run's record is not its state
    place_case_id: str = ""  # a scan taken from the inbox's failed/: the case its folder or file name named there

    def scope(self):
        """The sender's upload scope (storage.access); a job saved without a sender may file nothing."""
        from storage.access import UploadScope

        return UploadScope.of(self.sender)

    @property
    def filed(self) -> list[str | None]:
        """The cases its documents were filed in (the gate's visibility asks about each)."""
        return [d.get("case_id") for d in self.documents if isinstance(d, dict)]

    @property
    def finished(self) -> bool:
        return self.state not in UNFINISHED

    @property
    def in_queue(self) -> bool:
        """Handed to the queue's workers (staged in the store): followed in the ledger, never run here."""
        return bool(self.queue_job) and not self.finished


def _before(stamp: str, cutoff: datetime) -> bool:
    try:
        return datetime.fromisoformat(stamp) < cutoff
    except (TypeError, ValueError):
        return False  # no or a bad time: kept


def display_name(name: str) -> str:
    """The sent name without control characters or folders, for titles and lists."""
    return plain((name or "").replace("\\", "/").rsplit("/", 1)[-1])[:120] or "scan"


def stored_name(name: str) -> str:
    suffix = Path(display_name(name)).suffix.lower()
    if suffix not in SUFFIXES:
        raise InputError(f"{display_name(name)!r}: only PDF, TIFF, JPEG and PNG scans can be uploaded")
    return "scan" + suffix


def conversion_worker(settings) -> ProcessPoolExecutor:
    """The process that converts uploads: spawned (no thread or lock of the portal inherited), so it starts
    like every spawned process of the portal, masking and logging as the parent, no secret in its environ
    block for the page workers it forks (review2 r2ops N1, N2)."""
    from pipelines import logs

    from .spawned import start_spawned

    return ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"), initializer=start_spawned,
                               initargs=(settings, logs.snapshot()))


class UploadQueue:
    def __init__(self, settings):
        self.settings = settings
        self.root = Path(settings.data_dir) / "uploads"
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.max_bytes = settings.web.max_upload_mb * 1024 * 1024
        self._jobs: dict[str, UploadJob] = {}
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="digitize-upload")
        self._worker: ProcessPoolExecutor | None = None
        self._listeners: list = []
        self._claims: dict[str, int] = {}
        self._stranded: dict[str, str] = {}  # job -> why it failed here when its state could not be saved
        self._submitter = None  # queue mode's, made on first use
        self._submitter_lock = threading.Lock()
        if queue_mode(settings):
            from pipelines.tasks import check_settings

            check_settings(settings)  # a portal that cannot queue says so at start, not on the first upload
        sweep_parts(self.root)  # a job.json or scan.json write killed half-way (an hour old: see fsutil)
        self._pruned = 0.0
        self.prune()
        self._resume()

    # -- state ---------------------------------------------------------------------------------
    # The state of every job is its job.json, so each server process sees every job, whichever process
    # took the upload. A job is run by the process holding its claim (an flock on the job's ``lock`` file,
    # taken at submit and held until the job ends; the kernel drops it if the process dies), so a job is
    # never run twice, and a process that starts later resumes unfinished jobs nobody holds.
    def _save(self, job: UploadJob) -> None:
        atomic_write_text(self.root / job.job_id / "job.json", json.dumps(asdict(job), ensure_ascii=False))

    def _load(self, job_id: str) -> UploadJob | None:
        folder = self.root / job_id
        try:
            if folder.is_symlink():
                return None
            fd = os.open(folder / "job.json", os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            with open(fd, encoding="utf-8") as f:
                return UploadJob(**json.load(f))
        except (OSError, ValueError, TypeError):
            return None

    def _claim(self, job_id: str) -> bool:
        """Take the job for this process (non-blocking); False if another process (or thread) holds it."""
        with self._lock:
            if job_id in self._claims:
                return False
            try:
                fd = os.open(self.root / job_id / "lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            except OSError:
                return False
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                return False
            self._claims[job_id] = fd
            return True

    def _release(self, job_id: str) -> None:
        with self._lock:
            fd = self._claims.pop(job_id, None)
        if fd is not None:
            os.close(fd)

    def _resume(self) -> None:
        for folder in sorted(self.root.iterdir()):
            if not _JOB_ID.fullmatch(folder.name) or folder.is_symlink():
                continue
            job = self._load(folder.name)
            if job is None or job.finished or job.in_queue or not self._claim(job.job_id):
                continue
            job.state = "queued"
            if not self._take(job):
                self._release(job.job_id)

    def _settled(self, job: UploadJob) -> UploadJob:
        """A job saved as unfinished (and not in the queue) that no process holds. Saved ``queued``: its
        process stopped (or was killed) before running it, so this live process resumes it, as ``_resume``
        does at start (review3 r3desk M1: failing it left a restart nothing to resume). Saved ``running``, or
        failed here unsaved (``_stranded``): the run died or could not save its end (a full disk), so it is
        shown failed by every server process and may be retried (review2 r2desk L4); a re-run of a scan the
        dead run stored ends ``skipped``, never a second copy. The failed state is saved too, if it can be."""
        if job.finished or job.in_queue or not self._claim(job.job_id):
            return job
        resumed = False
        try:
            job = self._load(job.job_id) or job
            if job.finished or job.in_queue:
                return job
            if job.state == "queued" and job.job_id not in self._stranded:
                resumed = self._take(job)  # closing: left queued for the next process to start
                return job
            job.state, job.reason, job.finished_at = "failed", self._stranded.get(job.job_id, STRANDED), now_iso()
            try:
                self._save(job)
                self._stranded.pop(job.job_id, None)
            except OSError as e:
                log.warning("upload job %s: cannot save its failed state: %s", job.job_id, e.strerror or e)
            return job
        finally:
            if not resumed:
                self._release(job.job_id)

    def _take(self, job: UploadJob) -> bool:
        """Run a claimed, saved-unfinished job here; False if this process is closing (its runner stopped)."""
        with self._lock:
            self._jobs[job.job_id] = job
        try:
            self._executor.submit(self._run, job)
        except RuntimeError:  # shut down: the next process to start resumes it
            with self._lock:
                self._jobs.pop(job.job_id, None)
            return False
        return True

    def prune(self) -> int:
        """Remove the folders of stored jobs finished more than ``[web] upload_job_days`` ago (their scan went once
        stored and verified, or is a copy left by a server killed right after saving that), so the desk does not
        read every upload ever made (review rev17desk M2); a failed job keeps its scan and its folder."""
        self._pruned = time.monotonic()
        days = self.settings.web.upload_job_days
        if days <= 0:
            return 0
        cutoff, removed = datetime.now(timezone.utc) - timedelta(days=days), 0
        for folder in self.root.iterdir():
            if not _JOB_ID.fullmatch(folder.name) or folder.is_symlink():
                continue
            job = self._load(folder.name)
            if job is None or not job.finished or job.state == "failed" or not _before(job.finished_at, cutoff):
                continue
            if not self._claim(job.job_id):
                continue
            try:
                shutil.rmtree(folder)
                removed += 1
            finally:
                self._release(job.job_id)
        return removed

    def get(self, job_id: str, visible=None) -> UploadJob | None:
        """The job, or None; ``visible(job)`` (the caller's gate) is asked first, on the job as saved, and a
        job it refuses is None and left untouched: no read of the queue's ledger, which may finish the job
        (save it, drop its kept scan, release its claim), and no time taken that tells it exists."""
        if not _JOB_ID.fullmatch(job_id or ""):
            return None
        with self._lock:
            mine = self._jobs.get(job_id)
        job = mine or self._load(job_id)
        if job is None or (visible is not None and not visible(job)):
            return None
        if job.in_queue:
            self._follow([job])
        return job if mine else self._settled(job)

    def jobs(self, visible=None) -> list[UploadJob]:
        """Every job ``visible(job)`` accepts (None: all), newest first; only those are followed in the queue."""
        if time.monotonic() - self._pruned > PRUNE_EVERY:
            self.prune()
        with self._lock:
            found = dict(self._jobs)
        mine = set(found)
        for folder in self.root.iterdir():
            if _JOB_ID.fullmatch(folder.name) and folder.name not in found and (job := self._load(folder.name)):
                found[job.job_id] = job
        if visible is not None:
            found = {k: j for k, j in found.items() if visible(j)}
        self._follow([j for j in found.values() if j.in_queue])
        found = {k: j if k in mine else self._settled(j) for k, j in found.items()}
        return sorted(found.values(), key=lambda j: j.created_at, reverse=True)

    def _queue_submitter(self):
        """Made once, whichever thread (the runner's, a request's) asks first (review3 r3desk L3)."""
        with self._submitter_lock:
            if self._submitter is None:
                from pipelines.queued import Submitter

                self._submitter = Submitter(self.settings)
            return self._submitter

    def _follow(self, jobs: list[UploadJob]) -> None:
        """Queued jobs' states from the queue's ledger; a finished one is saved (and its kept scan dropped once
        stored), so the ledger is read only while a job is in the queue. Ledger unreachable: shown as it was."""
        if not jobs:
            return
        from digitize.errors import StorageError
        from pipelines.queued import upload_state

        try:
            records = {r.job_id: r for r in self._queue_submitter().ledger.many([j.queue_job for j in jobs])}
        except StorageError as e:
            log.warning("upload jobs: %s", e)
            return
        for job in jobs:
            record = records.get(job.queue_job)
            if record is None:
                continue
            state, reason, documents = upload_state(record, job.queue_run)
            if state in UNFINISHED:
                job.state, job.reason, job.documents = state, reason, documents
            elif self._claim(job.job_id):  # else held (a retry's run, another follower): shown as it was read
                try:  # saved only if still this run's, in the queue (review3 r3desk L1: no stale overwrite)
                    saved = self._load(job.job_id)
                    if saved is not None and saved.in_queue and saved.queue_run == job.queue_run:
                        job.state, job.reason, job.documents, job.finished_at = state, reason, documents, now_iso()
                        self._finish(job, release=False)
                finally:
                    self._release(job.job_id)

    def on_finished(self, listener) -> None:
        """``listener(job)`` is called (in the worker thread) when a job ends; errors are only logged."""
        self._listeners.append(listener)

    # -- intake --------------------------------------------------------------------------------
    def receive(self, stream: BinaryIO, name: str, scope, case_id: str | None) -> tuple[UploadJob, Path]:
        """Copy the upload into its private folder (size-limited) and hash it; not queued yet."""
        safe = stored_name(name)
        job_id = uuid.uuid4().hex
        folder = self.root / job_id
        try:
            folder.mkdir(mode=0o700)
        except OSError as e:
            raise resource_fault(e, "cannot keep the upload") or e from None
        target = folder / safe
        digest, size = hashlib.sha256(), 0
        try:
            with open(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600), "wb") as out:
                while block := stream.read(CHUNK):
                    size += len(block)
                    if size > self.max_bytes:
                        raise BadArgsError(f"the upload is larger than {self.settings.web.max_upload_mb} MB")
                    digest.update(block)
                    out.write(block)
                out.flush()
                os.fsync(out.fileno())  # accepted means kept: a power cut after "queued" must not empty it
            if size == 0:
                raise InputError(f"{display_name(name)!r} is empty")
            fsync_path(folder)  # the scan's entry in its job folder
            fsync_path(self.root)  # the job folder's entry in uploads/
        except BaseException as e:
            shutil.rmtree(folder, ignore_errors=True)
            fault = resource_fault(e, "cannot keep the upload") if isinstance(e, OSError) else None
            if fault is not None:  # disk full or quota: a 503 to retry later, not an internal error
                raise fault from None
            raise
        return UploadJob(job_id, scope.principal.actor, case_id, display_name(name), size, digest.hexdigest(),
                         created_at=now_iso(), sender=asdict(scope.principal)), target

    def discard(self, job: UploadJob) -> None:
        shutil.rmtree(self.root / job.job_id, ignore_errors=True)

    def submit(self, job: UploadJob) -> UploadJob:
        if not self._claim(job.job_id):
            raise BadArgsError("this upload is being processed already")
        self._queue(job)
        return job

    def _queue(self, job: UploadJob) -> None:
        """Save the claimed job queued and run it; a save that fails (a full disk: 503) leaves it neither listed
        as queued here nor claimed, so it can be retried (review3 r3desk L2)."""
        with self._lock:
            self._jobs[job.job_id] = job
        try:
            self._save(job)
        except BaseException as e:
            with self._lock:
                self._jobs.pop(job.job_id, None)
            self._release(job.job_id)
            fault = resource_fault(e, "cannot save the upload's state") if isinstance(e, OSError) else None
            if fault is not None:
                raise fault from None
            raise
        self._executor.submit(self._run, job)

    def retry(self, job: UploadJob, case_id: str | None, scope) -> UploadJob:
        """Run a failed job again on its kept scan, into ``case_id`` (already scope-checked by the caller),
        within the scope of whoever retries it."""
        if not self._claim(job.job_id):
            raise BadArgsError("this upload is being processed already")
        try:
            saved = self._load(job.job_id) or job  # the saved state: another process may have run it meanwhile
            if not saved.finished and not saved.in_queue:  # stranded (_settled): claimed by us now, nobody runs it
                saved.state = "failed"
            self._stranded.pop(job.job_id, None)
            job = saved
            kept = [p for p in (self.root / job.job_id).iterdir() if p.suffix.lower() in SUFFIXES]
            if job.state != "failed" or not kept:
                raise BadArgsError("only a failed upload whose scan is still kept can be retried")
        except BaseException:
            self._release(job.job_id)
            raise
        if case_id is not None:
            self._drop_carried_case(job)
        job.case_id, job.state, job.reason, job.finished_at, job.queue_job = case_id, "queued", "", "", ""
        job.queue_run = ""
        job.owner, job.sender = scope.principal.actor, asdict(scope.principal)  # one principal (review3 r3desk M3)
        self._queue(job)
        return job

    def dismiss(self, job: UploadJob, by: str) -> UploadJob:
        """A failed upload given up at the desk: saved as ``dismissed`` first, then its kept scan (and carried
        sidecar) deleted, and in queue mode its copy staged in the store too (review2 r2desk L2); pruned like
        a stored job after ``upload_job_days``."""
        if not self._claim(job.job_id):
            raise BadArgsError("this upload is being processed already")
        try:
            job = self._load(job.job_id) or job
            if job.state != "failed":
                raise BadArgsError("only a failed upload can be dismissed")
            job.state, job.reason, job.finished_at = "dismissed", f"dismissed by {by}", now_iso()
            try:
                self._finish(job, release=False)  # released below, with the claim taken above
            except OSError as e:  # review3 r3desk L2: a 503 (full disk), not a 500, and never a false "not dismissed"
                saved = self._load(job.job_id)
                if saved is None or saved.state != "dismissed":
                    raise resource_fault(e, "cannot dismiss the upload") or e from None
                log.warning("upload job %s dismissed; its kept scan is deleted when the job is pruned: %s",
                            job.job_id, e.strerror or type(e).__name__)
        finally:
            self._release(job.job_id)
        if job.queue_job:
            try:
                self._queue_submitter().drop_staged(job.sha256, job.queue_job)
            except Exception as e:  # noqa: BLE001 - dismissed all the same (the store down, WORM, queue mode off,
                # a client library's own error): never a 500 or a "not dismissed" event after it (review3 r3desk L3)
                why = str(e) if isinstance(e, DigitizeError) else f"internal error: {type(e).__name__}"
                event(log, "upload-staging-kept", logging.WARNING, job=job.job_id, reason=why)
        return job

    def _drop_carried_case(self, job: UploadJob) -> None:
        """A sidecar carried from the inbox's failed/ (``scan.json``) is read before the upload's own values,
        so its case ID would beat the case chosen now: rewrite it without one."""
        path = self.root / job.job_id / "scan.json"
        try:
            carried = json.loads(path.read_text(encoding="utf-8")) if not path.is_symlink() else None
        except FileNotFoundError:
            return
        except (OSError, ValueError):
            carried = None
        if not isinstance(carried, dict):
            path.unlink(missing_ok=True)  # written by us, so never expected; unreadable: not carried
            return
        carried.pop("case_id", None)
        atomic_write_text(path, json.dumps(carried, ensure_ascii=False))

    def adopt(self, folder: Path, item, scope, case_id: str | None) -> UploadJob:
        """A scan the watcher quarantined, taken out of the inbox's failed/ into a new job (with its valid
        sidecar, so the watch job reads it as watch would), then queued like an upload."""
        from pipelines import failed

        received: list[UploadJob] = []

        def receive(stream: BinaryIO, name: str) -> Path:
            job, target = self.receive(stream, name, scope, case_id)
            job.place_case_id = failed.place_case_id(item) or ""
            received.append(job)
            return target

        def durable() -> None:  # before failed/ loses the scan: the job exists on disk, claimed by us
            if not self._claim(received[0].job_id):
                raise BadArgsError("this upload is being processed already")
            self._save(received[0])
            fsync_path(self.root)  # the job folder's own entry

        try:
            failed.take(folder, item, receive, keep_case_id=case_id is None, durable=durable)
        except BaseException:
            for job in received:
                self._release(job.job_id)
                self.discard(job)
            raise
        self._queue(received[0])
        return received[0]

    # -- work ----------------------------------------------------------------------------------
    def _run(self, job: UploadJob) -> None:
        """Run the job; a state that cannot be saved (disk full) leaves it for a retry, never hanging claimed."""
        try:
            self._convert(job)
        except Exception as e:  # noqa: BLE001 - the state was not saved: never an unread future (rev17desk L1)
            fault = resource_fault(e, "cannot save the upload's state") if isinstance(e, OSError) else None
            log.error("upload job %s: %s; the job can be retried", job.job_id, fault or f"{type(e).__name__}: {e}")
            self._stranded[job.job_id] = str(fault or f"internal error: {type(e).__name__}")
            with self._lock:  # the saved state is older: shown failed by any process (_settled), retried from it
                self._jobs.pop(job.job_id, None)
            self._release(job.job_id)
            return
        for listener in self._listeners:
            try:
                listener(job)
            except Exception:  # noqa: BLE001
                log.exception("upload listener failed")

    def _convert(self, job: UploadJob) -> None:
        folder = self.root / job.job_id
        files = [p for p in folder.iterdir() if p.name != "job.json" and p.suffix.lower() in SUFFIXES]
        job.state = "running"
        self._save(job)
        values = {"title": Path(job.name).stem, "scanned_by": job.owner.split(":", 1)[-1]}
        if job.case_id or job.place_case_id:  # the case chosen, else the one the scan's old place named (as
            values["case_id"] = job.case_id or job.place_case_id  # watch read it: below its carried sidecar)
        try:
            if queue_mode(self.settings):
                self._enqueue(job, files[0], values)
                if job.in_queue:
                    return
            else:
                with self._converting():  # one conversion at a time per data dir, whichever process took it
                    status, reason, documents = self._submit(str(files[0]), values, job.scope()).result()
                job.state, job.reason, job.documents = status, reason, documents
        except BrokenProcessPool:
            self._drop_worker()  # a new one for the next job
            job.state, job.reason = "failed", "the conversion process died (out of memory?)"
        except Exception as e:  # noqa: BLE001 - one bad upload must not stop the queue
            log.exception("upload job %s failed", job.job_id)
            job.state, job.reason = "failed", f"internal error: {type(e).__name__}"
        job.finished_at = now_iso()
        self._finish(job)

    def _submit(self, path: str, values: dict, scope):
        """The conversion, sent to the worker; one that died while it waited (the OOM killer picks the largest
        process: a worker that just converted a big scan) broke its pool before this job: a new worker takes
        it, the job is not failed for a death it did not cause."""
        if self._worker is not None:
            try:
                return self._worker.submit(convert_upload, path, self.settings, values, scope)
            except BrokenProcessPool:
                self._drop_worker()
        self._worker = conversion_worker(self.settings)
        return self._worker.submit(convert_upload, path, self.settings, values, scope)

    def _drop_worker(self) -> None:
        """A broken worker's pool, its thread joined: still closing its wake-up pipe when the portal stopped, it
        raced the interpreter's exit-time wake-up ("Exception ignored ... Bad file descriptor", as the batch did)."""
        broken, self._worker = self._worker, None
        if broken is not None:
            broken.shutdown(wait=True)

    def _enqueue(self, job: UploadJob, path: Path, values: dict) -> None:
        """Queue mode: the scan staged in the store (verified) and its task sent, with the sender's principal;
        the local copy stays until the job is done (a failed job can be retried from it)."""
        submitter = self._queue_submitter()
        job.queue_job, result = submitter.submit_upload(path, values, job.job_id, job.sender)
        job.queue_run = submitter.runs.pop(job.queue_job, "")  # none: done before (skipped), nothing sent
        if result.status is Status.failed:
            job.state, job.reason = "failed", result.reason
            return
        job.state = "queued"
        self._save(job)
        with self._lock:
            self._jobs.pop(job.job_id, None)  # the ledger is the truth from now on
        self._release(job.job_id)
        event(log, "upload-queued", upload=job.job_id, job=job.queue_job, sha256=job.sha256)
        self._follow([job])  # done before (the same upload sent again): finished at once

    def _finish(self, job: UploadJob, release: bool = True) -> None:
        """Save the job's end, drop its scan once stored; ``release``: the caller's claim (only one it took)."""
        self._save(job)  # first: a scan is dropped only once job.json says stored (review rev17desk L1)
        if job.state != "failed":
            for f in (self.root / job.job_id).iterdir():
                if f.suffix.lower() in SUFFIXES or f.name == "scan.json":
                    f.unlink(missing_ok=True)  # stored and verified: the copy (and its carried sidecar) is not needed
        with self._lock:
            self._jobs.pop(job.job_id, None)  # the saved state is the truth from now on
        if release:
            self._release(job.job_id)

    @contextlib.contextmanager
    def _converting(self):
        fd = os.open(self.root / ".convert.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
        if self._submitter is not None:
            self._submitter.close()
        if self._worker is not None:
            self._worker.shutdown(wait=True)
        for job_id in list(self._claims):
            self._release(job_id)  # queued jobs not started: the next process to start resumes them


def convert_upload(path: str, settings, values: dict, scope) -> tuple[str, str, list[dict]]:
    """In the worker process: the watch job on one uploaded file, each part checked against the sender's
    ``scope`` before it is stored; (status, reason, stored documents)."""
    from pipelines.jobs import process_file
    from pipelines.metadata import Clue

    result = process_file(Path(path), settings, Clue("upload", values), allowed=scope)
    return str(result.status), result.reason, [asdict(d) for d in result.documents]
