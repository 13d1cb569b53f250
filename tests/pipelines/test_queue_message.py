"""The task message Submitter.send publishes: its headers' readable copy of the arguments (argsrepr,
kwargsrepr) names the job only, never the file's name or the task's signature, and is not Celery's saferepr
of the whole spec (a few CPU-ms per task in the submitter)."""

from __future__ import annotations

from types import SimpleNamespace

from celery import Celery

from pipelines.queued import TASK, Submitter

JOB = "0123456789abcdef0123456789abcdef"


class FakeApp:
    def __init__(self):
        self.sent = []

    def send_task(self, name, **options):
        self.sent.append((name, options))


def test_task_headers_name_the_job_only(monkeypatch):
    submitter = object.__new__(Submitter)
    submitter.app, submitter.key, submitter.runs, submitter.batch = FakeApp(), b"k" * 32, {}, ""
    submitter.ledger = SimpleNamespace(enqueued=lambda *a, **kw: None, mark_sent=lambda *a: True)
    spec = {"job": JOB, "key": "_staging/x", "sha256": "ab" * 32, "name": "Nguyen Van A/ho-so.pdf", "options": {}}
    submitter.send(JOB, spec)
    (name, options), = submitter.app.sent
    assert name == TASK
    task_id = options.pop("task_id")
    message = Celery("t", set_as_current=False).amqp.create_task_message(
        task_id, name, options.pop("args"), options.pop("kwargs"), **options)
    shown = message.headers["argsrepr"] + message.headers["kwargsrepr"]
    assert JOB in shown
    assert "Nguyen" not in shown and "signature" not in shown
    assert message.body[0][1]["name"] == spec["name"]  # the task itself still carries the whole spec
