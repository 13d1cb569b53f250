"""Claims by rename: a watcher takes a scan by moving it into its own work folder inside the inbox.

``rename`` is atomic on one file system, a network share included: when two watchers (two scanning
PCs, or a restarted service while the old one lingers) reach for one file, exactly one rename
succeeds; the other finds the file gone and moves on. No lock server, no shared journal to race on.

    INBOX/.digitize/work/<pid>-<pid namespace>@<host>/   one folder per running watcher (its owner)
        alive                                             touched every minute while it runs
        <token>/claim.json                                where the file came from, attempts so far
        <token>/files/<path in the inbox>                 the scan (and its sidecar) while in hand
        <token>/files/<its folder>/.held                  a file recovery is checking (Claims._checked), or
                                                          one whose move back failed (kept: Claims.drop)

A watcher that dies leaves its folder behind; the next watcher to start adopts its claims (one
rename each, so two never adopt the same one) and redoes them: storage is idempotent by SHA-256,
so a redo never stores twice. A claim interrupted MAX_ATTEMPTS times is not tried again.
Every folder here is opened by descriptor, without following symlinks, and must belong to this
account (see :func:`digitize.fsutil.private_dir_check`): a clerk cannot redirect the watcher.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import secrets
import shutil
import stat
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path, PurePath

from digitize import fsutil
from digitize.errors import DigitizeError
from digitize.fsutil import check_name, private_dir_check, walk_dirs, write_text_at

from .inbox import ERROR_SUFFIX, move_free

log = logging.getLogger("pipelines.claims")

MAX_ATTEMPTS = 2  # the first try plus one redo after a crash
HEARTBEAT = 60.0  # seconds between touches of a running watcher's ``alive`` file
BEAT_JOIN = 10.0  # seconds close() waits for a touch under way (a hung disk: it closes anyway)
STALE_AFTER = 1800.0  # another machine's watcher whose ``alive`` is older than this is dead
_OWNER = re.compile(r"^(\d{1,10})-(\d{1,20})@(.+)$")
CLAIM_FILE = "claim.json"
FILES = "files"
HELD = ".held"  # a file being checked in the claim's folder (see Claims._checked); scans' names never start with "."
PLACES = ("inbox", "done", "failed")  # where a claim's files may go (Claim.moving["to"], Claim.held)
SIDECAR_MAX_BYTES = 1 << 20  # a larger "sidecar" is not hashed at a take: it is then never rejoined
REASON_MAX_BYTES = 64 * 1024  # a reason NAME.error.txt is ~1 KB


@dataclass
class Claim:
    relative: str  # where the scan was in the inbox
    attempts: int
    started: float
    token: str = ""
    sidecar: str = ""  # the sidecar's name, moved along with the scan
    # where a move out of the claim is taking the sidecar (saved before it moves, see record_move):
    # {"to": "done"|"failed"|"inbox", "name": the scan's new name, "sidecar": the sidecar's, "sha256": its hash,
    #  "size": its size}
    moving: dict | None = None
    # the sidecar's SHA-256, saved before the take's first rename: after a take killed between the scan's rename
    # and the sidecar's, only that very file is rejoined (review hard15 L6), never a new pair's NAME.json
    sidecar_sha256: str = ""
    held: list | None = None  # [where from (PLACES), its name there, why] while a file is checked in here (_checked)
    last_error: str = ""  # the last outcome that failed (e.g. a give-back), one line: the reason if it is filed


@contextlib.contextmanager
def _closing(fd: int):
    try:
        yield fd
    finally:
        os.close(fd)


def _sha256_at(dir_fd: int, name: str, cap: int | None = None) -> str:
    """SHA-256 of a regular file (no symlink followed); "" when it is larger than ``cap``."""
    with os.fdopen(fsutil.open_regular(name, dir_fd=dir_fd), "rb") as f:
        if cap is not None and os.fstat(f.fileno()).st_size > cap:
            return ""
        return fsutil.sha256_stream(f)


def _digest_at(dir_fd: int, name: str) -> tuple[str, int]:
    """SHA-256 and size of a regular file (no symlink followed)."""
    with os.fdopen(fsutil.open_regular(name, dir_fd=dir_fd), "rb") as f:
        return fsutil.sha256_stream(f), os.fstat(f.fileno()).st_size


def _is_copy(sha256: str, size: int | None = None, cap: int | None = None):
    """A test for :meth:`Claims._checked`: the file has this SHA-256 (and ``size``); one of another size, or
    larger than ``cap``, is not read at all (review2 hard16 L1: a clerk's multi-GB NAME.json is not hashed)."""
    def test(dir_fd: int, name: str) -> bool:
        with os.fdopen(fsutil.open_regular(name, dir_fd=dir_fd), "rb") as f:
            found = os.fstat(f.fileno()).st_size
            if (size is not None and found != size) or (cap is not None and found > cap):
                return False
            return fsutil.sha256_stream(f) == sha256
    return test


def _read_small(dir_fd: int, name: str, cap: int) -> bytes:
    with os.fdopen(fsutil.open_regular(name, dir_fd=dir_fd), "rb") as f:
        return f.read(cap)


def _check_names(claim: Claim) -> None:
    """Every name a saved claim gives is one path component (review hard15 L5: "../x" from a corrupt or
    planted claim.json must not reach outside the folder it is used in); ValueError otherwise."""
    for part in PurePath(claim.relative).parts:
        check_name(part)
    if claim.sidecar:
        check_name(claim.sidecar)
    if claim.moving is not None:
        if not isinstance(claim.moving, dict) or claim.moving.get("to") not in PLACES:
            raise ValueError("bad move record")
        check_name(claim.moving.get("name"))
        if claim.moving.get("sidecar"):
            check_name(claim.moving["sidecar"])
    if claim.held is not None:
        if not isinstance(claim.held, list) or len(claim.held) not in (2, 3) or claim.held[0] not in PLACES:
            raise ValueError("bad held record")
        check_name(claim.held[1])


def owner_is_dead(name: str, alive_age: float | None) -> bool:
    """A watcher folder's owner is gone: a dead pid of this host and pid namespace, or (any host, a
    reused pid too) a heartbeat missing or older than STALE_AFTER."""
    found = _OWNER.match(name)
    mine = fsutil.owner_name().partition("-")[2]
    if found and f"{found[2]}@{found[3]}" == mine and not fsutil.pid_alive(int(found[1])):
        return True
    return alive_age is None or alive_age > STALE_AFTER


class Claims:
    """This watcher's work folder; ``state_fd`` is the checked ``INBOX/.digitize``."""

    def __init__(self, state_fd: int, shown: str):
        self.owner = fsutil.owner_name()
        self.work_fd = walk_dirs(state_fd, ["work"], create=True, check=private_dir_check, shown=shown)
        self.fd = walk_dirs(self.work_fd, [self.owner], create=True, check=private_dir_check, shown=f"{shown}/work")
        self.path = Path(shown) / "work" / self.owner  # for path-based readers (the converter)
        self._touch()
        self._stop = threading.Event()
        self._beat = threading.Thread(target=self._heartbeat, name="claims-heartbeat", daemon=True)
        self._beat.start()

    # --- life of one claim ---------------------------------------------------------------------

    def take(self, inbox_fd: int, relative: PurePath, sidecar: str | None) -> Claim | None:
        """Move ``relative`` (and its sidecar) into a new claim; None when another watcher was first."""
        token = f"{int(time.time())}-{secrets.token_hex(4)}"
        os.mkdir(token, 0o750, dir_fd=self.fd)
        claim = Claim(str(relative), 1, time.time(), token, sidecar or "")
        moved = False
        try:
            with _closing(walk_dirs(inbox_fd, relative.parent.parts)) as src:
                if sidecar:
                    try:
                        claim.sidecar_sha256 = _sha256_at(src, sidecar, SIDECAR_MAX_BYTES)
                    except FileNotFoundError:  # taken away meanwhile: the scan goes on without it
                        claim.sidecar = sidecar = ""
                    except (OSError, DigitizeError):  # unreadable: still moved with the scan, never rejoined
                        pass
                self._save(claim)
                dst = walk_dirs(self.fd, [token, FILES, *relative.parent.parts], create=True, check=private_dir_check)
                with _closing(dst):
                    os.rename(relative.name, relative.name, src_dir_fd=src, dst_dir_fd=dst)  # the claim itself
                    moved = True
                    if sidecar:
                        try:
                            os.rename(sidecar, sidecar, src_dir_fd=src, dst_dir_fd=dst)
                        except FileNotFoundError:  # taken away meanwhile: the scan goes on without it
                            claim.sidecar = ""
                            self._save(claim)
                        except OSError:  # not movable: the claim still names it, so the scan is not filed without it
                            pass
        except FileNotFoundError:
            if moved:
                raise
            self.drop(claim)  # another watcher was first (or the clerk took it back)
            return None
        except BaseException:
            if not moved:  # never drop a claim that holds the scan: the next start adopts it
                self.drop(claim)
            raise
        return claim

    def root(self, claim: Claim) -> Path:
        """The folder that stands for the inbox in ``claim``: its scan is ``root / claim.relative``."""
        return self.path / claim.token / FILES

    def folder_fd(self, claim: Claim) -> int:
        """A descriptor of the folder holding the claimed scan (the caller closes it)."""
        return walk_dirs(self.fd, [claim.token, FILES, *PurePath(claim.relative).parent.parts])

    def separated(self, claim: Claim) -> bool:
        """The claim names a sidecar that is not in it (a move out interrupted by a crash, an undo or a take
        that failed): its scan must not be filed without it (see pipelines.inbox.move_free)."""
        if not claim.sidecar:
            return False
        folder = self.folder_fd(claim)
        try:
            return not fsutil.exists_at(folder, claim.sidecar)
        finally:
            os.close(folder)

    def give_back(self, claim: Claim, inbox_fd: int, move_free) -> None:
        """Return the scan (and sidecar) to where it was in the inbox, then drop the claim. ``move_free``
        (pipelines.inbox) never replaces: a file a clerk dropped at that name meanwhile stays, ours gets the
        next free name, its sidecar renamed with it."""
        relative = PurePath(claim.relative)
        src = self.folder_fd(claim)
        dst = walk_dirs(inbox_fd, relative.parent.parts, create=True)
        try:
            move_free(src, relative.name, dst, relative.name, claim.sidecar,
                      lambda name: claim.sidecar if name == relative.name else name + ".json",
                      chosen=self.recorder(claim, "inbox"))
        except BaseException:
            self.move_failed(claim)
            raise
        finally:
            os.close(src)
            os.close(dst)
        self.drop(claim)

    def move_failed(self, claim: Claim) -> None:
        """A move out of the claim raised and move_free undid it: if the sidecar is back in the claim, its record
        is spent (review hard15 L4: kept, every retry's undo_unfinished acted on it, and could remove another
        watcher's identical sidecar); if it is not, the record says where it was left (:meth:`rejoin`)."""
        if claim.moving is None:
            return
        with contextlib.suppress(OSError, ValueError, DigitizeError):
            if not self.separated(claim):
                claim.moving = None
                self._save(claim)

    def note_error(self, claim: Claim, text: str) -> None:
        """Keep the last failed outcome's one line with the claim: if it is filed to failed/ in the end, its
        reason says what failed, not that it was interrupted."""
        claim.last_error = " ".join(text.split())[:300]
        with contextlib.suppress(OSError, ValueError, DigitizeError):
            self._save(claim)

    # --- a scan and its sidecar kept together across crashes ---------------------------------------

    def recorder(self, claim: Claim, to: str):
        """A ``chosen`` hook for inbox.move_free: before the sidecar leaves the claim, save where it goes
        (and its SHA-256), so that after a crash between the sidecar's move and the scan's the next watcher
        finds it (:meth:`rejoin`); into failed/, where the reason goes too (:meth:`note_reason`). None when
        there is nothing to find again: no sidecar, not into failed/."""
        if not claim.sidecar and to != "failed":
            return None
        digest: list[tuple[str, int] | None] = []

        def record(chosen: str, sidecar: str) -> None:
            if not digest:
                with _closing(self.folder_fd(claim)) as folder:
                    there = bool(claim.sidecar) and fsutil.exists_at(folder, claim.sidecar)
                    digest.append(_digest_at(folder, claim.sidecar) if there else None)
            sha, size = digest[0] or (None, None)
            claim.moving = {"to": to, "name": chosen, "sidecar": sidecar if sha else "", "sha256": sha}
            if size is not None:
                claim.moving["size"] = size
            self._save(claim)

        return record

    def note_reason(self, claim: Claim) -> str:
        """A mark for the reason about to be written for the claim's move into failed/, saved first and written
        inside it, so that if the scan never follows, the next watcher removes that very file
        (:meth:`undo_unfinished`). Not its device and inode (review hard15 L4): an NFS remount changes the
        device, CIFS ``noserverino`` invents inode numbers."""
        mark = secrets.token_hex(8)
        if claim.moving:
            claim.moving["reason"] = mark
            self._save(claim)
        return mark

    def undo_unfinished(self, claim: Claim, places: dict[str, int]) -> None:
        """A dead watcher's move out of the claim that never moved the scan (the claim still holds it): remove
        what it had put at the destination that the claim still holds, else it lies there alone and the redone
        move picks ``NAME.1.pdf``: the reason in failed/ (the one with the mark recorded inside), and in done/
        or failed/ a copy of the sidecar that a move across file systems renamed into place before unlinking
        the claim's (the same SHA-256 as the claim's own, which stays). Each is moved into the claim and
        checked there before it is removed (:meth:`_checked`)."""
        moving = claim.moving or {}
        to = moving.get("to", "")
        base = places.get(to, -1)
        if base < 0 or to == "inbox":
            return
        with contextlib.suppress(OSError, ValueError, DigitizeError), \
                _closing(walk_dirs(base, PurePath(claim.relative).parent.parts)) as there, \
                _closing(self.folder_fd(claim)) as here:
            if self._arrived(claim, there, here, moving["name"]):
                return  # the scan got there (its content, not a name: review hard15 L7): not an unfinished move
            mark = moving.get("reason")
            if isinstance(mark, str) and mark and self._checked(
                    claim, to, there, moving["name"] + ERROR_SUFFIX, here,
                    lambda fd, held: mark.encode() in _read_small(fd, held, REASON_MAX_BYTES)):
                self._discard_held(claim, here)
            copy = moving.get("sidecar")
            if copy and moving.get("sha256") and fsutil.exists_at(here, claim.sidecar) and self._checked(
                    claim, to, there, copy, here, _is_copy(moving["sha256"], moving.get("size"))):
                self._discard_held(claim, here)

    def holds_scan(self, claim: Claim) -> bool:
        with _closing(self.folder_fd(claim)) as folder:
            return fsutil.exists_at(folder, PurePath(claim.relative).name)

    def rejoin(self, claim: Claim, places: dict[str, int]) -> str | None:
        """Bring a claim's separated sidecar back beside its scan; where it was found ("inbox/a/b.json"), or
        None (not found, or not surely this scan's: it then stays where it is).

        Where it is: a move out of the claim killed between the sidecar's move and the scan's left it where
        ``claim.moving`` says (done/, failed/ or the inbox; taken back only with the SHA-256 it left with,
        and the reason written for it in failed/ is removed with it); a take killed between the scan's
        rename and the sidecar's left it in the inbox under its own name (taken only with the SHA-256 the
        take recorded, and not when a new scan of the same name lies there now). The file is moved into the
        claim first and hashed there (:meth:`_checked`): a file swapped in after a hash is never kept. Never
        replaces, never follows a symlink (walk_dirs, move_at)."""
        relative = PurePath(claim.relative)
        moving = claim.moving or {}
        to = moving.get("to", "inbox")
        base = places.get(to, -1)
        expected = moving.get("sha256") if moving else claim.sidecar_sha256
        if not claim.sidecar or base < 0 or not expected:
            return None
        name = moving.get("sidecar", claim.sidecar)
        try:
            with _closing(walk_dirs(base, relative.parent.parts)) as there, \
                    _closing(self.folder_fd(claim)) as here:
                if moving:
                    if self._arrived(claim, there, here, moving["name"]):
                        return None  # the pair is there (completed() did not finish it): not ours to split
                elif fsutil.exists_at(there, relative.name):
                    return None  # a new scan of that name lies there: the sidecar may be its own
                size, cap = (moving.get("size"), None) if moving else (None, SIDECAR_MAX_BYTES)  # as the take hashed
                if not self._checked(claim, to, there, name, here, _is_copy(expected, size, cap), role="rejoin"):
                    return None
                fsutil.move_at(here, HELD, here, claim.sidecar)
        except (OSError, ValueError, DigitizeError):
            return None
        claim.moving = claim.held = None
        self._save(claim)
        return str(PurePath(to, relative.parent, name))

    def completed(self, claim: Claim, places: dict[str, int]) -> str | None:
        """Where the move recorded in ``claim.moving`` put the pair, if it got there whole and only the
        claim's copy of the scan is left (a copy across file systems unlinks its source last: killed just
        before): the same scan (SHA-256) and sidecar there. The scan there is moved into the claim, compared
        there and moved back; the sidecar there (never moved: not used, only compared) is compared by size and
        SHA-256 before and again just before the claim's copy is removed and the claim dropped; None otherwise. Never
        for a give-back (review hard15 L2): that is a rename within one file system, which never needs
        finishing, and a byte-identical file someone dropped in the inbox is theirs, not our scan."""
        moving = claim.moving or {}
        to = moving.get("to", "")
        base = places.get(to, -1)
        if not moving or base < 0 or to == "inbox":
            return None
        relative = PurePath(claim.relative)
        try:
            with _closing(walk_dirs(base, relative.parent.parts)) as there, \
                    _closing(self.folder_fd(claim)) as here:
                if not moving.get("sidecar") or not moving.get("sha256"):
                    return None
                ours = _is_copy(moving["sha256"], moving.get("size"))
                if not ours(there, moving["sidecar"]):
                    return None  # by name first: the scan is not moved in for nothing
                scan = _is_copy(*_digest_at(here, relative.name))
                if not self._checked(claim, to, there, moving["name"], here, scan):
                    return None
                if self._put_back(claim, there, here) != moving["name"]:
                    return None  # under a free name (a file put at its name meanwhile), or kept (restore_held later)
                if not ours(there, moving["sidecar"]):  # again, last: not one swapped in while the scan was
                    return None  # checked (review2 hard16 L6); ours is then quarantined with a reason
                os.unlink(relative.name, dir_fd=here)
        except (OSError, ValueError, DigitizeError):
            return None
        self.drop(claim)
        return str(PurePath(to, relative.parent, moving["name"]))

    # --- checking a file where nobody else writes (review hard15 L1) --------------------------------------

    def _checked(self, claim: Claim, to: str, there: int, name: str, here: int, test, role: str = "") -> bool:
        """``test(there, name)`` by name first: a file that fails it is never touched (review2 hard16 M1: moving
        other people's files in to check them lost one when the move back failed). One that passes is moved into
        the claim's folder (as HELD) and tested again there: what is checked is what is used, for nobody else
        writes in here (a file swapped in after the check by name goes back). True: it stays HELD for the
        caller; False: it was not there, not a regular file, failed the test (and was put back, never over a
        file put at its name meanwhile, or kept HELD if that failed: :meth:`restore_held`). Where it came from
        (and ``role``) is saved first, so a crash leaves it to :meth:`restore_held`."""
        if fsutil.exists_at(here, HELD):
            return False  # one left by a check that failed half-way: put back by the next restore_held first
        try:
            if not test(there, name):
                return False
        except (OSError, ValueError, DigitizeError):
            return False
        claim.held = [to, name, role]
        self._save(claim)
        try:
            fsutil.move_at(there, name, here, HELD)
        except OSError:
            if not fsutil.exists_at(here, HELD):
                claim.held = None
                self._save(claim)
                return False
        try:
            ok = stat.S_ISREG(os.stat(HELD, dir_fd=here, follow_symlinks=False).st_mode) and bool(test(here, HELD))
        except (OSError, ValueError, DigitizeError):
            ok = False
        if not ok:
            self._put_back(claim, there, here)
        return ok

    def _discard_held(self, claim: Claim, here: int) -> None:
        os.unlink(HELD, dir_fd=here)
        claim.held = None
        self._save(claim)

    def _put_back(self, claim: Claim, there: int, here: int) -> str | None:
        """HELD back where it came from, under its name or (taken meanwhile) the next free one: the name used.
        None when that failed (the folder removed meanwhile, a share's ESTALE or EIO): HELD and its record are
        kept, and the claim with them (:meth:`drop`), for :meth:`restore_held` at the next rescan or start."""
        try:
            try:
                fsutil.move_at(here, HELD, there, claim.held[1])
                used = claim.held[1]
            except FileExistsError:
                used = move_free(here, HELD, there, claim.held[1])
        except OSError as e:
            log.warning("could not put %s back into %s/ (%s): kept in claim %s, put back at the next rescan or "
                        "start, or moved to failed/", claim.held[1], claim.held[0], e.strerror or e, claim.token)
            return None
        claim.held = None
        self._save(claim)
        return used

    def _arrived(self, claim: Claim, there: int, here: int, name: str) -> bool:
        """``there/name`` is the claim's scan, byte for byte: a name alone may be an empty placeholder a move
        killed on a share without hard links left (fsutil._rename_noreplace), or another file."""
        try:
            return _sha256_at(there, name) == _sha256_at(here, PurePath(claim.relative).name)
        except (OSError, DigitizeError):
            return False

    def restore_held(self, claim: Claim, places: dict[str, int]) -> bool:
        """A check killed half-way, or whose put-back failed (:meth:`_checked`): the file goes back where it
        came from, so that the recovery that was checking it starts again from the files as they were. False
        when it is still held (its folder not used now, e.g. done/ after a restart with on_success = delete,
        or the put-back failed again): the caller hands it to a person (:meth:`hand_over`)."""
        with _closing(self.folder_fd(claim)) as here:
            if fsutil.exists_at(here, HELD):
                base = places.get(claim.held[0], -1) if claim.held else -1
                if base < 0:
                    return False
                try:
                    with _closing(walk_dirs(base, PurePath(claim.relative).parent.parts, create=True)) as there:
                        return self._put_back(claim, there, here) is not None
                except (OSError, DigitizeError):
                    return False
            if not claim.held:
                return True
            if claim.held[2:] == ["rejoin"] and claim.sidecar and fsutil.exists_at(here, claim.sidecar):
                claim.moving = None  # a rejoin had put it in place: its record is spent
        claim.held = None
        self._save(claim)
        return True

    def hand_over(self, claim: Claim, failed_fd: int, before) -> str:
        """A held file that cannot go back (:meth:`restore_held` False) into ``failed_fd/<its folder>/`` as
        ``NAME.held`` (not a sidecar name: it never pairs with a scan there) under a free name, ``before``
        writing its reason; the name used. It is someone's file: never removed (review2 hard16 M1)."""
        name = (claim.held[1] if claim.held else PurePath(claim.relative).name) + HELD
        with _closing(self.folder_fd(claim)) as here, \
                _closing(walk_dirs(failed_fd, PurePath(claim.relative).parent.parts, create=True,
                                   check=private_dir_check)) as dst:
            used = move_free(here, HELD, dst, name, before=before)
        claim.held = None
        self._save(claim)
        return used

    def drop(self, claim: Claim) -> None:
        """Remove the claim's folder, unless it holds a file being checked (someone's file whose put-back
        failed): then the claim stays, for :meth:`restore_held` at the next rescan or start (review2 hard16 M1)."""
        if self.holding(claim):
            log.warning("claim %s of %s still holds %s: kept until it is put back or moved to failed/",
                        claim.token, claim.relative, (claim.held or ["", HELD])[1])
            return
        shutil.rmtree(claim.token, dir_fd=self.fd, ignore_errors=True)

    def holding(self, claim: Claim) -> bool:
        """Whether the claim's folder holds a file being checked (HELD); True when that cannot be told."""
        try:
            with _closing(self.folder_fd(claim)) as here:
                return fsutil.exists_at(here, HELD)
        except FileNotFoundError:
            return False
        except (OSError, ValueError, DigitizeError):
            return True

    def _save(self, claim: Claim) -> None:
        token_fd = walk_dirs(self.fd, [claim.token])
        try:
            optional = ("moving", "sidecar_sha256", "held", "last_error")  # left out when empty: an older watcher
            saved = {k: v for k, v in asdict(claim).items() if k not in optional or v}  # reads it
            # ASCII: a file name that is not UTF-8 (a legacy zip's bytes) is kept exactly, as \udce9
            write_text_at(token_fd, CLAIM_FILE, json.dumps(saved))
        finally:
            os.close(token_fd)

    # --- claims left by dead watchers ----------------------------------------------------------

    def adopt_orphans(self) -> list[Claim]:
        """Claims of watchers that died (and any of this folder), one more attempt counted on each."""
        adopted = []
        for owner in sorted(os.listdir(self.work_fd)):
            if owner == self.owner or not self._dead(owner):
                continue
            try:
                folder = walk_dirs(self.work_fd, [owner], check=private_dir_check)
            except OSError:
                continue
            try:
                for token in sorted(os.listdir(folder)):
                    claim = self._adopt(folder, token)
                    if claim is not None:
                        adopted.append(claim)
                with contextlib.suppress(OSError):
                    os.unlink("alive", dir_fd=folder)
            finally:
                os.close(folder)
            with contextlib.suppress(OSError):
                os.rmdir(owner, dir_fd=self.work_fd)
        return adopted

    def own_claims(self) -> list[Claim]:
        """The claims in this watcher's own folder. Between two files the watcher holds none, so any found
        then is stuck: a give-back or quarantine that failed (the inbox or failed/ unreachable) left it.
        One more attempt is counted on each, and saved (review hard15 M1: uncounted, a claim whose give-back
        always fails was converted again at every rescan, for ever); one whose count cannot be saved is left
        for the next start rather than redone without bound."""
        found = []
        for token in sorted(os.listdir(self.fd)):
            claim = None if token == "alive" else self._load(token)
            if claim is None:
                continue
            claim.attempts += 1
            try:
                self._save(claim)
            except OSError:
                continue
            found.append(claim)
        return found

    def _dead(self, owner: str) -> bool:
        try:
            age = time.time() - os.stat(os.path.join(owner, "alive"), dir_fd=self.work_fd,
                                        follow_symlinks=False).st_mtime
        except OSError:
            age = None
        return owner_is_dead(owner, age)

    def _adopt(self, folder: int, token: str) -> Claim | None:
        if token == "alive":
            return None
        try:
            os.rename(token, token, src_dir_fd=folder, dst_dir_fd=self.fd)  # only one adopter wins
        except OSError:
            return None
        claim = self._load(token)
        if claim is None:
            if self._holds_anything(token):  # files but no readable claim: never delete them, leave them to a person
                log.warning("work folder %s/%s holds files but no readable %s: left in place", self.path, token,
                            CLAIM_FILE)
            else:
                shutil.rmtree(token, dir_fd=self.fd, ignore_errors=True)  # claimed but never moved: nothing inside
            return None
        claim.token, claim.attempts = token, claim.attempts + 1
        self._save(claim)
        return claim

    def _holds_anything(self, token: str) -> bool:
        try:
            with _closing(walk_dirs(self.fd, [token, FILES])) as files:
                return any(names for _, _, names, _ in os.fwalk(".", dir_fd=files))  # empty folders don't count
        except FileNotFoundError:
            return False
        except OSError:
            return True

    def _load(self, token: str) -> Claim | None:
        """The claim saved in ``token`` if its scan is there too, or its sidecar (the scan moved out or was
        deleted, and the watcher died before it dropped the claim: see :meth:`holds_scan`), or a held file
        (one whose move back failed: :meth:`restore_held`)."""
        try:
            token_fd = walk_dirs(self.fd, [token])
            try:
                fd = os.open(CLAIM_FILE, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=token_fd)
            finally:
                os.close(token_fd)
            with os.fdopen(fd, "rb") as f:
                saved = json.loads(f.read().decode("utf-8"))
            known = {field.name for field in dataclasses.fields(Claim)}  # a newer watcher's fields: not ours
            claim = Claim(**{k: v for k, v in saved.items() if k in known})
            claim.token = token
            _check_names(claim)
            folder = self.folder_fd(claim)
            try:
                held = [n for n in (PurePath(claim.relative).name, claim.sidecar, HELD) if n]
                return claim if any(fsutil.exists_at(folder, n) for n in held) else None
            finally:
                os.close(folder)
        except (OSError, ValueError, TypeError, AttributeError):
            return None

    # --- heartbeat -------------------------------------------------------------------------------

    def _touch(self) -> None:
        with contextlib.suppress(OSError):
            fd = os.open("alive", os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o640, dir_fd=self.fd)
            os.utime(fd)
            os.close(fd)

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT):
            self._touch()

    def close(self) -> None:
        """Stop the heartbeat and remove this watcher's folder if nothing is left in it."""
        self._stop.set()
        # a touch under way uses the descriptors closed below: one closed (or reused by the process meanwhile,
        # as the inbox's replacement reopens folders) under it touched a file in another folder
        self._beat.join(BEAT_JOIN)
        with contextlib.suppress(OSError):
            os.unlink("alive", dir_fd=self.fd)
            os.rmdir(self.owner, dir_fd=self.work_fd)
        os.close(self.fd)
        os.close(self.work_fd)
