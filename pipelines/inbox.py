"""Inbox policies: which files are scans, when a scan is completely written, and where it goes afterwards.

A scanner or a file copy over SMB writes a file in pieces; taking it early would store half a dossier.
A file is taken only when its size and mtime have not changed for ``stable_seconds`` *and* it looks
complete (end markers present) *and* the converter's reader can open it.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Callable

from digitize.errors import DigitizeError
from digitize.wire import carried
from digitize.fsutil import exists_at, fit_name, move_at, open_regular

STATE_DIR = ".digitize"  # the watchers' work folders (claims) inside the inbox
SIDECAR_SUFFIX = ".json"
ERROR_SUFFIX = ".error.txt"
_JUNK_NAMES = {"thumbs.db", "desktop.ini", ".ds_store"}
_JUNK_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", ".swp", ".lock", ERROR_SUFFIX)
SCAN_SUFFIXES = frozenset({".pdf", ".tif", ".tiff", ".jpg", ".jpeg", ".png"})
_TAIL_BYTES = 4096
_END_MARKERS = {"pdf": b"%%EOF", "jpeg": b"\xff\xd9", "png": b"IEND"}


def is_junk(name: str) -> bool:
    """Scanner and OS litter: hidden files, Office lock files, partial downloads, thumbnails."""
    lower = name.lower()
    return (name.startswith((".", "~$", "~")) or lower in _JUNK_NAMES or lower.endswith(_JUNK_SUFFIXES))


def is_scan(relative: PurePath) -> bool:
    """A candidate input: not junk, not inside a hidden folder, not a sidecar."""
    if any(is_junk(part) for part in relative.parts):
        return False
    return not relative.name.lower().endswith(SIDECAR_SUFFIX)


def has_scan_suffix(path: PurePath) -> bool:
    """Batch trees hold READMEs, spreadsheets and notes too; only scan file types are taken by suffix."""
    return path.suffix.lower() in SCAN_SUFFIXES


def is_regular(path: Path) -> bool:
    """A regular file itself, not a symlink to one (other people's links are never followed)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def iter_scans(root: Path, skip: tuple[Path, ...] = (), links: list[Path] | None = None) -> list[Path]:
    """Regular candidate files under ``root``, sorted (case folders, then sequence numbers), skipping
    ``skip`` dirs. Symlinked folders are not entered; symlinks and other non-regular entries are
    never returned (appended to ``links`` when given, so a caller can say why they were left)."""
    found: list[Path] = []
    skip_abs = {Path(s).absolute() for s in skip}
    for dirpath, dirnames, filenames in os.walk(root):  # followlinks=False: a linked folder is not entered
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not is_junk(d) and (here / d) not in skip_abs
                             and not os.path.islink(here / d))
        for name in sorted(filenames):
            path = here / name
            if not is_scan(path.relative_to(root)):
                continue
            if is_regular(path):
                found.append(path)
            elif links is not None:
                links.append(path)
    return found


@carried  # the probe's answer from its page worker
@dataclass(frozen=True)
class Problem:
    """Why a file is not (yet) a readable scan; ``kinds`` selects the clerk's explanation."""

    kinds: tuple[str, ...]
    message: str


def completeness_problem(path: Path, limits, root: Path | None = None) -> Problem | None:
    """Why ``path`` is not (yet) a complete, readable scan, or None when it is.

    ``limits`` is anything with ``max_pixels``/``default_dpi`` (ConvertOptions or ConvertSettings; its
    ``max_input_mb`` and ``max_pages`` are checked too, from the descriptor's size and in the probe);
    ``root`` is the inbox (no symlinked folder below it is followed). The file is opened once, with
    no link followed (a symlink or FIFO is refused before anything reads it): size, first bytes and
    tail come from that descriptor, never from the name again, which a clerk may swap for a link
    to a FIFO (the watcher would block forever) or to a device.
    """
    from digitize.sources import check_input_size, sniff_head

    try:
        fd = open_regular(path, root)
        try:
            info = os.fstat(fd)
            if info.st_size == 0:
                return Problem(("incomplete",), "file is empty (0 bytes)")
            check_input_size(fd, input_limit_mb(limits), path.name, info)  # nothing more is read of a huge file
            kind = sniff_head(os.pread(fd, 1024, 0), path.name)
            marker = _END_MARKERS.get(kind)
            if marker and marker not in os.pread(fd, _TAIL_BYTES, max(0, info.st_size - _TAIL_BYTES)):
                return Problem(("incomplete",), f"{kind.upper()} end marker missing: the file is incomplete or truncated")
        finally:
            os.close(fd)
        return _probe_in_worker(path, limits, root, (info.st_dev, info.st_ino))
    except Exception as e:  # noqa: BLE001 - whatever the reason, it is this file's problem
        return _problem(e)


def input_limit_mb(limits) -> int:
    """``convert.max_input_mb`` from ConvertSettings (ConvertOptions has none: the built-in default)."""
    from digitize.config import ConvertSettings

    return int(getattr(limits, "max_input_mb", ConvertSettings.max_input_mb))


def _probe(path: str, limits, root: str | None = None, identity: tuple[int, int] | None = None) -> Problem | None:
    """In a page worker: open the scan as the converter will; a TIFF's last frame proves the frames before it.

    The worker opens the name again with no link followed, checks it is the file the watcher judged
    (device and inode) and reads only through that descriptor (:func:`pinned_path`)."""
    from digitize.fsutil import pinned_path
    from digitize.sources import open_source, sniff

    try:
        fd = open_regular(Path(path), None if root is None else Path(root))
        try:
            info = os.fstat(fd)
            if identity is not None and (info.st_dev, info.st_ino) != tuple(identity):
                return Problem(("incomplete",), "the file was replaced while it was being checked")
            with pinned_path(fd, Path(path).name) as pinned, open_source(pinned, limits) as src:
                if sniff(pinned) == "tiff":
                    src.page(src.page_count - 1)  # frames are written in order: the last one proves the rest
        finally:
            os.close(fd)
    except Exception as e:  # noqa: BLE001 - whatever the reason, it is this file's problem
        return _problem(e)
    return None


def _problem(error: Exception) -> Problem:
    """An error met while judging a scan, as the file's problem (a reader's bug on a damaged file too)."""
    from .messages import error_kinds

    if isinstance(error, DigitizeError):
        return Problem(error_kinds(error), str(error))
    if isinstance(error, OSError):
        return os_problem(error)
    return Problem(("InputError",), f"cannot read the file: {type(error).__name__}: {' '.join(str(error).split())}")


def _probe_in_worker(path: Path, limits, root: Path | None = None,
                     identity: tuple[int, int] | None = None) -> Problem | None:
    """The probe runs in a forked, memory-capped page worker killed past a deadline: a decompression
    bomb or a decoder crash in a file still being judged costs that worker, never the watcher."""
    from digitize import imaging, pageworkers
    from digitize.convert import page_deadline

    imaging.single_threaded()  # no OpenCV thread pool may exist across the fork
    return pageworkers.run(_probe, [(str(path), limits, None if root is None else str(root), identity)], 1,
                           page_deadline(limits),
                           memory_mb=getattr(limits, "max_memory_mb", 0))[0]


def os_problem(error: OSError) -> Problem:
    """An OS error reading a scan: a permission problem is said as such, never as a damaged file."""
    if error.errno in (errno.EACCES, errno.EPERM):
        return Problem(("PermissionError", "FileAccessError"),
                       f"permission denied: this account (uid {os.geteuid()}) may not read the file")
    return Problem(("FileAccessError",), f"cannot read the file: {error.strerror}")


@dataclass
class _Seen:
    size: int
    mtime_ns: int
    since: float


class StabilityTracker:
    """Remembers each file's size and mtime; a file is stable when both held still long enough."""

    def __init__(self, stable_seconds: float):
        self.stable_seconds = stable_seconds
        self._seen: dict[Path, _Seen] = {}

    def observe(self, path: Path, size: int, mtime_ns: int, now: float) -> float:
        """Seconds the file has been unchanged (0 when it just changed or is new)."""
        seen = self._seen.get(path)
        if seen is None or (seen.size, seen.mtime_ns) != (size, mtime_ns):
            self._seen[path] = _Seen(size, mtime_ns, now)
            return 0.0
        return now - seen.since

    def is_stable(self, path: Path, now: float) -> bool:
        try:
            st = path.lstat()
        except FileNotFoundError:
            self.forget(path)
            return False
        return self.observe(path, st.st_size, st.st_mtime_ns, now) >= self.stable_seconds

    def forget(self, path: Path) -> None:
        self._seen.pop(path, None)


def sidecar_names(name: str) -> list[str]:
    """The names a sidecar of the file ``name`` may have: ``NAME.json`` with the suffix replaced, or added."""
    return [c for c in (str(PurePath(name).with_suffix(SIDECAR_SUFFIX)), name + SIDECAR_SUFFIX) if c != name]


def free_name(dir_fd: int, name: str, skip: set[str] | frozenset[str] = frozenset()) -> str:
    """``name``, or ``name.1``-style variants if taken (or in ``skip``), in the folder ``dir_fd``: done/ and
    failed/ never overwrite. Short enough that ``NAME.error.txt`` and ``NAME.json`` fit the file system's limit.
    A name whose sidecar names are taken is taken too (review hard15 L8): a scan without a sidecar must not land
    beside a sidecar left there alone, which would then pass for its own (on the desk, in a retry).
    Only a guess: another watcher may take it before the move; :func:`move_free` moves without replacing."""
    candidate = fit_name(name, len(ERROR_SUFFIX.encode()))
    stem, suffix, n = Path(candidate).stem, Path(candidate).suffix, 1
    while candidate in skip or exists_at(dir_fd, candidate) or exists_at(dir_fd, candidate + ERROR_SUFFIX) or \
            any(_taken(dir_fd, c) for c in sidecar_names(candidate)):
        candidate = fit_name(f"{stem}.{n}{suffix}", len(ERROR_SUFFIX.encode()))
        n += 1
    return candidate


def _taken(dir_fd: int, name: str) -> bool:
    try:
        return exists_at(dir_fd, name)
    except OSError:  # ENAMETOOLONG: a name near NAME_MAX has no room for ".json", so no such sidecar
        return False


MOVE_TRIES = 1000  # names taken under our feet, one after another, before a move gives up


def move_free(src_fd: int, name: str, dst_fd: int, wanted: str, sidecar: str = "",
              sidecar_name: Callable[[str], str] | None = None,
              before: Callable[[int, str], str | None] | None = None,
              chosen: Callable[[str, str], None] | None = None) -> str:
    """Move ``src_fd/name`` to ``dst_fd/<free variant of wanted>`` and return the name used; never over a file.

    Two watchers (or a give-back and a clerk) may pick the same free name at once: each step below fails
    rather than replaces (digitize.fsutil.move_at), what this call made is undone and the next name tried.
    ``before(dst_fd, chosen)`` writes a companion file first without replacing (the reason in failed/) and
    returns its name; ``sidecar`` (in ``src_fd``) goes to ``sidecar_name(chosen)``. ``chosen(name, sidecar's
    name)`` is told each try's names first (a claim records them: claims.Claims.recorder).

    The scan moves LAST: until it has moved, the move has not happened. Any error (a name taken, a full
    disk, an SMB error) undoes the companion and the sidecar, so the pair stays together at the source;
    a crash in between leaves the sidecar at the destination and the scan in its claim, which is then not
    filed without it: the next watcher brings the sidecar back from where the claim recorded it
    (claims.Claims.rejoin), else quarantines the scan (watch.Watcher._separated). The other order would
    leave a lone scan that another watcher or a desk retry could file without its sidecar.
    """
    skip: set[str] = set()
    tell = chosen
    for _ in range(MOVE_TRIES):
        chosen = free_name(dst_fd, wanted, skip)
        made: list[Callable[[], None]] = []  # undo steps, last first
        target = sidecar_name(chosen) if sidecar_name else chosen + SIDECAR_SUFFIX
        try:
            if tell is not None:
                tell(chosen, target)
            if before is not None:
                written = before(dst_fd, chosen)
                if written:
                    made.append(lambda w=written: os.unlink(w, dir_fd=dst_fd))
            if sidecar and exists_at(src_fd, sidecar):
                move_at(src_fd, sidecar, dst_fd, target)
                made.append(lambda t=target: move_at(dst_fd, t, src_fd, sidecar))
            move_at(src_fd, name, dst_fd, chosen)
            return chosen
        except BaseException as e:
            _undo(made, chosen)
            if not isinstance(e, FileExistsError):
                raise
            skip.add(chosen)
    raise FileExistsError(errno.EEXIST, f"no free name for {wanted} after {MOVE_TRIES} tries")


def _undo(steps: list[Callable[[], None]], chosen: str) -> None:
    """Undo what a failed move made, last first; a step that fails is logged and the others still run
    (a sidecar left behind then keeps its scan from being filed, see :func:`move_free`)."""
    import logging

    from digitize.terminal import printable

    for step in reversed(steps):
        try:
            step()
        except OSError as e:
            logging.getLogger("pipelines.inbox").error("could not undo a move to %s: %s", printable(chosen),
                                                       printable(e))
