"""Moves out of a watcher's claim (into done/, failed/ and back into the inbox) never replace a file, and
the watcher notices when its inbox path names another folder. Unit tests: ``process`` is stubbed."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from digitize import fsutil
from digitize.config import Settings
from pipelines import inbox as inboxlib
from pipelines import watch
from pipelines.jobs import JobResult, Status


def make_watcher(tmp_path: Path, process, **opts) -> watch.Watcher:
    inbox = tmp_path / "inbox"
    inbox.mkdir(mode=0o750, exist_ok=True)
    return watch.Watcher(watch.WatchOptions(inbox, stable_seconds=0.0, **opts),
                         Settings(data_dir=str(tmp_path / "data")), process=process)


def bad_scan(*args, **kwargs) -> JobResult:
    return JobResult(str(args[0]), Status.failed, reason="not a scan", error_kinds=("InputError",))


def storage_down(*args, **kwargs) -> JobResult:
    return JobResult(str(args[0]), Status.failed, reason="storage down", error_kinds=("StorageError",))


def racing_free_name(monkeypatch, plant):
    """free_name as it is when another watcher moves its own file to the same name right after the check."""
    real = inboxlib.free_name
    calls = []

    def free_name(dir_fd, name, *args):
        chosen = real(dir_fd, name, *args)
        calls.append(chosen)
        if len(calls) == 1:
            plant(dir_fd, chosen)
        return chosen

    monkeypatch.setattr(inboxlib, "free_name", free_name)
    return calls


def test_move_at_never_replaces_a_file_picked_as_free_by_two_movers(tmp_path):
    """The review's f8 interleaving: two free_name calls, then two moves; both scans survive."""
    for d in ("w1", "w2", "failed"):
        (tmp_path / d).mkdir()
    (tmp_path / "w1/scan.pdf").write_bytes(b"scan from station A")
    (tmp_path / "w2/scan.pdf").write_bytes(b"scan from station B")
    fd = {d: os.open(tmp_path / d, os.O_RDONLY | os.O_DIRECTORY) for d in ("w1", "w2", "failed")}
    try:
        n1 = inboxlib.free_name(fd["failed"], "scan.pdf")
        n2 = inboxlib.free_name(fd["failed"], "scan.pdf")
        assert n1 == n2
        fsutil.move_at(fd["w1"], "scan.pdf", fd["failed"], n1)
        with pytest.raises(FileExistsError):
            fsutil.move_at(fd["w2"], "scan.pdf", fd["failed"], n2)
        name = inboxlib.move_free(fd["w2"], "scan.pdf", fd["failed"], "scan.pdf")
    finally:
        for f in fd.values():
            os.close(f)
    assert name == "scan.1.pdf"
    assert (tmp_path / "failed/scan.pdf").read_bytes() == b"scan from station A"
    assert (tmp_path / "failed/scan.1.pdf").read_bytes() == b"scan from station B"


@pytest.mark.parametrize("fallback", ["link", "placeholder"])
def test_move_at_without_renameat2_still_never_replaces(tmp_path, monkeypatch, fallback):
    monkeypatch.setattr(fsutil, "_renameat2", False)  # an old libc: no renameat2
    if fallback == "placeholder":  # and no hard links either (some SMB shares)
        def no_link(*args, **kwargs):
            raise PermissionError(1, "Operation not permitted")
        monkeypatch.setattr(fsutil.os, "link", no_link)
    (tmp_path / "a").write_bytes(b"A")
    (tmp_path / "b").write_bytes(b"B")
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(FileExistsError):
            fsutil.move_at(fd, "a", fd, "b")
        fsutil.move_at(fd, "a", fd, "c")
    finally:
        os.close(fd)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "c"]
    assert (tmp_path / "b").read_bytes() == b"B" and (tmp_path / "c").read_bytes() == b"A"


def test_a_move_across_file_systems_killed_half_way_leaves_no_truncated_file_under_the_real_name(
        tmp_path, monkeypatch):
    """EXDEV: the copy goes to a hidden part file and is renamed only when complete (L3)."""
    real_rename = fsutil._rename_noreplace

    def cross_device(src_fd, src_name, dst_fd, dst_name):
        if not src_name.startswith("."):  # the first try: as if done/ were on another file system
            raise OSError(18, "Invalid cross-device link")
        return real_rename(src_fd, src_name, dst_fd, dst_name)

    monkeypatch.setattr(fsutil, "_rename_noreplace", cross_device)
    (tmp_path / "src").mkdir()
    (tmp_path / "dst").mkdir()
    (tmp_path / "src/scan.pdf").write_bytes(b"x" * 3_000_000)
    copied = []
    real_copy = fsutil.shutil.copyfileobj

    def killed(fin, fout, size):
        fout.write(fin.read(size))
        copied.append(os.listdir(tmp_path / "dst"))
        raise KeyboardInterrupt  # the watcher killed in the middle of the copy

    monkeypatch.setattr(fsutil.shutil, "copyfileobj", killed)
    src, dst = (os.open(tmp_path / d, os.O_RDONLY | os.O_DIRECTORY) for d in ("src", "dst"))
    try:
        with pytest.raises(KeyboardInterrupt):
            fsutil.move_at(src, "scan.pdf", dst, "scan.pdf")
        assert [n for n in copied[0] if not n.startswith(".")] == []  # mid-copy: nothing under a real name
        monkeypatch.setattr(fsutil.shutil, "copyfileobj", real_copy)
        fsutil.move_at(src, "scan.pdf", dst, "scan.pdf")
    finally:
        os.close(src)
        os.close(dst)
    assert os.listdir(tmp_path / "dst") == ["scan.pdf"] and os.listdir(tmp_path / "src") == []
    assert (tmp_path / "dst/scan.pdf").stat().st_size == 3_000_000


def test_two_watchers_quarantining_one_name_at_once_keep_both_scans(tmp_path, monkeypatch):
    w = make_watcher(tmp_path, bad_scan)
    inbox = w.opts.inbox
    (inbox / "scan.pdf").write_bytes(b"scan from station A")

    def other_watcher(dir_fd, chosen):  # station B's watcher moves its scan.pdf (and reason) there now
        fd = os.open(chosen + inboxlib.ERROR_SUFFIX, os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=dir_fd)
        os.write(fd, b"B's reason")
        os.close(fd)
        fd = os.open(chosen, os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=dir_fd)
        os.write(fd, b"scan from station B")
        os.close(fd)

    racing_free_name(monkeypatch, other_watcher)
    try:
        w._take(inbox / "scan.pdf", Path("scan.pdf"))
    finally:
        w.folders.close()
    failed = inbox / "failed"
    assert (failed / "scan.pdf").read_bytes() == b"scan from station B"
    assert (failed / "scan.pdf.error.txt").read_bytes() == b"B's reason"
    assert (failed / "scan.1.pdf").read_bytes() == b"scan from station A"
    assert "not a scan" in (failed / "scan.1.pdf.error.txt").read_text()


def test_give_back_never_replaces_a_scan_or_sidecar_a_clerk_dropped_meanwhile(tmp_path, monkeypatch):
    w = make_watcher(tmp_path, storage_down)
    inbox = w.opts.inbox
    (inbox / "scan.pdf").write_bytes(b"first scan, not stored yet")
    (inbox / "scan.json").write_text('{"title": "first"}')
    claim = w.claims.take(w.folders.inbox, Path("scan.pdf"), "scan.json")
    (inbox / "scan.json").write_text('{"title": "the clerk\'s new sidecar"}')  # dropped while we held ours
    try:
        w._give_back(claim)
    finally:
        w.folders.close()
    assert (inbox / "scan.json").read_text() == '{"title": "the clerk\'s new sidecar"}'
    assert (inbox / "scan.1.pdf").read_bytes() == b"first scan, not stored yet"
    assert (inbox / "scan.1.pdf.json").read_text() == '{"title": "first"}'
    assert not (inbox / "scan.pdf").exists()


def test_give_back_racing_a_clerk_for_the_name_keeps_both_scans(tmp_path, monkeypatch):
    w = make_watcher(tmp_path, storage_down)
    inbox = w.opts.inbox
    (inbox / "scan.pdf").write_bytes(b"ours")
    claim = w.claims.take(w.folders.inbox, Path("scan.pdf"), None)

    def clerk(dir_fd, chosen):
        fd = os.open(chosen, os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=dir_fd)
        os.write(fd, b"the clerk's new scan")
        os.close(fd)

    racing_free_name(monkeypatch, clerk)
    try:
        w._give_back(claim)
    finally:
        w.folders.close()
    assert (inbox / "scan.pdf").read_bytes() == b"the clerk's new scan"
    assert (inbox / "scan.1.pdf").read_bytes() == b"ours"


# --- M4: the inbox path names a new folder -------------------------------------------------------------

def test_an_inbox_recreated_under_the_watcher_is_reopened_and_its_scans_processed(tmp_path, caplog):
    """The review's f7: share remounted or the folder recreated; before, every scan was 'taken-elsewhere'."""
    calls = []

    def process(path, settings, hint, **kw):
        calls.append(Path(path).read_bytes())
        return JobResult(str(path), Status.done)

    w = make_watcher(tmp_path, process)
    inbox = w.opts.inbox
    os.rename(inbox, tmp_path / "inbox.old")
    inbox.mkdir(mode=0o750)
    (inbox / "scan.pdf").write_bytes(b"%PDF-1.4\n%%EOF\n")
    caplog.set_level(logging.INFO, logger="pipelines")
    try:
        for _ in range(3):
            w._rescan()
            for path in list(w.pending):
                w._take(path, path.relative_to(inbox))
    finally:
        w.folders.close()
    assert calls == [b"%PDF-1.4\n%%EOF\n"]
    assert (inbox / "done/scan.pdf").exists() and not (inbox / "scan.pdf").exists()
    [line] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert line.getMessage().startswith("inbox-replaced ")


def test_an_inbox_that_cannot_be_reopened_stops_the_watcher_with_an_error(tmp_path):
    w = make_watcher(tmp_path, bad_scan)
    inbox = w.opts.inbox
    os.rename(inbox, tmp_path / "inbox.old")  # unmounted, and the mount point gone
    try:
        with pytest.raises(watch.FileAccessError):
            w._rescan()
    finally:
        w.folders.close()


def test_one_path_taken_elsewhere_again_and_again_is_warned_about_once(tmp_path, monkeypatch, caplog):
    w = make_watcher(tmp_path, bad_scan)
    inbox = w.opts.inbox
    (inbox / "scan.pdf").write_bytes(b"x")
    monkeypatch.setattr(w.claims, "take", lambda *a: None)
    caplog.set_level(logging.INFO, logger="pipelines")
    try:
        for _ in range(watch.TAKEN_ELSEWHERE_WARN + 2):
            w._take(inbox / "scan.pdf", Path("scan.pdf"))
    finally:
        w.folders.close()
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and warned[0].startswith("taken-elsewhere-repeatedly ")
    assert w.next_rescan == 0.0  # the loop checks the inbox at once


def test_the_watcher_tells_the_job_its_inbox_is_shared(tmp_path):
    """So that a sidecar's scanned_by (anyone may write it) is not taken as the digitizer (M5)."""
    seen = []

    def process(path, settings, hint, **kw):
        seen.append(kw.get("shared_inbox"))
        return JobResult(str(path), Status.done)

    w = make_watcher(tmp_path, process)
    (w.opts.inbox / "scan.pdf").write_bytes(b"%PDF-1.4\n%%EOF\n")
    try:
        w._take(w.opts.inbox / "scan.pdf", Path("scan.pdf"))
    finally:
        w.folders.close()
    assert seen == [True]


def test_watch_agencies_scope_what_the_job_may_file_into(tmp_path):
    """[watch] agencies (M6) reach the job as ``allowed``; unset, nothing is passed (any agency)."""
    seen = []

    def process(path, settings, hint, **kw):
        seen.append(kw.get("allowed"))
        return JobResult(str(path), Status.done)

    w = make_watcher(tmp_path, process, agencies=("000.00.31.H56",))
    (w.opts.inbox / "scan.pdf").write_bytes(b"%PDF-1.4\n%%EOF\n")
    try:
        w._take(w.opts.inbox / "scan.pdf", Path("scan.pdf"))
    finally:
        w.folders.close()
    [allowed] = seen
    assert allowed("000.00.31.H56-241015-0027") and not allowed("000.00.12.H29-241016-0003")
    assert allowed(None) and allowed(None, "000.00.31.H56") and not allowed(None, "000.00.12.H29")
    with pytest.raises(watch.ConfigError):
        watch.WatchOptions(w.opts.inbox, agencies=("not an agency code!",))


# --- review 2, M1: a scan and its sidecar are never separated by a failed or interrupted move ----------

def failing_scan_move(monkeypatch, error: OSError):
    """fsutil.move_at as on a full done/ file system or an SMB share that refuses the scan (not its sidecar)."""
    real, calls = inboxlib.move_at, []

    def move_at(src_fd, name, dst_fd, target):
        calls.append(name)
        if name.endswith(".pdf"):
            raise error
        return real(src_fd, name, dst_fd, target)

    monkeypatch.setattr(inboxlib, "move_at", move_at)
    return calls


@pytest.mark.parametrize("error", [PermissionError(13, "Permission denied"), OSError(28, "No space left on device")])
def test_a_scan_move_that_fails_leaves_its_sidecar_and_no_reason_at_the_destination(tmp_path, monkeypatch, error):
    """Review 2's t3#2: the sidecar and .error.txt were left in failed/, the scan given back without them."""
    for d in ("src", "dst"):
        (tmp_path / d).mkdir()
    (tmp_path / "src/scan.pdf").write_bytes(b"scan")
    (tmp_path / "src/scan.pdf.json").write_text('{"case_id": "000.00.31.H56-241015-0027"}')
    failing_scan_move(monkeypatch, error)
    src, dst = (os.open(tmp_path / d, os.O_RDONLY | os.O_DIRECTORY) for d in ("src", "dst"))
    try:
        with pytest.raises(OSError) as raised:
            inboxlib.move_free(src, "scan.pdf", dst, "scan.pdf", "scan.pdf.json",
                               before=lambda fd, free: watch._write_new(fd, free + inboxlib.ERROR_SUFFIX, "why"))
    finally:
        os.close(src)
        os.close(dst)
    assert raised.value is error
    assert sorted(os.listdir(tmp_path / "src")) == ["scan.pdf", "scan.pdf.json"]
    assert os.listdir(tmp_path / "dst") == []


def test_the_sidecar_moves_before_the_scan(tmp_path, monkeypatch):
    """The scan moves last: a crash in between leaves a lone sidecar (inert) and the scan in its claim."""
    w = make_watcher(tmp_path, bad_scan)
    (w.opts.inbox / "scan.pdf").write_bytes(b"scan")
    (w.opts.inbox / "scan.pdf.json").write_text("{}")
    real, order = inboxlib.move_at, []
    monkeypatch.setattr(inboxlib, "move_at", lambda s, n, d, t: (order.append(n), real(s, n, d, t)))
    try:
        claim = w.claims.take(w.folders.inbox, Path("scan.pdf"), "scan.pdf.json")
        w._quarantine(claim, ("InputError",), "not a scan")
    finally:
        w.folders.close()
    assert order == ["scan.pdf.json", "scan.pdf"]
    assert sorted(os.listdir(w.opts.inbox / "failed")) == ["scan.pdf", "scan.pdf.error.txt", "scan.pdf.json"]


def test_a_quarantine_whose_scan_move_fails_gives_the_pair_back_together(tmp_path, monkeypatch):
    w = make_watcher(tmp_path, bad_scan)
    inbox = w.opts.inbox
    (inbox / "scan.pdf").write_bytes(b"scan")
    (inbox / "scan.pdf.json").write_text('{"title": "x"}')
    real = inboxlib.move_at

    def move_at(src_fd, name, dst_fd, target):  # failed/ refuses the scan; the give-back works
        if name.endswith(".pdf") and os.fstat(dst_fd).st_ino == (inbox / "failed").stat().st_ino:
            raise OSError(5, "Input/output error")
        return real(src_fd, name, dst_fd, target)

    monkeypatch.setattr(inboxlib, "move_at", move_at)
    try:
        with pytest.raises(OSError):
            w._take(inbox / "scan.pdf", Path("scan.pdf"))
    finally:
        w.folders.close()
    assert sorted(os.listdir(inbox / "failed")) == []
    assert (inbox / "scan.pdf.json").read_text() == '{"title": "x"}' and (inbox / "scan.pdf").exists()


def recording_watcher(tmp_path: Path, calls: list) -> watch.Watcher:
    """A watcher whose job stores everything, noting each path it was given."""
    def process(path, *args, **kw):
        calls.append(path)
        return JobResult(str(path), Status.done)

    return make_watcher(tmp_path, process)


@pytest.mark.parametrize("stranded_in", ["failed", "done"])
def test_a_claim_whose_sidecar_was_stranded_by_a_crash_is_not_filed_without_it(tmp_path, stranded_in):
    """A sidecar moved out of its claim with no record of where (the move did not go through move_free, as
    an older watcher's): the next one (recovery goes through _handle) quarantines the scan with that reason
    instead of filing it by QR code or name. Recorded moves are put back together: test_watch_sidecar_crash."""
    calls = []
    w = recording_watcher(tmp_path, calls)
    inbox = w.opts.inbox
    (inbox / "scan.pdf").write_bytes(b"scan")
    (inbox / "scan.pdf.json").write_text('{"case_id": "000.00.31.H56-241015-0027"}')
    try:
        claim = w.claims.take(w.folders.inbox, Path("scan.pdf"), "scan.pdf.json")
        target = {"failed": w.folders.failed, "done": w.folders.done, "inbox": w.folders.inbox}[stranded_in]
        src = w.claims.folder_fd(claim)
        try:  # what the dead watcher's move did before it was killed
            fsutil.move_at(src, "scan.pdf.json", target, "scan.pdf.json")
        finally:
            os.close(src)
        w._handle(claim)
    finally:
        w.folders.close()
    assert calls == []
    reason = next(f for f in (inbox / "failed").iterdir() if f.name.endswith(inboxlib.ERROR_SUFFIX)).read_text()
    assert "sidecar scan.pdf.json was separated" in reason
    stranded = inbox / ("" if stranded_in == "inbox" else stranded_in) / "scan.pdf.json"
    assert stranded.read_text() == '{"case_id": "000.00.31.H56-241015-0027"}'  # left for the clerk


def test_a_sidecar_removed_while_its_scan_is_taken_lets_the_scan_go_on(tmp_path, monkeypatch):
    calls = []
    w = recording_watcher(tmp_path, calls)
    inbox = w.opts.inbox
    (inbox / "scan.pdf").write_bytes(b"scan")  # its sidecar was listed, then deleted by the clerk
    try:
        claim = w.claims.take(w.folders.inbox, Path("scan.pdf"), "scan.pdf.json")
        assert claim.sidecar == ""
        w._handle(claim)
    finally:
        w.folders.close()
    assert len(calls) == 1 and (inbox / "done/scan.pdf").exists()


# --- review 2, L2: remount and "taken elsewhere" edges ---------------------------------------------------

def test_reopening_a_replaced_inbox_keeps_the_failure_counts(tmp_path):
    w = make_watcher(tmp_path, storage_down)
    inbox = w.opts.inbox
    path = inbox / "scan.pdf"
    try:
        w._defer(path, "storage down", internal=True)
        w._defer(path, "storage down", internal=True)
        os.rename(inbox, tmp_path / "inbox.old")
        inbox.mkdir(mode=0o750)
        w._rescan()  # reopens
        assert w._failures(path) == 2  # one more internal error quarantines it (INTERNAL_LIMIT), as before
    finally:
        w.folders.close()


def test_taken_elsewhere_forces_at_most_one_rescan_per_interval(tmp_path, monkeypatch):
    w = make_watcher(tmp_path, bad_scan)
    inbox = w.opts.inbox
    monkeypatch.setattr(w.claims, "take", lambda *a: None)
    try:
        w._take(inbox / "a.pdf", Path("a.pdf"))
        assert w.next_rescan == 0.0
        w.next_rescan = 1e12  # the loop rescanned and set the next regular rescan
        w._take(inbox / "b.pdf", Path("b.pdf"))  # another lost race right after
        assert w.next_rescan == 1e12
    finally:
        w.folders.close()


def test_after_a_crash_between_the_two_moves_the_next_watcher_quarantines_the_scan_it_adopts(tmp_path):
    """The whole restart path: a dead watcher's claim holds the scan, its sidecar already in failed/."""
    import subprocess

    first = make_watcher(tmp_path, bad_scan)
    inbox = first.opts.inbox
    (inbox / "scan.pdf").write_bytes(b"scan")
    (inbox / "scan.pdf.json").write_text('{"case_id": "000.00.31.H56-241015-0027"}')
    claim = first.claims.take(first.folders.inbox, Path("scan.pdf"), "scan.pdf.json")
    src = first.claims.folder_fd(claim)
    try:  # killed after moving the sidecar into failed/, before the scan
        fsutil.move_at(src, "scan.pdf.json", first.folders.failed, "scan.pdf.json")
    finally:
        os.close(src)
    owner = first.claims.path
    first.folders.close()
    dead = subprocess.Popen(["true"])
    dead.wait()
    os.rename(owner, owner.with_name(f"{dead.pid}-{fsutil.owner_name().partition('-')[2]}"))
    calls = []
    second = recording_watcher(tmp_path, calls)
    try:
        second._recover()
    finally:
        second.folders.close()
    assert calls == []
    # not beside the sidecar that lies there unrecorded (review hard15 L8: a name whose sidecar name is taken is
    # taken), so that sidecar never passes for this scan's on the desk; the reason says where to look
    assert sorted(os.listdir(inbox / "failed")) == ["scan.1.pdf", "scan.1.pdf.error.txt", "scan.pdf.json"]
    assert "separated" in (inbox / "failed/scan.1.pdf.error.txt").read_text()
