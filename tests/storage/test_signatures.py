"""Signed PDF/As in the archive: the index records each signature (migration 0004), `show` prints it and
`verify` re-checks it, on both backends. The signature is a real PAdES one (pyHanko, a PKCS#12 made here)."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from pathlib import Path

import pikepdf
import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from digitize.config import SignSettings
from digitize.fsutil import sha256_file
from digitize.signing import Signer
from storage.archive import Archive
from storage.cli import show_cmd, verify_cmd

CASE = "000.00.31.H56-241015-0027"  # the case make_document files under (see conftest)


@pytest.fixture(scope="module")
def agency_p12(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed agency certificate (its own trust anchor) in a PKCS#12, and its PEM."""
    folder = tmp_path_factory.mktemp("p12")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "UBND phường Bến Nghé")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=365))
            .add_extension(x509.KeyUsage(True, True, False, False, False, False, False, False, False), critical=True)
            .sign(key, hashes.SHA256()))
    p12 = folder / "agency.p12"
    p12.write_bytes(pkcs12.serialize_key_and_certificates(b"agency", key, cert, None,
                                                          serialization.BestAvailableEncryption(b"pin")))
    pem = folder / "agency.pem"
    pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return p12, pem


def signed_document(make_document, tmp_path: Path, p12: Path):
    doc = make_document()
    plain = tmp_path / "plain.pdf"
    with pikepdf.new() as pdf:
        pdf.add_blank_page(page_size=(595, 842))
        pdf.save(plain)
    signer = Signer(SignSettings(pkcs12=str(p12), pin="pin", visible=False), "pin")
    record = signer.sign(plain, doc.pdfa)
    report = replace(doc.report, output_sha256=sha256_file(doc.pdfa), output_bytes=doc.pdfa.stat().st_size,
                     signature=record.as_dict())
    return replace(doc, report=report), record


def test_signatures_are_recorded_shown_and_verified(archive: Archive, settings, make_document, tmp_path, agency_p12):
    p12, pem = agency_p12
    doc, record = signed_document(make_document, tmp_path, p12)
    stored = archive.store(doc.original, doc.pdfa, doc.report, doc.meta)
    recorded = archive.signatures([stored.doc_id])[stored.doc_id]
    assert [(s.signer, s.cert_sha256, s.signing_time, s.level) for s in recorded] == \
        [(record.signer, record.cert_sha256, record.signing_time, "B-B")]
    assert "signed by UBND phường Bến Nghé" in archive.index.events()[1].detail
    settings.sign.trust = str(pem)
    shown = CliRunner().invoke(show_cmd, [CASE], obj=settings)
    assert shown.exit_code == 0 and f"signed (B-B) by UBND phường Bến Nghé at {record.signing_time}" in shown.output
    report = archive.verify(CASE, trust=str(pem))
    assert report.ok, report.problems


def test_verify_flags_a_broken_signature_of_a_stored_pdfa(tmp_path, make_document, agency_p12):
    from digitize.config import Settings

    p12, pem = agency_p12
    settings = Settings(data_dir=str(tmp_path / "data"))
    doc, _ = signed_document(make_document, tmp_path, p12)
    with Archive.open(settings) as archive:
        stored = archive.store(doc.original, doc.pdfa, doc.report, doc.meta)
    target = Path(tmp_path / "data" / "objects" / stored.pdfa_key)
    data = bytearray(target.read_bytes())
    data[200] ^= 0x01  # inside the signed bytes (the header and first objects)
    target.chmod(0o644)
    target.write_bytes(bytes(data))
    settings.sign.trust = str(pem)
    result = CliRunner().invoke(verify_cmd, ["--case", CASE], obj=settings)
    assert result.exit_code != 0
    assert "corrupt:" in result.output and "signature:" in result.output, result.output


def test_an_unsigned_document_shows_as_unsigned(archive: Archive, settings, make_document):
    doc = make_document()
    archive.store(doc.original, doc.pdfa, doc.report, doc.meta)
    shown = CliRunner().invoke(show_cmd, [CASE], obj=settings)
    assert "unsigned" in shown.output
    assert archive.verify(CASE).ok
