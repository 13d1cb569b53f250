"""Which inbox files are scans, when one is complete, and where it may go (no servers, no OCR)."""

from __future__ import annotations

from pathlib import Path, PurePath

import pytest
from scans import page, write_pdf

from digitize.config import ConvertSettings
from pipelines import inbox


@pytest.mark.parametrize("name", [".hidden.pdf", "~$don.docx", "scan.pdf.tmp", "scan.part", "Thumbs.db",
                                  "desktop.ini", ".DS_Store", "x.crdownload", "scan.pdf.error.txt"])
def test_scanner_junk_is_ignored(name):
    assert not inbox.is_scan(PurePath(name))


def test_sidecars_and_hidden_folders_are_not_scans_but_case_folders_are():
    assert not inbox.is_scan(PurePath("scan.json"))
    assert not inbox.is_scan(PurePath(".digitize/claims/x.pdf"))
    assert inbox.is_scan(PurePath("000.00.31.H56-241015-0027/01-don.pdf"))


def test_stability_needs_size_and_mtime_unchanged_for_the_whole_delay():
    tracker = inbox.StabilityTracker(stable_seconds=5)
    p = Path("a.pdf")
    assert tracker.observe(p, 100, 1, now=0) == 0
    assert tracker.observe(p, 100, 1, now=4) == 4
    assert tracker.observe(p, 200, 2, now=6) == 0  # grew: the clock restarts
    assert tracker.observe(p, 200, 3, now=8) == 0  # touched: restarts too
    assert tracker.observe(p, 200, 3, now=13) == 5


def test_truncated_pdf_is_incomplete_and_the_whole_one_is_not(tmp_path):
    whole = write_pdf([page(["Đơn"]), page(["Bản sao"])], tmp_path / "whole.pdf")
    cut = tmp_path / "cut.pdf"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size * 2 // 3])
    limits = ConvertSettings()
    assert inbox.completeness_problem(whole, limits) is None
    assert inbox.completeness_problem(cut, limits).kinds == ("incomplete",)
    (tmp_path / "empty.pdf").write_bytes(b"")
    assert "empty" in inbox.completeness_problem(tmp_path / "empty.pdf", limits).message
    (tmp_path / "word.pdf").write_bytes(b"PK\x03\x04 not a scan")
    assert inbox.completeness_problem(tmp_path / "word.pdf", limits).kinds[0] == "UnsupportedInputError"


def test_a_scan_is_judged_complete_in_a_worker_process_never_in_the_watcher(tmp_path, monkeypatch):
    """Issue 9 #5: opening and decoding a candidate (a TIFF's last frame) is untrusted work; a bomb or a
    decoder crash must cost a page worker, not the watcher that is judging the file."""
    import os

    from digitize import sources
    from digitize.errors import InputError

    readers = tmp_path / "readers"

    def record_reader(path, limits):
        readers.write_text(str(os.getpid()))
        raise InputError("refused by the probe")

    monkeypatch.setattr(sources, "open_source", record_reader)
    whole = write_pdf([page(["Đơn"])], tmp_path / "whole.pdf")
    problem = inbox.completeness_problem(whole, ConvertSettings())
    assert problem is not None and "refused by the probe" in problem.message
    assert readers.read_text() != str(os.getpid())


@pytest.mark.parametrize("present, free", [
    (["a.pdf", "a.1.pdf.error.txt"], "a.2.pdf"),
    # review hard15 L8: beside a sidecar left there alone (a rejoin's leftover), a scan without one would pair
    # with it (the desk credits its case, a retry carries it): such a name counts as taken
    (["a.pdf.json"], "a.1.pdf"),
    (["a.json"], "a.1.pdf"),
])
def test_free_name_never_overwrites_a_previous_file_its_error_or_a_sidecar_of_its_name(tmp_path, present, free):
    import os

    for name in present:
        (tmp_path / name).write_bytes(b"1")
    fd = os.open(tmp_path, os.O_RDONLY)
    try:
        assert inbox.free_name(fd, "a.pdf") == free
    finally:
        os.close(fd)


def test_claim_of_a_dead_watcher_is_adopted_once_and_its_emptied_claims_dropped(tmp_path):
    import os
    import subprocess

    from digitize.fsutil import owner_name
    from pipelines.claims import Claims

    inbox_dir = tmp_path / "inbox"
    (inbox_dir / ".digitize").mkdir(parents=True, mode=0o750)
    (inbox_dir / "scan.pdf").write_bytes(b"%PDF-1.4 x %%EOF")
    state = os.open(inbox_dir / ".digitize", os.O_RDONLY)
    first = Claims(state, str(inbox_dir / ".digitize"))
    claim = first.take(os.open(inbox_dir, os.O_RDONLY), PurePath("scan.pdf"), None)
    assert claim is not None and not (inbox_dir / "scan.pdf").exists()
    assert first.take(os.open(inbox_dir, os.O_RDONLY), PurePath("scan.pdf"), None) is None  # gone: taken
    dead = subprocess.Popen(["true"])
    dead.wait()
    os.rename(first.path, first.path.with_name(f"{dead.pid}-{owner_name().partition('-')[2]}"))
    second = Claims(state, str(inbox_dir / ".digitize"))
    [adopted] = second.adopt_orphans()
    assert (adopted.relative, adopted.attempts) == ("scan.pdf", 2)
    assert (second.root(adopted) / "scan.pdf").read_bytes().startswith(b"%PDF")
    assert Claims(state, str(inbox_dir / ".digitize")).adopt_orphans() == []  # the live one is left alone


def test_a_work_folder_with_a_scan_but_no_readable_claim_is_never_deleted(tmp_path):
    import os
    import subprocess

    from digitize.fsutil import owner_name
    from pipelines.claims import Claims

    inbox_dir = tmp_path / "inbox"
    (inbox_dir / ".digitize").mkdir(parents=True, mode=0o750)
    dead = subprocess.Popen(["true"])
    dead.wait()
    orphan = inbox_dir / ".digitize" / "work" / f"{dead.pid}-{owner_name().partition('-')[2]}"
    (orphan / "t1" / "files" / "case").mkdir(parents=True)
    (orphan / "t1" / "files" / "case" / "scan.pdf").write_bytes(b"%PDF")
    (orphan / "t1" / "claim.json").write_text("{broken")
    (orphan / "t2" / "files" / "case").mkdir(parents=True)  # claimed, then moved out: only folders left
    (orphan / "t2" / "claim.json").write_text('{"relative": "case/x.pdf", "attempts": 1, "started": 0}')
    state = os.open(inbox_dir / ".digitize", os.O_RDONLY)
    assert Claims(state, str(inbox_dir / ".digitize")).adopt_orphans() == []
    mine = [p for p in (inbox_dir / ".digitize" / "work").iterdir() if p != orphan]
    assert [p.name for d in mine for p in d.iterdir() if p.name != "alive"] == ["t1"]
    assert (mine[0] / "t1" / "files" / "case" / "scan.pdf").read_bytes() == b"%PDF"


def _judge_with_deadline(path, fifo, seconds=60.0):
    """completeness_problem in a thread: if it blocks (on the FIFO), unblock it and fail."""
    import os
    import threading

    answer = []
    judge = threading.Thread(target=lambda: answer.append(inbox.completeness_problem(path, ConvertSettings())),
                             daemon=True)
    judge.start()
    judge.join(seconds)
    if judge.is_alive():
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # the blocked open returns; the thread ends
        judge.join(10)
        pytest.fail("the completeness check blocked on a FIFO swapped in for the scan")
    return answer[0]


def _swap_for_fifo(scan: Path, fifo: Path) -> None:
    import os

    os.mkfifo(fifo)
    scan.unlink()
    scan.symlink_to(fifo)


def test_a_scan_swapped_for_a_fifo_link_after_the_no_follow_open_is_judged_from_the_descriptor(tmp_path,
                                                                                                 monkeypatch):
    """Issue 11 #8: the check opens the scan once; size, type and tail come from that descriptor. A
    clerk's swap of the name for a link to a FIFO (or a device) never makes the watcher open it."""
    root = tmp_path / "inbox"
    root.mkdir()
    scan = write_pdf([page(["Đơn"])], root / "scan.pdf")
    fifo = tmp_path / "fifo"
    real_open = inbox.open_regular

    def open_then_swap(path, *args, **kwargs):
        fd = real_open(path, *args, **kwargs)
        if not fifo.exists():
            _swap_for_fifo(scan, fifo)
        return fd

    monkeypatch.setattr(inbox, "open_regular", open_then_swap)
    problem = _judge_with_deadline(scan, fifo)
    assert problem is not None and problem.kinds[0] == "NotRegularFileError", problem  # quarantined at once


def test_a_scan_swapped_for_a_fifo_link_while_it_is_read_never_blocks_the_check(tmp_path, monkeypatch):
    from digitize import sources

    root = tmp_path / "inbox"
    root.mkdir()
    scan = write_pdf([page(["Đơn"])], root / "scan.pdf")
    fifo = tmp_path / "fifo"
    real_sniff = sources.sniff

    def swap_then_sniff(path):
        if not fifo.exists():
            _swap_for_fifo(scan, fifo)
        return real_sniff(path)

    monkeypatch.setattr(sources, "sniff", swap_then_sniff)  # the name is swapped just before the type is read
    problem = _judge_with_deadline(scan, fifo)
    assert problem is None or problem.kinds  # judged, promptly, from the file that was opened


def dead_watcher_name() -> str:
    """A work-folder name of a watcher of this host and pid namespace that has died."""
    import subprocess

    from digitize.fsutil import owner_name

    dead = subprocess.Popen(["true"])
    dead.wait()
    return f"{dead.pid}-{owner_name().partition('-')[2]}"


def test_a_claim_with_a_field_of_another_version_is_adopted_and_a_plain_one_carries_no_new_field(tmp_path):
    """Watchers of two versions share an inbox during an upgrade: a claim one writes must not become
    unreadable to the other (it would be left in place, never redone), so unknown fields are ignored and
    the move record is written only while a move is under way."""
    import json
    import os

    from pipelines.claims import Claims

    state_dir = tmp_path / "inbox" / ".digitize"
    state_dir.mkdir(parents=True, mode=0o750)
    (tmp_path / "inbox" / "plain.pdf").write_bytes(b"%PDF-1.4 x %%EOF")
    live = Claims(os.open(state_dir, os.O_RDONLY), str(state_dir))
    plain = live.take(os.open(tmp_path / "inbox", os.O_RDONLY), PurePath("plain.pdf"), None)
    assert "moving" not in json.loads((live.path / plain.token / "claim.json").read_text())
    orphan = state_dir / "work" / dead_watcher_name()
    (orphan / "t1" / "files").mkdir(parents=True)
    (orphan / "t1" / "files" / "scan.pdf").write_bytes(b"%PDF")
    (orphan / "t1" / "claim.json").write_text(json.dumps({"relative": "scan.pdf", "attempts": 1, "started": 0,
                                                           "a_later_field": {"x": 1}}))
    [adopted] = live.adopt_orphans()
    assert (adopted.relative, adopted.attempts) == ("scan.pdf", 2)


def test_closing_the_claims_waits_for_a_heartbeat_under_way(tmp_path, monkeypatch):
    """close() closed the work folder's descriptors while the heartbeat thread could be touching ``alive``
    through them: its open then met a closed descriptor, or one the process had reused meanwhile (the
    inbox's replacement reopens its folders), and touched a file there. The heartbeat ends first."""
    import os
    import threading

    from pipelines import claims as claims_module
    from pipelines.claims import Claims

    monkeypatch.setattr(claims_module, "HEARTBEAT", 0.01)
    (tmp_path / ".digitize").mkdir(mode=0o750)
    entered, proceed, seen = threading.Event(), threading.Event(), []
    real = Claims._touch

    def touch(self):
        if threading.current_thread().name == "claims-heartbeat" and not entered.is_set():
            entered.set()
            proceed.wait(30)  # a touch under way (a slow disk) when the watcher closes
            try:
                os.fstat(self.fd)
                seen.append("open")
            except OSError:
                seen.append("closed")
        real(self)

    monkeypatch.setattr(Claims, "_touch", touch)
    claims = Claims(os.open(tmp_path / ".digitize", os.O_RDONLY), str(tmp_path / ".digitize"))
    assert entered.wait(30)
    closer = threading.Thread(target=claims.close)
    closer.start()
    closer.join(1.0)  # the old close() returned at once, the descriptors closed under the touch
    proceed.set()
    closer.join(30)
    claims._beat.join(30)
    assert seen == ["open"]
