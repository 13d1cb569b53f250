"""Signed PDF/As in the archive: the index records each signature (migration 0004), `show` prints it and
`verify` re-checks it, on both backends. The signature is a real PAdES one (pyHanko, a PKCS#12 made here)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pikepdf
import pytest
from click.testing import CliRunner

from digitize.config import SignSettings
from digitize.fsutil import sha256_file
from digitize.signing import Signer
from storage.archive import Archive
from storage.cli import show_cmd, verify_cmd

try:
    from tests.pki import self_signed
except ModuleNotFoundError:
    from pki import self_signed

CASE = "000.00.31.H56-241015-0027"  # the case make_document files under (see conftest)


@pytest.fixture(scope="module")
def agency_p12(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed agency certificate (its own trust anchor) in a PKCS#12, and its PEM."""
    p12, pem, _ = self_signed(tmp_path_factory.mktemp("p12"), "UBND phường Bến Nghé", "pin")
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
    assert "1 of 1 documents signed" in shown.output
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
    assert "0 of 1 documents signed" in shown.output and "signed (" not in shown.output
    assert archive.verify(CASE).ok
