"""Inbox policies: which files are scans, when a scan is completely written, and where it goes afterwards.

A scanner or a file copy over SMB writes a file in pieces; taking it early would store half a dossier.
A file is taken only when its size and mtime have not changed for ``stable_seconds`` *and* it looks
complete (end markers present) *and* the converter's reader can open it.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path, PurePath

from digitize.errors import DigitizeError

STATE_DIR = ".digitize"  # claims journal inside the inbox
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


def iter_scans(root: Path, skip: tuple[Path, ...] = ()) -> list[Path]:
    """Candidate files under ``root``, sorted (case folders, then sequence numbers), skipping ``skip`` dirs."""
    found: list[Path] = []
    skip_resolved = {s.resolve() for s in skip}
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not is_junk(d) and (here / d).resolve() not in skip_resolved)
        for name in sorted(filenames):
            path = here / name
            if is_scan(path.relative_to(root)):
                found.append(path)
    return found


def _tail(path: Path) -> bytes:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - _TAIL_BYTES))
        return f.read()


@dataclass(frozen=True)
class Problem:
    """Why a file is not (yet) a readable scan; ``kinds`` selects the clerk's explanation."""

    kinds: tuple[str, ...]
    message: str


def completeness_problem(path: Path, limits) -> Problem | None:
    """Why ``path`` is not (yet) a complete, readable scan, or None when it is.

    ``limits`` is anything with ``max_pixels``/``default_dpi`` (ConvertOptions or ConvertSettings).
    """
    from digitize.sources import open_source, sniff

    from .messages import error_kinds

    try:
        if path.stat().st_size == 0:
            return Problem(("incomplete",), "file is empty (0 bytes)")
        kind = sniff(path)
        marker = _END_MARKERS.get(kind)
        if marker and marker not in _tail(path):
            return Problem(("incomplete",), f"{kind.upper()} end marker missing: the file is incomplete or truncated")
        with open_source(path, limits) as src:
            if kind == "tiff":
                src.page(src.page_count - 1)  # frames are written in order: the last one proves the rest
    except DigitizeError as e:
        return Problem(error_kinds(e), str(e))
    except OSError as e:
        return Problem(("FileAccessError",), f"cannot read the file: {e.strerror}")
    return None


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
            st = path.stat()
        except FileNotFoundError:
            self.forget(path)
            return False
        return self.observe(path, st.st_size, st.st_mtime_ns, now) >= self.stable_seconds

    def forget(self, path: Path) -> None:
        self._seen.pop(path, None)


def free_name(directory: Path, name: str) -> Path:
    """``directory/name``, or ``name.1``-style variants if taken: done/ and failed/ never overwrite."""
    target = directory / name
    stem, suffix, n = Path(name).stem, Path(name).suffix, 1
    while target.exists() or target.with_name(target.name + ERROR_SUFFIX).exists():
        target = directory / f"{stem}.{n}{suffix}"
        n += 1
    return target


def move_with_sidecar(source: Path, target: Path) -> Path:
    """Move a scan (and its sidecar, if any) to ``target``; same filesystem gives an atomic rename."""
    from .metadata import sidecar_path

    sidecar = sidecar_path(source)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(source, target)
    if sidecar is not None:
        shutil.move(sidecar, target.with_name(target.name + SIDECAR_SUFFIX))
    return target


def delete_with_sidecar(source: Path) -> None:
    from .metadata import sidecar_path

    sidecar = sidecar_path(source)
    source.unlink()
    if sidecar is not None:
        sidecar.unlink()
