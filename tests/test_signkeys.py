"""signkeys: the prepared signer classes build the same CMS as pyHanko's own (RSA PKCS#1 v1.5 signatures
are deterministic, and PAdES puts no signing time in the signed attributes, so the bytes can be compared)."""

from __future__ import annotations

import asyncio
import hashlib

import pytest

from digitize import signkeys
from digitize.config import SignSettings

try:
    from tests.pki import self_signed
except ModuleNotFoundError:
    from pki import self_signed

PIN = "mật khẩu"


@pytest.fixture(scope="module")
def rsa_p12(tmp_path_factory):
    return self_signed(tmp_path_factory.mktemp("key"), "Nguyễn Thị Lan", PIN, rsa_bits=2048)[0]


def _cms(signer, digest: bytes) -> bytes:
    return asyncio.run(signer.async_sign(digest, "sha256", use_pades=True)).dump()


def test_prepared_signer_makes_pyhankos_cms_byte_for_byte(rsa_p12):
    from pyhanko.sign.signers import SimpleSigner

    prepared, _ = signkeys.open_pkcs12(SignSettings(pkcs12=str(rsa_p12)), PIN)
    plain = SimpleSigner(signing_cert=prepared.signing_cert, signing_key=prepared.signing_key,
                         cert_registry=prepared.cert_registry)
    assert type(prepared).__name__ == "KeptKeySigner" and isinstance(prepared, SimpleSigner)
    for n in range(3):  # the attribute made once is used again, and stays the same
        digest = hashlib.sha256(f"document {n}".encode()).digest()
        assert _cms(prepared, digest) == _cms(plain, digest)


def test_pyhankos_certificate_attribute_provider_is_not_run_per_signature(rsa_p12, monkeypatch):
    """pyHanko's own provider re-encodes the attribute at every signature: ours is made once per signer."""
    from pyhanko.sign import attributes

    prepared, _ = signkeys.open_pkcs12(SignSettings(pkcs12=str(rsa_p12)), PIN)
    calls = []
    real = attributes.as_signing_certificate_v2
    monkeypatch.setattr(attributes, "as_signing_certificate_v2", lambda *a, **k: calls.append(1) or real(*a, **k))
    for n in range(3):
        _cms(prepared, hashlib.sha256(bytes([n])).digest())
    assert calls == []


def test_prepared_classes_are_made_once_per_base():
    from pyhanko.sign.signers import SimpleSigner

    assert signkeys.prepared_signer_class(SimpleSigner) is signkeys.prepared_signer_class(SimpleSigner)
    assert issubclass(signkeys.prepared_signer_class(SimpleSigner), SimpleSigner)


_opened: list[int] = []  # pids that opened the PKCS#12 (module level: a forked worker sees it)


def _worker_signer(settings, parent_id: int) -> tuple[bool, list[int], bytes]:
    from digitize import signing

    signer = signing.signer_for(settings)
    return id(signer) == parent_id, list(_opened), _cms(signer._signer, hashlib.sha256(b"in a worker").digest())


def test_a_pkcs12_key_is_opened_once_by_preflight_and_used_by_forked_workers(rsa_p12, monkeypatch, tmp_path):
    """Each batch worker decrypted the PKCS#12 again (~0.1 s of CPU): now the one preflight opened is
    inherited by the workers forked after it (as pipelines/batch.py forks them), which open nothing."""
    import multiprocessing
    import os
    from concurrent.futures import ProcessPoolExecutor

    from digitize import signing
    from digitize.config import Settings

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    settings = Settings()
    settings.sign.pkcs12, settings.sign.pin, settings.sign.visible = str(rsa_p12), PIN, False
    real = signkeys.open_pkcs12
    monkeypatch.setattr(signkeys, "open_pkcs12", lambda *a: _opened.append(os.getpid()) or real(*a))
    _opened.clear()
    try:
        signing.preflight(settings)
        parent = signing.signer_for(settings)
        assert _opened == [os.getpid()] and parent is not None
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork")) as pool:
            same, opened, cms = pool.submit(_worker_signer, settings, id(parent)).result(timeout=120)
        assert same and opened == [os.getpid()], "the worker opened the key again"
        assert cms == _cms(parent._signer, hashlib.sha256(b"in a worker").digest()), "the inherited key signs"
    finally:
        signing.close_signers()
