"""Queue submission on a real Redis ledger, with a folder store standing in for S3 and the broker's send
recorded: the same bytes meant for another case are a job of their own (review rev16batch M5), and a job another
submission has on its way is followed, not sent again (L7)."""

from __future__ import annotations

import time

import pytest

from digitize.config import Settings
from pipelines.jobs import Status
from pipelines.ledger import PREFIX, Ledger
from pipelines.metadata import Clue
from pipelines.queued import Submitter, conversion_options
from storage.objects import FolderStore

pytestmark = pytest.mark.integration

KEY = b"test-queue-secret-0123456789-abcdefghij"
CASE_A, CASE_B = "000.00.31.H56-241015-0027", "000.00.31.H56-241016-0003"


@pytest.fixture
def src(tmp_path):
    folder = tmp_path / "src"
    for case in (CASE_A, CASE_B):
        (folder / case).mkdir(parents=True)
        (folder / case / "don.pdf").write_bytes(b"%PDF-1.4 the same bytes in two dossiers")
    return folder


def submitter_for(tmp_path, redis_url, batch="b1"):
    """A Submitter whose broker send is recorded (the ledger is the real one; no Celery app needed)."""
    settings = Settings(data_dir=str(tmp_path / "data"))
    settings.queue.visibility_timeout = 3600.0
    sub = Submitter.__new__(Submitter)
    sub.settings, sub.batch, sub.key, sub.runs = settings, batch, KEY, {}
    sub.ledger, sub.options = Ledger(redis_url, KEY, reconnect=5.0), conversion_options(settings)
    sub.objects = FolderStore(tmp_path / "objects")
    sub.app = type("App", (), {"sent": [], "send_task": lambda self, *a, **kw: self.sent.append(kw["args"])})()
    return sub


def test_the_same_bytes_for_another_case_are_a_job_of_their_own(tmp_path, src, own_redis):
    """Old code: file 2 was "skipped: already done as job <file 1's>" and never filed into its dossier."""
    sub = submitter_for(tmp_path, own_redis.url)
    try:
        first, queued = sub.submit_job(src / CASE_A / "don.pdf", Clue("manifest", {"case_id": CASE_A}), src)
        record = sub.ledger.get(first)
        sub.ledger.end(first, "done", "", {"path": "x", "status": "done"}, spec=record.spec)
        second, result = sub.submit_job(src / CASE_B / "don.pdf", Clue("manifest", {"case_id": CASE_B}), src)
        assert queued.status is result.status is Status.done and first != second
        assert sub.ledger.get(second).spec["hint"]["values"]["case_id"] == CASE_B
        again, skipped = sub.submit_job(src / CASE_A / "don.pdf", Clue("manifest", {"case_id": CASE_A}), src)
        assert again == first and skipped.status is Status.skipped  # a re-run of the same file: nothing twice
        (src / CASE_A / "don.json").write_text(f'{{"case_id": "{CASE_B}"}}')  # its sidecar now says otherwise
        changed, resent = sub.submit_job(src / CASE_A / "don.pdf", None, src)
        assert changed not in (first, second) and resent.status is Status.done
    finally:
        sub.ledger.close()


def test_a_job_on_its_way_for_another_submission_is_followed_not_sent_again(tmp_path, src, own_redis):
    """Old code: the second `batch --queue --wait` sent it again under its run, and the first waiter read the
    second's run on the record and reported the file failed ("another submission's state")."""
    one, two = submitter_for(tmp_path, own_redis.url, "b1"), submitter_for(tmp_path, own_redis.url, "b2")
    try:
        job, _ = one.submit_job(src / CASE_A / "don.pdf", None, src)
        again, result = two.submit_job(src / CASE_A / "don.pdf", None, src)
        assert again == job and result.status is Status.done and "another submission" in result.reason
        assert len(one.app.sent) == 1 and two.app.sent == []
        assert two.runs[job] == one.runs[job] and two.ledger.batch_jobs("b2") == [job]
        spec = one.ledger.get(job).spec
        one.ledger.start(job, "w/1", spec)
        one.ledger.end(job, "done", "", {"path": "x", "status": "done"}, spec=spec)
        for waiter in (one, two):  # both waiters see the one outcome as done
            assert waiter.ledger.outcomes([job], waiter.runs)[job][0] == "done"
        # a record whose message may be lost (sent longer ago than the visibility timeout) is sent again
        three = submitter_for(tmp_path, own_redis.url, "b3")
        other, _ = three.submit_job(src / CASE_B / "don.pdf", None, src)
        three.ledger.redis.hset(f"{PREFIX}job:{other}", "enqueued", time.time() - 4000)
        four = submitter_for(tmp_path, own_redis.url, "b4")
        assert four.submit_job(src / CASE_B / "don.pdf", None, src)[0] == other and len(four.app.sent) == 1
        # the first waiter follows the newer run it was superseded by; an older run put back is still refused
        from pipelines.ledger import new_run

        assert three.ledger.outcomes([other], three.runs) == {}
        assert four.ledger.outcomes([other], {other: new_run()})[other][0] == "unverified"
    finally:
        for sub in (one, two, *[s for s in (locals().get("three"), locals().get("four")) if s]):
            sub.ledger.close()


class RefusingOnce:
    """A broker that refuses the first publish (restarting, a network blip) and takes the rest."""

    def __init__(self):
        self.sent, self.calls = [], 0

    def send_task(self, *args, **kwargs):
        self.calls += 1
        if self.calls == 1:
            raise ConnectionError("broker down")
        self.sent.append(kwargs["args"])


def test_a_submission_the_broker_refused_is_sent_again_not_followed(tmp_path, src, own_redis):
    """Old code: the refused send left a "waiting" record with no message; the watcher's retry followed it
    ("already waiting for another submission"), moved the scan to done/ and no task was ever sent (review
    rev2_batch16a MEDIUM-1)."""
    sub = submitter_for(tmp_path, own_redis.url)
    sub.app = RefusingOnce()
    try:
        first, refused = sub.submit_job(src / CASE_A / "don.pdf", None, src)
        assert refused.status is Status.failed and refused.retryable and "broker down" in refused.reason
        job, resent = sub.submit_job(src / CASE_A / "don.pdf", None, src)  # the watcher's retry
        assert resent.status is Status.done and "another submission" not in resent.reason
        assert [args[0] for args in sub.app.sent] == [job]
        record = sub.ledger.get(job)
        assert record.state == "waiting" and record.sent and record.run == sub.runs[job] == sub.app.sent[0][1]["run"]
        # and once sent, a third submission follows it instead of sending it twice
        assert "another submission" in sub.submit_job(src / CASE_A / "don.pdf", None, src)[1].reason
        assert len(sub.app.sent) == 1
    finally:
        sub.ledger.close()


def test_a_refused_send_fails_its_record_with_the_reason_and_an_unflagged_one_is_not_followed(tmp_path, src,
                                                                                                 own_redis):
    sub = submitter_for(tmp_path, own_redis.url)
    sub.app = RefusingOnce()
    try:
        sub.submit_job(src / CASE_A / "don.pdf", None, src)
        [job] = sub.runs
        record = sub.ledger.get(job)
        assert record.state == "failed" and record.reason.startswith("not sent: queue broker") and not record.sent
        # a submitter that died between recording and publishing: waiting, never flagged sent -> sent again
        other = submitter_for(tmp_path, own_redis.url)
        other.send = lambda job, spec: other.ledger.enqueued(job, spec["name"], spec["sha256"],
                                                             {**spec, "run": "died"})
        dead, _ = other.submit_job(src / CASE_B / "don.pdf", None, src)
        assert sub.ledger.get(dead).state == "waiting"
        again, result = sub.submit_job(src / CASE_B / "don.pdf", None, src)
        assert again == dead and "another submission" not in result.reason and sub.app.sent[-1][0] == dead
    finally:
        sub.ledger.close()


def test_the_worker_files_the_stored_document_into_the_second_case(tmp_path, own_redis):
    """End to end for M5: the same scan queued for two dossiers is converted and stored once by the worker
    (pipelines.queued.run_job with the real process_file, folder store and SQLite index) and the second job
    files that stored document into the second case, with no second copy. Old code: the second submission was
    "already done as job <the first's>" and never reached a worker."""
    import shutil

    from pipeline_support import make_settings, stored_rows
    from scans import page, write_pdf

    from pipelines.queued import run_job
    from storage.archive import Archive

    folder = tmp_path / "src"
    for case in (CASE_A, CASE_B):
        (folder / case).mkdir(parents=True)
    write_pdf([page(["Đơn đề nghị cấp giấy phép"])], folder / CASE_A / "don.pdf")
    shutil.copyfile(folder / CASE_A / "don.pdf", folder / CASE_B / "don.pdf")
    sub = submitter_for(tmp_path, own_redis.url)
    settings = make_settings(tmp_path / "data")
    settings.queue.visibility_timeout = 3600.0
    sub.settings, sub.objects = settings, None  # staged where the worker (the same settings) fetches from
    try:
        outcomes = []
        for case in (CASE_A, CASE_B):
            job, queued = sub.submit_job(folder / case / "don.pdf", Clue("manifest", {"case_id": case}), folder)
            assert queued.status is Status.done
            [(sent, spec)] = [args for args in sub.app.sent if args[0] == job]
            outcomes.append(run_job(settings, sub.ledger, job, spec, "w/1", 0))
        first, second = (o.result for o in outcomes)
        assert [o.state for o in outcomes] == ["done", "done"], [r.reason for r in (first, second)]
        [stored], [shared] = first.documents, second.documents
        assert (stored.case_id, stored.already_stored) == (CASE_A, False)
        assert (shared.case_id, shared.doc_id) == (CASE_B, stored.doc_id)  # the same document, filed there too
        assert len(stored_rows(settings)) == 1  # one copy of the bytes
        with Archive.open(settings) as archive:
            assert [case for case, _ in archive.index.shared_cases([int(stored.doc_id)])[int(stored.doc_id)]] == [
                CASE_B]
    finally:
        sub.close()


def test_an_upload_carries_the_sidecar_a_desk_retry_brought(tmp_path, own_redis):
    """Review rev17desk M4: a desk retry puts the failed scan's valid sidecar beside its copy (scan.json) and
    local mode reads it, but queue mode sent uploads with no sidecar: with no case chosen, a scan whose sidecar
    named the case was stored unmatched, with no agency, out of its agency's sight."""
    sub = submitter_for(tmp_path, own_redis.url)
    sender = {"name": "lan", "role": "scanner", "agencies": ["000.00.31.H56"], "kind": "user"}
    values = {"title": "Đơn", "scanned_by": "lan"}
    plain, carried = tmp_path / "uploads" / "plain", tmp_path / "uploads" / "carried"
    for folder in (plain, carried):
        folder.mkdir(parents=True)
        (folder / "scan.pdf").write_bytes(b"%PDF-1.4 a scan taken out of failed/")
    (carried / "scan.json").write_text(f'{{"case_id": "{CASE_A}", "title": "Đơn"}}', encoding="utf-8")
    try:
        with_sidecar, queued = sub.submit_upload(carried / "scan.pdf", values, "job-1", sender)
        assert queued.status is Status.done
        spec = sub.ledger.get(with_sidecar).spec
        assert spec["sidecar"] == ["scan.json", f'{{"case_id": "{CASE_A}", "title": "Đơn"}}'] and spec["name"] == "scan.pdf"
        without, _ = sub.submit_upload(plain / "scan.pdf", values, "job-1", sender)
        assert without != with_sidecar and sub.ledger.get(without).spec["sidecar"] is None
    finally:
        sub.ledger.close()


def test_a_worker_files_an_upload_by_its_carried_sidecar_above_the_upload_hint(tmp_path, own_redis):
    """Review2 r2desk (M4 test gap): the task spec carried the sidecar, but nothing showed a worker filing by it.
    A desk retry with no case chosen: the carried sidecar names CASE_A, the upload hint (the case the scan's old
    place in failed/ named) CASE_B; watch's order puts the sidecar above, so the worker files into CASE_A."""
    from pipeline_support import make_settings
    from scans import page, write_pdf

    from pipelines.queued import run_job
    from storage import access
    from storage.archive import Archive

    carried = tmp_path / "uploads" / "carried"
    carried.mkdir(parents=True)
    write_pdf([page(["Đơn đề nghị cấp giấy phép"])], carried / "scan.pdf")
    (carried / "scan.json").write_text(f'{{"case_id": "{CASE_A}", "title": "Đơn"}}', encoding="utf-8")
    sub = submitter_for(tmp_path, own_redis.url)
    settings = make_settings(tmp_path / "data")
    settings.queue.visibility_timeout = 3600.0
    sub.settings, sub.objects = settings, None  # staged where the worker (the same settings) fetches from
    sender = {"name": "lan", "role": "scanner", "agencies": ["000.00.31.H56"], "kind": "user"}
    with Archive.open(settings) as archive:  # the sender still exists, with the same rights, when it is filed
        access.add_user(archive.index, "lan", "scanner", ["000.00.31.H56"], "mat-khau-thu-nghiem-2024")
    try:
        job, queued = sub.submit_upload(carried / "scan.pdf", {"title": "Đơn", "scanned_by": "lan",
                                                               "case_id": CASE_B}, "job-1", sender)
        assert queued.status is Status.done
        [(_, spec)] = [args for args in sub.app.sent if args[0] == job]
        outcome = run_job(settings, sub.ledger, job, spec, "w/1", 0)
        assert outcome.state == "done", outcome.result.reason
        assert [d.case_id for d in outcome.result.documents] == [CASE_A]
    finally:
        sub.close()
