"""``digitize watch INBOX``: take each completely written scan, store it, then move it to done/ or failed/.

Events (inotify, or polling for SMB/NFS shares) only *nominate* files; a periodic rescan nominates what
events missed. The main loop takes one stable, complete file at a time, so the rules that keep scans
safe live in one place:

* a source is moved or deleted only after :func:`process_file` returned, i.e. after its objects were
  stored, read back and verified and the index committed;
* a file is taken by renaming it into this watcher's work folder (claims.py): atomic across watchers,
  machines sharing the inbox included, so each file is stored once; after a crash the next watcher
  redoes it once (idempotent by content hash) and, if it was interrupted again, sends it to done/
  when the index has it, else quarantines it;
* done/, failed/ and .digitize/ are opened once, by descriptor, without following symlinks, and
  must belong to this account: a clerk cannot redirect the watcher's writes;
* storage trouble (or a bug of ours) puts the file back in the inbox and retries with backoff: the
  scan is fine; the converted PDF/A is kept meanwhile, so a retry only stores. After
  INTERNAL_LIMIT failures of our own the file is quarantined; whatever goes wrong with one file is
  logged and never stops the watcher;
* SIGTERM finishes the current file and exits; a second SIGTERM or Ctrl-C abandons it cleanly
  (temp files removed, source untouched, claim dropped).
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import shutil
import signal
import stat
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePath
from typing import Callable

from digitize.errors import BadArgsError, ConfigError, FileAccessError, NotRegularFileError
from digitize.fsutil import PART_AGE, private_dir_check, sha256_regular, sweep_parts, walk_dirs, write_text_at
from digitize.identifiers import parse_agency_code
from digitize.terminal import printable

from . import inbox as inboxlib
from .claims import MAX_ATTEMPTS, Claim, Claims
from .jobs import JobResult, Status, archive_for, close_archives, kept_folder, process_file
from .logs import event
from .messages import error_report, explain

log = logging.getLogger("pipelines.watch")

INCOMPLETE_GRACE = 6  # stable this many times stable_seconds and still unreadable: quarantine it
RETRY_BACKOFF = (5.0, 10.0, 30.0, 60.0, 120.0, 300.0)  # storage down: wait, then try the file again
ONCE_STORAGE_TRIES = 4  # --once gives up (file left in the inbox) after this many storage failures
INTERNAL_LIMIT = 3  # failures of our own (bugs, not storage) before a file is quarantined
RESOURCE_LIMIT = 8  # disk full this often in a row on one file while other work had room (diskroom.py): quarantined
KEPT_DAYS = 14  # a kept conversion nobody stored in this time (its scan was taken away) is removed
LONE_SUFFIX = ".lone"  # a sidecar whose scan is gone, in failed/: NAME.json.lone
DETAIL_MAX = 2000  # characters of a reason's technical detail (<= 8 KB: within what failed.py and claims.py read)
TAKEN_ELSEWHERE_WARN = 3  # one path "taken elsewhere" this often: say so loudly (another watcher? a stale view?)


@dataclass
class WatchOptions:
    inbox: Path
    poll: float = 0.0
    rescan: float = 60.0
    stable_seconds: float = 5.0
    on_success: str = "move"
    done_dir: Path | None = None
    failed_dir: Path | None = None
    once: bool = False
    agencies: tuple[str, ...] = ()  # [watch] agencies: what a shared inbox may file into; () = any

    def __post_init__(self) -> None:
        self.inbox = Path(self.inbox).absolute()  # events, walks and skip dirs must agree on one spelling
        self.done_dir = Path(self.done_dir).absolute() if self.done_dir else self.inbox / "done"
        self.failed_dir = Path(self.failed_dir).absolute() if self.failed_dir else self.inbox / "failed"
        if self.on_success not in ("move", "delete"):
            raise ConfigError(f"watch.on_success must be 'move' or 'delete', not {self.on_success!r}")
        if not self.inbox.is_dir():
            raise ConfigError(f"inbox {self.inbox} is not a directory")
        try:
            self.agencies = tuple(parse_agency_code(a).code for a in self.agencies)
        except BadArgsError as e:
            raise ConfigError(f"watch.agencies: {e}") from None

    @classmethod
    def from_settings(cls, watch, inbox: str | Path | None, poll: float | None, once: bool) -> "WatchOptions":
        folder = inbox or watch.inbox
        if not folder:
            raise ConfigError("no inbox: give INBOX or set watch.inbox (DIGITIZE_WATCH_INBOX)")
        return cls(Path(folder), poll if poll is not None else watch.poll, watch.rescan, watch.stable_seconds,
                   watch.on_success, watch.done_dir or None, watch.failed_dir or None, once,
                   tuple(getattr(watch, "agencies", ()) or ()))

    def scope(self):
        """What files from this inbox may be filed into (storage.access.InboxScope), or None: anything."""
        from storage.access import InboxScope

        return InboxScope.of_agencies(self.agencies) if self.agencies else None

    @property
    def state_dir(self) -> Path:
        return self.inbox / inboxlib.STATE_DIR

    @property
    def skip_dirs(self) -> tuple[Path, ...]:
        return (self.done_dir, self.failed_dir, self.state_dir)


class Folders:
    """The inbox and its control folders, opened once by descriptor and checked (owner, mode, no symlink).

    Held for the whole run: a control folder renamed and replaced by a symlink later changes nothing,
    the watcher keeps writing into the folder it checked.
    """

    def __init__(self, opts: WatchOptions):
        self.inbox = -1
        try:
            self.inbox = os.open(opts.inbox, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            self.state = self._control(opts, opts.state_dir)
            self.done = self._control(opts, opts.done_dir) if opts.on_success == "move" else -1
            self.failed = self._control(opts, opts.failed_dir)
            self.claims = Claims(self.state, str(opts.state_dir))
        except NotADirectoryError as e:
            self.close()
            raise FileAccessError(f"refusing {e.filename}: {e.strerror}; remove it (the watcher makes it)") from None
        except OSError as e:
            self.close()
            raise FileAccessError(f"cannot use {e.filename or opts.inbox}: {e.strerror}") from None
        except BaseException:
            self.close()
            raise
        self.state_path = opts.state_dir

    def _control(self, opts: WatchOptions, folder: Path) -> int:
        if folder.is_relative_to(opts.inbox):
            return walk_dirs(self.inbox, folder.relative_to(opts.inbox).parts, create=True, check=private_dir_check,
                             shown=str(opts.inbox))
        return walk_dirs(folder.parent, [folder.name], create=True, check=private_dir_check)

    def check_state(self) -> None:
        """Path-based readers (the converter) go through INBOX/.digitize: it must still be the folder held."""
        held, now = os.fstat(self.state), os.lstat(self.state_path)
        if (held.st_dev, held.st_ino) != (now.st_dev, now.st_ino):
            raise FileAccessError(f"{self.state_path} was replaced while the watcher ran; restart the watcher")

    def close(self) -> None:
        if getattr(self, "claims", None) is not None:
            self.claims.close()
        for name in ("inbox", "state", "done", "failed"):
            fd = getattr(self, name, -1)
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)


@dataclass
class _Pending:
    failures: int = 0  # storage or internal errors: either way the file itself is not at fault
    not_before: float = 0.0
    disk_full: int = 0  # disk-full tries in a row that look like this file's own doing (diskroom.py)
    stored_seen: int | None = None  # files stored when it last ran the disk full


@dataclass
class WatchSummary:
    counts: dict[str, int] = field(default_factory=dict)
    deferred: list[JobResult] = field(default_factory=list)  # --once: left in the inbox, to retry later

    def add(self, status: str) -> None:
        self.counts[status] = self.counts.get(status, 0) + 1


def _observer(opts: WatchOptions, nominate: Callable[[str], None]):
    """inotify where the OS has it; with ``poll`` a polling observer, which works on SMB/NFS shares."""
    from watchdog.events import FileSystemEventHandler
    from watchdog.observers import Observer
    from watchdog.observers.polling import PollingObserver

    class Handler(FileSystemEventHandler):
        def on_any_event(self, ev) -> None:
            if not ev.is_directory:
                nominate(ev.dest_path or ev.src_path)

    observer = PollingObserver(timeout=opts.poll) if opts.poll > 0 else Observer()
    observer.schedule(Handler(), str(opts.inbox), recursive=True)
    return observer


class Watcher:
    outage_told: int | None = None  # files stored when a disk-full outage was last logged

    def __init__(self, opts: WatchOptions, settings, process: Callable[..., JobResult] = process_file):
        self.opts, self.settings, self.process = opts, settings, process
        self.folders = Folders(opts)
        self.claims = self.folders.claims
        self.tracker = inboxlib.StabilityTracker(opts.stable_seconds)
        self.events: queue.SimpleQueue[str] = queue.SimpleQueue()
        self.pending: dict[Path, _Pending] = {}
        self.summary = WatchSummary()
        self.stopping = False
        self.scope = opts.scope()
        self.observer = None
        self.next_rescan = 0.0
        self.next_sweep = 0.0  # part files: at the start, then hourly (_sweep_parts)
        self.taken_elsewhere: dict[Path, int] = {}
        self.forced_rescan = float("-inf")  # when "taken elsewhere" last moved the next rescan forward

    # --- nominating -----------------------------------------------------------------------------

    def _relative(self, path: Path) -> Path | None:
        if any(path.is_relative_to(d) for d in self.opts.skip_dirs) or not path.is_relative_to(self.opts.inbox):
            return None
        relative = path.relative_to(self.opts.inbox)
        return relative if inboxlib.is_scan(relative) else None

    def _nominate(self, path: Path) -> None:
        if path not in self.pending and self._relative(path) is not None:
            self.pending[path] = _Pending()

    def _check_inbox(self) -> None:
        """The inbox path must still name the folder held open: after a remount (autofs, a network drop) or
        the folder being recreated, every claim through the old descriptor would miss and nothing would ever
        be processed again. Reopen it (owner and mode checks again); if that fails, FileAccessError ends the
        watcher with a non-zero exit, so the service manager restarts it."""
        held = os.fstat(self.folders.inbox)
        try:
            now = os.stat(self.opts.inbox)
            if (held.st_dev, held.st_ino) == (now.st_dev, now.st_ino):
                return
            seen = "another folder"
        except OSError as e:
            seen = f"unreachable ({e.strerror})"
        event(log, "inbox-replaced", logging.ERROR, inbox=str(self.opts.inbox), now=seen,
              action="reopening it; the watcher exits if that fails")
        folders = Folders(self.opts)  # FileAccessError: refused or gone, out of run() with a non-zero exit
        old, self.folders, self.claims = self.folders, folders, folders.claims
        old.close()
        # pending (failure counts, backoff) is kept: the same paths under the same inbox name; a file that
        # failed twice before a remount must not start from zero (INTERNAL_LIMIT, backoff)
        self.taken_elsewhere.clear()
        self.tracker = inboxlib.StabilityTracker(self.opts.stable_seconds)
        if self.observer is not None:  # inotify watches the old folder: watch the new one
            self.observer.stop()
            self.observer.join(timeout=5)
            self.observer = _observer(self.opts, self.events.put)
            self.observer.start()
        event(log, "inbox-reopened", logging.WARNING, inbox=str(self.opts.inbox))
        self._recover()  # claims that dead watchers left in the folder now found there

    def _rescan(self) -> None:
        self._check_inbox()
        if time.monotonic() >= self.next_sweep:
            self._sweep_parts()
        for claim in self.claims.own_claims():  # stuck in our hands: retried, not left until a restart
            event(log, "retrying-stuck", logging.WARNING, file=claim.relative, attempts=claim.attempts)
            self._resume(claim)
        links: list[Path] = []  # symlinks and FIFOs: quarantined with a reason, never followed
        for path in [*inboxlib.iter_scans(self.opts.inbox, self.opts.skip_dirs, links), *links]:
            self._nominate(path)

    def _drain_events(self) -> None:
        while True:
            try:
                self._nominate(Path(self.events.get_nowait()))
            except queue.Empty:
                return

    # --- outcomes: every move starts from this watcher's claim ---------------------------------------

    def _move_out(self, claim: Claim, base_fd: int, before: Callable[[int, str], str | None] | None = None) -> str:
        """Move the claimed scan (and sidecar) to ``base_fd/<its folder>/<free name>``; the name used."""
        relative = PurePath(claim.relative)
        src = self.claims.folder_fd(claim)
        dst = walk_dirs(base_fd, relative.parent.parts, create=True, check=private_dir_check)
        to = "failed" if base_fd == self.folders.failed else "done"
        try:
            name = inboxlib.move_free(src, relative.name, dst, relative.name, claim.sidecar, before=before,
                                      chosen=self.claims.recorder(claim, to))
        except BaseException:
            self.claims.move_failed(claim)
            raise
        finally:
            os.close(src)
            os.close(dst)
        self.claims.drop(claim)
        return str(relative.parent / name)

    def _finish(self, claim: Claim) -> None:
        if self.opts.on_success == "delete":
            src = self.claims.folder_fd(claim)
            try:
                for name in (PurePath(claim.relative).name, claim.sidecar):
                    if name:
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(name, dir_fd=src)
            finally:
                os.close(src)
            self.claims.drop(claim)
            return
        self._move_out(claim, self.folders.done)

    def _quarantine(self, claim: Claim, kinds: tuple[str, ...], detail: str) -> None:
        name = PurePath(claim.relative).name
        if len(detail) > DETAIL_MAX:  # a tool's message is unbounded: the mark after it must stay findable
            detail = detail[:DETAIL_MAX] + " …"  # (review2 hard16 L9: Claims.undo_unfinished reads 64 KiB)
        when = datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")
        text = error_report(name, explain(kinds), detail, when)
        def reason(dst: int, free: str) -> str:  # its mark recorded before it is written: see Claims.undo_unfinished
            mark = self.claims.note_reason(claim)
            return _write_new(dst, free + inboxlib.ERROR_SUFFIX, f"{text}Mã / Mark: {mark}\n")

        target = self._move_out(claim, self.folders.failed, reason)
        self.summary.add("failed")
        event(log, "quarantined", logging.WARNING, file=claim.relative,
              to=str(self.opts.failed_dir / target), reason=detail)

    def _forget(self, path: Path) -> None:
        self.pending.pop(path, None)
        self.tracker.forget(path)

    def _disk_full(self, path: Path, reason: str) -> int:
        """This file's disk-full tries in a row that look like its own doing (diskroom.py). A try that does not
        is the machine's outage: the file waits in the inbox like every other, and an ERROR says so once."""
        from . import diskroom

        pending = self.pending.setdefault(path, _Pending())
        stored = self.summary.counts.get(str(Status.done), 0) + self.summary.counts.get(str(Status.unmatched), 0)
        own = diskroom.own_try(diskroom.has_room(kept_folder(self.settings)),
                               pending.stored_seen, stored)
        pending.disk_full, pending.stored_seen = (pending.disk_full + 1 if own else 0), stored
        if not own and self.outage_told != stored:  # once until a file is stored again
            self.outage_told = stored
            event(log, "disk-full", logging.ERROR, reason=reason,
                  advice="free disk space (TMPDIR, the data folder); the scans wait in the inbox and are retried")
        return pending.disk_full

    def _defer(self, path: Path, reason: str, internal: bool) -> None:
        """Try again later (the file is back in the inbox); quarantine after INTERNAL_LIMIT bugs of ours."""
        pending = self.pending.setdefault(path, _Pending())
        pending.failures += 1
        wait = RETRY_BACKOFF[min(pending.failures, len(RETRY_BACKOFF)) - 1]
        pending.not_before = time.monotonic() + wait
        event(log, "deferred", logging.WARNING, file=str(path.relative_to(self.opts.inbox)), retry_in=wait,
              reason=reason)
        if self.opts.once and (internal or pending.failures >= ONCE_STORAGE_TRIES):
            self.summary.deferred.append(JobResult(str(path), Status.failed, reason=reason,
                                                   error_kinds=() if internal else ("StorageError",)))
            self.pending.pop(path, None)

    # --- taking one file ----------------------------------------------------------------------------

    def _take(self, path: Path, relative: Path, problem: inboxlib.Problem | None = None) -> None:
        """Claim the file (None: another watcher was first), then store it or quarantine it for ``problem``."""
        sidecar = _sidecar_name(path)
        claim = self.claims.take(self.folders.inbox, PurePath(relative), sidecar)
        if claim is None:
            self._forget(path)
            event(log, "taken-elsewhere", file=str(relative))
            self._taken_elsewhere(path)
            return
        if problem is not None:
            self._forget(path)
            self._quarantine(claim, problem.kinds, problem.message)
            return
        event(log, "taken", file=str(relative))
        self._handle(claim)

    def _taken_elsewhere(self, path: Path) -> None:
        """A file seen but gone when claimed: normal with several watchers, once. Again and again for one
        path means this watcher looks at a folder it cannot claim from: check the inbox now, then say so."""
        count = self.taken_elsewhere[path] = self.taken_elsewhere.get(path, 0) + 1
        now = time.monotonic()
        if now - self.forced_rescan >= max(self.opts.stable_seconds, 1.0):  # two watchers racing on a big
            self.forced_rescan = now  # share would otherwise walk it after every lost race
            self.next_rescan = 0.0  # the loop rescans now, checking the inbox first (not here: errors here are the file's)
        if count == TAKEN_ELSEWHERE_WARN:
            event(log, "taken-elsewhere-repeatedly", logging.WARNING, file=str(path.relative_to(self.opts.inbox)),
                  times=count, advice="is another watcher running on this inbox, or is the share's view stale?")

    def _handle(self, claim: Claim) -> None:
        """Process a claimed file; on anything but an outcome it goes back to the inbox to be retried."""
        path = self.opts.inbox / claim.relative
        if self._separated(claim):
            return
        try:
            self.folders.check_state()
            result = self.process(self.claims.root(claim) / claim.relative, self.settings, None,
                                  root=self.claims.root(claim), keep=kept_folder(self.settings), shared_inbox=True,
                                  allowed=self.scope)
            if result.status is Status.failed and not (result.retryable or result.internal):
                self._forget(path)
                self._quarantine(claim, result.error_kinds, result.reason)
                return
            if result.status is Status.failed:
                if result.internal and self._failures(path) + 1 >= INTERNAL_LIMIT:
                    self._quarantine(claim, ("internal", *result.error_kinds),
                                     f"{INTERNAL_LIMIT} internal errors; last: {result.reason}")
                    self._forget(path)
                    return
                if result.out_of_space and self._disk_full(path, result.reason) >= RESOURCE_LIMIT:
                    self._quarantine(claim, result.error_kinds, f"the disk filled {RESOURCE_LIMIT} times in a row "
                                     f"while processing this file, while other work had room; last: {result.reason}")
                    self._forget(path)
                    return
                self._give_back(claim)
                self._defer(path, result.reason, result.internal)
                return
            fault_point("watch-stored")
            self._forget(path)
            self._finish(claim)
        except KeyboardInterrupt:
            self._give_back(claim)  # abandoned on purpose: not a crash
            event(log, "abandoned", logging.WARNING, file=claim.relative)
            raise
        except BaseException:
            self._give_back(claim)
            raise
        self.summary.add(str(result.status))
        event(log, str(result.status), file=claim.relative, sha256=result.sha256, pages=result.pages,
              seconds=round(result.seconds, 2), reason=result.reason,
              cases=",".join(sorted({d.case_id or "-" for d in result.documents})))

    def _separated(self, claim: Claim) -> bool:
        """A claim whose sidecar is elsewhere: if its recorded move had put the pair in place, it is done
        (True); else the sidecar is brought back from where an interrupted move left it (claims.Claims.rejoin);
        if it cannot be, the scan is quarantined, never filed by its QR code or name instead (True), and the
        reason says where the sidecar was last sent."""
        if not self.claims.separated(claim):
            return False
        places = self._places()
        moved = self.claims.completed(claim, places)
        if moved is not None:  # killed after the pair reached its place, before the claim's copy was removed
            self._forget(self.opts.inbox / claim.relative)
            event(log, "move-completed", logging.WARNING, file=claim.relative, to=moved)
            return True
        found = self.claims.rejoin(claim, places)
        if found is not None:
            event(log, "sidecar-rejoined", logging.WARNING, file=claim.relative, sidecar=found)
            return False
        moving = claim.moving or {}
        where = (f"; it was being moved to {PurePath(moving['to'], PurePath(claim.relative).parent, moving['sidecar'])}"
                 if moving else "")
        self._forget(self.opts.inbox / claim.relative)
        self._quarantine(claim, ("SidecarError",),
                         f"its sidecar {claim.sidecar} was separated from it (an interrupted move or a file "
                         f"error){where}: not filed without it; find the .json in the inbox, done/ or failed/, "
                         "put it beside the scan and drop both into the inbox again")
        return True

    def _places(self) -> dict[str, int]:
        """Where a claim's move may have taken its files (claims.Claim.moving["to"]); -1: not used."""
        return {"inbox": self.folders.inbox, "done": self.folders.done, "failed": self.folders.failed}

    def _lone_sidecar(self, claim: Claim) -> None:
        """A dead watcher's claim that holds its sidecar but not its scan (the scan was deleted after storing,
        ``on_success = "delete"``, and the watcher died before the sidecar): into failed/ with a reason, named
        ``NAME.json.lone``: not a sidecar name (review hard15 L8: ``NAME.lone.json`` was ``NAME.lone.pdf``'s), so
        no scan there takes it for its own, and the desk lists it with its reason."""
        relative = PurePath(claim.relative)
        sidecar = claim.sidecar
        wanted = sidecar + LONE_SUFFIX
        detail = (f"the sidecar of {relative.name}, left in a watcher's work folder by a crash after its scan had "
                  "been handled (stored, then moved or deleted); check the stored document's metadata")
        when = datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")
        text = error_report(sidecar, explain(("SidecarError",)), detail, when)
        src = self.claims.folder_fd(claim)
        dst = walk_dirs(self.folders.failed, relative.parent.parts, create=True, check=private_dir_check)
        try:
            name = inboxlib.move_free(src, sidecar, dst, wanted,
                                      before=lambda fd, free: _write_new(fd, free + inboxlib.ERROR_SUFFIX, text))
        finally:
            os.close(src)
            os.close(dst)
        self.claims.drop(claim)
        event(log, "quarantined", logging.WARNING, file=str(relative.parent / sidecar),
              to=str(self.opts.failed_dir / relative.parent / name), reason=detail)

    def _hand_over_held(self, claim: Claim) -> None:
        """A file a recovery check moved into the claim that cannot go back where it came from (that folder is
        not used now, or the move back failed twice): someone's file, into failed/ as NAME.held with a reason."""
        relative = PurePath(claim.relative)
        held = (claim.held or ["?", relative.name])[:2]
        detail = (f"a file from {PurePath(held[0], relative.parent, held[1])} that a watcher's recovery was "
                  "checking and could not put back; check it and move it back by hand")
        when = datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")
        text = error_report(held[1], explain(("held",)), detail, when)  # "tell the administrator; keep it"
        name = self.claims.hand_over(claim, self.folders.failed,
                                     lambda fd, free: _write_new(fd, free + inboxlib.ERROR_SUFFIX, text))
        event(log, "quarantined", logging.WARNING, file=str(PurePath(held[0], relative.parent, held[1])),
              to=str(self.opts.failed_dir / relative.parent / name), reason=detail)

    def _give_back(self, claim: Claim) -> None:
        try:
            self.claims.give_back(claim, self.folders.inbox, inboxlib.move_free)
        except Exception as e:  # noqa: BLE001 - it stays in the work folder; the next rescan goes on with it
            log.exception("could not put %s back into the inbox", printable(claim.relative))
            self.claims.note_error(claim, f"could not move back into the inbox: {_one_line(e)}")

    def _failures(self, path: Path) -> int:
        pending = self.pending.get(path)
        return pending.failures if pending else 0

    def _file_error(self, path: Path, error: Exception) -> None:
        """Anything raised while handling one file: logged, counted, retried; it never stops the watcher."""
        reason = f"internal error: {type(error).__name__}: {' '.join(str(error).split())}"
        log.error("%s: %s", printable(path), printable(reason), exc_info=error)
        if self._failures(path) + 1 >= INTERNAL_LIMIT and os.path.lexists(path):
            try:
                relative = path.relative_to(self.opts.inbox)
                self._take(path, relative, inboxlib.Problem(("internal",), f"{INTERNAL_LIMIT} internal errors; "
                                                                          f"last: {reason}"))
                return
            except Exception:  # noqa: BLE001 - failed/ unusable too: keep retrying at the longest interval
                log.exception("could not quarantine %s", printable(path))
        self._defer(path, reason, internal=True)

    def _ready(self, path: Path, now: float) -> bool:
        """Stable and complete; an unreadable file that stays unchanged long enough is quarantined."""
        if not os.path.lexists(path):
            self._forget(path)
            return False
        if now < self.pending[path].not_before or not self.tracker.is_stable(path, now):
            return False
        problem = inboxlib.completeness_problem(path, self.settings.convert, self.opts.inbox)
        if problem is None:
            return True
        st = path.lstat()
        unchanged = self.tracker.observe(path, st.st_size, st.st_mtime_ns, now)
        if problem.kinds[0] == NotRegularFileError.__name__ or \
                unchanged >= INCOMPLETE_GRACE * max(self.opts.stable_seconds, 1.0):
            self._take(path, path.relative_to(self.opts.inbox), problem)
        return False

    def _work(self) -> None:
        for path in sorted(self.pending):
            if self.stopping:
                return
            try:
                if path in self.pending and self._ready(path, time.monotonic()):
                    self._take(path, path.relative_to(self.opts.inbox))
            except Exception as e:  # noqa: BLE001 - one file's trouble never stops the watcher
                if isinstance(e, FileNotFoundError) and not os.path.lexists(path):
                    self._forget(path)  # taken by another watcher (or deleted) while we looked at it
                else:
                    self._file_error(path, e)

    # --- the loop -----------------------------------------------------------------------------------

    def _recover(self) -> None:
        """Claims of watchers that died: redo them first; one interrupted again goes to done/ if stored."""
        for claim in self.claims.adopt_orphans():
            event(log, "recovering", file=claim.relative, attempts=claim.attempts)
            self._resume(claim)

    def _resume(self, claim: Claim) -> None:
        """Go on with a claim found on disk (a dead watcher's, or stuck in ours): redo it, or, interrupted too
        often, to done/ if stored else to failed/; a lone sidecar to failed/. Whatever fails leaves it in our
        folder, for the next rescan to try again."""
        try:
            if not self.claims.restore_held(claim, self._places()):
                self._hand_over_held(claim)
            if not self.claims.holds_scan(claim):
                if claim.sidecar and not self.claims.separated(claim):
                    self._lone_sidecar(claim)
                else:  # only a held file was left (review2 hard16 M1): it is back, or in failed/
                    self.claims.drop(claim)
                return
            self.claims.undo_unfinished(claim, self._places())
            if self._separated(claim):  # finished, or quarantined; else its sidecar is back: filed together
                return
            if claim.attempts <= MAX_ATTEMPTS:
                self._handle(claim)
            elif self._stored(claim):
                self._finish(claim)
                self.summary.add(str(Status.skipped))
                event(log, str(Status.skipped), file=claim.relative, reason="stored before the interruption")
            elif claim.last_error:  # stuck in our hands: what failed, not "interrupted"
                self._quarantine(claim, ("stuck",), f"{claim.last_error} ({claim.attempts - 1} tries)")
            else:
                self._quarantine(claim, ("crashed",), f"{claim.attempts - 1} attempts were interrupted")
        except Exception as e:  # noqa: BLE001
            self._file_error(self.opts.inbox / claim.relative, e)

    def _sweep_parts(self) -> None:
        """Temp files of moves and writes killed half-way (a copy into done/ on another file system, a reason
        being written), once untouched for an hour: see digitize.fsutil.sweep_parts. At the start and hourly
        after: one left by the kill just before a restart is too fresh at that start, and a sweep reads only
        recently changed folders. Not the inbox: clerks' files live there (and a give-back into it is a
        rename, same file system as the claims). Not DATA_DIR/converted/: a live conversion's temp PDF/A
        stays unchanged while it is validated (a long document, another process), and a kept folder is
        removed whole after KEPT_DAYS anyway."""
        self.next_sweep = time.monotonic() + PART_AGE
        for place, folder in {"done": self.folders.done, "failed": self.folders.failed}.items():
            if folder < 0:
                continue
            for name in sweep_parts(folder):
                event(log, "part-file-removed", logging.WARNING, folder=place, file=name,
                      reason="a temp file left by a write or move killed half-way")

    def _stored(self, claim: Claim) -> bool:
        """Whether the index holds the claimed file already (killed after storing, before the move)."""
        sha = sha256_regular(self.claims.root(claim) / claim.relative)
        return archive_for(self.settings).find(sha, "") is not None

    def _on_sigterm(self, signum, frame) -> None:
        if self.stopping:
            raise KeyboardInterrupt  # second request: abandon the current file
        self.stopping = True
        event(log, "stopping", reason="SIGTERM: finishing the current file")

    def run(self) -> WatchSummary:
        try:
            return self._run()
        finally:
            self.folders.close()

    def _run(self) -> WatchSummary:
        mode = os.fstat(self.folders.inbox).st_mode
        if mode & 0o022 and not mode & stat.S_ISVTX:
            event(log, "inbox-not-sticky", logging.WARNING, inbox=str(self.opts.inbox),
                  advice="others may write here but could also rename the watcher's folders: chmod +t the inbox")
        if mode & 0o022 and self.scope is None:
            event(log, "inbox-unscoped", logging.WARNING, inbox=str(self.opts.inbox),
                  advice="others may write here and a sidecar, QR code or name can file a scan into any agency's "
                         "case: set [watch] agencies")
        prune_kept(kept_folder(self.settings), KEPT_DAYS * 86400)
        self._recover()
        self._sweep_parts()
        previous_handler = signal.signal(signal.SIGTERM, self._on_sigterm)
        self.observer = None if self.opts.once else _observer(self.opts, self.events.put)
        tick = min(0.5, max(0.05, self.opts.stable_seconds / 4))
        event(log, "watching", inbox=str(self.opts.inbox), mode="once" if self.opts.once else
              (f"poll {self.opts.poll}s" if self.opts.poll > 0 else "inotify"))
        try:
            if self.observer is not None:
                self.observer.start()
            while not self.stopping:
                if time.monotonic() >= self.next_rescan:
                    self._rescan()
                    self.next_rescan = time.monotonic() + self.opts.rescan
                self._drain_events()
                self._work()
                if self.opts.once and not self.pending:
                    break
                time.sleep(tick)
        finally:
            if self.observer is not None:
                self.observer.stop()
                self.observer.join(timeout=5)
            signal.signal(signal.SIGTERM, previous_handler)
            close_archives()
        event(log, "stopped", **self.summary.counts)
        return self.summary


def _one_line(error: BaseException) -> str:
    """An error as one line for a reason: an OS error's text (its errno's words), else its message."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return " ".join(f"{type(error).__name__}: {error}".split())


def _write_new(dir_fd: int, name: str, text: str) -> str:
    """``name`` written, never over a file of that name (another watcher's reason for the same free name)."""
    write_text_at(dir_fd, name, text, replace=False)
    return name


def prune_kept(folder: Path, max_age: float) -> None:
    """Remove conversions kept for scans that never came back (deleted from the inbox while storage was down)."""
    now = time.time()
    with contextlib.suppress(OSError):
        for entry in os.scandir(folder):
            with contextlib.suppress(OSError):
                if entry.is_dir(follow_symlinks=False) and now - entry.stat(follow_symlinks=False).st_mtime > max_age:
                    shutil.rmtree(entry.path, ignore_errors=True)


def _sidecar_name(path: Path) -> str | None:
    """The scan's sidecar, moved along with it; a symlinked one is left where it is (never read)."""
    from .metadata import sidecar_path

    found = sidecar_path(path)
    return found.name if found is not None and inboxlib.is_regular(found) else None


def fault_point(name: str) -> None:
    from storage.faults import fault_point as pause

    pause(name)
