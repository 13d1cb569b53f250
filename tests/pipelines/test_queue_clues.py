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
