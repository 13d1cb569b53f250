"""A batch's one signer (signing.SigningService): the workers convert while it opens the key, send each
PDF/A to it and get it back signed; a key that cannot be used stops the batch with one line and
nothing stored. Real parts: a PKCS#12 and a SoftHSM2 token from the test CA, veraPDF, pdfsig."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from digitize import signing
from digitize.config import Settings
from digitize.errors import ExitCode, SigningError

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


def test_the_service_signs_what_a_worker_sends_it(tmp_path, pki, pdfa):
    service = signing.SigningService(p12_settings(pki, P12_PIN))
    try:
        service.start()
        remote = service.remote()
        assert remote.visible
        record = remote.sign(pdfa, tmp_path / "signed.pdf")
        assert record.signer == "Nguyễn Thị Lan" and record.level == "B-B"
        assert service.error is None
    finally:
        service.close()
        signing.close_signers()
    assert_pdfsig_valid(tmp_path / "signed.pdf")
    assert_pdfa(tmp_path / "signed.pdf")


def test_a_worker_waiting_for_its_signature_lends_its_cpu_slot(tmp_path, pki, pdfa):
    """While the signer works (or a slow token), the worker's slot is free for another worker to convert."""
    slots = threading.Semaphore(1)  # the batch's multiprocessing semaphore, in one process
    service = signing.SigningService(p12_settings(pki, P12_PIN))
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
            remote.sign(pdfa, tmp_path / "signed.pdf")
            assert not slots.acquire(blocking=False), "the slot is taken back once signed"
    finally:
        service.close()
        signing.close_signers()
    assert free_while_signing == [True]


def test_a_wrong_pin_in_the_service_signs_nothing(tmp_path, pki, pdfa):
    service = signing.SigningService(p12_settings(pki, "000000"))
    try:
        service.start()
        with pytest.raises(SigningError, match="PIN"):
            service.remote().sign(pdfa, tmp_path / "never.pdf")
        assert isinstance(service.error, SigningError)
    finally:
        service.close()
        signing._refused.clear()
    assert not (tmp_path / "never.pdf").exists()


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


# `digitize batch`, each worker noting whether it has pyHanko loaded after its file
PROBED_BATCH = """import os, sys
from pipelines import batch
_run = batch._run_one
def _run_one(path, hint, root):
    result = _run(path, hint, root)
    with open(os.environ["PYHANKO_PROBE"], "a") as probe:
        probe.write(f"{os.getpid()} {'pyhanko' in sys.modules}\\n")
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
    summary = json.loads((tmp_path / "r.json").read_text())["summary"]
    assert summary["files"] == 3 and summary["failed"] == 0, summary
    stored = stored_pdfs(tmp_path / "data")
    assert len(stored) == 3 and all(f.exists() for f in files)
    for pdf in stored:
        assert_pdfsig_valid(pdf)


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
