"""Queue job rules (pipelines/queued.run_job) on a real Redis ledger, with a stand-in for the conversion:
poison files, bounded retries for transient faults, none for bad input, duplicate deliveries."""

from __future__ import annotations

import dataclasses

import pytest

from digitize.config import Settings
from pipelines.jobs import JobResult, Status
from pipelines.ledger import Ledger, job_id
from pipelines.queued import run_job

pytestmark = pytest.mark.integration

SHA = "ab" * 32
KEY = b"test-queue-secret-0123456789-abcdefghij"


@pytest.fixture
def ledger(own_redis):
    ledger = Ledger(own_redis.url, KEY, reconnect=5.0)
    yield ledger
    ledger.close()


@pytest.fixture
def settings(tmp_path) -> Settings:
    settings = Settings(data_dir=str(tmp_path / "data"))
    settings.store.url = f"file://{tmp_path / 'objects'}"
    settings.queue.max_deliveries = 3
    settings.queue.retries = 2
    return settings


def spec(job: str) -> dict:
    return {"job": job, "key": f"_staging/{SHA}", "sha256": SHA, "name": "a/scan.pdf", "options": {}}


def fake(result: JobResult):
    calls = []

    def process(path, settings, hint, **kw):
        calls.append(path)
        return JobResult(str(path), result.status, SHA, result.reason, error_kinds=result.error_kinds)

    process.calls = calls
    return process


@pytest.fixture(autouse=True)
def no_fetch(monkeypatch, tmp_path):
    """The original's download is storage's own business (tested there); here a local file stands in."""
    import pipelines.queued as queued

    def fetch(settings, spec, root):
        path = root / "a" / "scan.pdf"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
        return path

    monkeypatch.setattr(queued, "_fetch", fetch)


def lapse(ledger, job: str) -> None:
    """The dead delivery's lease runs out (its worker renews it no more): only then is it a crash."""
    from pipelines.ledger import PREFIX

    ledger.redis.hset(f"{PREFIX}job:{job}", "heartbeat", 0)


def test_job_ids_depend_on_content_pages_and_options_only():
    assert job_id(SHA, "", {"language": "vie"}) == job_id(SHA, "", {"language": "vie"})
    assert job_id(SHA, "", {"language": "vie"}) != job_id(SHA, "", {"language": "eng"})
    assert job_id(SHA, "", {}) != job_id(SHA, "1-2", {})


def test_a_file_that_killed_its_worker_n_times_is_failed_not_run_again(ledger, settings):
    job = "poison"
    ledger.enqueued(job, "a/scan.pdf", SHA, spec(job))
    for _ in range(3):
        ledger.start(job, "w-killed")  # a delivery began and its worker died: no end is ever recorded
    lapse(ledger, job)
    process = fake(JobResult("", Status.done))
    outcome = run_job(settings, ledger, job, spec(job), "w", 0, process=process)
    assert outcome.state == "failed" and "3 times" in outcome.result.reason and not process.calls
    assert ledger.get(job).state == "failed"


def test_a_crash_below_the_limit_is_run_again(ledger, settings):
    job = "crashed-once"
    ledger.enqueued(job, "a/scan.pdf", SHA, spec(job))
    ledger.start(job, "w-killed")
    lapse(ledger, job)
    outcome = run_job(settings, ledger, job, spec(job), "w", 0, process=fake(JobResult("", Status.done)))
    assert outcome.state == "done" and ledger.get(job).state == "done"


def test_storage_faults_are_retried_a_bounded_number_of_times_with_growing_delays(ledger, settings):
    job = "storage"
    ledger.enqueued(job, "a/scan.pdf", SHA, spec(job))
    down = fake(JobResult("", Status.failed, reason="MinIO down", error_kinds=("StorageError",)))
    first = run_job(settings, ledger, job, spec(job), "w", 0, process=down)
    second = run_job(settings, ledger, job, spec(job), "w", 1, process=down)
    assert (first.state, second.state) == ("retry", "retry") and second.delay > first.delay
    assert ledger.get(job).state == "waiting" and ledger.get(job).crashes == 0  # retries are not crashes
    last = run_job(settings, ledger, job, spec(job), "w", 2, process=down)
    assert last.state == "failed" and ledger.get(job).reason == "MinIO down"


def test_bad_input_fails_at_once_with_its_reason(ledger, settings):
    job = "bad"
    ledger.enqueued(job, "a/scan.pdf", SHA, spec(job))
    bad = fake(JobResult("", Status.failed, reason="PDF is corrupt", error_kinds=("InputError",)))
    outcome = run_job(settings, ledger, job, spec(job), "w", 0, process=bad)
    assert outcome.state == "failed" and ledger.get(job).reason == "PDF is corrupt"
    assert ledger.counts().failed == 1


def test_a_duplicate_delivery_of_a_done_job_does_nothing(ledger, settings):
    job = "twice"
    ledger.enqueued(job, "a/scan.pdf", SHA, spec(job))
    process = fake(JobResult("", Status.done))
    run_job(settings, ledger, job, spec(job), "w", 0, process=process)
    again = run_job(settings, ledger, job, spec(job), "w2", 0, process=process)
    assert again.state == "done" and len(process.calls) == 1


def test_an_uploads_task_is_bound_to_its_senders_scope_and_one_without_a_sender_files_nothing(ledger, settings):
    seen = []

    def process(path, settings, hint, **kw):
        seen.append(kw.get("allowed"))
        return JobResult(str(path), Status.done, SHA)

    sender = {"name": "lan", "role": "scanner", "agencies": ["000.00.31.H56"], "kind": "token"}
    for job, extra in [("plain", {}), ("upload", {"upload": {"id": "u1", "sender": sender}}),
                       ("forged", {"upload": {"id": "u2"}})]:
        ledger.enqueued(job, "a/scan.pdf", SHA, {**spec(job), **extra})
        assert run_job(settings, ledger, job, {**spec(job), **extra}, "w", 0, process=process).state == "done"
    plain, upload, forged = seen
    assert plain is None  # watch and batch have no sender and are not limited
    assert upload("000.00.31.H56-241015-0027") and not upload("000.00.12.H29-241016-0003")
    assert not forged(None) and not forged("000.00.31.H56-241015-0027")


def test_a_watch_inboxs_task_keeps_its_shared_sidecar_rule_and_its_agency_scope(ledger, settings):
    """Queue mode: [watch] agencies (M6) and the shared inbox's sidecar rule (M5) travel in the task."""
    seen = []

    def process(path, settings, hint, **kw):
        seen.append((kw.get("allowed"), kw.get("shared_inbox")))
        return JobResult(str(path), Status.done, SHA)

    extra = {"shared_inbox": True, "inbox_agencies": ["000.00.31.H56"]}
    ledger.enqueued("inbox", "a/scan.pdf", SHA, {**spec("inbox"), **extra})
    assert run_job(settings, ledger, "inbox", {**spec("inbox"), **extra}, "w", 0, process=process).state == "done"
    [(allowed, shared)] = seen
    assert shared is True and allowed("000.00.31.H56-241015-0027") and not allowed("000.00.12.H29-241016-0003")


def test_a_queued_uploads_state_as_the_portal_shows_it(ledger):
    from pipelines.jobs import StoredPart
    from pipelines.queued import upload_state

    ledger.enqueued("j", "scan.png", SHA, spec("j"))
    assert upload_state(ledger.get("j"))[0] == "queued"
    ledger.start("j", "w")
    assert upload_state(ledger.get("j"))[0] == "running"
    ledger.end("j", "waiting", "retry 1 of 6 in 5 s: store down")
    assert upload_state(ledger.get("j")) == ("queued", "retry 1 of 6 in 5 s: store down", [])
    part = StoredPart("", "7", None, None, 2, False)
    ledger.end("j", "done", "", JobResult("scan.png", Status.unmatched, SHA, "no case ID", documents=[part]).to_dict())
    state, reason, documents = upload_state(ledger.get("j"))
    assert (state, reason, documents[0]["doc_id"]) == ("unmatched", "no case ID", "7")


def test_a_waiter_sees_outcomes_through_one_count_and_reads_only_ended_jobs(ledger):
    """batch --wait looks at one number per poll and reads records only when it moved (CPU on the workers' cores)."""
    done, waiting, failed, retried = (job_id(c * 64, "", {}) for c in "1234")
    for job in (done, waiting, failed, retried):
        ledger.enqueued(job, f"{job}.pdf", SHA, spec(job))
    before = ledger.ends()
    assert ledger.outcomes([done, waiting, failed, retried]) == {}
    ledger.start(done, "w")
    ledger.end(done, "done", "", {"path": "a.pdf", "status": "done"})
    ledger.fail(failed, "the file stopped its worker 3 times", {"path": "b.pdf", "status": "failed"})
    ledger.start(retried, "w")
    ledger.end(retried, "waiting", "retry 1 of 2")  # a retry is an outcome too (the count moves), not an end
    assert ledger.ends() == before + 3
    found = ledger.outcomes([done, waiting, failed, retried])
    assert found == {done: ("done", {"path": "a.pdf", "status": "done"}),
                     failed: ("failed", {"path": "b.pdf", "status": "failed"})}


def test_a_queued_upload_whose_sender_was_disabled_after_sending_it_fails_unfiled(ledger, settings):
    """The worker files with the sender's current rights (storage.access), not those the task carries:
    disabled since the upload, the job fails with that reason, at once and for good; the staged scan stays."""
    from storage import access
    from storage.archive import Archive

    with Archive.open(settings) as archive:
        access.add_user(archive.index, "lan", "scanner", ["000.00.31.H56"], None)
        sender = dataclasses.asdict(access.principal_for_user(archive.index, "lan"))
        archive.index.set_user_disabled("lan", True, access.now_iso())
    job = "disabled-sender"
    upload = {**spec(job), "upload": {"id": "u1", "sender": sender}}
    ledger.enqueued(job, "a/scan.pdf", SHA, upload)
    outcome = run_job(settings, ledger, job, upload, "w", 0)  # the real process_file
    assert outcome.state == "failed" and "user lan was disabled" in outcome.result.reason, outcome.result.reason
    assert ledger.get(job).state == "failed" and "PermissionDenied" in outcome.result.error_kinds


# -- issue 11: the ledger's records are sealed with the queue secret -------------------------------------------
def test_a_record_written_in_redis_without_the_key_shows_as_unverified_never_done(ledger, settings, own_redis):
    """Whoever could write Redis showed a job as done or failed to queue status, batch --wait and the portal."""
    import json

    from pipelines.ledger import PREFIX
    from pipelines.queued import upload_state

    real, planted, altered = (job_id(c * 64, "", {}) for c in "567")
    for job in (real, planted, altered):
        ledger.enqueued(job, f"{job}.pdf", SHA, spec(job))
    ledger.start(real, "w")
    ledger.end(real, "done", "", {"path": "a.pdf", "status": "done"})
    ledger.fail(altered, "PDF is corrupt", {"path": "c.pdf", "status": "failed"})
    assert ledger.get(real).state == "done" and ledger.get(altered).state == "failed"

    forged = {"path": "b.pdf", "status": "done", "documents": []}
    ledger.redis.hset(f"{PREFIX}job:{planted}", mapping={"state": "done", "result": json.dumps(forged)})
    ledger.redis.zadd(f"{PREFIX}state:done", {planted: 1.0})
    ledger.redis.zrem(f"{PREFIX}state:waiting", planted)
    ledger.redis.hset(f"{PREFIX}job:{altered}", "reason", "all fine, nothing to see")  # a sealed field changed
    record = ledger.get(planted)
    assert (record.state, record.claimed, record.result) == ("unverified", "done", {})
    assert "not signed with this queue's secret" in record.reason
    assert ledger.get(altered).state == "unverified"
    assert upload_state(record)[0] == "unverified"  # the portal's job page
    found = ledger.outcomes([real, planted, altered])  # batch --wait
    assert found[real] == ("done", {"path": "a.pdf", "status": "done"})
    assert found[planted][0] == found[altered][0] == "unverified"
    counts = ledger.tally()  # queue status
    assert (counts.done, counts.failed, counts.unverified) == (1, 0, 2)

    ledger.redis.hset(f"{PREFIX}job:{real}", "result", json.dumps(forged))  # the result swapped, its seal kept
    assert ledger.get(real).state == "unverified" and ledger.outcomes([real])[real][0] == "unverified"
    other = Ledger(own_redis.url, b"another-machine-s-secret-0123456789")
    try:
        assert other.get(altered).state == "unverified"  # sealed with another key
    finally:
        other.close()

    process = fake(JobResult("", Status.done, SHA, ""))
    assert run_job(settings, ledger, planted, spec(planted), "w", 0, process).state == "done"
    assert len(process.calls) == 1  # a forged "done" does not make a worker skip the job
    assert ledger.get(planted).state == "done"  # now sealed by the worker


def test_batch_wait_reports_an_unverified_outcome_as_failed(monkeypatch, settings, tmp_path):
    """batch --wait took a forged "done" in Redis for the job's outcome."""
    import io
    from types import SimpleNamespace

    import pipelines.queued as queued

    class FakeLedger:
        def ends(self):
            return 1

        def outcomes(self, jobs, runs=None):
            return {job: ("unverified", {"reason": "not signed with this queue's secret"}) for job in jobs}

        def end_notices(self):  # no notices: the waiter polls the outcome count
            from digitize.errors import StorageError
            raise StorageError("queue ledger: subscribing to outcomes: refused")

    class FakeSubmitter:
        def __init__(self, settings, batch=""):
            self.batch, self.ledger, self.runs = batch, FakeLedger(), {}

        def submit_job(self, path, hint, root):
            return "j", JobResult(str(path), Status.done, SHA, "queued as job j")

        def close(self):
            pass

    monkeypatch.setattr(queued, "Submitter", FakeSubmitter)
    item = SimpleNamespace(path=tmp_path / "scan.pdf", hint=None, size=1)
    summary = queued.run_queued_batch(tmp_path, [item], settings, True, io.StringIO())
    [result] = summary.results
    assert result.status is Status.failed and "not signed" in result.reason and result.sha256 == SHA


# -- second review of issue 11's ledger seals -------------------------------------------------------------------
def test_a_worker_never_signs_fields_planted_in_redis(ledger, settings):
    """start()/end() carried name, SHA-256 and reason over from Redis and sealed them (review M1): a planted
    "call 0900 to pay a fee" on a waiting record came out verified. The worker's signed spec says what it is."""
    from pipelines.ledger import PREFIX

    job = job_id("8" * 64, "", {})
    ledger.enqueued(job, "a/scan.pdf", SHA, spec(job))
    ledger.redis.hset(f"{PREFIX}job:{job}", mapping={"name": "EVIL.pdf", "reason": "call 0900 to pay a fee"})
    assert ledger.get(job).state == "unverified"
    record = ledger.start(job, "w", spec(job))
    assert (record.state, record.name, record.reason) == ("running", "a/scan.pdf", "")
    ledger.redis.hset(f"{PREFIX}job:{job}", "name", "EVIL.pdf")  # again, between start and end
    ledger.end(job, "failed", "PDF is corrupt", {"path": "a/scan.pdf", "status": "failed"}, spec=spec(job))
    record = ledger.get(job)
    assert (record.state, record.name, record.sha256) == ("failed", "a/scan.pdf", SHA)
    # without a spec (a refused task's), planted fields are not kept either
    ledger.redis.hset(f"{PREFIX}job:{job}", mapping={"name": "EVIL.pdf", "state": "waiting"})
    ledger.fail(job, "refused")
    record = ledger.get(job)
    assert record.state == "failed" and record.name == "" and "EVIL" not in str(record)


def test_an_older_signed_state_of_a_job_is_not_taken_for_the_current_run(ledger, settings):
    """Seals carried no freshness (review M2): a saved signed 'failed' of run 1, put back after run 2 was
    done, read as verified failed; a done one of run 1 made run 2's worker skip the job."""
    from pipelines.ledger import PREFIX

    job = job_id("9" * 64, "", {})
    first = {**spec(job), "run": "1" * 32}
    ledger.enqueued(job, "a/scan.pdf", SHA, first)
    ledger.end(job, "done", "", {"path": "a/scan.pdf", "status": "done"}, spec=first)
    saved = ledger.redis.hgetall(f"{PREFIX}job:{job}")
    second = {**spec(job), "run": "2" * 32}
    ledger.enqueued(job, "a/scan.pdf", SHA, second)  # re-submitted (say, after an archive reset)
    ledger.redis.hset(f"{PREFIX}job:{job}", mapping=saved)  # run 1's signed 'done' put back
    assert ledger.get(job).state == "done"  # its seal is genuine, for run 1
    found = ledger.outcomes([job], {job: second["run"]})
    assert found[job][0] == "unverified" and "another submission" in found[job][1]["reason"]
    process = fake(JobResult("", Status.done, SHA, ""))
    assert run_job(settings, ledger, job, second, "w", 0, process).state == "done"
    assert len(process.calls) == 1  # run 2's worker converts; run 1's done was not its own
    assert ledger.get(job).run == second["run"] and ledger.outcomes([job], {job: second["run"]})[job][0] == "done"


def test_a_deleted_result_or_planted_bytes_never_pass_or_crash_a_reader(ledger):
    """HDEL result on a sealed done record still verified, done with no documents (review M6); invalid UTF-8
    or a spec that is not JSON raised out of get/many/tally (review M3: a 500, exit 70)."""
    from pipelines.ledger import PREFIX

    done, planted = (job_id(c * 64, "", {}) for c in "ab")
    for job in (done, planted):
        ledger.enqueued(job, "a/scan.pdf", SHA, spec(job))
    ledger.end(done, "done", "", {"path": "a/scan.pdf", "status": "done"}, spec=spec(done))
    ledger.redis.hdel(f"{PREFIX}job:{done}", "result")
    assert ledger.get(done).state == "unverified"
    assert ledger.outcomes([done])[done][0] == "unverified"
    ledger.redis.hset(f"{PREFIX}job:{planted}", mapping={"name": b"\xff\xfe bad", "spec": "{not json",
                                                          "result": "[1, 2]"})
    assert ledger.get(planted).state == "unverified" and ledger.get(planted).spec == {}
    assert [r.state for r in ledger.many([done, planted])] == ["unverified", "unverified"]
    assert ledger.tally().unverified == 1  # the planted one (tally reads no results: the job page and batch --wait do)
    assert ledger.outcomes([planted])[planted][0] == "unverified"


def test_an_unverified_pending_record_is_an_outcome_for_a_waiter(ledger):
    """outcomes() checked seals only for done/failed claims: a record rewritten to 'waiting' kept batch --wait
    waiting forever (review L2)."""
    from pipelines.ledger import PREFIX

    job = job_id("c" * 64, "", {})
    ledger.enqueued(job, "a/scan.pdf", SHA, spec(job))
    assert ledger.outcomes([job]) == {}  # genuinely waiting
    ledger.redis.hset(f"{PREFIX}job:{job}", "reason", "rewritten")
    assert ledger.outcomes([job])[job][0] == "unverified"


def test_a_waiter_hears_each_end_and_reads_only_that_job(ledger, monkeypatch):
    """batch --wait sleeps until a worker publishes an end, then reads that job alone: the last result is seen
    at once (a poll's sleep added to every batch's wall time) and no poll reads every pending job."""
    from pipelines.queued import _Follower

    first, second = (job_id(c * 64, "", {}) for c in "56")
    for job in (first, second):
        ledger.enqueued(job, f"{job}.pdf", SHA, spec(job))
    follower = _Follower(ledger)
    pending = {first: None, second: None}
    assert follower.outcomes(pending) == {}  # the first look reads every pending job
    read = []
    real = ledger.outcomes
    monkeypatch.setattr(ledger, "outcomes", lambda jobs, runs=None: read.append(sorted(jobs)) or real(jobs, runs))
    ledger.start(first, "w")
    ledger.end(first, "done", "", {"path": "a.pdf", "status": "done"})
    follower.wait(len(pending))  # returns on the notice (else after WAIT_FULL, having heard nothing)
    assert follower.heard == {first}
    assert follower.outcomes(pending) == {first: ("done", {"path": "a.pdf", "status": "done"})}
    assert read == [[first]]
    ledger.start(second, "w")
    ledger.end(second, "waiting", "retry 1 of 2")  # heard, read, still pending: a retry is not an end
    follower.wait(1)
    assert follower.outcomes({second: None}) == {} and read == [[first], [second]]
    follower.close()


def test_a_waiter_without_notices_polls_the_outcome_count(ledger, monkeypatch):
    """Notices refused (or lost with a Redis restart): the waiter still sees every end, by the count."""
    from digitize.errors import StorageError
    from pipelines import queued

    def refused():
        raise StorageError("queue ledger: subscribing to outcomes: refused")
    monkeypatch.setattr(ledger, "end_notices", refused)
    monkeypatch.setattr(queued, "WAIT_POLL", 0.01)
    job = job_id("7" * 64, "", {})
    ledger.enqueued(job, "c.pdf", SHA, spec(job))
    follower = queued._Follower(ledger)
    assert follower.notices is None and follower.outcomes({job: None}) == {}
    ledger.start(job, "w")
    ledger.end(job, "failed", "bad", {"path": "c.pdf", "status": "failed"})
    follower.wait(1)
    assert follower.outcomes({job: None}) == {job: ("failed", {"path": "c.pdf", "status": "failed"})}


def test_a_delivery_count_planted_in_redis_never_fails_a_job(ledger, settings):
    """The delivery counters were unsealed: whoever could write Redis made a job look crashed max_deliveries
    times, and the next worker failed it."""
    from pipelines.ledger import PREFIX

    job = job_id("a" * 64, "", {})
    ledger.enqueued(job, "a/scan.pdf", SHA, spec(job))
    ledger.redis.hset(f"{PREFIX}job:{job}", mapping={"starts": 99, "ends": 0})
    planted = ledger.get(job)
    process = fake(JobResult("", Status.done, SHA, ""))
    assert run_job(settings, ledger, job, spec(job), "w", 0, process).state == "done" and len(process.calls) == 1
    assert planted.state == "waiting" and not planted.counted  # its state verifies, its counts do not
    record = ledger.get(job)
    assert (record.state, record.starts, record.ends, record.counted) == ("done", 1, 1, True)  # counted afresh


def test_an_older_run_s_sealed_crash_count_never_fails_the_current_run(ledger, settings):
    from pipelines.ledger import PREFIX

    job = job_id("b" * 64, "", {})
    first = {**spec(job), "run": "1" * 32}
    ledger.enqueued(job, "a/scan.pdf", SHA, first)
    for _ in range(3):
        ledger.start(job, "w", first)  # run 1 really was a poison file
    saved = ledger.redis.hgetall(f"{PREFIX}job:{job}")
    assert ledger.get(job).crashes == 3
    second = {**spec(job), "run": "2" * 32}
    ledger.enqueued(job, "a/scan.pdf", SHA, second)  # fixed and sent again
    ledger.redis.hset(f"{PREFIX}job:{job}", mapping=saved)  # run 1's sealed counts put back
    replayed = ledger.get(job)
    process = fake(JobResult("", Status.done, SHA, ""))
    assert run_job(settings, ledger, job, second, "w", 0, process).state == "done" and len(process.calls) == 1
    assert replayed.counted and replayed.crashes_of(first["run"]) == 3 and replayed.crashes_of(second["run"]) == 0


def test_a_record_sealed_before_its_counts_were_verifies_but_its_counts_do_not(ledger, settings):
    from pipelines.ledger import PREFIX
    from pipelines.taskauth import LEGACY_RECORD_PURPOSE, LEGACY_SEALED, record_seal

    job = job_id("c" * 64, "", {})
    ledger.enqueued(job, "a/scan.pdf", SHA, spec(job))
    fields = {**ledger.redis.hgetall(f"{PREFIX}job:{job}"), "state": "waiting", "starts": "7", "ends": "0"}
    legacy = record_seal(KEY, job, fields, LEGACY_RECORD_PURPOSE, LEGACY_SEALED)
    ledger.redis.hset(f"{PREFIX}job:{job}", mapping={"starts": 7, "seal": legacy})
    record = ledger.get(job)
    assert (record.state, record.crashes, record.counted) == ("waiting", 7, False)
    process = fake(JobResult("", Status.done, SHA, ""))
    assert run_job(settings, ledger, job, spec(job), "w", 0, process).state == "done" and len(process.calls) == 1
    assert ledger.get(job).starts == 1  # the unsealed 7 was not carried into a seal


def test_the_queue_gauges_count_only_records_that_verify_and_read_only_what_changed(ledger, settings, own_redis,
                                                                                      monkeypatch):
    """The Prometheus gauges counted the state sets' members: a job planted in Redis counted as done."""
    from pipelines import metrics
    from pipelines.ledger import CHANGES, PREFIX

    settings.queue.url, settings.queue.secret = own_redis.url, KEY.decode()
    jobs = [job_id(c * 64, "", {}) for c in "def"]
    for job in jobs:
        ledger.enqueued(job, "a/scan.pdf", SHA, spec(job))
    ledger.start(jobs[0], "w")
    ledger.end(jobs[0], "done", "", {"path": "a/scan.pdf", "status": "done"})
    ledger.redis.hset(f"{PREFIX}job:planted", mapping={"state": "done"})
    ledger.redis.zadd(f"{PREFIX}state:done", {"planted": 1.0})
    read = []
    fields = Ledger._fields
    monkeypatch.setattr(Ledger, "_fields", lambda self, jobs, names: read.extend(jobs) or fields(self, jobs, names))
    depth = metrics._QueueDepth(settings)

    def scrape() -> dict[str, float]:
        return {sample.labels["state"]: sample.value for family in depth.collect() for sample in family.samples}

    assert scrape() == {"waiting": 2, "running": 0, "done": 1, "failed": 0, "unverified": 1}
    assert sorted(read) == sorted([*jobs, "planted"])
    read.clear()
    assert scrape()["waiting"] == 2 and read == []  # nothing written since: no record read
    ledger.start(jobs[1], "w")
    ledger.start(jobs[1], "w")
    assert scrape() == {"waiting": 1, "running": 1, "done": 1, "failed": 0, "unverified": 1}
    assert read == [jobs[1]]  # only the record written since the last scrape, once
    read.clear()
    ledger.redis.delete(CHANGES)  # the log deleted (or trimmed past this reader): everything is read again
    ledger.end(jobs[2], "failed", "PDF is corrupt", {"path": "a/scan.pdf", "status": "failed"})
    assert scrape() == {"waiting": 0, "running": 1, "done": 1, "failed": 1, "unverified": 1}
    assert sorted(read) == sorted([*jobs, "planted"])
    assert ledger.tally() == dataclasses.replace(ledger.follow(depth.live), oldest_waiting=None)


@pytest.mark.parametrize("plant", ["max_id", "wrong_type"])
def test_a_change_log_that_refuses_entries_fails_no_ledger_write(ledger, settings, plant):
    """The change-log entry was part of the record's transaction: one entry planted with the highest ID (or a
    key of another type) made every write raise after Redis had applied it, each delivery's start sealed one
    more start, and the retried deliveries failed the never-converted job as a poison file."""
    from pipelines.ledger import CHANGES

    if plant == "max_id":
        ledger.redis.xadd(CHANGES, {"job": "x"}, id="18446744073709551615-18446744073709551615")
    else:
        ledger.redis.set(CHANGES, "not a stream")
    job = job_id("9" * 64, "", {})
    ledger.enqueued(job, "a/scan.pdf", SHA, spec(job))
    process = fake(JobResult("", Status.done, SHA, ""))
    assert run_job(settings, ledger, job, spec(job), "w", 0, process).state == "done" and len(process.calls) == 1
    record = ledger.get(job)
    assert (record.state, record.starts, record.ends, record.crashes_of(spec(job).get("run", ""))) == ("done", 1, 1, 0)


def test_an_older_run_s_sealed_counts_are_not_carried_into_the_new_run_s_seal(ledger, settings):
    """Run 1's sealed counts put back after run 2 was sent: run 2's first start sealed them as run 2's own
    (starts 4), so its next delivery was failed as a poison file without a single crash of run 2."""
    from pipelines.ledger import PREFIX

    job = job_id("8" * 64, "", {})
    first = {**spec(job), "run": "1" * 32}
    ledger.enqueued(job, "a/scan.pdf", SHA, first)
    for _ in range(3):
        ledger.start(job, "w", first)
    saved = ledger.redis.hgetall(f"{PREFIX}job:{job}")
    second = {**spec(job), "run": "2" * 32}
    ledger.enqueued(job, "a/scan.pdf", SHA, second)
    ledger.redis.hset(f"{PREFIX}job:{job}", mapping=saved)  # run 1's sealed (3, 0) put back
    transient = fake(JobResult("", Status.failed, SHA, "store down", error_kinds=("StorageError",)))
    assert run_job(settings, ledger, job, second, "w", 0, transient).state == "retry"
    record = ledger.get(job)
    assert (record.starts, record.ends, record.crashes_of(second["run"])) == (1, 1, 0)
    process = fake(JobResult("", Status.done, SHA, ""))
    assert run_job(settings, ledger, job, second, "w", 1, process).state == "done" and len(process.calls) == 1


def test_a_scrape_reads_a_bounded_part_of_a_flooded_change_log(ledger, monkeypatch):
    """A scrape read every change-log entry since the last one (200 000 planted: 6 s of CPU, every planted
    name read as a job); past CHANGES_READ entries it now counts the jobs themselves instead."""
    from pipelines import ledger as ledger_module
    from pipelines.ledger import CHANGES, LiveTally

    monkeypatch.setattr(ledger_module, "CHANGES_READ", 50, raising=False)
    jobs = [job_id(c * 64, "", {}) for c in "567"]
    for job in jobs:
        ledger.enqueued(job, "a/scan.pdf", SHA, spec(job))
    live = LiveTally()
    ledger.follow(live)
    pipe = ledger.redis.pipeline(transaction=False)
    for n in range(200):
        pipe.xadd(CHANGES, {"job": f"planted{n}"})
    pipe.execute()
    ledger.start(jobs[0], "w")
    read, asked = [], []
    fields, xrange = Ledger._fields, ledger.redis.xrange
    monkeypatch.setattr(Ledger, "_fields", lambda self, jobs, names: read.extend(jobs) or fields(self, jobs, names))
    monkeypatch.setattr(ledger.redis, "xrange", lambda *a, **kw: asked.append(kw.get("count")) or xrange(*a, **kw))
    counts = ledger.follow(live)
    assert (counts.waiting, counts.running) == (2, 1)
    assert sorted(read) == sorted(jobs) and all(count is not None and count <= 50 for count in asked), (read, asked)
    assert ledger.follow(live).running == 1 and len(read) == 3  # caught up: the next scrape reads nothing new


def test_a_record_keeps_the_seal_earlier_versions_verify_and_its_counts_have_their_own(ledger, settings):
    """The counts were sealed into the record's seal under a new purpose: during a rolling upgrade the old
    version's `queue status`, `batch --wait` and portal read every new "done" as unverified. Now the record's
    seal is the earlier versions' (state, name, SHA-256, reason, result digest, run) and the counts have theirs."""
    from pipelines.ledger import PREFIX
    from pipelines.taskauth import LEGACY_RECORD_PURPOSE, LEGACY_SEALED, record_seal

    job = job_id("7" * 64, "", {})
    ledger.enqueued(job, "a/scan.pdf", SHA, spec(job))
    process = fake(JobResult("", Status.done, SHA, ""))
    assert run_job(settings, ledger, job, spec(job), "w", 0, process).state == "done"
    stored = ledger.redis.hgetall(f"{PREFIX}job:{job}")
    legacy = record_seal(KEY, job, stored, "digitize.queue.ledger.v2", ("state", "name", "sha256", "reason",
                                                                        "result_sha256", "run"))
    assert stored["seal"] == legacy == record_seal(KEY, job, stored, LEGACY_RECORD_PURPOSE, LEGACY_SEALED)
    assert ledger.get(job).counted
    ledger.redis.hset(f"{PREFIX}job:{job}", "starts", 5)  # an earlier version's HINCRBY: state still verifies
    record = ledger.get(job)
    assert record.state == "done" and not record.counted
