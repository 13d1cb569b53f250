"""The unit of work shared by ``watch``, ``batch`` and (later) Celery workers: one source file in, stored documents out.

:func:`process_file` never assumes a shared disk: it reads the source from the path it is given, converts
into a private local temp dir, and returns only after the store has verified both objects and committed
the index. It is idempotent by content: a file (or split part) already stored is skipped by its SHA-256,
so a retried or re-dropped file is never stored twice.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path, PurePath
from typing import Any, Callable, Iterator

from digitize.errors import (DigitizeError, ExitCode, InputError, ResourceError, SigningError, StorageError,
                             resource_fault)
from digitize.fsutil import atomic_write_text, copy_hashed, open_regular, sha256_file, sha256_stream, work_dir
from digitize.locks import held
from digitize.records import DocumentReport
from digitize.terminal import printable

from . import metadata
from .inbox import input_limit_mb
from .logs import event
from .messages import error_kinds
from .metadata import Clue
from .pagescan import PageScan, scan_pages, thorough_codes
from .separators import Part

log = logging.getLogger("pipelines.jobs")

INTERNAL = "internal"
INTERNAL_EXIT = 15  # what digitize.cli returns for an internal error
UNMATCHED_REASON = "no case ID in sidecar, folder, file name, QR code or OCR text"


class Status(StrEnum):
    done = "done"
    skipped = "skipped"  # already stored (same content hash, same pages)
    unmatched = "unmatched"  # stored, but no case ID found: link it later
    failed = "failed"


@dataclass
class StoredPart:
    source_pages: str  # "" whole file, "1-4" a split part
    doc_id: str
    case_id: str | None
    case_source: str | None  # which clue gave the case ID
    pages: int
    already_stored: bool


@dataclass
class JobResult:
    path: str
    status: Status
    sha256: str = ""
    reason: str = ""
    error_kinds: tuple[str, ...] = ()  # exception class names, most specific first
    exit_code: int = 0
    documents: list[StoredPart] = field(default_factory=list)
    pages: int = 0  # pages converted by this job
    seconds: float = 0.0
    convert_seconds: float = 0.0

    @property
    def retryable(self) -> bool:
        """Storage or signing-key trouble, or a full disk, says nothing about the file: keep it and try again later."""
        return self.status is Status.failed and bool(
            {StorageError.__name__, SigningError.__name__, ResourceError.__name__} & set(self.error_kinds))

    @property
    def out_of_space(self) -> bool:
        """A full disk or quota (retryable): a file that keeps causing it is quarantined after a few tries."""
        return self.status is Status.failed and ResourceError.__name__ in self.error_kinds

    @property
    def internal(self) -> bool:
        """A bug of ours, not a bad scan: the file must not be quarantined for it."""
        return self.status is Status.failed and INTERNAL in self.error_kinds

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["status"] = str(self.status)
        return data


_archives: dict[tuple[str, str], Any] = {}
_cpu_slots = None  # a batch worker's CPU slots (a semaphore), lent while it waits for an identical file


def lend_cpu_slots(slots) -> None:
    """Called by a batch worker that converts under ``batch.sign_waiters`` slots (pipelines/batch.py)."""
    global _cpu_slots
    _cpu_slots = slots


def archive_for(settings) -> Any:
    """One Archive per process and store/index pair (workers open their own; connections don't fork)."""
    from storage.archive import Archive

    key = (settings.store_url, settings.index_dsn)
    if key not in _archives:
        _archives[key] = Archive.open(settings)
    return _archives[key]


def close_archives() -> None:
    while _archives:
        _, archive = _archives.popitem()
        archive.close()


def _overall(parts: list[StoredPart]) -> tuple[Status, str]:
    if all(p.already_stored for p in parts):
        return Status.skipped, "already stored"
    if any(p.case_id is None for p in parts):
        return Status.unmatched, UNMATCHED_REASON
    return Status.done, ""


def _case_record(archive, case_id: str | None):
    if not case_id:
        return None
    try:
        return archive.case(case_id)
    except DigitizeError:  # NotFoundError: the case is not imported yet
        return None


class _Job:
    """State of one process_file call: the source, its hash, options and clues shared by its parts."""

    def __init__(self, path: Path, settings, hint: Clue | None, root: Path | None, jobs: int | None, archive,
                 keep: Path | None = None, allowed: Callable[..., bool] | None = None, shared_inbox: bool = False):
        from digitize.convert import ConvertOptions

        self.path = path
        self.root = root if root and path.is_relative_to(root) else None
        self.keep = keep
        self.allowed = allowed
        self.settings = settings
        self.archive = archive
        self.relative = PurePath(path.relative_to(root)) if root and path.is_relative_to(root) else PurePath(path.name)
        self.opts = ConvertOptions.from_settings(settings.convert, language=None, jobs=jobs, ocr_timeout=None,
                                                 validate=None)
        self.file_clues = [metadata.sidecar_clue(path, self.root, shared_inbox), hint,
                           metadata.folder_clue(self.relative), metadata.filename_clue(self.relative)]
        self.sha256 = ""
        self.source = path  # the private copy of the hashed bytes, once made: read by every stage
        self.convert_seconds = 0.0
        self.pages = 0
        self.page_count: int | None = None  # counted by scan_pages in a worker

    def _code_clue(self, part: Part, scan: PageScan, known: bool) -> Clue | None:
        """Codes from the quick pass; the costly thorough read only when nothing earlier named the case."""
        clue = metadata.code_clue(scan.part_codes(part))
        if clue is None and not known:
            clue = metadata.code_clue(thorough_codes(self.source, self.opts, part))
        return clue

    def _convert(self, part: Part, workdir: Path) -> DocumentReport:
        """Convert the part; with ``keep``, PDF/A and report wait there until stored (a retry only stores)."""
        from digitize.convert import convert_file
        from digitize.signing import signer_for

        kept = self._kept(part)
        report = _load_kept(kept) if kept else None
        if report is not None:
            event(log, "kept-conversion", file=str(self.relative), pages=part.source_pages or "all")
            return report
        if kept:
            kept.mkdir(mode=0o700, parents=True, exist_ok=True)
        opts = dataclasses.replace(self.opts, pages=None if part.whole else part.pages)
        started = time.perf_counter()
        signer = signer_for(self.settings)  # this process's open key; None when [sign] is not configured
        report = convert_file(self.source, (kept or workdir) / f"part-{part.pages[0] + 1}.pdf", opts, signer=signer,
                              page_count=self.page_count)
        report.input_path = str(self.path)  # the scan, not its private copy
        self.convert_seconds += time.perf_counter() - started
        self.pages += report.page_count
        if kept:
            atomic_write_text(kept / KEPT_REPORT, report.to_json())
        return report

    def _check_scope(self, case_id: str | None, source: str | None, source_pages: str,
                     agency: str | None = None) -> None:
        """Refuse, before anything is stored or linked, a part that names a case its sender may not file
        into; or, with no case ID, an agency other than the sender's (it would be listed to that agency)."""
        if self.allowed is None:
            return
        what = f"pages {source_pages}" if source_pages else "the scan"
        if case_id is None and agency and not self.allowed(None, agency):
            from storage.access import PermissionDenied

            raise PermissionDenied(f"{what} of {self.path.name} name no case but agency {agency!r}, outside the "
                                   "sender's agencies: not stored; link it to a case and retry")
        if not self.allowed(case_id):
            from storage.access import PermissionDenied

            raise PermissionDenied(f"{what} of {self.path.name} name case {case_id or '(none)'} (by {source}), "
                                   "outside the sender's agencies: not stored there")

    def _kept(self, part: Part) -> Path | None:
        return self.keep / f"{self.sha256}-{part.source_pages or 'all'}" if self.keep else None

    @contextlib.contextmanager
    def _alone(self, part: Part) -> Iterator[None]:
        """With ``keep``: one job at a time per kept folder (review rev16batch M4). Identical files in one
        batch share it; one used to delete it, stored, under the other still converting into it (a false
        "cannot read"). The later one now waits (its CPU slot lent to another worker meanwhile), then
        finds the part stored and skips or shares it, with no second conversion."""
        if self.keep is None:
            yield
            return
        self.keep.mkdir(mode=0o700, parents=True, exist_ok=True)
        lent = []

        def lend() -> None:
            event(log, "waiting", file=str(self.relative), pages=part.source_pages or "all",
                  reason="an identical file is being converted")
            if _cpu_slots is not None:
                _cpu_slots.release()
                lent.append(True)

        try:
            with held(self.keep / f"{self.sha256}-{part.source_pages or 'all'}.lock", None, lend):
                if lent:
                    _cpu_slots.acquire()
                    lent.clear()
                yield
        finally:
            if lent:
                _cpu_slots.acquire()

    def store_part(self, part: Part, scan: PageScan, workdir: Path) -> StoredPart:
        with self._alone(part):
            return self._store_part(part, scan, workdir)

    def _store_part(self, part: Part, scan: PageScan, workdir: Path) -> StoredPart:
        from storage.archive import DocumentMeta

        early = [metadata.separator_clue(part.case_id), *self.file_clues]
        existing = self.archive.find(self.sha256, part.source_pages)
        if existing is not None:
            return self._stored_before(existing, part.source_pages, early)
        codes = self._code_clue(part, scan, known=metadata.resolve(early).case_id is not None)
        report = self._convert(part, workdir)
        if report.input_sha256 != self.sha256:  # the converted bytes must be the hashed bytes
            raise InputError(f"{self.path.name} changed while it was converted: not stored; it is read again "
                             "once it stops changing")
        resolution = metadata.resolve([*early, codes, metadata.ocr_clue([p.text for p in report.pages])])
        resolution = metadata.apply_case_record(resolution, _case_record(self.archive, resolution.case_id))
        title = self.relative.stem + (f" (trang {part.source_pages})" if part.source_pages else "")
        meta = DocumentMeta(**metadata.meta_kwargs(resolution, self.path.name, part.source_pages, title))
        self._check_scope(meta.case_id, resolution.case_source, part.source_pages, meta.agency)
        stored = self.archive.store(self.source, Path(report.output_path), report, meta)
        if self._kept(part):
            shutil.rmtree(self._kept(part), ignore_errors=True)
        event(log, "stored", file=str(self.relative), pages=part.source_pages or "all", case=resolution.case_id,
              via=resolution.case_source, doc=stored.doc_id, already=stored.already_stored)
        return StoredPart(part.source_pages, str(stored.doc_id), stored.case_id, resolution.case_source,
                          stored.pages, stored.already_stored)

    def _stored_before(self, existing, source_pages: str, clues: list[Clue | None]) -> StoredPart:
        """Content already stored: if this copy names another case (a scan shared by two dossiers), file the
        stored document in that dossier too, with no second copy of its bytes; else skip it."""
        resolution = metadata.resolve(clues)
        if self.allowed is not None and not self._may_see(existing):
            from storage.access import PermissionDenied

            # neither its id, its case, nor that it exists: filing it (sharing another agency's document and
            # its metadata into the sender's case) is an archivist's decision
            what = f"pages {source_pages}" if source_pages else "the scan"
            raise PermissionDenied(f"{what} of {self.path.name} could not be filed automatically: ask an archivist "
                                   "to file it")
        if resolution.case_id and resolution.case_id != existing.case_id:
            self._check_scope(resolution.case_id, resolution.case_source, source_pages)
            existing = self.archive.share(existing.doc_id, resolution.case_id, resolution.values.get("sequence"))
            event(log, "shared", file=str(self.relative), pages=source_pages or "all", case=existing.case_id,
                  via=resolution.case_source, doc=existing.doc_id, already=existing.already_stored)
        return StoredPart(source_pages, str(existing.doc_id), existing.case_id, resolution.case_source,
                          existing.pages, existing.already_stored)

    def _may_see(self, existing) -> bool:
        """Whether the sender's scope covers a stored document: its case, or (unmatched) its agency; an
        unmatched document naming no agency is for archivists and admins alone (as Gate._covers_unmatched)."""
        if existing.case_id:
            return self.allowed(existing.case_id)
        row = self.archive.index.document(existing.doc_id)
        return row is not None and self.allowed(None, row.agency or "(none)")

    def run(self) -> list[StoredPart]:
        from digitize.sources import check_input_size

        # opened once: a regular file, no symlink on the way from root. Every later stage reads a
        # private copy of these very bytes, never the name again (a clerk may swap it for a link).
        with os.fdopen(open_regular(self.path, self.root), "rb") as source:
            # a huge or sparse file would be hashed, then copied in full into TMPDIR, on every retry
            check_input_size(source.fileno(), input_limit_mb(self.settings.convert), self.path.name)
            self.sha256 = sha256_stream(source)
            whole = self.archive.find(self.sha256, "")
            if whole is not None:
                return [self._stored_before(whole, "", self.file_clues)]
            with work_dir("job") as tmp:
                (tmp / "source").mkdir(mode=0o700)
                self.source = tmp / "source" / self.path.name  # same name: titles and messages use it
                source.seek(0)
                if copy_hashed(source, self.source) != self.sha256:
                    raise InputError(f"{self.path.name} changed while it was read: it is read again once it "
                                     "stops changing")
                source.close()
                scan = scan_pages(self.source, self.opts)
                self.page_count = scan.page_count
                return [self.store_part(part, scan, tmp) for part in scan.parts()]


KEPT_DIR = "converted"  # DATA_DIR/converted: a PDF/A waits there until stored (storage down: retries only store)
KEPT_REPORT = "report.json"


def kept_folder(settings) -> Path:
    """Where watch, batch and queue workers keep conversions that storage refused, until stored."""
    return Path(settings.data_dir) / KEPT_DIR


def _load_kept(kept: Path) -> DocumentReport | None:
    """A conversion kept by an earlier attempt, if complete and intact (its PDF/A's SHA-256 checked)."""
    try:
        report = DocumentReport.from_dict(json.loads((kept / KEPT_REPORT).read_text(encoding="utf-8")))
        output = Path(report.output_path)
        if output.parent != kept or sha256_file(output) != report.output_sha256:
            return None
    except (OSError, ValueError, TypeError, KeyError):
        return None
    return report


def _at_filing(allowed: Callable[..., bool] | None, archive) -> Callable[..., bool] | None:
    """An upload's scope (storage.access.UploadScope, the sender's rights saved with the job or task) bound to
    the sender's rights as they are when the parts are filed: a sender disabled meanwhile files nothing."""
    from storage.access import UploadScope

    return allowed.at_filing(archive.index) if isinstance(allowed, UploadScope) else allowed


def _reason(error: BaseException, job: _Job | None) -> str:
    """The error's text naming the scan, not the job's private copy (/tmp/digitize-…/source/NAME)."""
    text = str(error)
    if job is not None and job.source != job.path:
        text = text.replace(f"{job.source.parent}{os.sep}", "")  # the name may be cut short in it (a line break)
    return text


def _os_failure(error: OSError, path: Path, job: _Job | None) -> str:
    """What failed, by the file the OSError names: "cannot read" only for the scan itself. One naming the
    kept folder (the converted copy, its lock) or the job's work folder is this machine's writing, and an
    archivist checking the scan's permissions would look in vain (review rev2_batch16b R6)."""
    name = os.fsdecode(error.filename) if isinstance(error.filename, (str, bytes)) else ""
    if job is not None and name and Path(name) not in (job.path, job.source):  # the scan or its private copy
        where = Path(name)
        if job.keep is not None and where.is_relative_to(job.keep):
            return f"cannot write the converted copy of {path.name} in the data folder's {KEPT_DIR}/"
        if job.source != job.path and where.is_relative_to(job.source.parent.parent):
            return f"cannot write the working copy of {path.name} in the temporary folder"
    return f"cannot read {path.name}"


def process_file(path: Path, settings, meta_hint: Clue | None = None, *, root: Path | None = None,
                 jobs: int | None = None, archive=None, keep: Path | None = None,
                 allowed: Callable[..., bool] | None = None, shared_inbox: bool = False) -> JobResult:
    """Convert, resolve metadata, store and index one source file; errors come back as a failed result.

    ``meta_hint`` is what the caller knows (a manifest row); ``root`` anchors the folder convention;
    ``jobs`` overrides the converter's page parallelism (batch runs one page at a time per file);
    ``keep`` is a private folder where converted parts wait until they are stored; ``allowed(case_id)``
    (an upload's scope, from storage.access) is asked before each part is stored or linked, and
    ``allowed(None, agency)`` of an unmatched part whose clues name an agency: a part it refuses fails
    the job and nothing is stored for it. ``shared_inbox`` (watch): the sidecar's metadata.SHARED_INBOX_DROPS
    are ignored. An UploadScope is asked with its sender's current rights (re-read
    when the job starts and at each question), never only those saved when the scan was sent.
    """
    started = time.perf_counter()
    path = Path(path)
    job: _Job | None = None
    try:
        archive = archive or archive_for(settings)
        allowed = _at_filing(allowed, archive)
        job = _Job(path, settings, meta_hint, root, jobs, archive, keep, allowed, shared_inbox)
        parts = job.run()
        status, reason = _overall(parts)
        result = JobResult(str(path), status, job.sha256, reason, documents=parts)
    except DigitizeError as e:
        result = JobResult(str(path), Status.failed, job.sha256 if job else "", _reason(e, job),
                           error_kinds=error_kinds(e), exit_code=int(e.exit_code))
    except OSError as e:
        fault = resource_fault(e, "out of disk space")
        if fault is not None:  # this machine's fault, not the file's: it is kept and tried again
            result = JobResult(str(path), Status.failed, job.sha256 if job else "", str(fault),
                               error_kinds=error_kinds(fault), exit_code=int(fault.exit_code))
        else:
            denied = ("PermissionError",) if isinstance(e, PermissionError) else ()
            result = JobResult(str(path), Status.failed, job.sha256 if job else "",
                               f"{_os_failure(e, path, job)}: {e.strerror}"
                               + (f" (uid {os.geteuid()})" if denied else ""),
                               error_kinds=(*denied, "FileAccessError", "OSError"), exit_code=int(ExitCode.file_access))
    except Exception as e:  # noqa: BLE001 - one file's bug must not stop a batch or a watcher
        log.exception("internal error on %s", printable(path))  # a file name never starts a forged log line
        result = JobResult(str(path), Status.failed, job.sha256 if job else "",
                           f"internal error: {type(e).__name__}: {' '.join(str(e).split())}",
                           error_kinds=(INTERNAL, *error_kinds(e)), exit_code=INTERNAL_EXIT)
    result.seconds = time.perf_counter() - started
    if job is not None:
        result.pages, result.convert_seconds = job.pages, job.convert_seconds
    return result
