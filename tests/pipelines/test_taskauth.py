"""Queue task signatures (pipelines/taskauth.py): what is signed, what a worker refuses, where the key comes
from, and that queue mode will not start without one (a one-line error saying how to set it)."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from pipeline_support import ROOT, digitize_cmd, make_settings, settings_env

from digitize import secrets
from digitize.config import Settings, load_settings
from digitize.errors import ConfigError
from pipelines.taskauth import UnsignedTask, queue_secret, sign, verify

KEY = b"k" * 32
JOB = "0123456789abcdef" * 2
SPEC = {"job": JOB, "key": "_staging/" + "ab" * 32, "sha256": "ab" * 32, "name": "hồ sơ/a.pdf",
        "options": {"language": "vie", "ocr_timeout": 20.0, "pages": None}, "sidecar": ("a.json", "{}"),
        "upload": {"id": "u1", "sender": {"name": "lan", "role": "scanner", "agencies": ["000.00.31.H56"]}}}


def test_a_signature_survives_the_brokers_json_round_trip():
    signature = sign(KEY, JOB, SPEC)
    received = json.loads(json.dumps([JOB, SPEC, signature]))  # what Celery's json serializer delivers
    verify(KEY, *received)
    assert signature.startswith("v1=") and len(signature) == 3 + 64


@pytest.mark.parametrize("change", [
    lambda job, spec: (job, {**spec, "key": "_staging/" + "cd" * 32}),  # another staged object
    lambda job, spec: (job, {**spec, "upload": {**spec["upload"], "sender": {"name": "root", "role": "admin"}}}),
    lambda job, spec: (job, {**spec, "options": {**spec["options"], "language": "eng"}}),
    lambda job, spec: ("f" * 32, spec),  # the same spec under another job ID
])
def test_any_change_to_a_signed_task_is_refused(change):
    signature = sign(KEY, JOB, SPEC)
    with pytest.raises(UnsignedTask, match="does not match"):
        verify(KEY, *change(JOB, SPEC), signature)


@pytest.mark.parametrize("signature, words", [
    (None, "not signed"), ("", "not signed"), ("v1=" + "0" * 64, "does not match"), (["v1=x"], "does not match"),
    ("v1=ünïcode", "does not match"),
])
def test_unsigned_and_badly_signed_tasks_are_refused(signature, words):
    with pytest.raises(UnsignedTask, match=words):
        verify(KEY, JOB, SPEC, signature)


def test_another_machines_key_does_not_verify():
    with pytest.raises(UnsignedTask, match="does not match"):
        verify(b"o" * 32, JOB, SPEC, sign(KEY, JOB, SPEC))


def test_a_payload_that_is_not_plain_json_is_refused():
    with pytest.raises(UnsignedTask, match="not plain JSON"):
        verify(KEY, JOB, {"options": {"x": float("nan")}}, "v1=" + "0" * 64)


STRONG = "Qm7-vT2xK9pLr4Zc8Wd1Hs6Yb3Nf0Ga5Je"  # 34 characters, 34 distinct: what a random key looks like


def settings_with(**queue) -> Settings:
    settings = Settings()
    for name, value in queue.items():
        setattr(settings.queue, name, value)
    return settings


def test_the_secret_comes_from_settings_env_a_file_or_a_systemd_credential(tmp_path, monkeypatch):
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    value = STRONG
    assert queue_secret(load_settings("/dev/null", {"DIGITIZE_QUEUE_SECRET": value})) == value.encode()
    path = tmp_path / "queue-secret"
    path.write_text(value + "\n")
    path.chmod(0o600)
    assert queue_secret(settings_with(secret_file=str(path))) == value.encode()
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    (tmp_path / "digitize-queue-secret").write_text(STRONG[::-1])
    (tmp_path / "digitize-queue-secret").chmod(0o600)
    assert queue_secret(settings_with()) == STRONG[::-1].encode()


def test_a_secret_file_others_may_read_or_a_symlink_is_refused(tmp_path):
    path = tmp_path / "queue-secret"
    path.write_text(STRONG)
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="readable or writable by other users"):
        queue_secret(settings_with(secret_file=str(path)))
    path.chmod(0o600)
    (tmp_path / "link").symlink_to(path)
    with pytest.raises(ConfigError, match="cannot read the queue secret file"):
        queue_secret(settings_with(secret_file=str(tmp_path / "link")))


def test_no_secret_or_a_short_one_is_a_config_error_saying_how_to_set_it(monkeypatch):
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    with pytest.raises(ConfigError, match="queue mode needs a secret .*DIGITIZE_QUEUE_SECRET"):
        queue_secret(settings_with())
    with pytest.raises(ConfigError, match="fewer than 32"):
        queue_secret(settings_with(secret="short-but-masked"))


def test_the_secret_is_masked_once_read(tmp_path, monkeypatch):
    secrets.forget_all()
    value = STRONG
    path = tmp_path / "queue-secret"
    path.write_text(value)
    path.chmod(0o600)
    queue_secret(settings_with(secret_file=str(path)))
    assert value not in secrets.mask(f"connecting with {value}")
    assert "DIGITIZE_QUEUE_SECRET" not in secrets.without_secrets({"DIGITIZE_QUEUE_SECRET": value, "PATH": "/bin"})


@pytest.mark.parametrize("command", [("worker", "--concurrency", "1"), ("batch", "--queue", "SRC"),
                                     ("serve", "--port", "9")])
def test_queue_mode_will_not_start_without_a_secret(tmp_path, command):
    settings = make_settings(tmp_path / "data", "s3://127.0.0.1:9/unused", "postgresql://x@127.0.0.1:9/unused")
    settings.queue.secret = ""
    (tmp_path / "src").mkdir()
    env = dict(settings_env(settings), DIGITIZE_QUEUE_URL="redis://127.0.0.1:9/0")
    env.pop("DIGITIZE_QUEUE_SECRET", None)
    env.pop("CREDENTIALS_DIRECTORY", None)
    args = [str(tmp_path / "src") if a == "SRC" else a for a in command]
    done = subprocess.run(digitize_cmd(*args), env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 9, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "DIGITIZE_QUEUE_SECRET" in lines[0] and "Traceback" not in done.stderr, done.stderr


def test_config_show_masks_the_queue_secret(tmp_path):
    value = STRONG
    env = dict(os.environ, DIGITIZE_QUEUE_SECRET=value, DIGITIZE_CONFIG="/dev/null",
               DIGITIZE_DATA_DIR=str(tmp_path / "data"))
    done = subprocess.run(digitize_cmd("config", "show"), env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and value not in done.stdout + done.stderr and "secret" in done.stdout, done.stderr


class _Ledger:
    def __init__(self, record):
        self.record, self.failed = record, []

    def get(self, job):
        return self.record

    def fail(self, job, reason, result):
        self.failed.append(job)


def _refused(monkeypatch, record) -> list:
    """Hand a forged task naming JOB to the worker's refusal path; the jobs it failed in the ledger."""
    from types import SimpleNamespace

    from celery.exceptions import Ignore

    from pipelines import tasks

    ledger = _Ledger(record)
    monkeypatch.setattr(tasks, "_ledger", lambda: ledger)
    monkeypatch.setitem(tasks._state, "key", KEY)
    request = SimpleNamespace(id="forged-1", hostname="w@h")
    with pytest.raises(Ignore):
        tasks._refuse(request, JOB, UnsignedTask("the task is not signed"))
    return ledger.failed


def test_a_forged_task_does_not_fail_a_legitimately_signed_waiting_job(monkeypatch):
    from pipelines.ledger import JobRecord

    record = JobRecord(JOB, "queued", "a.pdf", "ab" * 32, spec=SPEC, signature=sign(KEY, JOB, SPEC))
    assert _refused(monkeypatch, record) == []  # its own, signed task still runs it
    unsigned = JobRecord(JOB, "queued", "a.pdf", "ab" * 32, spec=SPEC, signature="")
    assert _refused(monkeypatch, unsigned) == [JOB]  # one no holder of this key made: failed, with the reason


@pytest.mark.parametrize("value", ["x" * 40, "passwordpasswordpasswordpassword", "0123456789" * 4])
def test_a_key_that_is_not_random_is_refused(value):
    with pytest.raises(ConfigError, match="distinct characters"):
        queue_secret(settings_with(secret=value))


def test_key_files_must_be_private_regular_small_and_ours(tmp_path, monkeypatch):
    """The queue's and the link records' keys are read by one helper (digitize.secrets.read_secret_file)."""
    from storage.sidecar import link_secret

    path = tmp_path / "key"
    path.write_text(STRONG)
    path.chmod(0o640)  # the group may read it
    with pytest.raises(ConfigError, match="readable or writable by other users"):
        queue_secret(settings_with(secret_file=str(path)))
    path.chmod(0o600)
    settings = settings_with(secret_file=str(path))
    settings.store.link_secret_file = str(path)
    assert queue_secret(settings) == link_secret(settings) == STRONG.encode()
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)  # would block a plain open() forever
    with pytest.raises(ConfigError, match="not a regular file"):
        queue_secret(settings_with(secret_file=str(fifo)))
    big = tmp_path / "big"
    big.write_text(STRONG * 200)
    big.chmod(0o600)
    with pytest.raises(ConfigError, match="larger than 4096 bytes"):
        queue_secret(settings_with(secret_file=str(big)))
    if os.geteuid() == 0:
        os.chown(path, 12345, -1)  # another user's file
    else:
        monkeypatch.setattr(os, "geteuid", lambda: 12345)  # as if this process ran as another (non-root) user
    with pytest.raises(ConfigError, match="belongs to another user"):
        queue_secret(settings_with(secret_file=str(path)))


def test_the_link_secret_comes_from_its_systemd_credential(tmp_path, monkeypatch):
    from storage.sidecar import LINK_CREDENTIAL, link_secret

    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert link_secret(Settings()) is None
    (tmp_path / LINK_CREDENTIAL).write_text(STRONG)
    (tmp_path / LINK_CREDENTIAL).chmod(0o600)
    assert link_secret(Settings()) == STRONG.encode()


def test_message_headers_outside_the_signature_do_not_steer_the_worker():
    """A replayed signed task with a forged retry count or time limit: the count is bounded, the limit ignored."""
    from pipelines import tasks

    assert tasks._tries(-1000, 5) == 0 and tasks._tries(10**9, 5) == 5 and tasks._tries("x", 5) == 0
    assert tasks._tries(2, 5) == 2
    request = object.__new__(tasks._request_class())
    request.time_limits = (1, 1)  # what Celery does with a message's timelimit header
    assert request.time_limits == (None, None)
