"""``digitize watch INBOX``: take each completely written scan, store it, then move it to done/ or failed/.

Events (inotify, or polling for SMB/NFS shares) only *nominate* files; a periodic rescan nominates what
events missed. The main loop takes one stable, complete file at a time, so the rules that keep scans
safe live in one place:

* a source is moved or deleted only after :func:`process_file` returned, i.e. after its objects were
  stored, read back and verified and the index committed;
* a claim in ``INBOX/.digitize/claims`` marks the file in progress; after a crash it is redone once
  (idempotent by content hash), and quarantined if it crashes the watcher again;
* storage trouble (or a bug of ours) keeps the file in the inbox and retries with backoff: the scan is fine;
* SIGTERM finishes the current file and exits; a second SIGTERM or Ctrl-C abandons it cleanly
  (temp files removed, source untouched, claim dropped).
"""

from __future__ import annotations

import logging
import queue
import signal
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from digitize.errors import ConfigError
from digitize.fsutil import atomic_write_text

from . import inbox as inboxlib
from .jobs import JobResult, Status, close_archives, process_file
from .journal import MAX_ATTEMPTS, Journal
from .logs import event
from .messages import error_report, explain

log = logging.getLogger("pipelines.watch")

INCOMPLETE_GRACE = 6  # stable this many times stable_seconds and still unreadable: quarantine it
RETRY_BACKOFF = (5.0, 10.0, 30.0, 60.0, 120.0, 300.0)  # storage down: wait, then try the file again
ONCE_STORAGE_TRIES = 4  # --once gives up (file left in the inbox) after this many storage failures


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

    def __post_init__(self) -> None:
        self.inbox = Path(self.inbox).absolute()  # events, walks and skip dirs must agree on one spelling
        self.done_dir = Path(self.done_dir).absolute() if self.done_dir else self.inbox / "done"
        self.failed_dir = Path(self.failed_dir).absolute() if self.failed_dir else self.inbox / "failed"
        if self.on_success not in ("move", "delete"):
            raise ConfigError(f"watch.on_success must be 'move' or 'delete', not {self.on_success!r}")
        if not self.inbox.is_dir():
            raise ConfigError(f"inbox {self.inbox} is not a directory")

    @classmethod
    def from_settings(cls, watch, inbox: str | Path | None, poll: float | None, once: bool) -> "WatchOptions":
        folder = inbox or watch.inbox
        if not folder:
            raise ConfigError("no inbox: give INBOX or set watch.inbox (DIGITIZE_WATCH_INBOX)")
        return cls(Path(folder), poll if poll is not None else watch.poll, watch.rescan, watch.stable_seconds,
                   watch.on_success, watch.done_dir or None, watch.failed_dir or None, once)

    @property
    def state_dir(self) -> Path:
        return self.inbox / inboxlib.STATE_DIR

    @property
    def skip_dirs(self) -> tuple[Path, ...]:
        return (self.done_dir, self.failed_dir, self.state_dir)


@dataclass
class _Pending:
    failures: int = 0  # storage or internal errors: either way the file itself is not at fault
    not_before: float = 0.0


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
    def __init__(self, opts: WatchOptions, settings, process: Callable[..., JobResult] = process_file):
        self.opts, self.settings, self.process = opts, settings, process
        self.journal = Journal(opts.state_dir)
        self.tracker = inboxlib.StabilityTracker(opts.stable_seconds)
        self.events: queue.SimpleQueue[str] = queue.SimpleQueue()
        self.pending: dict[Path, _Pending] = {}
        self.summary = WatchSummary()
        self.stopping = False

    # --- nominating -----------------------------------------------------------------------------

    def _relative(self, path: Path) -> Path | None:
        if any(path.is_relative_to(d) for d in self.opts.skip_dirs) or not path.is_relative_to(self.opts.inbox):
            return None
        relative = path.relative_to(self.opts.inbox)
        return relative if inboxlib.is_scan(relative) else None

    def _nominate(self, path: Path) -> None:
        if path not in self.pending and self._relative(path) is not None:
            self.pending[path] = _Pending()

    def _rescan(self) -> None:
        for path in inboxlib.iter_scans(self.opts.inbox, self.opts.skip_dirs):
            self._nominate(path)

    def _drain_events(self) -> None:
        while True:
            try:
                self._nominate(Path(self.events.get_nowait()))
            except queue.Empty:
                return

    # --- outcomes ---------------------------------------------------------------------------------

    def _finish(self, path: Path, relative: Path) -> None:
        if self.opts.on_success == "delete":
            inboxlib.delete_with_sidecar(path)
            return
        target = inboxlib.free_name(self.opts.done_dir / relative.parent, relative.name)
        inboxlib.move_with_sidecar(path, target)

    def _quarantine(self, path: Path, relative: Path, kinds: tuple[str, ...], detail: str) -> None:
        target = inboxlib.free_name(self.opts.failed_dir / relative.parent, relative.name)
        when = datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")
        text = error_report(relative.name, explain(kinds), detail, when)
        atomic_write_text(target.with_name(target.name + inboxlib.ERROR_SUFFIX), text)
        inboxlib.move_with_sidecar(path, target)
        self.summary.add("failed")
        event(log, "quarantined", logging.WARNING, file=str(relative), to=str(target), reason=detail)

    def _done(self, path: Path, relative: Path) -> None:
        self.pending.pop(path, None)
        self.tracker.forget(path)
        self.journal.release(str(relative))

    def _defer(self, path: Path, relative: Path, result: JobResult) -> None:
        pending = self.pending[path]
        pending.failures += 1
        wait = RETRY_BACKOFF[min(pending.failures, len(RETRY_BACKOFF)) - 1]
        pending.not_before = time.monotonic() + wait
        self.journal.release(str(relative))
        event(log, "deferred", logging.WARNING, file=str(relative), retry_in=wait, reason=result.reason)
        if self.opts.once and (result.internal or pending.failures >= ONCE_STORAGE_TRIES):
            self.summary.deferred.append(result)
            self.pending.pop(path, None)

    # --- taking one file ----------------------------------------------------------------------------

    def _take(self, path: Path, relative: Path) -> None:
        previous = self.journal.get(str(relative))
        if previous is not None and previous.attempts >= MAX_ATTEMPTS:
            self._quarantine(path, relative, ("crashed",), f"{previous.attempts} attempts were interrupted")
            self._done(path, relative)
            return
        self.journal.claim(str(relative))
        event(log, "taken", file=str(relative), redo=previous is not None)
        try:
            result = self.process(path, self.settings, None, root=self.opts.inbox)
        except BaseException:
            self.journal.release(str(relative))  # abandoned on purpose: not a crash
            event(log, "abandoned", logging.WARNING, file=str(relative))
            raise
        if result.retryable or result.internal:
            self._defer(path, relative, result)
            return
        if result.status is Status.failed:
            self._quarantine(path, relative, result.error_kinds, result.reason)
        else:
            self._finish(path, relative)
            self.summary.add(str(result.status))
            event(log, str(result.status), file=str(relative), sha256=result.sha256, pages=result.pages,
                  seconds=round(result.seconds, 2), reason=result.reason,
                  cases=",".join(sorted({d.case_id or "-" for d in result.documents})))
        self._done(path, relative)

    def _ready(self, path: Path, now: float) -> bool:
        """Stable and complete; an unreadable file that stays unchanged long enough is quarantined."""
        if not path.exists():
            self.pending.pop(path, None)
            self.tracker.forget(path)
            return False
        if now < self.pending[path].not_before or not self.tracker.is_stable(path, now):
            return False
        problem = inboxlib.completeness_problem(path, self.settings.convert)
        if problem is None:
            return True
        st = path.stat()
        unchanged = self.tracker.observe(path, st.st_size, st.st_mtime_ns, now)
        if unchanged >= INCOMPLETE_GRACE * max(self.opts.stable_seconds, 1.0):
            relative = path.relative_to(self.opts.inbox)
            self._quarantine(path, relative, problem.kinds, problem.message)
            self._done(path, relative)
        return False

    def _work(self) -> None:
        for path in sorted(self.pending):
            if self.stopping:
                return
            if path in self.pending and self._ready(path, time.monotonic()):
                self._take(path, path.relative_to(self.opts.inbox))

    # --- the loop -----------------------------------------------------------------------------------

    def _recover(self) -> None:
        """Claims left by a crash: redo their files first; a claim whose file was already moved is stale."""
        for claim in self.journal.pending():
            path = self.opts.inbox / claim.path
            if not path.exists():
                self.journal.release(claim.path)  # crashed after the move, before the release
                continue
            event(log, "recovering", file=claim.path, attempts=claim.attempts)
            self._nominate(path)

    def _on_sigterm(self, signum, frame) -> None:
        if self.stopping:
            raise KeyboardInterrupt  # second request: abandon the current file
        self.stopping = True
        event(log, "stopping", reason="SIGTERM: finishing the current file")

    def run(self) -> WatchSummary:
        self._recover()
        previous_handler = signal.signal(signal.SIGTERM, self._on_sigterm)
        observer = None if self.opts.once else _observer(self.opts, self.events.put)
        tick = min(0.5, max(0.05, self.opts.stable_seconds / 4))
        event(log, "watching", inbox=str(self.opts.inbox), mode="once" if self.opts.once else
              (f"poll {self.opts.poll}s" if self.opts.poll > 0 else "inotify"))
        try:
            if observer is not None:
                observer.start()
            next_rescan = 0.0
            while not self.stopping:
                if time.monotonic() >= next_rescan:
                    self._rescan()
                    next_rescan = time.monotonic() + self.opts.rescan
                self._drain_events()
                self._work()
                if self.opts.once and not self.pending:
                    break
                time.sleep(tick)
        finally:
            if observer is not None:
                observer.stop()
                observer.join(timeout=5)
            signal.signal(signal.SIGTERM, previous_handler)
            close_archives()
        event(log, "stopped", **self.summary.counts)
        return self.summary
