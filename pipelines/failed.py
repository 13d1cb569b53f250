"""The watch inbox's ``failed/`` folder as the scanning desk sees it: each quarantined scan, its reason, the
agencies it can be attributed to, and taking one out to be linked to a case and converted again.

Everything in that folder was written by people who share the inbox, so all of it is untrusted: folders and
files are opened by descriptor with O_NOFOLLOW (a symlink is skipped, never followed), only regular files
are read, reason and sidecar files are read up to a small cap, their text is shown only after control
characters are removed, and a file is named to the browser by an opaque reference (a hash of its place),
never by a path the client could send back: :func:`take` finds the file again by listing the folder.

Attribution (who may see a failed file) uses the case IDs its clues name, as ``watch`` would have read
them: the folder ``<case-id>/``, a case ID in the file name, and the sidecar ``NAME.json`` (its case ID
and agency code). The set of agencies named decides; a file naming none, or whose sidecar cannot be
read, is *unattributable* (storage.access shows it to archivists and admins only).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import secrets
import stat
import threading
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import BinaryIO, Callable

from digitize.errors import BadArgsError, FileAccessError, NotFoundError
from digitize.fsutil import fit_name, fsync_path
from digitize.identifiers import parse_agency_code

from . import inbox as inboxlib
from . import metadata

MAX_FILES = 500  # listed per desk page (of those the viewer may see); the rest can still be retried
MAX_ENTRIES = 20_000  # entries (files, folders, litter) one listing looks at, over all folders
CACHE_SECONDS = 5.0  # a listing is reused this long by the page and its forms
MAX_DEPTH = 6  # case folders below failed/ (watch keeps the inbox's own folders)
REASON_MAX_BYTES = 16 * 1024  # a NAME.error.txt is ~1 KB; more is not a reason watch wrote
SIDECAR_MAX_BYTES = 64 * 1024  # larger sidecars are not read here: the file is then unattributable
TEXT_MAX_CHARS = 600
# sidecar fields a retry never carries: who scanned it is the officer retrying (the upload says so), and its
# place in a dossier is given by the case chosen at the desk, not by whoever wrote the file
NEVER_CARRIED = ("name", "scanned_by", "sequence")
TAKING = ".taking-"  # a scan in the middle of being taken: .taking-<16 hex>-<its name>
_TAKING_HEX = 16
INTERRUPTED_VI = "Lần lấy lại trước bị gián đoạn và tên tệp đã bị tệp khác dùng; tệp được giữ dưới tên ẩn này."
INTERRUPTED_EN = ("An earlier retry was interrupted and the file's name was taken meanwhile; it was kept under "
                  "this hidden name.")
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


@dataclass(frozen=True)
class FailedFile:
    ref: str  # opaque: the first 32 hex digits of SHA-256 of its place under failed/ and its identity
    parts: tuple[str, ...]  # its place under failed/, as the file system spells it (never shown raw)
    size: int
    reason_vi: str
    reason_en: str
    detail: str
    when: str
    case_ids: tuple[str, ...]  # named by its folder, file name or sidecar
    agencies: tuple[str, ...]  # the agency codes those (and the sidecar's agency) name; () = unattributable
    identity: tuple[int, ...] = ()  # (device, inode, size, mtime ns) when listed: take() takes only that file

    @property
    def relative(self) -> str:
        """Its place under failed/, printable (for pages and events)."""
        return printable("/".join(self.parts), 300)

    def reason(self, lang: str) -> str:
        return (self.reason_en if lang == "en" else self.reason_vi) or self.reason_vi or self.reason_en


def printable(text: str, limit: int = TEXT_MAX_CHARS) -> str:
    """One line without control or format characters (no terminal escapes, no bidi overrides) nor
    undecodable bytes, at most ``limit`` characters."""
    text = unicodedata.normalize("NFC", text.encode("utf-8", "replace").decode("utf-8", "replace"))
    text = " ".join("".join(c if unicodedata.category(c)[0] != "C" else " " for c in text).split())
    return text[:limit] + ("…" if len(text) > limit else "")


def failed_dir(settings) -> Path | None:
    """The configured watch inbox's failed/ folder, or None when no inbox is configured."""
    watch = settings.watch
    if watch.failed_dir:
        return Path(watch.failed_dir).absolute()
    return Path(watch.inbox).absolute() / "failed" if watch.inbox else None


def _identity(info: os.stat_result) -> tuple[int, ...]:
    return info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns


def _ref(parts: tuple[str, ...], identity: tuple[int, ...]) -> str:
    """A file swapped or changed after the desk showed it gets another ref: the old one names nothing."""
    place = os.fsencode("/".join(parts)) + b"\0" + ":".join(map(str, identity)).encode()
    return hashlib.sha256(place).hexdigest()[:32]


def _read_small(dir_fd: int, name: str, cap: int) -> bytes | None:
    """A regular file's first bytes (None: absent, a link, not regular, unreadable or over ``cap``)."""
    try:
        fd = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > cap:
            return None
        data = os.read(fd, cap + 1)
        return data if len(data) <= cap else None
    except OSError:
        return None
    finally:
        os.close(fd)


def _reason_fields(data: bytes | None) -> tuple[str, str, str, str]:
    """(reason in Vietnamese, in English, technical detail, time) from a NAME.error.txt (messages.error_report)."""
    if data is None:
        return "", "", "(no reason file)", ""
    found: dict[str, str] = {}
    labels = {"Lý do:": "vi", "Reason:": "en", "Chi tiết kỹ thuật / Technical detail:": "detail",
              "Thời điểm / Time:": "when"}
    lines = data.decode("utf-8", "replace").splitlines()
    for line in lines:
        for label, key in labels.items():
            if line.startswith(label) and key not in found:
                found[key] = printable(line[len(label):])
    if not found:  # not written by watch: its first line, as text
        return "", "", printable(lines[0] if lines else ""), ""
    return found.get("vi", ""), found.get("en", ""), found.get("detail", ""), found.get("when", "")[:40]


def _sidecar(dir_fd: int, name: str) -> tuple[bool, dict | None]:
    """(present, validated fields); fields None when present but unreadable, oversized or invalid."""
    for candidate in inboxlib.sidecar_names(name):
        try:
            os.stat(candidate, dir_fd=dir_fd, follow_symlinks=False)
        except OSError:
            continue
        data = _read_small(dir_fd, candidate, SIDECAR_MAX_BYTES)
        try:
            mapping = json.loads(data.decode("utf-8-sig")) if data is not None else None
        except (UnicodeDecodeError, ValueError, RecursionError):
            mapping = None
        if not isinstance(mapping, dict):
            return True, None
        clue, problems = metadata.clue_from_mapping("sidecar", mapping)
        return True, None if problems else {"name": candidate, **clue.values}
    return False, {}


def _attribution(parts: tuple[str, ...], sidecar: dict | None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(case IDs, agency codes) the file's clues name; agencies () when unattributable."""
    relative = PurePath(*parts)
    clues = [metadata.folder_clue(relative), metadata.filename_clue(relative)]
    case_ids = {c.values["case_id"] for c in clues if c is not None}
    if sidecar is None:
        return tuple(sorted(case_ids)), ()
    if sidecar.get("case_id"):
        case_ids.add(sidecar["case_id"])
    agencies = {case_id.rsplit("-", 2)[0] for case_id in case_ids}
    if sidecar.get("agency"):
        try:
            agencies.add(parse_agency_code(sidecar["agency"]).code)
        except BadArgsError:
            pass  # an agency's name, not a code: it attributes nothing
    return tuple(sorted(case_ids)), tuple(sorted(agencies)) if case_ids or agencies else ()


def place_case_id(item: FailedFile) -> str | None:
    """The case ID the scan's place under failed/ names (its folder, else its file name), as watch read it there:
    kept with a retried scan, whose copy is named scan.<ext> (review rev17desk M4); its sidecar's wins over it."""
    relative = PurePath(*item.parts[:-1], taken_name(item.parts[-1]) or item.parts[-1])
    clue = metadata.folder_clue(relative) or metadata.filename_clue(relative)
    return clue.values["case_id"] if clue else None


class _Budget:
    """Entries (files, folders, litter) one listing may look at: a folder of junk cannot make it endless."""

    def __init__(self, entries: int):
        self.left = entries


def _walk(dir_fd: int, parts: tuple[str, ...], found: list[FailedFile], budget: _Budget) -> None:
    try:
        with os.scandir(dir_fd) as listing:  # streamed: a huge folder is read only as far as the budget goes
            entries = sorted(itertools.islice(listing, budget.left), key=lambda e: e.name)
    except OSError:
        return
    budget.left -= len(entries)
    for entry in entries:
        name = entry.name
        original = taken_name(name)
        if original is not None:
            _interrupted(dir_fd, entry, parts, original, found)
            continue
        if inboxlib.is_junk(name) or name.lower().endswith(inboxlib.SIDECAR_SUFFIX):
            continue  # hidden, scanner litter, reasons (NAME.error.txt) and sidecars
        try:
            info = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if stat.S_ISDIR(info.st_mode) and len(parts) < MAX_DEPTH and budget.left > 0:
            try:
                child = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
            except OSError:
                continue
            try:
                _walk(child, (*parts, name), found, budget)
            finally:
                os.close(child)
        elif stat.S_ISREG(info.st_mode):
            here = (*parts, name)
            present, sidecar = _sidecar(dir_fd, name)
            case_ids, agencies = _attribution(here, sidecar)
            vi, en, detail, when = _reason_fields(_read_small(dir_fd, name + inboxlib.ERROR_SUFFIX,
                                                              REASON_MAX_BYTES))
            identity = _identity(info)
            found.append(FailedFile(_ref(here, identity), here, info.st_size, vi, en, detail, when, case_ids,
                                    agencies, identity))


def taken_name(name: str) -> str | None:
    """The scan's own name if ``name`` is a private name :func:`take` gave it, else None."""
    if not name.startswith(TAKING):
        return None
    tag, dash, original = name[len(TAKING):].partition("-")
    ok = dash and len(tag) == _TAKING_HEX and all(c in "0123456789abcdef" for c in tag) and original
    return original if ok else None


def _interrupted(dir_fd: int, entry: os.DirEntry, parts: tuple[str, ...], original: str,
                 found: list[FailedFile]) -> None:
    """A scan whose retry was interrupted after its name was retaken: listed, never lost from sight. Its sidecar
    and reason stayed with the name, so nothing but its folder and own name attribute it."""
    try:
        info = entry.stat(follow_symlinks=False)
    except OSError:
        return
    if not stat.S_ISREG(info.st_mode):
        return
    here = (*parts, entry.name)
    case_ids, agencies = _attribution((*parts, original), {})  # as a scan without a sidecar
    identity = _identity(info)
    found.append(FailedFile(_ref(here, identity), here, info.st_size, INTERRUPTED_VI, INTERRUPTED_EN,
                            f"interrupted retry of {printable(original)}", "", case_ids, agencies, identity))


def _open_root(folder: Path) -> int | None:
    try:
        return os.open(folder, _DIR_FLAGS)
    except OSError:
        return None  # not made yet (no file ever failed), or a symlink: nothing to show


_cache: dict[str, tuple[float, list[FailedFile]]] = {}
_cache_lock = threading.Lock()


def _scan(folder: Path | None) -> list[FailedFile]:
    """Every failed scan under ``folder`` that MAX_ENTRIES entries reach, kept CACHE_SECONDS: the desk page
    and its retry forms read it again and again, and each walk opens three files per scan."""
    if folder is None:
        return []
    key, now = str(folder), time.monotonic()
    with _cache_lock:
        cached = _cache.get(key)
        if cached is not None and now - cached[0] < CACHE_SECONDS:
            return cached[1]
    found: list[FailedFile] = []
    root = _open_root(folder)
    if root is not None:
        try:
            _walk(root, (), found, _Budget(MAX_ENTRIES))
        finally:
            os.close(root)
    with _cache_lock:
        _cache[key] = (now, found)
    return found


def forget(folder: Path | None) -> None:
    """Drop the cached listing (a file was taken out of it)."""
    with _cache_lock:
        _cache.pop(str(folder), None)


def list_failed(folder: Path | None) -> list[FailedFile]:
    """Every failed scan under ``folder`` the walk reaches, with its reason and attribution. Not capped at
    MAX_FILES: the page caps what the viewer may see (storage.access filters first, so others' files never
    hide one's own), and a file past the page's cap can still be retried."""
    return list(_scan(folder))


def take(folder: Path, item: FailedFile, receive: Callable[[BinaryIO, str], Path], keep_case_id: bool,
         durable: Callable[[], None]) -> bool:
    """Hand the failed scan to ``receive(stream, name)`` (the upload queue copies it into a private job
    folder and returns the copy's path), put its valid sidecar beside the copy (without NEVER_CARRIED, nor
    its case ID unless ``keep_case_id``: the case chosen at the desk wins), make both durable, call
    ``durable()`` (the queue writes and syncs the job's state, so a crash from here on leaves a job it
    resumes), and only then remove the scan, its reason and its sidecar (valid or not) from failed/.
    True if the sidecar came along.

    The scan is first renamed to a private name beside it, so the file checked, copied and removed is the
    one listed (same device, inode, size and mtime, before and after the copy, and no second hard link
    through which it could change) and never a file someone put at its name meanwhile. On any failure it
    gets its name back (unless that name was taken meanwhile: then it waits under the private name).
    """
    root = _open_root(folder)
    if root is None:
        raise NotFoundError("failed file not found")
    parent = -1
    try:
        parent = root if len(item.parts) == 1 else _descend(root, item.parts[:-1])
        name = item.parts[-1]
        own = taken_name(name) or name  # an interrupted retry listed again: its own name for the job
        private = fit_name(f"{TAKING}{secrets.token_hex(_TAKING_HEX // 2)}-{own}")
        try:
            os.rename(name, private, src_dir_fd=parent, dst_dir_fd=parent)
        except FileNotFoundError:
            raise NotFoundError("failed file not found") from None
        except OSError as e:  # EACCES, EROFS...: the file is there, the portal may not move it (rev17desk L3)
            raise FileAccessError(f"cannot take the failed file out of failed/: {e.strerror} (the portal must "
                                  "be able to write the watch inbox's failed/ folder)") from None
        try:
            copy = _copy_checked(parent, private, own, item, receive)
            _, sidecar = _sidecar(parent, name)
            carried = bool(sidecar)
            if carried:
                dropped = NEVER_CARRIED + (() if keep_case_id else ("case_id",))
                fields = {k: v for k, v in sidecar.items() if k not in dropped}
                _write_durable(copy.with_suffix(".json"), json.dumps(fields, ensure_ascii=False).encode("utf-8"))
            fsync_path(copy)
            fsync_path(copy.parent)
            durable()
        except BaseException:
            _put_back(parent, private, name)
            raise
        for leftover in (private, name + inboxlib.ERROR_SUFFIX, *inboxlib.sidecar_names(name)):
            try:
                os.unlink(leftover, dir_fd=parent)
            except OSError:
                pass
        return carried
    finally:
        if parent not in (-1, root):
            os.close(parent)
        os.close(root)
        forget(folder)


def _copy_checked(parent: int, private: str, name: str, item: FailedFile,
                  receive: Callable[[BinaryIO, str], Path]) -> Path:
    try:
        fd = os.open(private, _FILE_FLAGS, dir_fd=parent)
    except OSError:
        raise NotFoundError("failed file not found") from None  # a symlink put there: never followed
    with os.fdopen(fd, "rb") as stream:
        info = os.fstat(stream.fileno())
        if not stat.S_ISREG(info.st_mode) or _identity(info) != item.identity:
            raise NotFoundError("the failed file changed since the desk was shown: reload the page")
        if info.st_nlink != 1:
            raise NotFoundError("the failed file has another hard link: not taken")
        os.set_blocking(stream.fileno(), True)
        copy = receive(stream, name)
        if _identity(os.fstat(stream.fileno())) != item.identity:
            raise NotFoundError("the failed file changed while it was copied: reload the page")
    return copy


def _put_back(parent: int, private: str, name: str) -> None:
    """The scan under its own name again, never over a file put there meanwhile."""
    try:
        os.link(private, name, src_dir_fd=parent, dst_dir_fd=parent, follow_symlinks=False)
    except OSError:
        return  # the name was taken: it stays under the private name, hidden but not lost
    try:
        os.unlink(private, dir_fd=parent)
    except OSError:
        pass


def _descend(root: int, parts: tuple[str, ...]) -> int:
    fd = os.dup(root)
    try:
        for part in parts:
            child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = child
        return fd
    except OSError:
        os.close(fd)
        raise NotFoundError("failed file not found") from None


def _write_durable(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
