"""``digitize batch SRC``: convert and store a whole historical archive, all cores busy, resumable.

One file per worker process, each converted one page at a time, so N files keep N cores busy without
oversubscription and memory stays bounded by N pages. Files are started largest first, so the tail of a
run is short files, not one register converting alone on one core. (Dossier order therefore comes from
the manifest's ``sequence`` column or the ``<seq>-<title>`` file names, not from the order of storing.) Sources are only read, never moved: re-running
skips every file (or split part) already stored, by SHA-256, so a killed run loses nothing. A file that
failed because storage was unavailable is retried with backoff before it is reported failed.
"""

from __future__ import annotations

import contextlib
import csv
import gc
import io
import json
import logging
import multiprocessing
import os
import sys
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TextIO

from digitize.errors import ExitCode, InputError, SigningError, StorageError
from digitize.fsutil import atomic_write_text
from digitize.terminal import printable
from digitize.text import recorded_values

from .inbox import has_scan_suffix, iter_scans
from .jobs import (INTERNAL_EXIT, JobResult, Status, StoredPart, close_archives, kept_folder, lend_cpu_slots,
                   process_file)
from . import logs
from .logs import event
from .manifest import Manifest, read_manifest
from .metadata import Clue

log = logging.getLogger("pipelines.batch")

STORAGE_RETRY = (5.0, 10.0, 20.0, 40.0, 60.0)  # seconds before each retry of a file refused by storage
LIST_AT_MOST = 20  # failed/unmatched files echoed on stderr; the report has them all
PROGRESS_EVERY = 2.0  # seconds between progress lines when stderr is not a terminal


@dataclass(frozen=True)
class BatchItem:
    path: Path
    size: int
    hint: Clue | None = None


@dataclass
class BatchSummary:
    results: list[JobResult] = field(default_factory=list)
    seconds: float = 0.0

    def count(self, status: Status) -> int:
        return sum(1 for r in self.results if r.status is status)

    @property
    def pages(self) -> int:
        return sum(r.pages for r in self.results)

    @property
    def pages_per_minute(self) -> float:
        return self.pages / self.seconds * 60 if self.seconds else 0.0

    def line(self) -> str:
        counts = ", ".join(f"{self.count(s)} {s}" for s in Status)
        return (f"{len(self.results)} files: {counts}; {self.pages} pages converted in {self.seconds:.1f} s "
                f"({self.pages_per_minute:.1f} pages/min)")


# --- planning (pure apart from the directory walk) ---------------------------------------------------

def plan(src: Path, manifest: Manifest | None, links: list[Path] | None = None,
         vanished: list[JobResult] | None = None) -> tuple[list[BatchItem], list[Path]]:
    """Files to process (scan types, plus anything the manifest names) and the other files left alone;
    symbolic links (never followed) go to ``links``, files gone since the walk to ``vanished``."""
    items, others = [], []
    for path in iter_scans(src, links=links):
        hint = manifest.hint(path) if manifest else None
        if hint is None and not has_scan_suffix(path):
            others.append(path)
            continue
        try:
            size = os.lstat(path).st_size
        except OSError as e:  # moved or deleted since the walk (a share being tidied): that file, not the batch
            if vanished is not None:
                vanished.append(JobResult(str(path), Status.failed, reason=f"cannot read {path.name}: {e.strerror} "
                                          "(moved or deleted during the batch; run again to take it)",
                                          error_kinds=("FileAccessError", "OSError"),
                                          exit_code=int(ExitCode.file_access)))
            continue
        items.append(BatchItem(path, size, hint))
    return items, others


LINK_REASON = "left alone: a symbolic link, never followed (copy the file itself into SRC)"


def left_alone(links: list[Path]) -> list[JobResult]:
    """Symbolic links in SRC, for the report and the summary: skipped, and why (review rev16batch L4)."""
    return [JobResult(str(path), Status.skipped, reason=LINK_REASON) for path in links]


def _names(paths: list[Path], shown: int = 5) -> str:
    """File names for a stderr line: each through printable() (a name cannot forge a line or an escape)."""
    return ", ".join(printable(p.name) for p in paths[:shown]) + (", ..." if len(paths) > shown else "")


PAGE_ORDER_LIMIT = 2000  # batches up to this many files are ordered by counted pages


def longest_first(items: list[BatchItem]) -> list[BatchItem]:
    """Most pages first, then largest: a long file started last runs alone at the end while the
    other workers idle (a 2-page fax is a few kB, a 1-page PNG a few MB). Pages are counted
    (~1 ms a PDF or TIFF, nothing decoded) only in batches up to PAGE_ORDER_LIMIT files: in a
    larger one the end's idle time is negligible and counting would delay the start."""
    if len(items) > PAGE_ORDER_LIMIT:
        return sorted(items, key=lambda item: -item.size)
    counts = _page_counts([item.path for item in items])
    return sorted(items, key=lambda item: (-counts.get(item.path, 1), -item.size))


COUNT_MEMORY_MB = 2048  # the counting worker's address space: opening a file decodes no page


def _page_counts(paths: list[Path]) -> dict[Path, int]:
    """page_count_hint of every file, in a page worker: the long-lived batch process never parses
    an untrusted file itself. A worker that dies (a hostile file) just leaves the order by size."""
    from digitize import imaging, pageworkers

    imaging.single_threaded()  # no OpenCV thread pool may exist across the fork
    try:
        counts = pageworkers.run(_count_pages, [(paths,)], 1, 60.0 + 0.1 * len(paths), memory_mb=COUNT_MEMORY_MB)[0]
    except Exception:  # noqa: BLE001 - only an ordering hint
        return {}
    return dict(zip(paths, counts))


def _count_pages(paths: list[Path]) -> list[int]:
    return [page_count_hint(path) for path in paths]


def page_count_hint(path: Path) -> int:
    """Pages of a PDF or multi-page TIFF without decoding any; 1 for anything else or unreadable."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".pdf":
            from digitize.sources import close_pdf, open_pdf

            pdf = open_pdf(path)
            try:
                return len(pdf.pages)
            finally:
                close_pdf(pdf)
        if suffix in (".tif", ".tiff"):
            from PIL import Image

            Image.MAX_IMAGE_PIXELS = None  # as when converting: the pixel limit is ours (max_pixels)
            with Image.open(path) as image:
                return getattr(image, "n_frames", 1)
    except Exception:  # noqa: BLE001 - only an ordering hint: the conversion reports the real error
        return 1
    return 1


def format_duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600:d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


@dataclass
class Progress:
    """Files, pages, pages/min and an ETA from the bytes still to convert (page counts are unknown ahead)."""

    total_files: int
    total_bytes: int
    started: float
    files: int = 0
    pages: int = 0
    failed: int = 0
    bytes_done: int = 0  # of converted files
    bytes_skipped: int = 0

    def add(self, result: JobResult, size: int) -> None:
        self.files += 1
        self.pages += result.pages
        self.failed += result.status is Status.failed
        if result.status is Status.skipped:
            self.bytes_skipped += size
        else:
            self.bytes_done += size

    def line(self, now: float) -> str:
        elapsed = max(now - self.started, 1e-9)
        rate = self.pages / elapsed * 60
        remaining = self.total_bytes - self.bytes_done - self.bytes_skipped
        if remaining <= 0:
            eta = format_duration(0)
        else:
            eta = format_duration(remaining * elapsed / self.bytes_done) if self.bytes_done else "?"
        failed = f", {self.failed} failed" if self.failed else ""
        return f"[{self.files}/{self.total_files} files] {self.pages} pages, {rate:.1f} pages/min, ETA {eta}{failed}"


class _ProgressLine:
    def __init__(self, progress: Progress, stream: TextIO):
        self.progress, self.stream = progress, stream
        self.tty = stream.isatty()
        self.last = 0.0
        self.last_files = -1

    def show(self, final: bool = False) -> None:
        now = time.monotonic()
        due = self.tty or now - self.last >= PROGRESS_EVERY
        if not (due or final) or (final and not self.tty and self.last_files == self.progress.files):
            return
        self.last, self.last_files = now, self.progress.files
        end = "\n" if final or not self.tty else ""
        self.stream.write(("\r\x1b[K" if self.tty else "") + self.progress.line(now) + end)
        self.stream.flush()


# --- workers -----------------------------------------------------------------------------------------

STOP_GRACE = 10.0  # seconds a stopped batch's workers get to finish the file in hand (see _check_signer)
_worker_settings = None
_cpu_slots = None  # with a signer: at most `jobs` workers convert at once; one waiting for its signature lends its slot


def _init_worker(settings, log_state: tuple[int, bool, int], parent: int, remote=None, slots=None) -> None:
    """One worker = one core: OpenCV's own thread pool would only fight the other workers for it.
    It converts file after file, so it keeps its page worker instead of forking one per file.
    It dies with the batch (kill -9 included), and its page workers with it. With [sign], the
    batch's SigningService signs its files (``remote``): a worker opens no key and imports no pyHanko."""
    import cv2

    from digitize import pageworkers, signing

    pageworkers.die_with_parent(parent)
    pageworkers.undumpable()  # before any page worker or tool: none may read or copy what it holds
    global _worker_settings, _cpu_slots
    _worker_settings, _cpu_slots = settings, slots
    lend_cpu_slots(slots)
    if remote is not None:
        remote.slots = slots
    signing.use_service(remote)
    logs.restore(log_state)
    cv2.setNumThreads(1)
    pageworkers.keep()


def _run_one(path: Path, hint: Clue | None, root: Path) -> JobResult:
    # a file storage refused is retried: its conversion waits in the kept folder, so a retry only stores
    with _cpu_slots if _cpu_slots is not None else contextlib.nullcontext():
        return process_file(path, _worker_settings, hint, root=root, jobs=1, keep=kept_folder(_worker_settings))


def _crashed(item: BatchItem, error: BaseException) -> JobResult:
    return JobResult(str(item.path), Status.failed, reason=f"worker process died: {type(error).__name__}",
                     error_kinds=("crashed",), exit_code=INTERNAL_EXIT)


@dataclass
class _Task:
    item: BatchItem
    storage_tries: int = 0
    crashes: int = 0  # a dead worker takes every file in flight with it: each gets one more go
    pool_generation: int = 0  # which pool ran it: only the first victim of a broken pool replaces it


class _Runner:
    """Keeps ``2 x jobs`` files in flight (sign_waiters more when signing); re-queues storage failures
    (with backoff) and crash victims.
    With a ``signer`` (signing.SigningService) the workers are forked first, then the key is opened
    in the signer's thread while they convert; a key that cannot be used stops the batch. With
    ``batch.sign_waiters`` = W, W more workers are started and a semaphore of ``jobs`` slots lets
    only ``jobs`` of them convert at once: a worker waiting for its signature (a slow USB token)
    gives its slot to one that converts meanwhile, so signing does not hold conversion. Off by
    default: each extra worker pays its own start (page worker, Tesseract loaded: ~1 s of CPU), more
    than it saves with a key that signs in milliseconds (bench/sign_bench.py --sign-delay)."""

    def __init__(self, src: Path, settings, jobs: int, stream: TextIO, signer=None):
        self.src, self.settings, self.jobs, self.stream = src, settings, jobs, stream
        self.signer = signer
        waiters = max(0, int(getattr(settings.batch, "sign_waiters", 0) or 0)) if signer is not None else 0
        self.workers = jobs + waiters
        self.todo: deque[_Task] = deque()
        self.delayed: list[tuple[float, _Task]] = []
        self.inflight: dict[Future, _Task] = {}
        self.pool = self._new_pool()
        self.generation = 0

    def _new_pool(self) -> ProcessPoolExecutor:
        """Workers forked from this process, which has imported the conversion code already:
        each starts in milliseconds instead of importing it again (~0.25 s). ProcessPoolExecutor
        forks every worker before starting its manager thread, and a broken pool is shut down,
        threads joined, before the next. With a signer its threads run on across a re-fork (after a
        worker died): the fork then holds the signer's lock (no key opening or signature half-way in
        the child); a connection's thread may be in its authkey challenge, which holds no lock a
        worker uses."""
        from digitize import imaging

        imaging.single_threaded()  # no OpenCV thread pool may exist across the fork
        # what this process holds so far (imports: conversion, pyHanko) is left out of the workers'
        # garbage collections: a full one would walk all of it in every worker and touch (copy)
        # its shared pages, ~0.1 s of CPU per worker (bench/sign_bench.py "fresh worker")
        gc.freeze()
        self.forked = False  # a fork-context pool forks all its workers at its first submit
        context = multiprocessing.get_context("fork")
        remote = self.signer.remote() if self.signer is not None else None
        # a new semaphore per pool: a worker that died holding a slot took it with it
        slots = context.Semaphore(self.jobs) if self.workers > self.jobs else None
        # with the batch's signer, workers need no PIN: none is in the settings they get
        settings = self.settings if remote is None else \
            replace(self.settings, sign=replace(self.settings.sign, pin=""))
        pool = ProcessPoolExecutor(self.workers, mp_context=context, initializer=_init_worker,
                                   initargs=(settings, logs.snapshot(), os.getpid(), remote, slots))
        if self.signer is not None:  # only this pool's workers may reach the signer (not their page workers)
            self.signer.members = lambda: (getattr(pool, "_processes", None) or {}).keys()
        return pool

    def _submit(self) -> None:
        now = time.monotonic()
        self.todo.extend(task for due, task in self.delayed if due <= now)
        self.delayed = [(due, task) for due, task in self.delayed if due > now]
        # a new pool forks now: not while the signer's thread is inside pyHanko or the token library
        if self.signer is not None and not self.forked:
            try:
                with self.signer.forking():
                    self._fill()
            except SigningError:  # the key's opening or a signature holds the lock past [sign] timeout
                self._check_signer()
                raise
        else:
            self._fill()
        if self.signer is not None and self.forked:
            self.signer.start()  # after the first fork: the workers convert while the key is opened

    def _fill(self) -> None:
        while self.todo and len(self.inflight) < self.jobs + self.workers:
            task = self.todo.popleft()
            task.pool_generation = self.generation
            try:
                self.inflight[self.pool.submit(_run_one, task.item.path, task.item.hint, self.src)] = task
            except BrokenProcessPool:
                # a worker died with no file of it left to fail here (killed idle, or a failure this loop has
                # not read yet): the file waits for a new pool, forked by the next _submit (under the
                # signer's lock); the old pool's files in flight fail and are redone once, as after any death
                self.todo.appendleft(task)
                self._replace_pool()
                return
            self.forked = True

    def _replace_pool(self) -> None:
        """A broken pool's threads end before the next pool forks (see _new_pool)."""
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.pool, self.generation = self._new_pool(), self.generation + 1

    def _check_signer(self) -> None:
        """A key that cannot be used (wrong PIN, token absent, expired certificate), or a signer that
        does not answer within [sign] timeout (key not open, a signature not ended), stops the batch at
        once with its one line: the workers are stopped (no file was signed, so none was stored)."""
        if self.signer is None or self.signer.overdue() is None:
            return
        # files not started are dropped; a worker converting gets the error at its signature and
        # cleans up (no half-written file left in the kept folder); one still busy after STOP_GRACE
        # is stopped
        processes = list((getattr(self.pool, "_processes", None) or {}).values())  # shutdown forgets them
        manager = getattr(self.pool, "_executor_manager_thread", None)  # and its thread
        self.pool.shutdown(wait=False, cancel_futures=True)
        wait(self.inflight, timeout=min(STOP_GRACE, self.signer.timeout))
        for process in processes:
            with contextlib.suppress(Exception):
                process.terminate()
        # its thread closes its wake-up pipe as it ends: still running at exit, it raced the interpreter's own
        # wake-up of it and printed "Exception ignored ... Bad file descriptor" under the batch's one line (CI)
        if manager is not None:
            manager.join(STOP_GRACE)
        raise self.signer.error

    def _outcome(self, future: Future, task: _Task) -> JobResult | None:
        """The file's final result, or None when it was queued again."""
        try:
            result = future.result()
        except BrokenProcessPool as e:
            if task.pool_generation == self.generation:
                self._replace_pool()
            if task.crashes == 0:
                task.crashes += 1
                self.todo.append(task)
                event(log, "worker-died", logging.WARNING, file=str(task.item.path), action="redo once")
                return None
            return _crashed(task.item, e)
        if result.retryable and task.storage_tries < len(STORAGE_RETRY):
            wait_s = STORAGE_RETRY[task.storage_tries]
            task.storage_tries += 1
            self.delayed.append((time.monotonic() + wait_s, task))
            event(log, "storage-retry", logging.WARNING, file=str(task.item.path), attempt=task.storage_tries,
                  retry_in=wait_s, reason=result.reason)
            return None
        return result

    def run(self, items: list[BatchItem]) -> BatchSummary:
        started = time.monotonic()
        summary = BatchSummary()
        progress = Progress(len(items), sum(i.size for i in items), started)
        shown = _ProgressLine(progress, self.stream)
        self.todo.extend(_Task(item) for item in items)
        try:
            while self.todo or self.delayed or self.inflight:
                self._submit()
                finished, _ = wait(self.inflight, timeout=0.5, return_when=FIRST_COMPLETED)
                self._check_signer()
                for future in finished:
                    task = self.inflight.pop(future)
                    result = self._outcome(future, task)
                    if result is not None:
                        summary.results.append(result)
                        progress.add(result, task.item.size)
                        shown.show()
        finally:
            self.pool.shutdown(wait=True, cancel_futures=True)
        summary.seconds = time.monotonic() - started
        shown.show(final=True)
        return summary


# --- reports -----------------------------------------------------------------------------------------

REPORT_COLUMNS = ("path", "status", "reason", "sha256", "source_pages", "doc_id", "case_id", "case_source",
                  "pages", "seconds")


def _part_status(part: StoredPart) -> Status:
    if part.already_stored:
        return Status.skipped
    return Status.unmatched if part.case_id is None else Status.done


def report_rows(results: list[JobResult]) -> list[dict[str, object]]:
    """One row per stored document (a split stack gives several), one per failed file."""
    rows = []
    for r in results:
        base = {"path": r.path, "status": str(r.status), "reason": r.reason, "sha256": r.sha256,
                "seconds": round(r.seconds, 2)}
        if not r.documents:
            rows.append({**base, "pages": r.pages})
        for d in r.documents:
            rows.append({**base, "source_pages": d.source_pages, "doc_id": d.doc_id, "case_id": d.case_id or "",
                         "case_source": d.case_source or "", "pages": d.pages, "status": str(_part_status(d))})
    return rows


def render_report(summary: BatchSummary, as_json: bool) -> str:
    if as_json:
        data = {"summary": {"files": len(summary.results), "pages": summary.pages, "seconds": round(summary.seconds, 2),
                            **{str(s): summary.count(s) for s in Status}},
                "files": [r.to_dict() for r in summary.results]}
        return json.dumps(recorded_values(data), ensure_ascii=False, indent=2)  # names that are not UTF-8
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=REPORT_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows({k: spreadsheet_cell(v) for k, v in row.items()} for row in report_rows(summary.results))
    return out.getvalue()


_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_cell(value):
    """A CSV cell Excel or LibreOffice will not run as a formula (OWASP CSV injection): text starting with
    = + - @ TAB or CR gets a leading apostrophe. Reasons start with the file name, which anyone chose."""
    return "'" + value if isinstance(value, str) and value.startswith(_FORMULA_STARTS) else value


def write_report(summary: BatchSummary, target: Path) -> None:
    atomic_write_text(target, render_report(summary, target.suffix.lower() == ".json"))


# --- entry point ---------------------------------------------------------------------------------------

def check_manifest(manifest: Manifest | None, stream: TextIO) -> None:
    """Print every bad row, then refuse with one line: nothing is converted from a broken manifest."""
    if manifest is None or not manifest.problems:
        return
    for problem in manifest.problems:
        stream.write(f"{printable(manifest.source)}: {printable(problem)}\n")
    raise InputError(f"manifest {manifest.source}: {len(manifest.problems)} problem(s); fix them and run again")


def run_batch(src: Path, settings, manifest_file: Path | None = None, jobs: int | None = None,
              dry_run: bool = False, report: Path | None = None, stream: TextIO = sys.stderr,
              queue: bool = False, wait: bool = False) -> BatchSummary:
    if not src.is_dir():
        raise InputError(f"{src} is not a directory")
    manifest = read_manifest(manifest_file, src) if manifest_file else None
    check_manifest(manifest, stream)
    links: list[Path] = []
    vanished: list[JobResult] = []
    items, others = plan(src, manifest, links, vanished)
    if others:
        stream.write(f"batch: leaving {len(others)} non-scan file(s) alone: {_names(others)}\n")
    if links:
        stream.write(f"batch: leaving {len(links)} symbolic link(s) alone, never followed: {_names(links)}\n")
    if dry_run:
        listed = sum(1 for i in items if i.hint is not None)
        stream.write(f"dry run: {len(items)} files to process, {listed} described by the manifest, "
                     f"{len(items) - listed} left to folder/file name/QR/OCR clues; nothing converted\n")
        return BatchSummary()
    items = longest_first(items)
    workers = max(1, min(jobs or settings.batch.jobs, len(items) or 1))
    event(log, "batch-start", src=str(src), files=len(items), workers=workers)
    try:
        if queue:  # queue mode (pipelines/queued.py): originals staged and enqueued for `digitize worker`s
            from .queued import run_queued_batch

            summary = run_queued_batch(src, items, settings, wait, stream)
            if summary is None and not vanished:
                return BatchSummary()
            summary = summary or BatchSummary()  # the files gone before the plan are failures here too
        else:
            summary = _run_local(src, settings, workers, stream, items)
    finally:
        close_archives()
    summary.results.extend(vanished + left_alone(links))
    target = report or (Path(settings.batch.report) if settings.batch.report else None)
    if target:
        write_report(summary, target)
    notable = [r for r in summary.results if r.status in (Status.failed, Status.unmatched)]
    for result in notable[:LIST_AT_MOST]:
        stream.write(f"{result.status}: {printable(result.path)}: {printable(result.reason)}\n")
    if len(notable) > LIST_AT_MOST:
        stream.write(f"... and {len(notable) - LIST_AT_MOST} more failed or unmatched files (see the report)\n")
    stream.write(f"batch: {summary.line()}" + (f"; report {printable(target)}" if target else "") + "\n")
    _raise_for_failures(summary)
    return summary


def _run_local(src: Path, settings, workers: int, stream: TextIO, items: list[BatchItem]) -> BatchSummary:
    """The batch in worker processes here; with [sign], one SigningService signs for all of them."""
    from digitize.signing import SigningService

    signer = SigningService(settings, kept_folder(settings)) if settings.sign.configured and items else None
    try:
        return _Runner(src, settings, workers, stream, signer).run(items)
    finally:
        if signer is not None:
            signer.close()


def _raise_for_failures(summary: BatchSummary) -> None:
    failed = [r for r in summary.results if r.status is Status.failed]
    if not failed:
        return
    if all(r.retryable for r in failed):
        raise StorageError(f"{len(failed)} file(s) not stored: storage unavailable; run again to resume")
    raise InputError(f"{len(failed)} of {len(summary.results)} file(s) failed; see the report for reasons")
