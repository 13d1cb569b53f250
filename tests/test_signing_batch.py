"""A batch's one signer (signing.SigningService): the workers convert while it opens the key, send each
PDF/A to it and get it back signed; a key that cannot be used stops the batch with one line and
nothing stored. Real parts: a PKCS#12 and a SoftHSM2 token from the test CA, veraPDF, pdfsig."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from digitize import signing
from digitize.config import Settings
from digitize.errors import ConfigError, ExitCode, SignerUnavailableError, SigningError

try:
    from tests.test_signing import (P12_PIN, assert_pdfa, assert_pdfsig_valid, env_for, pdfa, pki,  # noqa: F401
                                    run_cli, scan, write_config)
    from tests.pki import make_token
except ModuleNotFoundError:
    from test_signing import (P12_PIN, assert_pdfa, assert_pdfsig_valid, env_for, pdfa, pki,  # noqa: F401
                              run_cli, scan, write_config)
    from pki import make_token

pytestmark = pytest.mark.integration


def p12_settings(pki, pin: str) -> Settings:
    settings = Settings()
    settings.sign.pkcs12, settings.sign.pin = str(pki.pkcs12("officer", P12_PIN)), pin
    return settings


def kept_copy(tmp_path: Path, pdfa: Path) -> Path:
    """The PDF/A where a batch keeps its conversions: the only place (with its workers' work
    folders) the service signs in."""
    (tmp_path / "kept").mkdir(mode=0o700, exist_ok=True)
    return Path(shutil.copy(pdfa, tmp_path / "kept" / "doc.pdf"))


def test_the_service_signs_what_a_worker_sends_it(tmp_path, pki, pdfa):
    service = signing.SigningService(p12_settings(pki, P12_PIN), tmp_path / "kept")
    source = kept_copy(tmp_path, pdfa)
    signed = Path(f"{source}.signed")
    try:
        service.start()
        remote = service.remote()
        assert remote.visible
        record = remote.sign(source, signed)
        assert record.signer == "Nguyễn Thị Lan" and record.level == "B-B"
        assert service.error is None
    finally:
        service.close()
        signing.close_signers()
    assert_pdfsig_valid(signed)
    assert_pdfa(signed)


def test_a_worker_waiting_for_its_signature_lends_its_cpu_slot(tmp_path, pki, pdfa):
    """While the signer works (or a slow token), the worker's slot is free for another worker to convert."""
    slots = threading.Semaphore(1)  # the batch's multiprocessing semaphore, in one process
    service = signing.SigningService(p12_settings(pki, P12_PIN), tmp_path / "kept")
    source = kept_copy(tmp_path, pdfa)
    free_while_signing = []
    sign = service.sign

    def probed(*args):
        free_while_signing.append(slots.acquire(blocking=False))
        if free_while_signing[-1]:
            slots.release()
        return sign(*args)

    service.sign = probed
    try:
        service.start()
        remote = service.remote()
        remote.slots = slots
        with slots:
            remote.sign(source, Path(f"{source}.signed"))
            assert not slots.acquire(blocking=False), "the slot is taken back once signed"
    finally:
        service.close()
        signing.close_signers()
    assert free_while_signing == [True]


def test_a_wrong_pin_in_the_service_signs_nothing(tmp_path, pki, pdfa):
    service = signing.SigningService(p12_settings(pki, "000000"), tmp_path / "kept")
    source = kept_copy(tmp_path, pdfa)
    try:
        service.start()
        with pytest.raises(SigningError, match="PIN"):
            service.remote().sign(source, Path(f"{source}.signed"))
        assert isinstance(service.error, SigningError)
    finally:
        service.close()
        signing._refused.clear()
    assert not Path(f"{source}.signed").exists()


def scans(folder: Path, scan: Path, count: int) -> list[Path]:
    folder.mkdir()
    paths = []
    for n in range(count):
        arr = np.array(Image.open(scan))
        arr[50:60, 50 + 40 * n:80 + 40 * n] = 0  # distinct content: distinct documents
        paths.append(folder / f"scan-{n}.png")
        Image.fromarray(arr).save(paths[-1], dpi=(150, 150))
    return paths


def stored_pdfs(data: Path) -> list[Path]:
    return [p for p in data.rglob("*") if p.is_file() and p.read_bytes()[:5] == b"%PDF-"] if data.exists() else []


def key_env(kind: str, tmp_path: Path, pki, pin: str | None) -> dict[str, str]:
    if kind == "pkcs12":
        config = write_config(tmp_path / "digitize.toml", pkcs12=pki.pkcs12("officer", P12_PIN))
        return env_for(config, DIGITIZE_SIGN_PIN=pin or P12_PIN)
    token = make_token(tmp_path / "hsm", pki, "officer")
    config = write_config(tmp_path / "digitize.toml", pkcs11_module=token.module, token_label=token.label,
                          key_label=token.key_label)
    return env_for(config, DIGITIZE_SIGN_PIN=pin or token.pin, **token.env())


# `digitize batch`, each worker noting whether it has pyHanko loaded after its file, and the PIN
PROBED_BATCH = """import os, sys
from pipelines import batch
_run = batch._run_one
def _run_one(path, hint, root):
    result = _run(path, hint, root)
    with open(os.environ["PYHANKO_PROBE"], "a") as probe:
        probe.write(f"{os.getpid()} {'pyhanko' in sys.modules} {bool(batch._worker_settings.sign.pin)}\\n")
    return result
batch._run_one = _run_one
from digitize.launcher import main
sys.argv[0] = "digitize"
sys.exit(main())
"""


@pytest.mark.parametrize("kind, waiters", [("pkcs12", "0"), ("token", "0"), ("token", "1")])
def test_a_batch_signs_every_file_through_one_signer(tmp_path, pki, scan, kind, waiters):
    """Every file stored signed; the workers sign through the batch's signer and never load pyHanko
    (before, the batch loaded it before forking them, ~1 s of CPU before the first file started);
    with a worker waiting for the signer (batch.sign_waiters) too."""
    files = scans(tmp_path / "src", scan, 3)
    env = key_env(kind, tmp_path, pki, None)
    env.update(DIGITIZE_DATA_DIR=str(tmp_path / "data"), DIGITIZE_CONVERT_LANGUAGE="eng",
               PYHANKO_PROBE=str(tmp_path / "probe"), DIGITIZE_BATCH_SIGN_WAITERS=waiters)
    done = subprocess.run([sys.executable, "-c", PROBED_BATCH, "batch", str(tmp_path / "src"), "--jobs", "2",
                           "--report", str(tmp_path / "r.json")], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    probes = (tmp_path / "probe").read_text().split("\n")
    assert [line.split()[1] for line in probes if line] == ["False"] * 3, probes
    assert [line.split()[2] for line in probes if line] == ["False"] * 3, "a worker was given the PIN"
    summary = json.loads((tmp_path / "r.json").read_text())["summary"]
    assert summary["files"] == 3 and summary["failed"] == 0, summary
    stored = stored_pdfs(tmp_path / "data")
    assert len(stored) == 3 and all(f.exists() for f in files)
    for pdf in stored:
        assert_pdfsig_valid(pdf)


# `digitize batch`, noting in each worker whether the key process's end it inherited is closed, and at
# the batch process's exit whether it loaded pyHanko or the token's library
KEY_PROCESS_BATCH = """import atexit, os, sys
from pipelines import batch
from digitize import signing
_run = batch._run_one
def _run_one(path, hint, root):
    result = _run(path, hint, root)
    held = [s._keys for s in signing._services if s._keys is not None] + list(signing._key_processes.values())
    with open(os.environ["KEY_PROBE"], "a") as probe:
        probe.write(f"worker {len(held)} {all(k._conn.closed for k in held)}\\n")
    return result
batch._run_one = _run_one
_me = os.getpid()
def _at_exit():
    if os.getpid() == _me:
        with open(os.environ["KEY_PROBE"], "a") as probe:
            probe.write(f"batch {'pyhanko' in sys.modules} {'pkcs11' in sys.modules}\\n")
atexit.register(_at_exit)
from digitize.launcher import main
sys.argv[0] = "digitize"
sys.exit(main())
"""


@pytest.mark.parametrize("kind", ["pkcs12", "token"])
def test_the_key_opens_in_a_process_of_its_own_that_no_worker_can_reach(tmp_path, pki, scan, kind):
    """The batch forks its key process at its start (the key opens on the core idle while the batch
    imports the conversion code): the batch process itself loads neither pyHanko nor the token's
    library, and every worker has closed the end of the key process's socket it inherited (only the
    batch's signer, which checks each request, talks to it). Every file is still stored signed."""
    files = scans(tmp_path / "src", scan, 3)
    env = key_env(kind, tmp_path, pki, None)
    env.update(DIGITIZE_DATA_DIR=str(tmp_path / "data"), DIGITIZE_CONVERT_LANGUAGE="eng",
               KEY_PROBE=str(tmp_path / "probe"))
    done = subprocess.run([sys.executable, "-c", KEY_PROCESS_BATCH, "batch", str(tmp_path / "src"), "--jobs", "2"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    probes = [line.split() for line in (tmp_path / "probe").read_text().splitlines()]
    assert [p for p in probes if p[0] == "worker"] == [["worker", "1", "True"]] * 3, probes
    assert [p for p in probes if p[0] == "batch"] == [["batch", "False", "False"]], probes
    stored = stored_pdfs(tmp_path / "data")
    assert len(stored) == 3 and all(f.exists() for f in files)
    for pdf in stored:
        assert_pdfsig_valid(pdf)


def test_a_batch_that_signs_forks_its_key_process_before_the_cli_is_imported(tmp_path, pki, pdfa, monkeypatch):
    """launcher.main -> signing.early_key_process: for `digitize batch` with a PIN it needs not ask
    for, the key process is forked first and signs what the batch's signer hands it; for anything
    else (a dry run, queue mode, help, another command, a PIN to prompt for) nothing is forked."""
    config = write_config(tmp_path / "digitize.toml", pkcs12=pki.pkcs12("officer", P12_PIN))
    monkeypatch.setenv("DIGITIZE_CONFIG", str(config))
    monkeypatch.delenv("DIGITIZE_SIGN_PIN", raising=False)
    for argv in (["batch", "src"], ["-v", "batch", "src"]):  # no PIN: the CLI prompts, then forks
        signing.early_key_process(argv)
    assert signing._key_processes == {}
    monkeypatch.setenv("DIGITIZE_SIGN_PIN", P12_PIN)
    for argv in (["batch", "--dry-run", "src"], ["batch", "src", "--queue"], ["batch", "--help"], ["run", "batch"],
                 ["--config"], ["config", "show", "batch"]):
        signing.early_key_process(argv)
        assert signing._key_processes == {}, argv
    signing.early_key_process(["--config", str(config), "-q", "batch", "src", "--jobs", "2"])
    assert len(signing._key_processes) == 1
    service = signing.SigningService(p12_settings(pki, P12_PIN), tmp_path / "kept")  # the CLI's settings
    try:
        assert signing._key_processes == {} and service._keys is not None  # taken by the key's identity
        service.start()
        assert service.wait_ready(60) and service.error is None
        source = kept_copy(tmp_path, pdfa)
        status, record = service.sign(source, Path(f"{source}.signed"), None)
        assert status == "ok" and record.level == "B-B", record
        pid = service._keys.pid
    finally:
        service.close()
    assert_pdfsig_valid(Path(f"{source}.signed"))
    with pytest.raises(ChildProcessError):  # ended and waited for
        os.waitpid(pid, os.WNOHANG)


# `digitize batch`, each opening of the key (a PKCS#12's decryption, a token's C_Login) noted, in
# whichever process it happens (the key process is forked with the counter in place)
LOGINS_COUNTED = """import os, sys
from digitize import signkeys
def counted(opener):
    def open_key(*args, **kwargs):
        with open(os.environ["LOGIN_PROBE"], "a") as probe:
            probe.write(f"{opener.__name__} {os.getpid()}\\n")
        return opener(*args, **kwargs)
    return open_key
signkeys.open_pkcs12, signkeys.open_pkcs11 = counted(signkeys.open_pkcs12), counted(signkeys.open_pkcs11)
from digitize.launcher import main
sys.argv[0] = "digitize"
sys.exit(main())
"""


@pytest.mark.parametrize("kind", ["pkcs12", "token"])
def test_a_batch_that_signs_nothing_never_tries_the_pin(tmp_path, pki, scan, kind):
    """Each wrong PIN tried on a USB token counts toward locking it: the key process forked at the
    batch's start opens the key only once the batch has files to sign. An empty folder, a usage
    error and a missing folder (with a wrong PIN) make no login at all; a batch with a file makes
    exactly one, and stops with one line (review2 of sign16, HIGH 1)."""
    env = key_env(kind, tmp_path, pki, "000000")
    probe = tmp_path / "logins"
    env.update(DIGITIZE_DATA_DIR=str(tmp_path / "data"), DIGITIZE_CONVERT_LANGUAGE="eng", LOGIN_PROBE=str(probe))
    (tmp_path / "empty").mkdir()
    runs = {"an empty folder": ["batch", str(tmp_path / "empty")],
            "a usage error": ["batch", str(tmp_path / "empty"), "--jobs", "0"],
            "a missing folder": ["batch", str(tmp_path / "nowhere")]}
    for what, argv in runs.items():
        done = subprocess.run([sys.executable, "-c", LOGINS_COUNTED, *argv], capture_output=True, text=True,
                              env=env, timeout=120)
        assert "Traceback" not in done.stderr and (done.returncode == 0) == (what == "an empty folder"), \
            (what, done.returncode, done.stderr)
        assert not probe.exists(), (what, probe.read_text())
    scans(tmp_path / "src", scan, 1)
    done = subprocess.run([sys.executable, "-c", LOGINS_COUNTED, "batch", str(tmp_path / "src"), "--jobs", "1"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == ExitCode.signing and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert len(probe.read_text().splitlines()) == 1, probe.read_text()
    assert stored_pdfs(tmp_path / "data") == []


def test_a_batch_whose_files_need_no_signature_never_tries_the_pin(tmp_path, pki, scan):
    """Review rev3 sign16b H1: the key opened as soon as the batch had files, so a folder whose files were
    all stored already (a timer's run over a done inbox) or all broken tried a stale PIN on every run and said
    nothing (exit 0). The key opens at the first signature asked: no login at all for those."""
    env = key_env("pkcs12", tmp_path, pki, None)
    probe = tmp_path / "logins"
    env.update(DIGITIZE_DATA_DIR=str(tmp_path / "data"), DIGITIZE_CONVERT_LANGUAGE="eng", LOGIN_PROBE=str(probe))
    scans(tmp_path / "src", scan, 1)
    first = subprocess.run([sys.executable, "-c", LOGINS_COUNTED, "batch", str(tmp_path / "src"), "--jobs", "1"],
                           capture_output=True, text=True, env=env, timeout=300)
    assert first.returncode == 0 and len(stored_pdfs(tmp_path / "data")) == 1, first.stderr
    probe.unlink()
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "bad.pdf").write_bytes(b"%PDF-1.7 not a pdf")
    env["DIGITIZE_SIGN_PIN"] = "000000"
    for what, src, code in (("all stored already", tmp_path / "src", 0), ("only a broken file", tmp_path / "broken", 2)):
        done = subprocess.run([sys.executable, "-c", LOGINS_COUNTED, "batch", str(src), "--jobs", "1"],
                              capture_output=True, text=True, env=env, timeout=300)
        assert done.returncode == code and "Traceback" not in done.stderr, (what, done.returncode, done.stderr)
        assert not probe.exists(), (what, probe.read_text())


def test_the_key_process_pipe_carries_no_pickle(tmp_path, pki, pdfa, monkeypatch):
    """The key process and the batch's signer speak the workers' JSON frames, never pickle: with
    Connection.send/recv (pickle) made to fail in both processes, a file is still signed (review2
    of sign16, LOW 3)."""
    from multiprocessing.connection import Connection

    def pickled(*args, **kwargs):
        raise AssertionError("pickle on the key process's pipe")

    monkeypatch.setattr(Connection, "send", pickled)
    monkeypatch.setattr(Connection, "recv", pickled)
    settings = p12_settings(pki, P12_PIN)
    signing.start_key_process(settings)
    service = signing.SigningService(settings, tmp_path / "kept")
    source = kept_copy(tmp_path, pdfa)
    try:
        assert service._keys is not None
        service.start()
        assert service.wait_ready(60) and service.error is None, service.error
        status, record = service.sign(source, Path(f"{source}.signed"), np.full((200, 595), 250, np.uint8))
        assert status == "ok" and record.level == "B-B", record
    finally:
        service.close()
    assert signing._signers == {}  # signed in the key process, not here
    assert_pdfsig_valid(Path(f"{source}.signed"))


def test_the_key_process_answers_in_json():
    """The key process's answers: its opening ("ok", no record), a signature, a file that waits, and
    a key refused mid-batch (which stops the batch), all through the workers' JSON answer format."""
    answers = [("ok", None), ("ok", RECORD), ("error", SignerUnavailableError("token gone: the file waits")),
               ("refused", SigningError("wrong PIN"))]
    for status, value in answers:
        data = signing._encode_answer(status, value)
        json.loads(data)
        got_status, got = signing._decode_answer(data)
        assert got_status == status
        if isinstance(value, Exception):
            assert type(got) is type(value) and str(got) == str(value)
        else:
            assert got == value


def test_a_key_process_that_dies_stops_the_batchs_signing(tmp_path, pki, pdfa):
    """A key process that died (killed, crashed) stops the batch's signing with one line; the key
    is never opened again in the batch process, which must not load pyHanko or a token's library
    (review2 of sign16, LOW 3)."""
    import signal

    settings = p12_settings(pki, P12_PIN)
    signing.start_key_process(settings)
    service = signing.SigningService(settings, tmp_path / "kept")
    source = kept_copy(tmp_path, pdfa)
    try:
        service.start()
        assert service.wait_ready(60) and service.error is None, service.error
        os.kill(service._keys.pid, signal.SIGKILL)
        status, error = service.sign(source, Path(f"{source}.signed"), None)
        assert status == "error" and "key process ended" in str(error), error
        assert service.error is error  # the batch stops with this line
        Path(f"{source}.signed").unlink()
        assert service.sign(source, Path(f"{source}.signed"), None) == ("error", error)
        assert signing._signers == {}
    finally:
        service.close()
        signing.close_signers()


def test_the_key_process_keeps_only_the_sign_settings(tmp_path, pki, monkeypatch):
    """The key process parses PDFs the workers wrote: it holds the [sign] settings and no other
    section's secrets, in the settings it is given nor in the batch's own copy (review2 of sign16,
    LOW 4). The batch process's settings are left as they were."""
    from dataclasses import asdict

    from digitize.config import remember_secrets

    settings = p12_settings(pki, P12_PIN)
    settings.store.secret_key, settings.web.secret_key = "store-secret-d41d8cd98f", "web-secret-8f00b204e9"
    settings.queue.secret, settings.index.dsn = "queue-secret-e9800998ec", "postgresql://u:dsn-secret-f8427e@h/db"
    remember_secrets(settings)  # as load_settings does: the masking function knows them
    seen = tmp_path / "seen.json"

    def probe(given, conn, parent):  # the key process's main, in the child
        from digitize import secrets

        seen.write_text(json.dumps({"given": asdict(given), "batch": asdict(settings),
                                    "remembered": sorted(secrets._remembered)}))

    monkeypatch.setattr(signing, "_key_process_main", probe)
    keys = signing.KeyProcess(settings)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # a key process never asked is killed at close: let the probe finish
        with contextlib.suppress(OSError, ValueError):
            json.loads(seen.read_text())
            break
        time.sleep(0.05)
    keys.close()
    seen = json.loads(seen.read_text())
    text = json.dumps(seen)
    assert seen["given"]["sign"]["pkcs12"] == settings.sign.pkcs12
    for secret in ("store-secret", "web-secret", "queue-secret", "dsn-secret"):
        assert secret not in text, secret
    assert settings.store.secret_key == "store-secret-d41d8cd98f" and settings.index.dsn.endswith("@h/db")


@pytest.mark.parametrize("kind", ["pkcs12", "token"])
def test_a_batch_with_a_wrong_pin_is_one_line_and_stores_nothing(tmp_path, pki, scan, kind):
    files = scans(tmp_path / "src", scan, 3)
    env = key_env(kind, tmp_path, pki, "000000")
    env.update(DIGITIZE_DATA_DIR=str(tmp_path / "data"), DIGITIZE_CONVERT_LANGUAGE="eng")
    done = run_cli("batch", str(tmp_path / "src"), "--jobs", "2", env=env)
    assert done.returncode == ExitCode.signing, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("digitize: ") and "PIN" in lines[0], done.stderr
    assert "000000" not in done.stderr and "Traceback" not in done.stderr
    assert stored_pdfs(tmp_path / "data") == [] and all(f.exists() for f in files)


# --- the service's bounds and confinement (a stub key: no pyHanko; review of 2026-12-01) --------------

RECORD = signing.SignatureRecord("Signature1", "CN=Stub", "ab" * 32, "2026-12-02T09:00:00+07:00", None, "B-B",
                                 "top right")


class StubSigner:
    """signer_for's answer in the service: writes the target and says so."""

    def __init__(self):
        self.signed = []

    def sign(self, source, target, band=None):
        Path(target).write_bytes(Path(source).read_bytes() + b"%signed\n")
        self.signed.append(Path(source))
        return RECORD


@pytest.fixture
def stub_service(tmp_path, monkeypatch):
    """A SigningService whose key is open at once and signs with StubSigner; ``[sign] timeout`` 2 s."""
    stub = StubSigner()
    monkeypatch.setattr(signing, "signer_for", lambda settings: stub)
    settings = Settings()
    settings.sign.timeout = 2.0
    (tmp_path / "kept").mkdir(mode=0o700)
    service = signing.SigningService(settings)
    service.kept = tmp_path / "kept"  # the batch gives its kept folder (here before any request)
    service._open = service.ready.set
    service.stub = stub
    yield service
    service.close()


def in_thread(action, bound: float):
    """ACTION's result or exception, or "still waiting" after BOUND seconds."""
    out = {}

    def run():
        try:
            out["r"] = action()
        except BaseException as e:  # noqa: BLE001
            out["r"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(bound)
    return out.get("r", "still waiting")


def test_a_key_that_never_opens_fails_the_worker_within_the_timeout(stub_service, tmp_path):
    stub_service._open = lambda: time.sleep(3600)  # a token that never answers C_Login
    stub_service.start()
    source = tmp_path / "kept" / "doc.pdf"
    source.write_bytes(b"%PDF-1.7\n")
    got = in_thread(lambda: stub_service.remote().sign(source, Path(f"{source}.signed")), 20)
    assert isinstance(got, SignerUnavailableError) and "timeout" in str(got), got
    assert isinstance(stub_service.error, SignerUnavailableError)


def test_a_client_stalling_the_handshake_holds_no_other(stub_service, tmp_path):
    stub_service.start()
    silent = socket.socket(socket.AF_UNIX)
    silent.connect(stub_service.address)  # connects, never answers the challenge
    try:
        source = tmp_path / "kept" / "doc.pdf"
        source.write_bytes(b"%PDF-1.7\n")
        assert in_thread(lambda: stub_service.remote().sign(source, Path(f"{source}.signed")), 8) == RECORD
    finally:
        silent.close()


def test_a_malformed_request_closes_its_connection_without_a_traceback(stub_service, tmp_path, capsys,
                                                                       monkeypatch):
    from multiprocessing.connection import Client

    import logging

    died = []  # a thread ended by an exception: Python prints its traceback on stderr
    monkeypatch.setattr(threading, "excepthook", died.append)
    # a handler an earlier in-process CLI test left on a since-closed capture stream would print logging's own
    # "--- Logging error ---" traceback: this test asserts what the signer writes, through a fresh handler
    handler = logging.StreamHandler()  # the current (captured) stderr
    monkeypatch.setattr(logging.getLogger("digitize"), "handlers", [handler])
    monkeypatch.setattr(logging.getLogger("digitize"), "propagate", False)
    stub_service.start()
    conn = Client(stub_service.address, "AF_UNIX", authkey=stub_service.authkey)
    conn.send("not a request")
    assert conn.poll(5)
    with pytest.raises(EOFError):
        conn.recv()
    conn.close()
    source = tmp_path / "kept" / "doc.pdf"
    source.write_bytes(b"%PDF-1.7\n")
    assert stub_service.remote().sign(source, Path(f"{source}.signed")) == RECORD  # the service still answers
    assert died == [] and "Traceback" not in capsys.readouterr().err


def test_a_long_signing_error_stays_the_permanent_error_it_is(stub_service, tmp_path):
    """A pyHanko or TSA text past the answer's 64 KiB frame made the worker read 'bad message length',
    a SignerUnavailableError (exit 10, the file waits forever) instead of exit 13 (rev2_ipc16 L3)."""
    stub_service.start()
    source = tmp_path / "kept" / "doc.pdf"
    source.write_bytes(b"%PDF-1.7\n")
    stub_service.stub.sign = lambda s, t, b=None: (_ for _ in ()).throw(SigningError("chain: " + "\u1ea1" * 100_000))
    with pytest.raises(SigningError) as caught:
        stub_service.remote().sign(source, Path(f"{source}.signed"))
    assert not isinstance(caught.value, SignerUnavailableError) and caught.value.exit_code == ExitCode.signing
    assert str(caught.value).startswith("chain: \u1ea1") and len(str(caught.value)) <= signing.MAX_MESSAGE


def test_an_oversized_request_is_dropped_with_one_line(stub_service, tmp_path, monkeypatch):
    from multiprocessing.connection import Client

    warned = []
    monkeypatch.setattr(signing.log, "warning", lambda message, *args: warned.append(message % args))
    stub_service.start()
    conn = Client(stub_service.address, "AF_UNIX", authkey=stub_service.authkey)
    try:
        conn.send_bytes(b"{" + b" " * signing.MAX_HEADER + b"}")
    except (BrokenPipeError, ConnectionResetError):
        pass  # the signer hung up once it read the frame's length
    finally:
        conn.close()
    deadline = time.monotonic() + 10
    while not warned and time.monotonic() < deadline:
        time.sleep(0.05)
    assert warned == ["the batch's signer dropped a malformed request (a frame over its size limit)"]
    source = tmp_path / "kept" / "doc.pdf"
    source.write_bytes(b"%PDF-1.7\n")
    assert stub_service.remote().sign(source, Path(f"{source}.signed")) == RECORD  # the service still answers


@pytest.mark.parametrize("timeout", [0.0, -1.0])
def test_a_timeout_that_bounds_nothing_is_a_config_error(timeout):
    settings = Settings()
    settings.sign.pkcs12, settings.sign.timeout = "key.p12", timeout
    with pytest.raises(ConfigError, match="sign.timeout"):
        signing.check_settings(settings.sign)


def test_a_key_gone_bad_mid_batch_stops_the_batch(stub_service, tmp_path, monkeypatch):
    """A re-login refused (or a certificate expired) after the start: the service's error is set,
    so the batch's loop stops the batch instead of converting every file to fail it at signing."""
    stub_service.start()
    source = tmp_path / "kept" / "doc.pdf"
    source.write_bytes(b"%PDF-1.7\n")
    assert stub_service.remote().sign(source, Path(f"{source}.signed")) == RECORD

    def refused(settings):
        raise SigningError("the token refused the PIN")

    monkeypatch.setattr(signing, "signer_for", refused)
    Path(f"{source}.signed").unlink()
    with pytest.raises(SigningError, match="refused the PIN"):
        stub_service.remote().sign(source, Path(f"{source}.signed"))
    assert isinstance(stub_service.error, SigningError) and stub_service.overdue() is stub_service.error


def test_close_ends_the_accepting_thread(stub_service):
    stub_service.start()
    stub_service.close()
    stub_service._thread.join(10)  # close() waits 1 s for it: on a loaded machine it may end a moment later
    assert not stub_service._thread.is_alive() and not stub_service._folder.exists()


def test_a_client_with_another_key_gets_one_line(stub_service, tmp_path):
    stub_service.start()
    remote = stub_service.remote()
    remote._authkey = os.urandom(32)
    with pytest.raises(SignerUnavailableError, match="refused"):
        remote.sign(tmp_path / "kept" / "doc.pdf", tmp_path / "kept" / "doc.pdf.signed")


def test_the_service_signs_only_the_batch_s_own_files(stub_service, tmp_path):
    stub_service.start()
    remote = stub_service.remote()
    outside = tmp_path / "outside.pdf"
    outside.write_bytes(b"%PDF-1.7\n")
    kept = tmp_path / "kept"
    link = kept / "link.pdf"
    link.symlink_to(outside)
    victim = kept / "victim"
    victim.write_bytes(b"precious")
    inside = kept / "doc.pdf"
    inside.write_bytes(b"%PDF-1.7\n")
    existing = kept / "done.pdf"
    existing.write_bytes(b"%PDF-1.7\n")
    Path(f"{existing}.signed").write_bytes(b"precious")
    for source, target in [(outside, Path(f"{outside}.signed")),  # not the batch's folder
                           (link, Path(f"{link}.signed")),  # a link out of it
                           (inside, victim),  # a target other than source + .signed
                           (existing, Path(f"{existing}.signed")),  # a target that exists
                           (kept / ".." / "outside.pdf", kept / ".." / "outside.pdf.signed")]:
        with pytest.raises(SigningError, match="refuses"):
            remote.sign(source, target)
    assert stub_service.stub.signed == []
    assert victim.read_bytes() == b"precious" and Path(f"{existing}.signed").read_bytes() == b"precious"
    assert not Path(f"{outside}.signed").exists()
    assert remote.sign(inside, Path(f"{inside}.signed")) == RECORD


def test_the_service_signs_in_its_workers_work_folders_only(stub_service, tmp_path, monkeypatch):
    """A work folder (fsutil.work_dir's name) of a process this one forked is the batch's; the same
    name with another process's pid is not."""
    from digitize import fsutil

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    stub_service.start()
    child = subprocess.Popen(["sleep", "60"])
    try:
        owner = fsutil._owner().partition("-")[2]
        for pid, ok in [(child.pid, True), (os.getppid(), False)]:
            folder = tmp_path / f"digitize-{pid}-{owner}-job-abc123"
            folder.mkdir(mode=0o700)
            source = folder / "doc.pdf"
            source.write_bytes(b"%PDF-1.7\n")
            if ok:
                assert stub_service.remote().sign(source, Path(f"{source}.signed")) == RECORD
            else:
                with pytest.raises(SigningError, match="refuses"):
                    stub_service.remote().sign(source, Path(f"{source}.signed"))
    finally:
        child.kill()
        child.wait()
    assert stub_service.stub.signed == [tmp_path / f"digitize-{child.pid}-{owner}-job-abc123" / "doc.pdf"]


def test_a_long_temp_folder_still_gets_a_socket_and_leaks_nothing(tmp_path, monkeypatch):
    from digitize import fsutil

    long = tmp_path / ("d" * 100)
    long.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(long))
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    service = signing.SigningService(Settings())
    folder = service._folder
    try:
        assert len(os.fsencode(service.address)) <= 107 and folder.stat().st_mode & 0o777 == 0o700
        assert fsutil.WORK_DIR.match(folder.name), folder.name  # swept after a crash
    finally:
        service.close()
    assert not folder.exists()


def test_a_socket_that_cannot_be_made_is_one_line_and_leaks_no_folder(tmp_path, monkeypatch):
    import multiprocessing.connection

    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))

    def refused(*args, **kwargs):
        raise OSError(98, "Address already in use")

    monkeypatch.setattr(multiprocessing.connection, "Listener", refused)
    with pytest.raises(SigningError, match="cannot start the batch's signer"):
        signing.SigningService(Settings())
    assert list(runtime.iterdir()) == []


# `digitize batch` with a key that never opens, or a signature that never ends
HUNG_BATCH = """import sys, time
from digitize import signing
if sys.argv[1] == "open":
    signing.SigningService._open = lambda self: time.sleep(3600)
else:
    signing.Signer.sign = lambda self, *args: time.sleep(3600)
from digitize.launcher import main
sys.argv[0:2] = ["digitize"]
sys.exit(main())
"""


@pytest.mark.parametrize("hang", ["open", "sign"])
def test_a_hung_token_stops_the_batch_with_one_line(tmp_path, pki, scan, hang):
    files = scans(tmp_path / "src", scan, 2)
    env = key_env("pkcs12", tmp_path, pki, None)
    env.update(DIGITIZE_DATA_DIR=str(tmp_path / "data"), DIGITIZE_CONVERT_LANGUAGE="eng",
               DIGITIZE_SIGN_TIMEOUT="3")
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", HUNG_BATCH, hang, "batch", str(tmp_path / "src"), "--jobs", "2"],
                          capture_output=True, text=True, env=env, timeout=240)
    assert time.monotonic() - started < 200
    assert done.returncode == ExitCode.storage, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("digitize: ") and "timeout" in lines[0], done.stderr
    assert stored_pdfs(tmp_path / "data") == [] and all(f.exists() for f in files)


# -- page workers (a batch worker's children, which decode untrusted images) cannot reach the signer --------

_held = None  # the batch worker's RemoteSigner, as a page worker inherits it with the fork


def _key_in_memory(digest: bytes, masked_prefix: bytes) -> bool:
    """Whether this process's writable memory holds the 32 bytes whose SHA-256 is DIGEST (found by
    their first bytes, given masked so that the needle itself is no copy of the key)."""
    import hashlib
    import re

    needle = bytes(b ^ 0xA5 for b in masked_prefix)
    with open("/proc/self/maps") as maps:
        regions = [line.split() for line in maps]
    with open("/proc/self/mem", "rb", buffering=0) as mem:
        for fields in regions:
            if not fields[1].startswith("rw") or (len(fields) > 5 and fields[5] in ("[vvar]", "[vsyscall]")):
                continue
            start, end = (int(x, 16) for x in fields[0].split("-"))
            at = start
            while at < end:
                size = min(16 << 20, end - at)
                try:
                    mem.seek(at)
                    data = mem.read(size + 31 if at + size < end else size)
                except OSError:
                    break
                for found in re.finditer(re.escape(needle), data):
                    if hashlib.sha256(data[found.start():found.start() + 32]).digest() == digest:
                        return True
                at += size
    return False


def _page_worker_probe(source: str, digest: bytes, masked_prefix: bytes, key) -> dict:
    from multiprocessing.connection import Client

    from digitize.errors import DigitizeError

    out = {}
    remote = _held
    try:  # what the page worker inherited: its batch worker's signer and connection
        out["inherited"] = remote.sign(Path(source), Path(f"{source}.signed"))
    except DigitizeError as e:
        out["inherited"] = type(e).__name__
    try:  # the right key, handed to it anyway: the peer (a worker's child) is still refused
        conn = Client(remote.address, "AF_UNIX", authkey=key) if key else None
        out["with_key"] = "connected" if conn else "no key"
    except Exception as e:  # noqa: BLE001
        out["with_key"] = type(e).__name__
    out["key_in_memory"] = _key_in_memory(digest, masked_prefix)
    out["remote"] = signing._remote is not None
    from digitize import pageworkers

    out["dumpable"] = pageworkers.dumpable()
    return out


def _batch_worker(remote, source: str, digest: bytes, masked_prefix: bytes, key, pipe) -> None:
    global _held
    from digitize import pageworkers

    try:
        signing.use_service(remote)
        _held = remote
        first = remote.sign(Path(source), Path(f"{source}.signed"))  # connected before its page workers fork
        os.unlink(f"{source}.signed")
        probe = pageworkers.run(_page_worker_probe, [(source + "2", digest, masked_prefix, key)], 1, 120.0)[0]
        after = remote.sign(Path(source), Path(f"{source}.signed"))  # its own connection still works
        pipe.send({"first": first, "after": after, "worker_dumpable": pageworkers.dumpable(), **probe})
    except BaseException as e:  # noqa: BLE001
        pipe.send({"error": repr(e)})
    finally:
        os._exit(0)


def _from_a_page_worker(service, tmp_path: Path, key) -> dict:
    import hashlib
    import multiprocessing

    service.start()
    source = tmp_path / "kept" / "doc.pdf"
    source.write_bytes(b"%PDF-1.7\n")
    (tmp_path / "kept" / "doc.pdf2").write_bytes(b"%PDF-1.7\n")
    digest = hashlib.sha256(service.authkey).digest()
    masked = bytes(b ^ 0xA5 for b in service.authkey[:12])
    context = multiprocessing.get_context("fork")
    mine, theirs = context.Pipe()
    worker = context.Process(target=_batch_worker, args=(service.remote(), str(source), digest, masked, key, theirs))
    service.members = lambda: {worker.pid}  # the batch's one worker (as _new_pool's pool table)
    worker.start()
    assert mine.poll(180), "the batch worker did not answer"
    got = mine.recv()
    worker.join(10)
    assert "error" not in got, got
    return got


def test_a_page_worker_cannot_reach_the_signer_with_what_it_inherited(stub_service, tmp_path):
    got = _from_a_page_worker(stub_service, tmp_path, None)
    assert got["first"] == RECORD and got["after"] == RECORD  # the batch worker itself signs
    assert got["inherited"] == "SignerUnavailableError", got  # neither its connection nor its key
    assert got["key_in_memory"] is False and got["remote"] is False
    assert stub_service.stub.signed == [tmp_path / "kept" / "doc.pdf"] * 2


def test_a_page_worker_is_refused_even_with_the_key(stub_service, tmp_path):
    got = _from_a_page_worker(stub_service, tmp_path, stub_service.authkey)
    assert got["with_key"] in ("EOFError", "ConnectionResetError", "AuthenticationError"), got


def test_a_client_stopping_partway_through_its_answer_holds_no_thread(stub_service, tmp_path):
    """The challenge's reads waited for a message's first byte only: a peer that sent the length of its
    answer and then nothing held its connection's thread in os.read for ever."""
    earlier = set(threading.enumerate())  # another test's service's connection threads are not this one's
    stub_service.start()
    stalled = socket.socket(socket.AF_UNIX)
    stalled.connect(stub_service.address)
    try:
        stalled.settimeout(10)
        assert stalled.recv(64)  # the service's challenge
        stalled.sendall((100).to_bytes(4, "big") + b"#" * 10)  # 10 of the 100 bytes it announces
        threads = lambda: [t for t in threading.enumerate()  # noqa: E731
                           if t.name == "digitize-signer-conn" and t not in earlier]
        assert threads(), "the connection's thread should be reading the answer"
        deadline = time.monotonic() + 10 * stub_service.timeout
        while threads() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not threads(), "a client stalled partway through its answer still holds a thread"
        assert stalled.recv(64) == b""  # the service closed it
        source = tmp_path / "kept" / "doc.pdf"
        source.write_bytes(b"%PDF-1.7\n")
        assert stub_service.remote().sign(source, Path(f"{source}.signed")) == RECORD
    finally:
        stalled.close()


def test_the_batch_its_workers_and_page_workers_are_not_dumpable(stub_service, tmp_path):
    """A page worker (or a tool a worker runs) has its parent's uid: a dumpable parent lets it read the
    authkey from /proc/PPID/mem or copy the parent's authenticated signer connection (pidfd_getfd)."""
    from digitize import pageworkers

    assert pageworkers.dumpable() is False  # the batch process, once its SigningService exists
    got = _from_a_page_worker(stub_service, tmp_path, None)
    assert got["worker_dumpable"] is False and got["dumpable"] is False, got


def test_a_batch_worker_is_not_dumpable_after_its_init():
    import ctypes

    from pipelines import batch, logs

    mine, theirs = socket.socketpair()
    pid = os.fork()
    if pid == 0:
        try:
            ctypes.CDLL(None).prctl(4, 1, 0, 0, 0)  # dumpable again: the test process may not be
            batch._init_worker(Settings(), logs.snapshot(), os.getppid())
            theirs.sendall(b"%d" % ctypes.CDLL(None).prctl(3, 0, 0, 0, 0))
        except BaseException as e:  # noqa: BLE001
            theirs.sendall(str(e).encode()[:200])
        finally:
            os._exit(0)
    theirs.close()
    mine.settimeout(60)
    answer = mine.recv(256)
    os.waitpid(pid, 0)
    assert answer == b"0"


ATTACK = r"""
import ctypes, os, sys, tempfile
from pathlib import Path
from digitize import signing
from digitize.config import Settings
libc = ctypes.CDLL(None, use_errno=True)
service = signing.SigningService(Settings())  # the batch process: key and listening socket
if sys.argv[1] == "worker":  # a batch worker, connected to its signer
    signing.use_service(service.remote())
fd = service._listener._listener._socket.fileno()
key = service.authkey
pid = os.fork()
if pid == 0:  # the page worker / tool, which makes itself dumpable again for good measure
    libc.prctl(4, 1, 0, 0, 0)
    try:
        with open(f"/proc/{os.getppid()}/mem", "rb", buffering=0) as mem:
            mem.seek(id(key) + sys.getsizeof(b"") - 1)
            print("mem", mem.read(32) == key)
    except OSError as e:
        print("mem refused", e.errno)
    got = libc.syscall(438, os.pidfd_open(os.getppid()), fd, 0)
    print("getfd", "refused" if got < 0 else "copied")
    sys.stdout.flush()
    os._exit(0)
os.waitpid(pid, 0)
service.close()
"""


@pytest.mark.parametrize("who", ["batch", "worker"])
def test_a_child_of_another_uid_s_batch_cannot_read_or_copy_its_signer(who):
    """The real attack, as an unprivileged uid (root may ptrace anything, so CI as root needs setpriv)."""
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 and setpriv is None:
        pytest.skip("needs root to drop to another uid with setpriv, or to run as a plain user")
    folder = tempfile.mkdtemp()
    try:
        command = [sys.executable, "-c", ATTACK, who]
        env = {**os.environ, "PYTHONPATH": str(Path(signing.__file__).parent.parent), "TMPDIR": folder,
               "XDG_RUNTIME_DIR": folder, "HOME": folder}
        if os.geteuid() == 0:
            if setpriv is None:
                pytest.skip("running as root without setpriv: root may read any process")
            os.chown(folder, 65534, 65534)
            command = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", *command]
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        if "mem refused" not in done.stdout and "mem True" not in done.stdout:
            pytest.skip(f"this kernel does not let even a dumpable process be read: {done.stdout}")
        assert "mem refused" in done.stdout and "getfd refused" in done.stdout, done.stdout
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_a_service_told_no_workers_answers_no_other_process(stub_service, tmp_path):
    """``members`` unset admitted every child of the batch process (fail open); it now admits none."""
    import multiprocessing

    stub_service.start()
    source = tmp_path / "kept" / "doc.pdf"
    source.write_bytes(b"%PDF-1.7\n")
    context = multiprocessing.get_context("fork")
    mine, theirs = context.Pipe()

    def child(remote, pipe):
        try:
            pipe.send(remote.sign(source, Path(f"{source}.signed")))
        except BaseException as e:  # noqa: BLE001
            pipe.send(type(e).__name__)
        finally:
            os._exit(0)

    worker = context.Process(target=child, args=(stub_service.remote(), theirs))
    worker.start()
    assert mine.poll(60)
    got = mine.recv()
    worker.join(10)
    assert got == "SignerUnavailableError" and stub_service.stub.signed == [], got


def test_the_signers_folder_skips_a_runtime_folder_it_cannot_use(tmp_path, monkeypatch):
    """su/sudo -E keep the caller's XDG_RUNTIME_DIR: one that is not ours, or that we cannot write in,
    gives way to the temp folder instead of stopping every signed batch (review rev16ipc L4)."""
    temp = Path(tempfile.mkdtemp(prefix="sf-"))  # short: the socket's path must fit AF_UNIX's 107 bytes
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    made = []
    try:
        if os.getuid() == 0:
            os.chown(runtime, 65534, 65534)  # another user's runtime folder
        else:
            runtime.chmod(0o500)  # one of ours we cannot write in: what a read-only file system does
        made.append(signing._socket_folder())
        assert made[-1].parent == temp and oct(made[-1].stat().st_mode & 0o777) == "0o700"
        if os.getuid() == 0:
            os.chown(runtime, 0, 0)
        real_mkdtemp = tempfile.mkdtemp

        def read_only(prefix=None, dir=None):  # noqa: A002 - tempfile's own name
            if dir == str(runtime):
                raise OSError(30, "Read-only file system")
            return real_mkdtemp(prefix=prefix, dir=dir)

        monkeypatch.setattr(tempfile, "mkdtemp", read_only)
        made.append(signing._socket_folder())
        assert made[-1].parent == temp
    finally:
        runtime.chmod(0o700)
        shutil.rmtree(temp, ignore_errors=True)


class _Planted:
    """What a batch worker taken over by a decoder exploit could send: a pickle that runs code when loaded."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


def test_a_worker_s_pickle_is_never_loaded_by_the_signer(stub_service, tmp_path):
    """Requests and answers are JSON plus the band's raw bytes: a pickle an authenticated worker sends
    runs nothing in the process that holds the key, and its connection is dropped (review rev16ipc L3)."""
    from multiprocessing.connection import Client

    stub_service.start()
    marker = tmp_path / "pwned"
    conn = Client(stub_service.address, "AF_UNIX", authkey=stub_service.authkey)
    try:
        conn.send((_Planted(marker), str(marker) + ".signed", None))
        assert conn.poll(5)
        with pytest.raises((EOFError, ConnectionResetError)):
            conn.recv_bytes()
    finally:
        conn.close()
    assert not marker.exists()
    source = tmp_path / "kept" / "doc.pdf"
    source.write_bytes(b"%PDF-1.7\n")
    band = np.arange(600, dtype=np.uint8).reshape(20, 30)
    stub_service.stub.sign = lambda s, t, b=None: (Path(t).write_bytes(b"%signed"), seen.append(b), RECORD)[-1]
    seen = []
    assert stub_service.remote().sign(source, Path(f"{source}.signed"), band) == RECORD  # the band arrives whole
    assert seen[0].shape == (20, 30) and (seen[0] == band).all()
    other = tmp_path / "kept" / "other.pdf"
    other.write_bytes(b"%PDF-1.7\n")
    stub_service.stub.sign = lambda s, t, b=None: (_ for _ in ()).throw(SignerUnavailableError("token gone"))
    with pytest.raises(SignerUnavailableError, match="token gone"):  # an error comes back as its class and line
        stub_service.remote().sign(other, Path(f"{other}.signed"))


class _StoppedSigner:
    """A batch signer whose key went bad: what _check_signer reads."""

    timeout = 0.5
    error = SigningError("wrong PIN for the signing token")

    def overdue(self):
        return self.error


def test_a_stopped_batch_s_pool_thread_has_ended_before_its_error_is_raised():
    """The pool's manager thread closes its wake-up pipe as it ends; left running when the batch stopped,
    it raced the interpreter's exit-time wake-up, which printed "Exception ignored ... Bad file descriptor"
    under the batch's one line (CI, stop 23)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from pipelines import batch

    runner = batch._Runner.__new__(batch._Runner)
    runner.signer = _StoppedSigner()
    runner.pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork"))
    runner.inflight = {runner.pool.submit(time.sleep, 60): None}
    manager = runner.pool._executor_manager_thread
    with pytest.raises(SigningError, match="wrong PIN"):
        runner._check_signer()
    assert not manager.is_alive()
