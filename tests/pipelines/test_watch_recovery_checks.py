"""Review hard15's lows on crash recovery (L1-L8): what a restarted watcher takes back, removes or finishes is
checked where nobody else writes, by content and by a mark inside, never by a name, an inode or mere existence.
Crash states are made as in test_watch_sidecar_crash: the real watcher code in a forked child killed at a step."""

from __future__ import annotations

import errno
import json
import os
import re
from pathlib import Path

import pytest
from test_watch_sidecar_crash import (SIDECAR, across_file_systems, bad_scan, crash, in_child, killed_at, killed_at_call,
                                      listing, make_watcher, real_names, restart, scan_move, storage_down, stored,
                                      work_left)

from digitize import fsutil
from pipelines import claims as claimslib
from pipelines import failed as failedlib
from pipelines import inbox as inboxlib
from pipelines.jobs import JobResult, Status

OTHER = '{"case_id": "000.00.31.H56-241015-0099"}'  # a new pair's sidecar, or an attacker's


def claim_files(inbox: Path) -> list[Path]:
    return sorted((inbox / ".digitize/work").glob("*/*/claim.json"))


def inodes(folder: Path) -> set[int]:
    return {p.stat().st_ino for p in folder.rglob("*") if p.is_file()}


def seeing_sidecars(seen: list):
    """A process stub that stores, noting the sidecar it was handed (None: none)."""
    def process(path, *args, **kwargs):
        sidecar = Path(path).with_name(Path(path).name + ".json")
        seen.append(sidecar.read_text() if sidecar.exists() else None)
        return stored(path)
    return process


def test_l1_a_sidecar_swapped_after_its_check_is_never_taken(tmp_path, monkeypatch):
    """L1: the rejoin hashed done/NAME.json by name, then moved it by name: a file swapped in between joined
    the scan. Now it is moved into the claim and hashed there too; the swapped file goes back."""
    left = _swapped_after_its_check(tmp_path, monkeypatch, lambda args: False)
    seen: list = []
    restart(tmp_path, seeing_sidecars(seen))
    assert OTHER not in seen and seen == []  # not filed with the swapped-in sidecar: quarantined instead
    assert left.read_text() == OTHER  # the swapped-in file is put back where it was
    assert "scan.pdf" in listing(tmp_path / "inbox/failed") and work_left(tmp_path / "inbox") == []


def swap_in(left: Path) -> None:
    """Someone replaces our sidecar ``left`` by another (OTHER), atomically."""
    if left.exists() and left.read_text() == SIDECAR:
        (left.parent / "evil.tmp").write_text(OTHER)
        os.replace(left.parent / "evil.tmp", left)


def _swapped_after_its_check(tmp_path: Path, monkeypatch, put_back_fails) -> Path:
    """A restart's rejoin of done/NAME.json: the file is swapped (OTHER) after its check by name, so the check in
    the claim fails and it must go back; ``put_back_fails(args)`` decides whether that move raises ESTALE."""
    crash(tmp_path, stored, lambda mp: killed_at(mp, inboxlib, "move_at", scan_move))
    left = tmp_path / "inbox/done/scan.pdf.json"
    real = fsutil.move_at

    def swap_then_move(src_fd, src_name, dst_fd, dst_name):
        if src_name == "scan.pdf.json":
            swap_in(left)  # someone's swap, just after any check by name
        if src_name == claimslib.HELD and put_back_fails((src_fd, src_name, dst_fd, dst_name)):
            raise OSError(errno.ESTALE, "Stale file handle")
        return real(src_fd, src_name, dst_fd, dst_name)

    monkeypatch.setattr(claimslib.fsutil, "move_at", swap_then_move)
    return left


def test_l2_an_identical_copy_in_the_inbox_after_a_crash_mid_give_back_never_costs_our_copy(tmp_path):
    """L2: killed between the sidecar's and the scan's move back into the inbox; someone then drops a
    byte-identical scan at its name. completed() took that for our give-back finished and unlinked our copy:
    the only copy left was theirs. A give-back is never "finished" that way: ours is kept (here quarantined)."""
    crash(tmp_path, storage_down, lambda mp: killed_at(mp, inboxlib, "move_at", scan_move))
    inbox = tmp_path / "inbox"
    ours = [p for p in (inbox / ".digitize/work").rglob("scan.pdf")]
    assert len(ours) == 1 and (inbox / "scan.pdf.json").exists()
    ino = ours[0].stat().st_ino
    (inbox / "scan.pdf").write_bytes(ours[0].read_bytes())  # someone else's, byte-identical
    restart(tmp_path)
    assert ino in inodes(inbox)  # our copy still exists somewhere (failed/), not unlinked
    assert work_left(inbox) == []


@pytest.mark.parametrize("reason", ["copied (new inode)", "another watcher's"])
def test_l4_the_reason_left_by_a_killed_quarantine_is_known_by_its_mark_not_its_inode(tmp_path, reason):
    """L4: a quarantine killed after writing NAME.error.txt, before the scan: the next start removes that
    reason. It was known by (device, inode), which an NFS remount or CIFS noserverino changes (here: the same
    text under a new inode): then the reason stayed for nothing and the scan went to NAME.1.pdf. Now a mark
    written inside it decides; another watcher's reason at that name (another mark) stays."""
    inbox = tmp_path / "inbox"
    inbox.mkdir(mode=0o750)
    (inbox / "scan.pdf").write_bytes(b"%PDF-1.7 scan")

    def arm(mp):
        (inbox / "scan.pdf.json").unlink()
        killed_at(mp, inboxlib, "move_at", scan_move)

    crash(tmp_path, bad_scan, arm)
    left = inbox / "failed/scan.pdf.error.txt"
    text = left.read_text()
    assert "Mark:" in text
    left.unlink()
    left.write_text(text if reason.startswith("copied") else re.sub(r"Mark: \w+", "Mark: 0123456789abcdef", text))
    restart(tmp_path, bad_scan)
    if reason.startswith("copied"):
        assert listing(inbox / "failed") == ["scan.pdf", "scan.pdf.error.txt"]
    else:
        assert listing(inbox / "failed") == ["scan.1.pdf", "scan.1.pdf.error.txt", "scan.pdf.error.txt"]
    assert work_left(inbox) == []


def test_l4_a_move_undone_after_an_error_leaves_no_record_that_a_retry_acts_on(tmp_path, monkeypatch):
    """L4: a quarantine whose scan move failed (undone: the sidecar back in the claim) kept its record, and each
    retry of the stuck claim ran undo_unfinished on it: it removed another watcher's identical sidecar at the
    recorded name in failed/. Now the record is reset when move_free raised and the sidecar is back."""
    inbox = tmp_path / "inbox"
    inbox.mkdir(mode=0o750)
    (inbox / "scan.pdf").write_bytes(b"%PDF-1.7 scan")
    (inbox / "scan.pdf.json").write_text(SIDECAR)
    w = make_watcher(tmp_path, bad_scan)
    real = inboxlib.move_at

    def scan_move_fails(src_fd, src_name, dst_fd, dst_name):
        if src_name == "scan.pdf":
            raise OSError(errno.EIO, "Input/output error")
        return real(src_fd, src_name, dst_fd, dst_name)

    def unreachable(*args):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(inboxlib, "move_at", scan_move_fails)
    monkeypatch.setattr(w.claims, "give_back", unreachable)
    try:
        with pytest.raises(OSError):
            w._take(inbox / "scan.pdf", Path("scan.pdf"))
        [saved] = claim_files(inbox)
        assert "moving" not in json.loads(saved.read_text())
        others = inbox / "failed/scan.pdf.json"
        others.write_text(SIDECAR)  # another watcher's sidecar, identical (one case's sidecars often are)
        ino = others.stat().st_ino
        monkeypatch.setattr(inboxlib, "move_at", real)
        w._rescan()
    finally:
        w.folders.close()
    assert ino in inodes(inbox / "failed")
    assert "scan.1.pdf" in listing(inbox / "failed") and work_left(inbox) == []


def test_l5_a_name_with_a_path_in_a_saved_claim_is_refused(tmp_path):
    """L5: names from claim.json were used as names under a folder descriptor with no check: "../x" reached
    outside it (here: the inbox, from done/). Such a claim is now not used at all (left for a person)."""
    crash(tmp_path, stored, lambda mp: killed_at(mp, inboxlib, "move_at", scan_move))
    inbox = tmp_path / "inbox"
    [saved] = claim_files(inbox)
    record = json.loads(saved.read_text())
    record["moving"]["sidecar"] = "../escape.json"
    saved.write_text(json.dumps(record))
    (inbox / "escape.json").write_text(SIDECAR)  # the same bytes as the recorded sidecar
    assert restart(tmp_path) == []
    assert (inbox / "escape.json").read_text() == SIDECAR


def test_l6_after_a_take_killed_between_the_two_renames_only_the_sidecar_taken_is_rejoined(tmp_path):
    """L6: recovery took whatever NAME.json lay in the inbox then, e.g. a new pair's sidecar copied in first:
    the old scan got the new sidecar. The take now records the sidecar's SHA-256 before its first rename."""
    crash(tmp_path, stored, lambda mp: killed_at(mp, os, "rename", lambda a: a[0] == "scan.pdf.json"))
    inbox = tmp_path / "inbox"
    (inbox / "scan.pdf.json").unlink()
    (inbox / "scan.pdf.json").write_text(OTHER)  # a new pair's sidecar, its scan still being copied
    seen: list = []
    restart(tmp_path, seeing_sidecars(seen))
    assert OTHER not in seen
    assert (inbox / "scan.pdf.json").read_text() == OTHER  # left for its own scan
    assert "scan.pdf" in listing(inbox / "failed") and work_left(inbox) == []


def test_l7_an_empty_placeholder_left_by_a_killed_move_is_not_taken_for_the_scan(tmp_path):
    """L7: on a share without hard links a move holds the name with an empty O_EXCL file, then renames over it;
    killed in between, the empty file counted as "the scan got there": the scan was quarantined and its
    sidecar stayed in done/ beside 0 bytes. Content decides now: the pair is filed together."""
    count = [0]

    def arm(mp):
        mp.setattr(fsutil, "_renameat2_noreplace", lambda *args: False)

        def no_link(*args, **kwargs):
            raise OSError(errno.EPERM, "Operation not permitted")

        mp.setattr(os, "link", no_link)

        def second_scan_rename(args):  # the take's rename, then the move into done/ over the placeholder
            if args[0] == "scan.pdf":
                count[0] += 1
            return args[0] == "scan.pdf" and count[0] == 2

        killed_at(mp, os, "rename", second_scan_rename)

    crash(tmp_path, stored, arm)
    done = tmp_path / "inbox/done"
    assert (done / "scan.pdf").stat().st_size == 0 and (done / "scan.pdf.json").exists()  # the crash state
    seen: list = []
    restart(tmp_path, seeing_sidecars(seen))
    assert seen == [SIDECAR]
    assert listing(tmp_path / "inbox/failed") == []
    assert (done / "scan.1.pdf.json").read_text() == SIDECAR and (done / "scan.1.pdf").read_bytes() == b"%PDF-1.7 scan"
    assert work_left(tmp_path / "inbox") == []


def test_l8_a_lone_sidecar_is_not_a_sidecar_name_and_the_desk_lists_it(tmp_path):
    """L8: NAME.lone.json was the sidecar name of NAME.lone.pdf, and the desk hid it (".json" is skipped).
    Now it is NAME.json.lone, listed on the desk with its reason."""
    crash(tmp_path, stored, lambda mp: killed_at(mp, os, "unlink", lambda a: a[0] == "scan.pdf.json"),
          on_success="delete")
    restart(tmp_path, on_success="delete")
    failed = tmp_path / "inbox/failed"
    assert listing(failed) == ["scan.pdf.json.lone", "scan.pdf.json.lone.error.txt"]
    listed = failedlib.list_failed(failed)
    assert [f.parts for f in listed] == [("scan.pdf.json.lone",)]
    assert "work folder by a crash" in listed[0].detail


def test_l3_a_running_watcher_sweeps_part_files_again_an_hour_later(tmp_path):
    """L3: a start reads only recently changed folders, and a part file left by the kill just before a restart
    is too fresh at that start (it may be another watcher's copy in progress): the running watcher sweeps
    again an hour later instead of leaving it until some later start."""
    w = make_watcher(tmp_path, stored)
    try:
        done = tmp_path / "inbox/done"
        part = done / ".scan.pdf.0123456789ab.part"
        part.write_bytes(b"half a copy")
        w._rescan()  # the start's sweep: too fresh, kept
        assert part.exists()
        old = part.stat().st_mtime - 2 * fsutil.PART_AGE
        os.utime(part, (old, old))
        w._rescan()  # within the hour: not swept again
        assert part.exists()
        w.next_sweep = 0.0  # an hour later
        w._rescan()
        assert not part.exists()
    finally:
        w.folders.close()


def _reason_left(case: Path) -> None:
    inbox = case / "inbox"
    inbox.mkdir(mode=0o750, parents=True)
    (inbox / "scan.pdf").write_bytes(b"%PDF-1.7 scan")

    def arm(mp):
        (inbox / "scan.pdf.json").unlink()
        killed_at(mp, inboxlib, "move_at", scan_move)

    crash(case, bad_scan, arm)


def _copied_not_unlinked(case: Path) -> None:
    def arm(mp):
        across_file_systems(mp)
        killed_at(mp, os, "unlink", lambda a: a[0] == "scan.pdf")

    crash(case, stored, arm)


def _held_after_a_failed_put_back(case: Path) -> None:
    """A watcher whose put-back of someone's file failed (kept in the claim: review2 hard16 M1) killed before it
    handed that file to failed/: the claim holds only .held, its scan is in failed/."""
    def second(mp):
        _swapped_after_its_check(case, mp, lambda args: True)
        killed_at(mp, claimslib.Claims, "hand_over", lambda args: True)
        restart(case)

    assert in_child(second) == 9
    assert {Path(p).name for p in work_left(case / "inbox")} == {"claim.json", ".held"}


FILED = {"done": ["scan.pdf", "scan.pdf.json"], "failed": []}
PUT_BACK = {"done": ["scan.pdf.json"], "failed": ["scan.pdf", "scan.pdf.error.txt"]}  # someone's file, back in done/
INTERRUPTED = {"done": [], "failed": ["scan.pdf", "scan.pdf.error.txt", "scan.pdf.json"]}  # twice: quarantined
RECOVERIES = {  # a crash state, the restarts' process, the ends allowed
    "sidecar in done/, scan in its claim (rejoin)": (
        lambda case: crash(case, stored, lambda mp: killed_at(mp, inboxlib, "move_at", scan_move)), stored,
        [FILED, INTERRUPTED]),
    "a reason for no file in failed/ (undo_unfinished)": (
        _reason_left, bad_scan, [{"failed": ["scan.pdf", "scan.pdf.error.txt"]}]),
    "copied into done/, claim's copy not unlinked (completed)": (
        _copied_not_unlinked, stored, [FILED, INTERRUPTED]),
    "someone's file kept in a claim after its put-back failed (restore_held)": (
        _held_after_a_failed_put_back, stored, [PUT_BACK]),
}


@pytest.mark.parametrize("state", list(RECOVERIES))
def test_recovery_killed_at_any_file_system_call_still_ends_with_the_pair_together(tmp_path, monkeypatch, state):
    """The checks above move a file into the claim and back: a second watcher killed at each file-system call of
    its recovery in turn, a third finishes: the same end as an uninterrupted recovery, nothing left in a claim
    (a file held for checking is put back first: Claims.restore_held), no stray file. Interrupted twice, the
    scan is quarantined (MAX_ATTEMPTS), with its sidecar brought back beside it first."""
    make_state, then, ends = RECOVERIES[state]
    monkeypatch.setattr(inboxlib, "completeness_problem", lambda *args, **kwargs: None)
    number = 0
    while True:
        number += 1
        case = tmp_path / str(number)
        make_state(case)

        def second(mp, number=number, case=case) -> None:
            killed_at_call(mp, number)
            restart(case, then)

        code = in_child(second)
        assert code in (0, 9), (number, code)
        if code == 0:
            break  # the recovery finished before the armed call: every step was hit
        restart(case, then)
        inbox = case / "inbox"
        found = {folder: real_names(inbox / folder) for folder in ends[0]}
        assert (number, found) in [(number, end) for end in ends]
        assert (number, work_left(inbox)) == (number, [])
    assert number > 10


@pytest.mark.parametrize("size", ["edited", "larger than a sidecar"])
def test_m1_a_clerks_file_that_does_not_match_is_never_moved_out_of_the_inbox(tmp_path, monkeypatch, size):
    """Review2 hard16 M1/L1: after a take killed between its two renames, the clerk replaced NAME.json; the
    restart moved it into the claim to hash it, the clerk removed the folder that looked empty, the move back
    failed (ENOENT) and the claim's drop deleted the clerk's file. Now a file is checked by name (size, then
    SHA-256; one larger than a sidecar is not even read) and only a match is moved in: this one stays put."""
    inbox = tmp_path / "inbox"
    sub = inbox / "a"
    sub.mkdir(mode=0o750, parents=True)
    (sub / "scan.pdf").write_bytes(b"%PDF-1.7 scan")
    (sub / "scan.pdf.json").write_text(SIDECAR)

    def first(mp):
        w = make_watcher(tmp_path, stored)
        killed_at(mp, os, "rename", lambda a: a[0] == "scan.pdf.json")
        w._take(sub / "scan.pdf", Path("a/scan.pdf"))

    assert in_child(first) == 9
    clerks = sub / "scan.pdf.json"
    clerks.unlink()
    clerks.write_text(OTHER)
    if size != "edited":
        os.truncate(clerks, claimslib.SIDECAR_MAX_BYTES + 1)
    ino = clerks.stat().st_ino
    real_move, real_hash = fsutil.move_at, fsutil.sha256_stream

    def tidying(src_fd, src_name, dst_fd, dst_name):
        real_move(src_fd, src_name, dst_fd, dst_name)
        if dst_name == claimslib.HELD and sub.exists() and not os.listdir(sub):
            os.rmdir(sub)  # the clerk tidies the folder that looks empty while the file is held

    def hashing(stream):
        assert os.fstat(stream.fileno()).st_ino != ino or size == "edited", "a clerk's big file was read"
        return real_hash(stream)

    monkeypatch.setattr(claimslib.fsutil, "move_at", tidying)
    monkeypatch.setattr(claimslib.fsutil, "sha256_stream", hashing)
    restart(tmp_path)
    assert clerks.stat().st_ino == ino and clerks.read_bytes().startswith(OTHER.encode())  # never moved
    assert "scan.pdf" in listing(inbox / "failed/a") and work_left(inbox) == []


def test_m1_a_put_back_that_fails_keeps_the_file_and_puts_it_back_later(tmp_path, monkeypatch, caplog):
    """Review2 hard16 M1: a put-back that raised anything but FileExistsError left the file in the claim and
    the claim's drop removed it with the folder. Now the file and its record stay (one log line says so), the
    claim is not dropped while it holds it, and the next rescan puts it back."""
    tries = []
    left = _swapped_after_its_check(tmp_path, monkeypatch, lambda args: not tries.append(args) and len(tries) == 1)
    seen: list = []
    restart(tmp_path, seeing_sidecars(seen))
    assert seen == [] and left.read_text() == OTHER  # put back at the rescan after the first try failed
    assert len(tries) == 2 and "could not put scan.pdf.json back into done/" in caplog.text
    assert "scan.pdf" in listing(tmp_path / "inbox/failed") and work_left(tmp_path / "inbox") == []


def test_m1_a_file_that_cannot_go_back_goes_to_failed_never_away(tmp_path, monkeypatch):
    """Review2 hard16 M1: the put-back fails at every try (the share keeps refusing): the file is handed to a
    person in failed/ as NAME.held with a reason, never removed with the claim."""
    left = _swapped_after_its_check(tmp_path, monkeypatch, lambda args: True)
    restart(tmp_path)
    failed = tmp_path / "inbox/failed"
    assert not left.exists() and (failed / "scan.pdf.json.held").read_text() == OTHER
    assert "could not put back" in (failed / "scan.pdf.json.held.error.txt").read_text()
    assert "scan.pdf" in listing(failed) and work_left(tmp_path / "inbox") == []


def test_m1_a_done_copy_held_at_a_restart_with_on_success_delete_goes_to_failed(tmp_path):
    """Review2 hard16 M1: a watcher killed while completed() held done/NAME.pdf, restarted with on_success =
    delete (done/ not used): restore_held kept it "never lost", then the quarantine's drop removed it. Now it
    is handed to failed/ as NAME.held."""
    _copied_not_unlinked(tmp_path)
    done_copy = tmp_path / "inbox/done/scan.pdf"
    ino = done_copy.stat().st_ino

    def second(mp):
        killed_at(mp, claimslib.fsutil, "move_at", lambda a: a[1] == claimslib.HELD)
        restart(tmp_path)

    assert in_child(second) == 9 and not done_copy.exists()  # killed while it was held
    restart(tmp_path, on_success="delete")
    failed = tmp_path / "inbox/failed"
    assert ino in inodes(failed) and (failed / "scan.pdf.held").read_bytes() == b"%PDF-1.7 scan"
    assert work_left(tmp_path / "inbox") == []


def test_l9_the_mark_is_found_after_a_long_detail(tmp_path):
    """Review2 hard16 L9: the mark was written after the detail, which is a tool's message of any length: past
    the 64 KiB read it was not found, the reason stayed and the redo landed as NAME.1.pdf. The detail is
    bounded now (DETAIL_MAX), so the reason of a killed quarantine is removed whatever the tool said."""
    inbox = tmp_path / "inbox"
    inbox.mkdir(mode=0o750)
    (inbox / "scan.pdf").write_bytes(b"%PDF-1.7 scan")

    def wordy(path, *args, **kwargs):
        return JobResult(str(path), Status.failed, reason="warning: bad xref; " * 20000, error_kinds=("InputError",))

    def arm(mp):
        (inbox / "scan.pdf.json").unlink()
        killed_at(mp, inboxlib, "move_at", scan_move)

    crash(tmp_path, wordy, arm)
    assert listing(inbox / "failed") == ["scan.pdf.error.txt"]
    restart(tmp_path, wordy)
    assert listing(inbox / "failed") == ["scan.pdf", "scan.pdf.error.txt"]
    assert len((inbox / "failed/scan.pdf.error.txt").read_bytes()) < 16 * 1024 and work_left(inbox) == []


def test_l6_a_done_sidecar_swapped_while_the_scan_is_checked_is_not_taken_for_ours(tmp_path, monkeypatch):
    """Review2 hard16 L6: completed() compared done/NAME.json once, before moving the scan in and out (a copy
    each way across file systems): one swapped meanwhile passed for ours and the claim's copy was removed, the
    pair in done/ silently holding another sidecar. It is compared again last: ours is quarantined with a
    reason instead."""
    _copied_not_unlinked(tmp_path)
    left = tmp_path / "inbox/done/scan.pdf.json"
    real = fsutil.move_at

    def swap_while_held(src_fd, src_name, dst_fd, dst_name):
        if src_name == claimslib.HELD:
            swap_in(left)
        return real(src_fd, src_name, dst_fd, dst_name)

    monkeypatch.setattr(claimslib.fsutil, "move_at", swap_while_held)
    restart(tmp_path)
    failed = tmp_path / "inbox/failed"
    assert listing(failed) == ["scan.pdf", "scan.pdf.error.txt"] and "done/scan.pdf.json" in \
        (failed / "scan.pdf.error.txt").read_text()
    assert work_left(tmp_path / "inbox") == []
