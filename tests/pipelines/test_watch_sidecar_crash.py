"""A watcher killed (kill -9: no undo, no cleanup) between a scan's move and its sidecar's: the next watcher
puts the pair back together, or quarantines what it cannot pair, and leaves nothing unreported. Each crash
state is made by the real watcher code in a forked child that dies at the chosen step; the next watcher is
started on the same temp inbox (``process`` is stubbed: storage is not what these tests are about)."""

from __future__ import annotations

import os
import traceback
from pathlib import Path

import pytest

from digitize import fsutil
from digitize.config import Settings
from pipelines import inbox as inboxlib
from pipelines import watch
from pipelines.jobs import JobResult, Status

SIDECAR = '{"case_id": "000.00.31.H56-241015-0027"}'


def make_watcher(tmp_path: Path, process, **opts) -> watch.Watcher:
    inbox = tmp_path / "inbox"
    inbox.mkdir(mode=0o750, exist_ok=True)
    return watch.Watcher(watch.WatchOptions(inbox, stable_seconds=0.0, **opts),
                         Settings(data_dir=str(tmp_path / "data")), process=process)


def stored(path, *args, **kwargs) -> JobResult:
    return JobResult(str(path), Status.done)


def bad_scan(path, *args, **kwargs) -> JobResult:
    return JobResult(str(path), Status.failed, reason="not a scan", error_kinds=("InputError",))


def storage_down(path, *args, **kwargs) -> JobResult:
    return JobResult(str(path), Status.failed, reason="storage down", error_kinds=("StorageError",))


def killed_at(monkeypatch, module, func: str, when):
    """``module.func`` that kills the process (os._exit: as kill -9, nothing undone) when ``when(args)``."""
    real = getattr(module, func)

    def fatal(*args, **kwargs):
        if when(args):
            os._exit(9)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, func, fatal)


def crash(tmp_path, process, arm, finished_ok: bool = False, **opts) -> bool:
    """A first watcher takes inbox/scan.pdf (+ scan.pdf.json) and dies where ``arm(monkeypatch)`` says; False
    when it finished the file instead (allowed with ``finished_ok``)."""
    inbox = tmp_path / "inbox"
    inbox.mkdir(mode=0o750, parents=True, exist_ok=True)
    (inbox / "scan.pdf").write_bytes(b"%PDF-1.7 scan")
    (inbox / "scan.pdf.json").write_text(SIDECAR)

    def first(mp) -> None:
        watcher = make_watcher(tmp_path, process, **opts)
        arm(mp)
        watcher._take(inbox / "scan.pdf", Path("scan.pdf"))
        watcher.folders.close()

    code = in_child(first)
    assert code == 9 or (finished_ok and code == 0), f"the first watcher did not die at the step armed ({code})"
    return code == 9


def in_child(body) -> int:
    """``body(monkeypatch)`` run in a forked child (which never returns into pytest); its exit code: 0 when it
    returned, 9 when an armed step killed it, 3 when it raised."""
    pid = os.fork()
    if pid == 0:
        code = 3
        try:
            with pytest.MonkeyPatch.context() as mp:
                body(mp)
            code = 0
        except BaseException:  # noqa: BLE001
            traceback.print_exc()
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def restart(tmp_path, process=stored, **opts) -> list:
    calls = []

    def recording(path, *args, **kwargs):
        calls.append(Path(path).name)
        return process(path, *args, **kwargs)

    second = make_watcher(tmp_path, recording, once=True, **opts)
    second.run()
    return calls


def listing(folder: Path) -> list[str]:
    return sorted(os.listdir(folder)) if folder.exists() else []


def work_left(inbox: Path) -> list[str]:
    """Files left in any watcher's work folder (claims), beyond the ``alive`` marks."""
    return sorted(str(p.relative_to(inbox)) for p in (inbox / ".digitize/work").rglob("*")
                  if p.is_file() and p.name != "alive")


def across_file_systems(mp) -> None:
    """Every move to a real name fails with EXDEV, as if done/ were on another file system: move_at copies."""
    real_rename = fsutil._rename_noreplace

    def cross_device(src_fd, src_name, dst_fd, dst_name):
        if not src_name.startswith("."):
            raise OSError(18, "Invalid cross-device link")
        return real_rename(src_fd, src_name, dst_fd, dst_name)

    mp.setattr(fsutil, "_rename_noreplace", cross_device)


def scan_move(args) -> bool:  # move_at(src_fd, src_name, dst_fd, dst_name): the scan's own move
    return args[1] == "scan.pdf"


def test_killed_between_the_sidecar_and_the_scan_into_done_the_pair_is_filed_together(tmp_path, monkeypatch):
    crash(tmp_path, stored, lambda mp: killed_at(mp, inboxlib, "move_at", scan_move))
    inbox = tmp_path / "inbox"
    assert listing(inbox / "done") == ["scan.pdf.json"]  # the crash state: a lone sidecar in done/
    assert restart(tmp_path) == ["scan.pdf"]  # redone with its sidecar (storing is idempotent)
    assert listing(inbox / "done") == ["scan.pdf", "scan.pdf.json"]
    assert (inbox / "done/scan.pdf.json").read_text() == SIDECAR
    assert listing(inbox / "failed") == [] and work_left(inbox) == []


def test_killed_between_the_sidecar_and_the_scan_into_failed_leaves_one_reason_beside_the_pair(tmp_path):
    crash(tmp_path, bad_scan, lambda mp: killed_at(mp, inboxlib, "move_at", scan_move))
    inbox = tmp_path / "inbox"
    assert listing(inbox / "failed") == ["scan.pdf.error.txt", "scan.pdf.json"]
    restart(tmp_path, bad_scan)
    assert listing(inbox / "failed") == ["scan.pdf", "scan.pdf.error.txt", "scan.pdf.json"]
    assert "not a scan" in (inbox / "failed/scan.pdf.error.txt").read_text()
    assert work_left(inbox) == []


@pytest.mark.parametrize("when", ["giving the scan back to the inbox", "taking the pair from the inbox"])
def test_killed_with_the_sidecar_in_the_inbox_and_the_scan_in_its_claim_the_pair_is_filed_together(tmp_path, when):
    """Storage down, the pair going back to the inbox (the sidecar first); or a take (the scan first)."""
    if when.startswith("giving"):
        crash(tmp_path, storage_down, lambda mp: killed_at(mp, inboxlib, "move_at", scan_move))
    else:
        crash(tmp_path, stored, lambda mp: killed_at(mp, os, "rename", lambda a: a[0] == "scan.pdf.json"))
    inbox = tmp_path / "inbox"
    assert (inbox / "scan.pdf.json").exists() and not (inbox / "scan.pdf").exists()
    assert restart(tmp_path) == ["scan.pdf"]
    assert listing(inbox / "done") == ["scan.pdf", "scan.pdf.json"]
    assert not (inbox / "scan.pdf.json").exists() and listing(inbox / "failed") == [] and work_left(inbox) == []


def test_killed_between_deleting_the_scan_and_its_sidecar_the_sidecar_is_quarantined(tmp_path):
    """on_success = "delete": the scan was stored and deleted; its sidecar must not stay in a work folder."""
    crash(tmp_path, stored, lambda mp: killed_at(mp, os, "unlink", lambda a: a[0] == "scan.pdf.json"),
          on_success="delete")
    inbox = tmp_path / "inbox"
    assert work_left(inbox)  # the crash state: the claim holds the sidecar alone
    assert restart(tmp_path, on_success="delete") == []
    assert listing(inbox / "failed") == ["scan.pdf.json.lone", "scan.pdf.json.lone.error.txt"]
    assert (inbox / "failed/scan.pdf.json.lone").read_text() == SIDECAR
    assert "work folder by a crash" in (inbox / "failed/scan.pdf.json.lone.error.txt").read_text()
    assert work_left(inbox) == []


@pytest.mark.parametrize("swap", ["other content", "symlink"])
def test_a_sidecar_changed_where_it_was_left_is_not_taken_back(tmp_path, swap):
    """Only the very sidecar that left (its SHA-256), never a link: else the scan is quarantined, and the
    reason says where its sidecar was sent."""
    crash(tmp_path, stored, lambda mp: killed_at(mp, inboxlib, "move_at", scan_move))
    inbox = tmp_path / "inbox"
    left = inbox / "done/scan.pdf.json"
    left.unlink()
    if swap == "symlink":
        (tmp_path / "elsewhere.json").write_text(SIDECAR)
        left.symlink_to(tmp_path / "elsewhere.json")
    else:
        left.write_text('{"case_id": "000.00.31.H56-241015-0099"}')
    assert restart(tmp_path) == []
    assert listing(inbox / "failed") == ["scan.pdf", "scan.pdf.error.txt"]
    reason = (inbox / "failed/scan.pdf.error.txt").read_text()
    assert "separated" in reason and "done/scan.pdf.json" in reason
    assert os.path.lexists(left) and work_left(inbox) == []


def test_a_copy_into_done_killed_half_way_leaves_a_part_file_the_next_start_sweeps(tmp_path):
    """done/ on another file system: the scan is copied to a hidden part file first; the watcher killed
    mid-copy left it for ever. The next start removes it once it is an hour old (a fresh one may be another
    watcher's copy in progress) and files the pair."""
    def arm(mp):
        across_file_systems(mp)

        def killed(fin, fout, size):
            fout.write(fin.read(4))
            fout.flush()
            os._exit(9)  # mid-copy

        mp.setattr(fsutil.shutil, "copyfileobj", lambda fin, fout, size: (
            killed(fin, fout, size) if b"scan" in os.pread(fin.fileno(), 64, 0) else real_copy(fin, fout, size)))

    real_copy = fsutil.shutil.copyfileobj
    crash(tmp_path, stored, arm)
    done = tmp_path / "inbox/done"
    parts = [n for n in listing(done) if n.endswith(".part")]
    assert len(parts) == 1 and parts[0].startswith(".scan.pdf.")  # the crash state (the sidecar went first)
    restart(tmp_path)  # too fresh to be told from a copy in progress: kept
    assert parts[0] in listing(done)
    old = os.stat(done / parts[0]).st_mtime - 2 * fsutil.PART_AGE
    os.utime(done / parts[0], (old, old))
    restart(tmp_path)
    assert listing(done) == ["scan.pdf", "scan.pdf.json"]


def test_killed_after_a_copy_into_done_before_removing_the_claims_copy_nothing_is_filed_twice(tmp_path):
    """Across file systems a move copies, renames into place and unlinks its source last: killed just
    before that unlink, the pair is whole in done/ and the claim still holds the scan. The next start
    sees the same scan and sidecar there and removes the claim's copy (not a second NAME.1.pdf, nor a
    quarantine for a "separated" sidecar)."""
    def arm(mp):
        across_file_systems(mp)
        killed_at(mp, os, "unlink", lambda a: a[0] == "scan.pdf")  # the source's unlink, after the copy

    crash(tmp_path, stored, arm)
    inbox = tmp_path / "inbox"
    assert listing(inbox / "done") == ["scan.pdf", "scan.pdf.json"] and work_left(inbox)
    assert restart(tmp_path) == []
    assert listing(inbox / "done") == ["scan.pdf", "scan.pdf.json"]
    assert listing(inbox / "failed") == [] and work_left(inbox) == []


def test_killed_after_writing_the_reason_before_moving_the_scan_no_reason_is_left_for_nothing(tmp_path):
    """A quarantine writes NAME.error.txt first, the scan last: killed in between, the reason named no file
    and the scan, quarantined again, went to NAME.1.pdf. The next start removes that very reason first."""
    inbox = tmp_path / "inbox"
    inbox.mkdir(mode=0o750)
    (inbox / "scan.pdf").write_bytes(b"%PDF-1.7 scan")

    def arm(mp):
        (inbox / "scan.pdf.json").unlink()  # a scan without a sidecar
        killed_at(mp, inboxlib, "move_at", scan_move)

    crash(tmp_path, bad_scan, arm)
    assert listing(inbox / "failed") == ["scan.pdf.error.txt"]
    restart(tmp_path, bad_scan)
    assert listing(inbox / "failed") == ["scan.pdf", "scan.pdf.error.txt"]
    assert work_left(inbox) == []


def test_a_claim_stuck_in_the_watchers_hands_is_retried_at_the_next_rescan(tmp_path, monkeypatch):
    """Storage down and the give-back failing too (the inbox unreachable for a moment) left the scan in the
    live watcher's own work folder, untouched until a restart: the next rescan goes on with it."""
    inbox = tmp_path / "inbox"
    inbox.mkdir(mode=0o750)
    (inbox / "scan.pdf").write_bytes(b"%PDF-1.7 scan")
    (inbox / "scan.pdf.json").write_text(SIDECAR)
    results = [storage_down, stored]
    w = make_watcher(tmp_path, lambda *a, **kw: results.pop(0)(*a, **kw))
    real, calls = w.claims.give_back, []

    def unreachable(*args):
        calls.append(args)
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(w.claims, "give_back", unreachable)
    try:
        w._take(inbox / "scan.pdf", Path("scan.pdf"))
        assert len(calls) == 1 and work_left(inbox) and listing(inbox / "done") == []  # stuck in our hands
        monkeypatch.setattr(w.claims, "give_back", real)
        w._rescan()
    finally:
        w.folders.close()
    assert results == [] and listing(inbox / "done") == ["scan.pdf", "scan.pdf.json"] and work_left(inbox) == []


def real_names(folder: Path) -> list[str]:
    """The folder's files but for part files a killed write left (swept an hour later: see the part tests)."""
    return [n for n in listing(folder) if not fsutil.PART_NAMES.match(n)]


CALLS = ("rename", "replace", "link", "unlink", "mkdir", "open", "fsync")


def killed_at_call(mp, number: int) -> None:
    """The process dies (os._exit: kill -9) at its ``number``-th file-system call counted from here."""
    count = [0]
    for name in CALLS:
        real = getattr(os, name)

        def counted(*args, _real=real, **kwargs):
            count[0] += 1
            if count[0] == number:
                os._exit(9)
            return _real(*args, **kwargs)

        mp.setattr(os, name, counted)


PAIR = {"done": ["scan.pdf", "scan.pdf.json"], "failed": []}
LONE = ["scan.pdf.json.lone", "scan.pdf.json.lone.error.txt"]


@pytest.mark.parametrize("first, then, ends, variant", [
    (stored, stored, [PAIR], ""),
    (bad_scan, bad_scan, [{"done": [], "failed": ["scan.pdf", "scan.pdf.error.txt", "scan.pdf.json"]}], ""),
    (storage_down, stored, [PAIR], ""),  # given back, then stored by the next watcher
    (stored, stored, [PAIR], "across file systems"),  # done/ elsewhere: copies, renames, unlinks last
    (stored, stored, [{"failed": []}, {"failed": LONE}], "delete"),  # on_success = "delete"; no done/
])
def test_killed_at_any_file_system_call_the_pair_ends_together_and_nothing_is_left(tmp_path, monkeypatch, first,
                                                                                   then, ends, variant):
    """Kill -9 at every file-system call of one file's take, handling and move in turn: after the next start
    the scan and its sidecar are together where they belong, once, and no claim, part file or stray reason
    is left (the restarted watcher runs --once over the same inbox; the fake scan passes as complete). With
    on_success = "delete", a sidecar whose stored scan was deleted just before the kill goes to failed/."""
    monkeypatch.setattr(inboxlib, "completeness_problem", lambda *args, **kwargs: None)
    opts = {"on_success": "delete"} if variant == "delete" else {}

    def arm(mp, number):
        if variant == "across file systems":
            across_file_systems(mp)
        killed_at_call(mp, number)

    number = 0
    while True:
        number += 1
        case = tmp_path / str(number)
        if not crash(case, first, lambda mp: arm(mp, number), finished_ok=True, **opts):
            break  # the first watcher finished the file before the armed call: every step was hit
        restart(case, then, **opts)
        inbox = case / "inbox"
        found = {folder: real_names(inbox / folder) for folder in ends[0]}
        assert (number, found) in [(number, end) for end in ends]
        assert (number, work_left(inbox)) == (number, [])
        assert (number, [n for n in listing(inbox) if not n.startswith(".")]) == (number, sorted(ends[0]))
    assert number > 10


def test_a_claim_that_stays_stuck_is_redone_once_then_filed_not_converted_at_every_rescan(tmp_path, monkeypatch):
    """Review hard15 M1: a give-back that always fails (the scan's inbox folder replaced by a file) left the
    claim stuck, and each rescan converted it again without counting an attempt: for ever. Now each rescan
    counts one, so after one redo the scan goes to failed/ with a reason."""
    inbox = tmp_path / "inbox"
    inbox.mkdir(mode=0o750)
    (inbox / "scan.pdf").write_bytes(b"%PDF-1.7 scan")
    (inbox / "scan.pdf.json").write_text(SIDECAR)
    runs = []

    def always_down(*args, **kwargs):
        runs.append(1)
        return storage_down(*args, **kwargs)
    w = make_watcher(tmp_path, always_down)

    def unreachable(*args):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(w.claims, "give_back", unreachable)
    try:
        w._take(inbox / "scan.pdf", Path("scan.pdf"))
        for _ in range(4):
            w._rescan()
    finally:
        w.folders.close()
    assert len(runs) == 2  # the first try and one redo, not one per rescan
    assert "scan.pdf" in listing(inbox / "failed") and work_left(inbox) == []
    reason = (inbox / "failed/scan.pdf.error.txt").read_text()  # what failed, not "attempts were interrupted"
    assert "could not move back into the inbox: Input/output error" in reason and "interrupted" not in reason
