"""A queued delivery's own faults and leases (pipelines/queued.run_job, pipelines/tasks) on a real Redis ledger,
with the staged original in a folder store and a stand-in for the conversion (review rev16batch M2, M3, M6, L5, L6)."""

from __future__ import annotations

import errno
import hashlib
from types import SimpleNamespace

import pytest

import pipelines.queued as queued
from digitize.config import Settings
from pipelines.jobs import JobResult, Status
from pipelines.ledger import Ledger, job_id
from storage.objects import FolderStore

pytestmark = pytest.mark.integration

DATA = b"%PDF-1.4 staged original\n" * 50
SHA = hashlib.sha256(DATA).hexdigest()
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
    settings.queue.retry_backoff = 1.0
    return settings


@pytest.fixture
def store(tmp_path, monkeypatch):
    objects = FolderStore(tmp_path / "objects")
    source = tmp_path / "in.pdf"
    source.write_bytes(DATA)
    objects.put(f"_staging/{SHA}", source, SHA)
    monkeypatch.setattr(queued, "archive_for", lambda settings: SimpleNamespace(objects=objects))
    return objects


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
