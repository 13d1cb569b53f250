"""Queue mode reads a scan's sidecar as local mode does (review rev16batch H1): never through a symlink, not
even one swapped in after a check, so no file the submitter can read travels in a task or the ledger. Through
the submitter's public path (Submitter.submit_job) on a real Redis ledger, with a folder store and the broker's
send recorded (test_queue_clues.submitter_for), so each test proves the behaviour (review rev2_batch16a)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import pipelines.queued as queued
from pipelines.jobs import Status

pytestmark = pytest.mark.integration

from test_queue_clues import submitter_for  # noqa: E402 - a Submitter with a recorded broker

SECRET = "TOP-SECRET-QUEUE-KEY-0123456789abcdef"


@pytest.fixture
def inbox(tmp_path):
    (tmp_path / "queue-secret").write_text(SECRET)
    folder = tmp_path / "inbox"
    folder.mkdir()
    (folder / "scan.pdf").write_bytes(b"%PDF-1.4")
    return folder


@pytest.fixture
def submitter(tmp_path, own_redis):
    sub = submitter_for(tmp_path, own_redis.url)
    yield sub
    sub.ledger.close()


def link_sidecar(inbox: Path) -> None:
    """scan.json replaced (atomically, as an attacker's loop does) by a symlink to the secret file."""
    os.symlink(inbox.parent / "queue-secret", inbox / "link.tmp")
    os.replace(inbox / "link.tmp", inbox / "scan.json")


def leaked(submitter) -> bool:
    """Whether the secret reached a sent task or any ledger record."""
    records = [submitter.ledger.redis.hgetall(key) for key in submitter.ledger.redis.keys("digitize:q:job:*")]
    return SECRET in json.dumps(submitter.app.sent) + json.dumps(records)


def test_a_regular_sidecar_travels_with_its_name_and_text(inbox, submitter):
    (inbox / "scan.json").write_text('{"title": "Đơn"}', encoding="utf-8")
    job, result = submitter.submit_job(inbox / "scan.pdf", None, inbox)
    assert result.status is Status.done
    [(sent_job, spec)] = submitter.app.sent
    assert sent_job == job and spec["sidecar"] == ["scan.json", '{"title": "Đơn"}']


def test_a_symlinked_sidecar_is_refused_by_name_not_ignored(inbox, submitter):
    """Old code: silently ignored (the file queued and filed without its metadata); local mode refuses it."""
    link_sidecar(inbox)
    job, result = submitter.submit_job(inbox / "scan.pdf", None, inbox)
    assert result.status is Status.failed and not result.retryable and "scan.json: a symbolic link" in result.reason
    assert "SidecarError" in result.error_kinds and SECRET not in result.reason
    assert job == "" and submitter.app.sent == [] and not leaked(submitter)


def test_a_sidecar_swapped_for_a_link_after_the_check_is_never_read(inbox, submitter, monkeypatch):
    """The race of the review's repro, made deterministic: the swap lands right before the sidecar is opened,
    after every look at its name (old code: is_symlink() then is_file(), then open() by name, which followed the
    link and sent the secret in the task and the ledger)."""
    import builtins

    (inbox / "scan.json").write_text('{"title": "x"}')
    swapped = []

    def swapping(real):
        def opener(path, *args, **kwargs):
            if not swapped and os.fspath(path).endswith("scan.json"):
                swapped.append(path)
                link_sidecar(inbox)
            return real(path, *args, **kwargs)
        return opener

    monkeypatch.setattr(os, "open", swapping(os.open))
    monkeypatch.setattr(builtins, "open", swapping(builtins.open))
    job, result = submitter.submit_job(inbox / "scan.pdf", None, inbox)
    assert swapped and not leaked(submitter)
    assert result.status is Status.failed and "SidecarError" in result.error_kinds and submitter.app.sent == []


def test_a_sidecar_below_a_symlinked_folder_is_not_read(inbox, submitter, tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "scan.pdf").write_bytes(b"%PDF-1.4")
    os.symlink(tmp_path / "queue-secret", tmp_path / "elsewhere" / "scan.json")
    os.symlink(tmp_path / "elsewhere", inbox / "case")
    job, result = submitter.submit_job(inbox / "case" / "scan.pdf", None, inbox)  # (the scan itself is refused
    # there too, in queue mode since before H1)
    assert result.status is Status.failed and submitter.app.sent == [] and not leaked(submitter)
