"""A queued delivery's own faults and leases (pipelines/queued.run_job, pipelines/tasks) on a real Redis ledger,
with the staged original in a folder store and a stand-in for the conversion (review rev16batch M2, M3, M6, L5, L6)."""

from __future__ import annotations

import errno
import subprocess
import time
from types import SimpleNamespace

import pytest

import pipelines.queued as queued
from digitize.errors import StorageError
from pipelines.jobs import JobResult, Status
from pipelines.ledger import job_id

pytestmark = pytest.mark.integration

# the real Redis ledger and a worker's settings as test_queue_jobs has them; the staged original in a folder
# store as test_queue_fetch has it
from test_queue_fetch import SHA, store  # noqa: E402,F401 - a fixture
from test_queue_jobs import KEY, ledger, settings  # noqa: E402,F401 - fixtures


def spec(job: str, **changes) -> dict:
    return {"job": job, "key": f"_staging/{SHA}", "sha256": SHA, "name": "case/scan.pdf", "options": {},
            "run": "1" * 32, **changes}


def converter(status: Status = Status.done):
    calls = []

    def process(path, settings, hint, **kw):
        calls.append((path, settings))
        return JobResult(str(path), status, SHA, "")

    process.calls = calls
    return process


# -- M3: an OSError while fetching is an outcome, never a raise -------------------------------------------------
@pytest.mark.parametrize("code, state", [(errno.ENOSPC, "retry"), (errno.EACCES, "failed")])
def test_a_worker_disk_fault_while_fetching_is_an_outcome_in_the_ledger(ledger, settings, store, monkeypatch,
                                                                       code, state):
    """Old code: the OSError escaped run_job, the ledger kept "running" for ever and batch --wait waited."""
    def refused(path, *args, **kwargs):
        raise OSError(code, "simulated")

    monkeypatch.setattr(queued, "_download", lambda objects, key, path: refused(path))
    job = job_id(SHA, "", {"m3": code})
    ledger.enqueued(job, "case/scan.pdf", SHA, spec(job))
    process = converter()
    outcome = queued.run_job(settings, ledger, job, spec(job), "w/1", 0, process=process)
    assert outcome.state == state and not process.calls
    record = ledger.get(job)
    assert record.state == ("waiting" if state == "retry" else "failed") and record.ends == 1
    assert "cannot fetch the original into the worker's temp folder" in record.reason
    assert "\n" not in record.reason
    if state == "retry":  # a full disk is retried a bounded number of times, then failed with its reason
        last = queued.run_job(settings, ledger, job, spec(job), "w/1", settings.queue.retries, process=process)
        assert last.state == "failed" and ledger.get(job).state == "failed"


def test_a_temp_folder_that_cannot_be_made_is_an_outcome(ledger, settings, store, monkeypatch):
    def full(kind):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(queued, "work_dir", full)
    job = job_id(SHA, "", {"m3": "mkdtemp"})
    ledger.enqueued(job, "case/scan.pdf", SHA, spec(job))
    outcome = queued.run_job(settings, ledger, job, spec(job), "w/1", 0, process=converter())
    assert outcome.state == "retry" and "No space left on device" in ledger.get(job).reason


def test_a_deep_path_of_the_submitter_fits_under_the_worker_temp_root(ledger, settings, store):
    """17 folders of 250 bytes (fine on a share) gave ENAMETOOLONG under the worker's temp root."""
    name = "/".join(["đ" * 125] * 17 + ["000.00.31.H56-241015-0027", "x" * 300 + ".pdf"])
    job = job_id(SHA, "", {"m3": "deep"})
    ledger.enqueued(job, name, SHA, spec(job, name=name))
    process = converter()
    assert queued.run_job(settings, ledger, job, spec(job, name=name), "w/1", 0, process=process).state == "done"
    [(path, _)] = process.calls
    assert path.suffix == ".pdf" and path.parent.name == "000.00.31.H56-241015-0027"


def test_a_delivery_that_keeps_failing_outside_the_file_is_failed_in_the_ledger_at_its_last_try(ledger, settings,
                                                                                               monkeypatch):
    """Old code: past queue.retries Celery dropped the message with no outcome: "running" for ever."""
    from pipelines import tasks

    job = job_id(SHA, "", {"m3": "give-up"})
    ledger.enqueued(job, "case/scan.pdf", SHA, spec(job))
    ledger.start(job, "w/1", spec(job))
    monkeypatch.setattr(tasks, "_ledger", lambda: ledger)
    assert tasks._give_up(job, spec(job), RuntimeError("ledger lost\nfor long")) == "failed"
    record = ledger.get(job)
    assert record.state == "failed" and "RuntimeError: ledger lost for long" in record.reason
    assert ledger.outcomes([job], {job: "1" * 32})[job][0] == "failed"  # a waiter ends


# -- M2: a live delivery holds a lease; a redelivery waits, only a dead one's job is taken over ------------------
def running_elsewhere(ledger, job: str, worker: str = "node-9@other/77") -> dict:
    ledger.enqueued(job, "case/scan.pdf", SHA, spec(job))
    ledger.start(job, worker, spec(job))  # and renewing its lease since
    return spec(job)


def test_a_redelivery_of_a_live_job_waits_and_is_never_failed_as_a_poison_file(ledger, settings, store):
    """Old code: kombu's visibility timeout handed a long file to a second worker, which converted it in
    parallel; the fourth hand-out read 3 starts, 0 ends and failed it as a poison file while all still ran."""
    job = job_id(SHA, "", {"m2": "live"})
    task = running_elsewhere(ledger, job)
    process = converter()
    for _ in range(4):
        outcome = queued.run_job(settings, ledger, job, task, "node-1@here/5", 0, process=process)
        assert outcome.state == "wait" and outcome.delay > 0 and "node-9@other/77" in outcome.result.reason
    record = ledger.get(job)
    assert not process.calls and (record.state, record.worker, record.starts, record.ends) == (
        "running", "node-9@other/77", 1, 0)
    ledger.end(job, "done", "", {"path": "case/scan.pdf", "status": "done"}, spec=task)
    assert queued.run_job(settings, ledger, job, task, "node-1@here/5", 0, process=process).state == "done"
    assert not process.calls  # the held delivery, looked at again: the job is done, nothing converted twice


def test_a_dead_deliverys_job_is_taken_over_when_its_lease_lapses(ledger, settings, store):
    job = job_id(SHA, "", {"m2": "dead"})
    task = running_elsewhere(ledger, job)
    ledger.redis.hset(f"digitize:q:job:{job}", "heartbeat", time.time() - settings.queue.visibility_timeout)
    process = converter()
    assert queued.run_job(settings, ledger, job, task, "node-1@here/5", 0, process=process).state == "done"
    record = ledger.get(job)
    assert len(process.calls) == 1 and (record.state, record.starts, record.ends) == ("done", 2, 1)


def test_a_killed_pool_child_of_the_same_node_is_taken_over_at_once(ledger, settings, store):
    """reject_on_worker_lost hands a killed child's message out at once: its lease is fresh, its process gone."""
    dead = subprocess.Popen(["true"])
    dead.wait()
    job = job_id(SHA, "", {"m2": "child"})
    task = running_elsewhere(ledger, job, f"node-1@here/{dead.pid}")
    process = converter()
    assert queued.run_job(settings, ledger, job, task, "node-1@here/5", 0, process=process).state == "done"
    assert len(process.calls) == 1 and ledger.get(job).starts == 2


def test_two_deliveries_starting_at_once_one_takes_the_job(ledger, settings):
    from pipelines.ledger import LeaseHeld

    job = job_id(SHA, "", {"m2": "race"})
    task = running_elsewhere(ledger, job)
    with pytest.raises(LeaseHeld):
        ledger.start(job, "node-1@here/5", task, lease=1800.0)
    assert ledger.get(job).worker == "node-9@other/77" and ledger.get(job).starts == 1


def test_the_running_delivery_renews_its_lease(ledger, settings, store, monkeypatch):
    monkeypatch.setattr(queued, "lease_times", lambda queue: (0.05, 30.0))
    job = job_id(SHA, "", {"m2": "beat"})
    ledger.enqueued(job, "case/scan.pdf", SHA, spec(job))
    seen = []

    def slow(path, settings, hint, **kw):
        started = ledger.get(job).heartbeat
        time.sleep(0.5)
        seen.append(ledger.get(job).heartbeat - started)
        return JobResult(str(path), Status.done, SHA, "")

    assert queued.run_job(settings, ledger, job, spec(job), "node-1@here/5", 0, process=slow).state == "done"
    assert seen[0] > 0.2  # renewed while converting


def test_a_held_delivery_is_sent_again_later_without_counting_a_try(ledger, settings, monkeypatch):
    from celery.exceptions import Ignore

    from pipelines import tasks

    job = job_id(SHA, "", {"m2": "task"})
    task = running_elsewhere(ledger, job)
    sent = []

    class Request:
        retries, hostname = 2, "node-1@here"

    class Self:
        request = Request()

        def signature_from_request(self, **options):
            return SimpleNamespace(apply_async=lambda: sent.append(options))

    monkeypatch.setattr(tasks, "verify", lambda *a: None)
    monkeypatch.setattr(tasks, "_ledger", lambda: ledger)
    monkeypatch.setitem(tasks._state, "settings", settings)
    monkeypatch.setitem(tasks._state, "key", KEY)
    with pytest.raises(Ignore):
        tasks._convert(Self(), job, task, "sig")
    assert sent == [{"countdown": settings.queue.visibility_timeout / 2, "retries": 2}]
    assert ledger.get(job).starts == 1


# -- L6: an older submission's task never walks a newer run's record back ---------------------------------------
def test_a_replayed_older_task_leaves_a_newer_done_job_alone(ledger, settings, store):
    job = job_id(SHA, "", {"l6": 1})
    now = time.time_ns()
    older, newer = spec(job, run=f"{now - 10**9:x}.{'a' * 16}"), spec(job, run=f"{now:x}.{'b' * 16}")  # as new_run()
    ledger.enqueued(job, "case/scan.pdf", SHA, newer)
    ledger.start(job, "w/1", newer)
    ledger.end(job, "done", "", {"path": "case/scan.pdf", "status": "done"}, spec=newer)
    process = converter(Status.failed)
    outcome = queued.run_job(settings, ledger, job, older, "w/2", 0, process=process)
    record = ledger.get(job)
    assert outcome.state == "dropped" and not process.calls
    assert (record.state, record.run) == ("done", newer["run"])


# -- L5: a task's options never loosen the worker's own limits ---------------------------------------------------
def test_a_tasks_options_never_loosen_the_workers_limits(ledger, settings, store):
    """Old code: every [convert] option of the task replaced the worker's: memory cap 0 (none), huge pixel
    and stream limits, veraPDF off, an OCR deadline beyond the visibility timeout."""
    own = settings.convert
    own.max_pages = 0  # this worker sets no page limit: the task's is stricter and kept
    job = job_id(SHA, "", {"l5": 1})
    loose = {"max_memory_mb": 0, "max_pixels": 10**12, "max_stream_mb": 10**6, "max_input_mb": -1, "max_pages": 50,
             "validate": False, "ocr_timeout": 10**6, "jobs": 64, "language": "eng", "jpeg_quality": 60}
    ledger.enqueued(job, "case/scan.pdf", SHA, spec(job, options=loose))
    process = converter()
    assert queued.run_job(settings, ledger, job, spec(job, options=loose), "w/1", 0, process=process).state == "done"
    [(_, used)] = process.calls
    got = used.convert
    assert (got.max_memory_mb, got.max_pixels, got.max_stream_mb, got.max_input_mb) == (
        own.max_memory_mb, own.max_pixels, own.max_stream_mb, own.max_input_mb)
    assert got.max_pages == 50 and got.validate is True and got.ocr_timeout == own.ocr_timeout
    assert (got.language, got.jpeg_quality, got.jobs) == ("eng", 60, own.jobs)  # output options still travel


def test_a_delivery_retried_in_its_own_process_after_a_raise_takes_over_at_once_without_a_crash(ledger, settings,
                                                                                                 store,
                                                                                                 monkeypatch):
    """Old code: the delivery raised after its start (the ledger down past its reconnect time), Celery retried it
    into the same process, which found its own fresh lease and waited a whole lease for itself; the takeover
    then counted a crash that never happened (review rev2_batch16a MEDIUM-2)."""
    import os

    job = job_id(SHA, "", {"m2": "own"})
    ledger.enqueued(job, "case/scan.pdf", SHA, spec(job))
    me = f"node-1@here/{os.getpid()}"
    ledger.start(job, "node-1@here/999999", spec(job))  # an earlier delivery that did crash
    ledger.redis.hset(f"digitize:q:job:{job}", "heartbeat", 0)
    real_end = ledger.end

    def down(*args, **kwargs):
        raise StorageError("queue ledger: ledger down")

    monkeypatch.setattr(ledger, "end", down)
    monkeypatch.setattr(ledger, "release", down)  # down for the best-effort release too
    process = converter()
    with pytest.raises(StorageError):
        queued.run_job(settings, ledger, job, spec(job), me, 0, process=process)
    monkeypatch.setattr(ledger, "end", real_end)
    monkeypatch.setattr(settings.queue, "max_deliveries", 2)  # one real crash and this raise: no poison file
    outcome = queued.run_job(settings, ledger, job, spec(job), me, 1, process=process)
    record = ledger.get(job)
    assert outcome.state == "done" and len(process.calls) == 2
    assert (record.state, record.starts, record.ends, record.crashes) == ("done", 2, 1, 1)


def test_a_delivery_that_raised_after_its_start_gives_the_job_back_for_a_retry_elsewhere(ledger, settings, store,
                                                                                         monkeypatch):
    """Celery's retry of a delivery that raised may land in another pool process: old code left the record
    running under the raiser, so the retry waited a whole lease for it and then counted a crash."""
    job = job_id(SHA, "", {"m2": "release"})
    ledger.enqueued(job, "case/scan.pdf", SHA, spec(job))
    real_end = ledger.end

    def down(*args, **kwargs):
        raise RuntimeError("index down, and a bug after it")

    monkeypatch.setattr(ledger, "end", down)
    with pytest.raises(RuntimeError):
        queued.run_job(settings, ledger, job, spec(job), "node-1@here/5.aaaa", 0, process=converter())
    record = ledger.get(job)
    assert (record.state, record.crashes) == ("waiting", 0) and "RuntimeError" in record.reason
    monkeypatch.setattr(ledger, "end", real_end)
    process = converter()
    assert queued.run_job(settings, ledger, job, spec(job), "node-1@here/6.bbbb", 1, process=process).state == "done"
    record = ledger.get(job)
    assert len(process.calls) == 1 and (record.state, record.crashes) == ("done", 0)
    assert not ledger.release(job, "node-1@here/6.bbbb", "1" * 32, "late")  # an ended record is left alone


def test_a_delivery_of_the_same_process_still_running_is_waited_for(ledger, settings, store):
    import os

    job = job_id(SHA, "", {"m2": "own-live"})
    task = running_elsewhere(ledger, job, f"node-1@here/{os.getpid()}")
    with queued._leases.hold(ledger, job, f"node-1@here/{os.getpid()}", task["run"], 60.0):
        outcome = queued.run_job(settings, ledger, job, task, f"node-1@here/{os.getpid()}", 0, process=converter())
    assert outcome.state == "wait" and ledger.get(job).starts == 1


# -- LOW-1: a worker's name is its own, even where host name and PID agree ---------------------------------------
def test_two_workers_with_the_same_host_and_pid_have_different_names(monkeypatch, settings):
    """Old code: "digitize-<pid>@<host>": two containers on the host network, each worker at PID 1, shared it, and
    one judged the other's leases by PIDs of its own namespace (taken for dead: converted twice)."""
    from celery.signals import worker_process_init

    from digitize import imaging
    from pipelines import tasks

    names = []
    app = SimpleNamespace(worker_main=lambda argv: names.extend(a for a in argv if a.startswith("--hostname=")))
    monkeypatch.setattr(tasks, "app_for", lambda settings: app)
    monkeypatch.setattr(tasks, "_preload", lambda: None)
    monkeypatch.setattr(tasks, "_warm_models", lambda settings: None)
    monkeypatch.setattr(imaging, "single_threaded", lambda: None)
    monkeypatch.setattr(worker_process_init, "connect", lambda *a, **kw: None)
    monkeypatch.setattr(tasks.os, "getpid", lambda: 1)
    for _ in range(2):  # a worker in each container
        tasks.run_worker(settings, 1)
    assert len(names) == 2 and names[0] != names[1] and all(n.endswith(f"-1@{tasks.socket.gethostname()}")
                                                            for n in names)


def test_a_lease_of_an_earlier_process_with_this_pid_is_dead_and_another_nodes_is_not_judged():
    import os

    from pipelines import tasks

    me = tasks._worker_name("digitize-aa-1@host")
    assert me.startswith(f"digitize-aa-1@host/{os.getpid()}.")
    assert queued._holder_dead(f"digitize-aa-1@host/{os.getpid()}.0badbeef", me)  # a reused PID: not this one
    assert not queued._holder_dead(me, me)
    dead = subprocess.Popen(["true"])
    dead.wait()
    assert queued._holder_dead(f"digitize-aa-1@host/{dead.pid}.12345678", me)
    assert not queued._holder_dead(f"digitize-bb-1@host/{dead.pid}.12345678", me)  # another container's


# -- LOW-2: leases on one clock, Redis's ------------------------------------------------------------------------
def test_a_worker_whose_clock_runs_ahead_still_waits_for_a_live_delivery(ledger, settings, store, monkeypatch):
    """Old code: heartbeats were stamped and aged by each machine's own clock: a worker an hour ahead took every
    live delivery's lease for lapsed and converted the file in parallel (review rev2_batch16a LOW-2)."""
    job = job_id(SHA, "", {"low2": 1})
    task = running_elsewhere(ledger, job)
    assert ledger.beat(job, "node-9@other/77", task["run"])
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 3600)  # this worker's clock, an hour ahead
    process = converter()
    assert queued.run_job(settings, ledger, job, task, "node-1@here/5", 0, process=process).state == "wait"
    from pipelines.ledger import LeaseHeld

    with pytest.raises(LeaseHeld):
        ledger.start(job, "node-1@here/5", task, lease=1800.0)
    assert not process.calls and ledger.get(job).starts == 1
    monkeypatch.setattr(time, "time", lambda: real() - 3600)  # a submitter an hour behind: Redis's time recorded
    other = job_id(SHA, "", {"low2": 2})
    ledger.enqueued(other, "case/scan.pdf", SHA, spec(other))
    assert abs(ledger.get(other).enqueued - real()) < 60 and abs(ledger.get(job).heartbeat - real()) < 60
