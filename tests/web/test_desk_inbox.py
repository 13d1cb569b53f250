"""The scanning desk shows the watch inbox's failed files with their reasons, each only to those entitled
(attributed by the case IDs in its clues; unattributable ones to archivists and admins only), and "link to a
case and retry" takes one out of failed/ into the watch job, within the scanner's scope, as an event."""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pipelines"))

from scans import page, write_pdf  # noqa: E402

from digitize.config import Settings  # noqa: E402
from digitize.errors import NotFoundError  # noqa: E402
from pipelines import failed  # noqa: E402
from pipelines.messages import error_report, explain  # noqa: E402
from portal_data import AGENCY_A, CASE_A, CASE_B, PASSWORD  # noqa: E402
from storage.archive import Archive  # noqa: E402
from web.app import create_app  # noqa: E402

CASE_A2 = f"{AGENCY_A}-241015-0031"


def quarantine(folder: Path, relative: str, scan: Path | bytes, detail: str, sidecar: str | None = None) -> Path:
    """What watch leaves in failed/: the scan, NAME.error.txt and (moved along) NAME.json."""
    target = folder / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(scan.read_bytes() if isinstance(scan, Path) else scan)
    target.with_name(target.name + ".error.txt").write_text(
        error_report(target.name, explain(("InputError",)), detail, "2024-10-15T09:30:00+07:00"), encoding="utf-8")
    if sidecar is not None:
        target.with_name(target.name + ".json").write_text(sidecar, encoding="utf-8")
    return target


@pytest.fixture(scope="module")
def desk(seeded, tmp_path_factory):
    data_dir, _ = seeded
    root = tmp_path_factory.mktemp("inbox")
    inbox = root / "inbox"
    bad = inbox / "failed"
    scan = write_pdf([page(["Tờ khai đăng ký"])], root / "scan.pdf")
    quarantine(bad, f"{CASE_A}/01-To khai.pdf", scan, "a folder of agency A")
    quarantine(bad, f"phieu-{CASE_B}.pdf", scan, "named for agency B")
    quarantine(bad, "mystery.pdf", b"%PDF-1.4 broken", "no case anywhere")
    quarantine(bad, "mixed.pdf", b"%PDF-1.4 broken", "sidecar names B",
               sidecar='{"case_id": "%s", "agency": "000.00.12.H29"}' % CASE_A)
    quarantine(bad, "sidecar-broken.pdf", b"%PDF-1.4", "broken sidecar", sidecar=f'{{"case_id": "{CASE_A}"')
    quarantine(bad, f"evil-{CASE_A}.pdf", b"%PDF", "\x1b[31mred\x1b[0m \u202eevil\u202c " + "x" * 5000)
    (bad / f"link-{CASE_A}.pdf").symlink_to("/etc/passwd")
    (bad / f"big-{CASE_A}.pdf").write_bytes(b"%PDF")
    (bad / f"big-{CASE_A}.pdf.error.txt").write_bytes(b"Reason: " + b"y" * (failed.REASON_MAX_BYTES + 10))
    settings = Settings(data_dir=str(data_dir))
    settings.web.secure_cookies = False
    settings.watch.inbox = str(inbox)
    settings.convert.validate = False
    settings.convert.jobs = 1
    app = create_app(settings)
    with TestClient(app):
        yield app, bad, scan


def login(app, name: str) -> tuple[TestClient, str]:
    client = TestClient(app)
    csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text).group(1)
    r = client.post("/login", data={"name": name, "password": PASSWORD, "csrf": csrf}, follow_redirects=False)
    assert r.status_code == 303, r.text
    return client, re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text).group(1)  # the session's


def listed(client: TestClient) -> dict[str, str]:
    """The desk's failed inbox files: relative place -> its row's text."""
    page = client.get("/desk").text
    table = re.search(r'<table id="inbox-failed">(.*?)</table>', page, re.S)
    rows = re.findall(r"<tr><td>.*?</tr>", table.group(1), re.S) if table else []
    return {re.findall(r"<td>(.*?)</td>", row, re.S)[1]: row for row in rows}


def ref_of(bad: Path, relative: str) -> str:
    return next(f.ref for f in failed.list_failed(bad) if f.relative == relative)


def test_each_desk_sees_only_the_failed_files_of_its_agencies(desk):
    app, bad, _ = desk
    scanner_a, _ = login(app, "scanner-a")
    mine = listed(scanner_a)
    assert set(mine) == {f"{CASE_A}/01-To khai.pdf", f"evil-{CASE_A}.pdf", f"big-{CASE_A}.pdf"}
    assert "a folder of agency A" in mine[f"{CASE_A}/01-To khai.pdf"]
    assert explain(("InputError",)).reason_vi in mine[f"{CASE_A}/01-To khai.pdf"]  # the page is in Vietnamese
    assert set(listed(login(app, "scanner-b")[0])) == {f"phieu-{CASE_B}.pdf"}
    everything = listed(login(app, "admin")[0])
    assert {"mystery.pdf", "mixed.pdf", "sidecar-broken.pdf", f"phieu-{CASE_B}.pdf"} <= set(everything)
    assert f"link-{CASE_A}.pdf" not in everything  # a symlink is never followed, nor listed


def test_reason_files_are_untrusted_text(desk):
    app, bad, _ = desk
    row = listed(login(app, "scanner-a")[0])[f"evil-{CASE_A}.pdf"]
    assert "\x1b" not in row and "\u202e" not in row and "red" in row and len(row) < 2000
    assert "yyyy" not in listed(login(app, "admin")[0])[f"big-{CASE_A}.pdf"]  # over the cap: not read
    assert failed.printable("a\x00b\nc\u200fd") == "a b c d"


def test_link_to_a_case_and_retry_converts_it_through_the_watch_job(desk):
    app, bad, scan = desk
    scanner_a, csrf = login(app, "scanner-a")
    ref = ref_of(bad, f"{CASE_A}/01-To khai.pdf")
    r = scanner_a.post(f"/desk/inbox/{ref}/retry", data={"csrf": csrf, "case_id": CASE_A2}, follow_redirects=False)
    assert r.status_code == 303, r.text
    assert not (bad / CASE_A / "01-To khai.pdf").exists() and not (bad / CASE_A / "01-To khai.pdf.error.txt").exists()
    assert f"{CASE_A}/01-To khai.pdf" not in listed(scanner_a)
    deadline = time.monotonic() + 300
    while not (jobs := [j for j in app.state.uploads.jobs() if j.name == "01-To khai.pdf" and j.finished]):
        assert time.monotonic() < deadline
        time.sleep(0.5)
    assert jobs[0].state == "done", jobs[0].reason
    assert [d["case_id"] for d in jobs[0].documents] == [CASE_A2]
    with Archive.open(app.state.settings) as archive:
        events = archive.index.events(case_id=CASE_A2)
    assert any(e.actor == "user:scanner-a" and "failed inbox file" in (e.detail or "") and e.client for e in events)


def test_a_retry_without_a_case_keeps_the_folder_clue(desk):
    """Review rev17desk M4: the retried copy is named scan.<ext>, so the folder (and file name) that named the
    case in the inbox was lost: with the desk's case field left empty the scan was filed unmatched."""
    app, bad, scan = desk
    quarantine(bad, f"{CASE_A}/02-Giay to.pdf", scan, "a folder of agency A")
    failed.forget(bad)
    item = next(f for f in failed.list_failed(bad) if f.relative == f"{CASE_A}/02-Giay to.pdf")
    assert failed.place_case_id(item) == CASE_A
    scanner_a, csrf = login(app, "scanner-a")
    r = scanner_a.post(f"/desk/inbox/{item.ref}/retry", data={"csrf": csrf, "case_id": ""}, follow_redirects=False)
    assert r.status_code == 303, r.text
    deadline = time.monotonic() + 300
    while not (jobs := [j for j in app.state.uploads.jobs() if j.name == "02-Giay to.pdf" and j.finished]):
        assert time.monotonic() < deadline
        time.sleep(0.5)
    assert jobs[0].state == "done", (jobs[0].state, jobs[0].reason)
    assert [d["case_id"] for d in jobs[0].documents] == [CASE_A]


def test_retry_is_refused_outside_the_scope_and_without_the_csrf_token(desk):
    app, bad, _ = desk
    scanner_a, csrf = login(app, "scanner-a")
    other = ref_of(bad, f"phieu-{CASE_B}.pdf")
    mine = ref_of(bad, f"evil-{CASE_A}.pdf")
    for ref, case_id in [(other, CASE_A), (other, ""), (mine, CASE_B), (ref_of(bad, "mystery.pdf"), CASE_A),
                         ("../../etc/passwd", CASE_A), ("0" * 32, CASE_A)]:
        r = scanner_a.post(f"/desk/inbox/{ref}/retry", data={"csrf": csrf, "case_id": case_id},
                           follow_redirects=False)
        assert r.status_code == 404, (ref, case_id, r.status_code)
    assert scanner_a.post(f"/desk/inbox/{mine}/retry", data={"csrf": "forged", "case_id": CASE_A},
                          follow_redirects=False).status_code == 403
    officer, officer_csrf = login(app, "officer-a")
    assert officer.post(f"/desk/inbox/{mine}/retry", data={"csrf": officer_csrf, "case_id": CASE_A},
                        follow_redirects=False).status_code == 403
    assert (bad / f"phieu-{CASE_B}.pdf").exists() and (bad / f"evil-{CASE_A}.pdf").exists()


def test_a_carried_sidecar_keeps_its_fields_but_the_chosen_case_wins(tmp_path):
    bad = tmp_path / "failed"
    quarantine(bad, "x.pdf", b"%PDF-1.4 data", "r", sidecar='{"case_id": "%s", "title": "Đơn"}' % CASE_A)
    item = failed.list_failed(bad)[0]
    assert item.case_ids == (CASE_A,) and item.agencies == (AGENCY_A,)
    job = tmp_path / "job"
    job.mkdir()

    def receive(stream, name):
        (job / "scan.pdf").write_bytes(stream.read())
        return job / "scan.pdf"

    assert failed.take(bad, item, receive, keep_case_id=False, durable=lambda: None)
    assert (job / "scan.pdf").read_bytes() == b"%PDF-1.4 data"
    carried = json.loads((job / "scan.json").read_text(encoding="utf-8"))
    assert carried["title"] == "Đơn" and "case_id" not in carried
    assert sorted(os.listdir(bad)) == []


def test_a_failed_dir_the_portal_cannot_write_is_not_called_missing(tmp_path, monkeypatch):
    """Review rev17desk L3: any rename error (EACCES included) was "failed file not found", so the clerk was
    told the file had vanished when the portal's account could not write failed/."""
    import errno

    from digitize.errors import FileAccessError

    bad = tmp_path / "failed"
    quarantine(bad, f"{CASE_A}/x.pdf", b"%PDF-1.4 data", "r")
    item = failed.list_failed(bad)[0]

    def refused(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(os, "rename", refused)
    with pytest.raises(FileAccessError, match="Permission denied.*must be able to write"):
        failed.take(bad, item, lambda stream, name: tmp_path / "never", keep_case_id=True, durable=lambda: None)
    assert (bad / CASE_A / "x.pdf").exists()


def test_the_job_is_on_disk_before_the_scan_leaves_failed(tmp_path, monkeypatch):
    """A crash between taking the scan out of failed/ and queueing the job must leave a job the queue
    resumes: job.json is written (and synced) before anything in failed/ is removed."""
    from web.uploads import UploadQueue

    bad = tmp_path / "inbox" / "failed"
    quarantine(bad, f"{CASE_A}/x.pdf", b"%PDF-1.4 data", "r")
    settings = Settings(data_dir=str(tmp_path / "data"))
    queue = UploadQueue(settings)
    monkeypatch.setattr(queue, "_queue", lambda job: None)  # never run: only the order of writes matters
    seen: list[list[str]] = []
    real_unlink = os.unlink

    def unlink(path, *args, **kwargs):
        seen.append(sorted(p.parent.name for p in queue.root.glob("*/job.json")))
        return real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", unlink)
    from storage.access import Principal, UploadScope

    scope = UploadScope(Principal("scanner-a", "scanner", (AGENCY_A,)))
    job = queue.adopt(bad, failed.list_failed(bad)[0], scope, CASE_A)
    monkeypatch.undo()
    assert seen and all(found == [job.job_id] for found in seen)
    assert not (bad / CASE_A / "x.pdf").exists()
    queue.close()


def scanner_scope():
    from storage.access import Principal, UploadScope

    return UploadScope(Principal("scanner-a", "scanner", (AGENCY_A,)))


def test_a_carried_sidecar_never_names_who_scanned_it_nor_its_place(tmp_path):
    bad = tmp_path / "failed"
    quarantine(bad, "x.pdf", b"%PDF-1.4 data", "r",
               sidecar='{"case_id": "%s", "title": "Đơn", "scanned_by": "mallory", "sequence": 7}' % CASE_A)
    job = tmp_path / "job"
    job.mkdir()

    def receive(stream, name):
        (job / "scan.pdf").write_bytes(stream.read())
        return job / "scan.pdf"

    assert failed.take(bad, failed.list_failed(bad)[0], receive, keep_case_id=True, durable=lambda: None)
    carried = json.loads((job / "scan.json").read_text(encoding="utf-8"))
    assert carried["case_id"] == CASE_A and carried["title"] == "Đơn"
    assert "scanned_by" not in carried and "sequence" not in carried


def test_retrying_a_job_drops_its_carried_case_and_a_finished_job_its_sidecar(tmp_path, monkeypatch):
    """The carried sidecar is read before the upload's values: the case chosen on a later retry must win,
    and the sidecar goes when the job ends."""
    from concurrent.futures import Future

    from web.uploads import UploadQueue

    bad = tmp_path / "inbox" / "failed"
    quarantine(bad, "x.pdf", b"%PDF-1.4 data", "r", sidecar='{"case_id": "%s", "title": "Đơn"}' % CASE_A)
    queue = UploadQueue(Settings(data_dir=str(tmp_path / "data")))
    queued = []
    monkeypatch.setattr(queue, "_queue", queued.append)
    job = queue.adopt(bad, failed.list_failed(bad)[0], scanner_scope(), None)  # no case chosen: the sidecar's
    folder = queue.root / job.job_id
    assert json.loads((folder / "scan.json").read_text(encoding="utf-8"))["case_id"] == CASE_A
    job.state = "failed"
    queue._save(job)
    queue._release(job.job_id)
    queue.retry(job, CASE_A2, scanner_scope())
    carried = json.loads((folder / "scan.json").read_text(encoding="utf-8"))
    assert carried["title"] == "Đơn" and "case_id" not in carried

    class Worker:
        def submit(self, *args):
            done = Future()
            done.set_result(("done", "", []))
            return done

        def shutdown(self, wait=True):
            pass

    queue._worker = Worker()
    queue._run(queued[-1])
    assert sorted(os.listdir(folder)) == ["job.json", "lock"]
    queue.close()


def test_the_page_cap_applies_after_the_agency_filter(desk, monkeypatch):
    """Other agencies' failed files (sorted first) must not fill the page and hide one's own."""
    app, bad, _ = desk
    monkeypatch.setattr(failed, "MAX_FILES", 1)
    assert set(listed(login(app, "scanner-b")[0])) == {f"phieu-{CASE_B}.pdf"}
    assert len(listed(login(app, "admin")[0])) == 1


def test_a_listing_is_bounded_by_an_entry_budget_and_reused_for_a_few_seconds(tmp_path, monkeypatch):
    bad = tmp_path / "failed"
    for i in range(100):
        (bad / f"d{i:03d}" / "e").mkdir(parents=True)  # empty folders: nothing to list, but each costs
    quarantine(bad, f"x-{CASE_A}.pdf", b"%PDF", "r")
    monkeypatch.setattr(failed, "MAX_ENTRIES", 150)
    opened = []
    real_scandir = os.scandir
    monkeypatch.setattr(os, "scandir", lambda fd: opened.append(fd) or real_scandir(fd))
    failed.list_failed(bad)
    walked = len(opened)
    assert 1 < walked < 201  # all 201 folders would be read without the budget
    failed.list_failed(bad)
    assert len(opened) == walked  # the second listing came from the cache


def copy_to(job: Path):
    def receive(stream, name):
        (job / "scan.pdf").write_bytes(stream.read())
        return job / "scan.pdf"

    job.mkdir(exist_ok=True)
    return receive


def test_a_file_swapped_after_the_desk_showed_it_is_not_taken(tmp_path):
    bad = tmp_path / "failed"
    scan = quarantine(bad, f"x-{CASE_A}.pdf", b"%PDF-1.4 what the officer saw", "r")
    item = failed.list_failed(bad)[0]
    swapped = tmp_path / "swap.pdf"
    swapped.write_bytes(b"%PDF-1.4 something else")
    os.replace(swapped, scan)
    with pytest.raises(NotFoundError):
        failed.take(bad, item, copy_to(tmp_path / "job"), keep_case_id=True, durable=lambda: None)
    assert scan.read_bytes() == b"%PDF-1.4 something else"
    assert failed.list_failed(bad)[0].ref != item.ref


def test_take_refuses_a_hard_linked_file_and_one_changed_while_copied(tmp_path):
    bad = tmp_path / "failed"
    linked = quarantine(bad, f"a-{CASE_A}.pdf", b"%PDF-1.4 a", "r")
    os.link(linked, tmp_path / "elsewhere.pdf")  # whoever holds this link could change it after the check
    changing = quarantine(bad, f"b-{CASE_A}.pdf", b"%PDF-1.4 b", "r")
    items = {item.parts[-1]: item for item in failed.list_failed(bad)}
    with pytest.raises(NotFoundError):
        failed.take(bad, items[linked.name], copy_to(tmp_path / "job1"), keep_case_id=True, durable=lambda: None)

    writer = open(changing, "ab")  # someone holding the file open

    def receive_while_changed(stream, name):
        target = copy_to(tmp_path / "job2")(stream, name)
        writer.write(b" appended")  # modified in place, same inode
        writer.flush()
        return target

    with writer, pytest.raises(NotFoundError):
        failed.take(bad, items[changing.name], receive_while_changed, keep_case_id=True, durable=lambda: None)
    assert linked.exists() and changing.read_bytes() == b"%PDF-1.4 b appended"  # both kept, under their names
    assert sorted(p.name for p in bad.iterdir() if p.name.startswith(".")) == []


def test_take_removes_an_invalid_sidecar_with_the_scan(tmp_path):
    bad = tmp_path / "failed"
    quarantine(bad, f"x-{CASE_A}.pdf", b"%PDF-1.4 data", "r", sidecar='{"case_id": "broken')
    assert not failed.take(bad, failed.list_failed(bad)[0], copy_to(tmp_path / "job"), keep_case_id=True,
                           durable=lambda: None)
    assert sorted(os.listdir(bad)) == []
