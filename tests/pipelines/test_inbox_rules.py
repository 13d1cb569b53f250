"""Which inbox files are scans, when one is complete, and where it may go (no servers, no OCR)."""

from __future__ import annotations

from pathlib import Path, PurePath

import pytest
from scans import page, write_pdf

from digitize.config import ConvertSettings
from pipelines import inbox
from pipelines.journal import Journal


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


def test_free_name_never_overwrites_a_previous_file_or_its_error(tmp_path):
    (tmp_path / "a.pdf").write_bytes(b"1")
    (tmp_path / "a.1.pdf.error.txt").write_text("x")
    assert inbox.free_name(tmp_path, "a.pdf") == tmp_path / "a.2.pdf"


def test_sidecar_travels_with_its_scan(tmp_path):
    (tmp_path / "in").mkdir()
    scan = tmp_path / "in" / "s.pdf"
    scan.write_bytes(b"%PDF-1.4")
    (tmp_path / "in" / "s.json").write_text("{}")
    inbox.move_with_sidecar(scan, tmp_path / "done" / "s.pdf")
    assert sorted(p.name for p in (tmp_path / "done").iterdir()) == ["s.pdf", "s.pdf.json"]
    assert list((tmp_path / "in").iterdir()) == []


def test_claims_count_attempts_and_survive_a_restart(tmp_path):
    Journal(tmp_path).claim("a/b.pdf")
    journal = Journal(tmp_path)  # a new process reading the same journal
    assert [(c.path, c.attempts) for c in journal.pending()] == [("a/b.pdf", 1)]
    assert journal.claim("a/b.pdf").attempts == 2
    journal.release("a/b.pdf")
    assert journal.pending() == []


def test_claim_of_a_file_already_moved_is_dropped_at_start_up(tmp_path):
    from digitize.config import Settings
    from pipelines.watch import Watcher, WatchOptions

    inbox_dir = tmp_path / "inbox"
    inbox_dir.mkdir()
    opts = WatchOptions(inbox_dir, once=True)
    Journal(opts.state_dir).claim("gone.pdf")  # crash between the move to done/ and the release
    Watcher(opts, Settings(data_dir=str(tmp_path / "data"))).run()
    assert Journal(opts.state_dir).pending() == []
