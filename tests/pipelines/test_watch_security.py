"""What a clerk with write access to the inbox can plant: symlinked or foreign control folders,
symlinked scans and folders, names at the file system's limit. Real ``digitize watch``/``batch``
processes on real files; root plays the service, uid 65534 the other account.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from pipeline_support import ROOT, digitize_cmd, run_cli, settings_env, stored_rows, wait_for
from scans import page, write_pdf

pytestmark = pytest.mark.integration

OTHER_UID = 65534  # nobody: the clerk's account, as far as the watcher can tell


def scan_file(path: Path, words: str = "Đơn đề nghị") -> Path:
    return write_pdf([page([words])], path)


@pytest.fixture
def inbox(tmp_path) -> Path:
    folder = tmp_path / "inbox"
    folder.mkdir()
    return folder


def elsewhere_of(tmp_path) -> Path:
    """A folder the clerk wants the watcher to write into (say /etc)."""
    target = tmp_path / "elsewhere"
    target.mkdir()
    return target


@pytest.mark.parametrize("control", ["failed", "done", ".digitize"])
def test_symlinked_control_folder_is_refused_with_one_line_and_nothing_written_through_it(
        tmp_path, inbox, folder_settings, control):
    elsewhere = elsewhere_of(tmp_path)
    (inbox / control).symlink_to(elsewhere)
    scan_file(inbox / "good.pdf")
    (inbox / "garbage.pdf").write_bytes(os.urandom(5000))
    run = run_cli(folder_settings, "watch", str(inbox), "--once")
    assert run.returncode == 5, run.stderr
    [line] = [x for x in run.stderr.splitlines() if x.strip()]
    assert line.startswith("digitize: refusing") and control in line and "symbolic link" in line
    assert list(elsewhere.iterdir()) == []
    assert (inbox / "good.pdf").exists() and (inbox / "garbage.pdf").exists()


@pytest.mark.parametrize("control", ["failed", "done", ".digitize"])
def test_control_folder_of_another_account_is_refused(tmp_path, inbox, folder_settings, control):
    (inbox / control).mkdir()
    os.chown(inbox / control, OTHER_UID, OTHER_UID)
    (inbox / "garbage.pdf").write_bytes(os.urandom(5000))
    run = run_cli(folder_settings, "watch", str(inbox), "--once")
    assert run.returncode == 5, run.stderr
    assert f"owned by uid {OTHER_UID}" in run.stderr and control in run.stderr
    assert list((inbox / control).iterdir()) == [] and (inbox / "garbage.pdf").exists()


def test_failed_folder_swapped_for_a_symlink_while_watching_still_gets_nothing_written_through_it(
        tmp_path, inbox, folder_settings):
    elsewhere = elsewhere_of(tmp_path)
    log = tmp_path / "watch.log"
    proc = subprocess.Popen(digitize_cmd("watch", str(inbox), "--log-json"), env=settings_env(folder_settings),
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=open(log, "wb"), start_new_session=True)
    try:
        wait_for(lambda: log.exists() and '"watching"' in log.read_text(), "the watcher to start")
        (inbox / "failed").rename(inbox / "failed.old")  # the clerk may rename in the inbox...
        (inbox / "failed").symlink_to(elsewhere)  # ...and plant a link in its place
        (inbox / "garbage.pdf").write_bytes(os.urandom(5000))
        wait_for(lambda: '"quarantined"' in log.read_text(), "the garbage to be quarantined")
        assert proc.poll() is None
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert list(elsewhere.iterdir()) == []
    assert sorted(p.name for p in (inbox / "failed.old").iterdir()) == ["garbage.pdf", "garbage.pdf.error.txt"]


def secret_pdf(tmp_path) -> Path:
    """A root-only document outside the inbox; valid, so it would convert and store."""
    secret = tmp_path / "root-only" / "secret.pdf"
    secret.parent.mkdir(mode=0o700)
    scan_file(secret, "Mật khẩu")
    secret.chmod(0o600)
    return secret


def test_symlinked_scans_and_folders_in_the_inbox_are_never_followed(tmp_path, inbox, folder_settings):
    secret = secret_pdf(tmp_path)
    (inbox / "link.pdf").symlink_to(secret)
    (inbox / "000.00.31.H56-241015-0027").symlink_to(secret.parent, target_is_directory=True)
    os.mkfifo(inbox / "pipe.pdf")  # a FIFO must not hang the watcher either
    scan_file(inbox / "real.pdf")
    run = run_cli(folder_settings, "watch", str(inbox), "--once")
    assert run.returncode == 0, run.stderr
    assert [r.source_name for r in stored_rows(folder_settings)] == ["real.pdf"]
    failed = inbox / "failed"
    assert (failed / "link.pdf").is_symlink() and (failed / "pipe.pdf").exists()
    reason = (failed / "link.pdf.error.txt").read_text(encoding="utf-8")
    assert "symbolic link" in reason and "lối tắt" in reason
    assert secret.exists() and (secret.parent / "secret.pdf").stat().st_mode & 0o777 == 0o600
    assert (inbox / "000.00.31.H56-241015-0027").is_symlink()  # a linked folder is not entered


def test_batch_takes_no_symlinked_scan_or_folder(tmp_path, folder_settings):
    secret = secret_pdf(tmp_path)
    src = tmp_path / "archive"
    (src / "1998").mkdir(parents=True)
    scan_file(src / "1998" / "real.pdf")
    (src / "1998" / "link.pdf").symlink_to(secret)
    (src / "linked").symlink_to(secret.parent, target_is_directory=True)
    run = run_cli(folder_settings, "batch", str(src), "--jobs", "1")
    assert run.returncode == 0, run.stderr
    assert [r.source_name for r in stored_rows(folder_settings)] == ["real.pdf"]


def test_open_regular_refuses_links_on_the_way_and_at_the_end(tmp_path):
    from digitize.errors import NotRegularFileError
    from digitize.fsutil import open_regular

    secret = secret_pdf(tmp_path)
    root = tmp_path / "src"
    (root / "a").mkdir(parents=True)
    (root / "a" / "link.pdf").symlink_to(secret)
    (root / "b").symlink_to(secret.parent, target_is_directory=True)
    with pytest.raises(NotRegularFileError):
        open_regular(root / "a" / "link.pdf", root)
    with pytest.raises(NotADirectoryError):
        open_regular(root / "b" / "secret.pdf", root)
    os.close(open_regular(secret))


VIETNAMESE = "Đơn đề nghị cấp giấy chứng nhận quyền sử dụng đất của hộ gia đình ông Nguyễn Văn Thành "


def long_names() -> list[str]:
    """Valid names of 250 ASCII characters and of 251..255 UTF-8 bytes (≈ 90 Vietnamese characters)."""
    def named(target: int) -> str:
        stem = VIETNAMESE * 2
        while len((stem + ".pdf").encode()) > target:
            stem = stem[:-1]
        return stem + "x" * (target - len((stem + ".pdf").encode())) + ".pdf"

    return ["h" * 246 + ".pdf", named(251), named(253), named(255)]


@pytest.mark.parametrize("name", long_names(), ids=lambda n: f"{len(n.encode())}B")
def test_names_at_the_file_system_limit_are_quarantined_and_stored_without_a_crash(tmp_path, inbox,
                                                                                   folder_settings, name):
    assert 250 <= len(name.encode()) <= 255
    bad = inbox / name
    bad.write_bytes(os.urandom(5000))
    case = inbox / "000.00.31.H56-241015-0027"
    case.mkdir()
    good = scan_file(case / name)
    shutil.copy(good, inbox / ("copy-" + name[5:]))
    run = run_cli(folder_settings, "watch", str(inbox), "--once")
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr
    failed = sorted(p.name for p in (inbox / "failed").iterdir())
    assert len(failed) == 2 and all(len(n.encode()) <= 255 for n in failed)
    assert any(n.endswith(".pdf.error.txt") for n in failed)
    assert sorted(r.source_name for r in stored_rows(folder_settings)) == [name]  # the copy: same bytes
    done = [p for p in (inbox / "done").rglob("*") if p.is_file()]
    assert len(done) == 2 and all(len(p.name.encode()) <= 255 for p in done)
    assert not any(re.search(r"\.part$", p.name) for p in inbox.rglob("*"))


def test_state_folder_swapped_while_watching_stops_path_reads_through_it_but_not_the_watcher(
        tmp_path, inbox, folder_settings):
    """The converter reads a claimed scan by path, through INBOX/.digitize: a renamed-and-replaced
    .digitize must make the watcher refuse (and in the end quarantine) rather than read through it."""
    log = tmp_path / "watch.log"
    proc = subprocess.Popen(digitize_cmd("watch", str(inbox), "--log-json"), env=settings_env(folder_settings),
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=open(log, "wb"), start_new_session=True)
    try:
        wait_for(lambda: log.exists() and '"watching"' in log.read_text(), "the watcher to start")
        (inbox / ".digitize").rename(inbox / "moved")
        (inbox / ".digitize").mkdir()  # the clerk's own folder where the watcher's was
        scan_file(inbox / "scan.pdf")
        wait_for(lambda: (inbox / "failed" / "scan.pdf.error.txt").exists(), "the scan to be quarantined")
        assert proc.poll() is None
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert "was replaced" in (inbox / "failed" / "scan.pdf.error.txt").read_text(encoding="utf-8")
    assert stored_rows(folder_settings) == [] and list((inbox / ".digitize").iterdir()) == []


def test_a_scoped_shared_inbox_files_nothing_into_another_agencys_case(tmp_path, inbox, folder_settings):
    """[watch] agencies (M6): a sidecar naming another agency's case cannot file a scan there; the scan
    goes to failed/ with the reason, a scan for an allowed agency is stored, and the group-writable but
    scoped inbox gets no 'inbox-unscoped' warning."""
    inbox.chmod(0o1770)
    scan_file(inbox / "other.pdf")
    (inbox / "other.json").write_text('{"case_id": "000.00.12.H29-241016-0003"}', encoding="utf-8")
    scan_file(inbox / "ours.pdf", "Tờ khai")
    (inbox / "ours.json").write_text('{"case_id": "000.00.31.H56-241015-0027"}', encoding="utf-8")
    env = {**settings_env(folder_settings), "DIGITIZE_WATCH_AGENCIES": "000.00.31.H56"}
    run = subprocess.run(digitize_cmd("watch", str(inbox), "--once"), env=env, cwd=ROOT, capture_output=True,
                         text=True, timeout=600)
    assert (inbox / "failed/other.pdf").exists(), run.stderr
    assert "000.00.12.H29" in (inbox / "failed/other.pdf.error.txt").read_text(encoding="utf-8")
    assert (inbox / "done/ours.pdf").exists() and "inbox-unscoped" not in run.stderr
    assert [r.case_id for r in stored_rows(folder_settings)] == ["000.00.31.H56-241015-0027"]


def test_an_unscoped_group_writable_inbox_is_warned_about_at_start(inbox, folder_settings):
    inbox.chmod(0o1770)
    run = run_cli(folder_settings, "watch", str(inbox), "--once")
    assert run.returncode == 0, run.stderr
    assert "inbox-unscoped" in run.stderr and "[watch] agencies" in run.stderr
