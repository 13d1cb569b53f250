"""Checking the PAdES signatures of any PDF (pyHanko's validator): what ``verify`` and ``sign-check`` say.

For each signature: is it intact (the signed bytes hash to what was signed), does it cover the whole
file (nothing appended after signing), does the signer's chain reach a configured trust anchor, was
the certificate valid at signing time (the timestamp's time when there is one, else the time the
signer claims), and, when revocation data is embedded (B-LT), was it unrevoked then. All offline:
an audit must give the same answer without the CA's servers.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from . import lazyimports
from .errors import ConfigError

lazyimports.install()  # before any pyHanko import: its unused eager imports deferred

VIETNAM = timezone(timedelta(hours=7))  # times are shown as the mark shows them
INDIC_TEXT = {
    "REVOKED": "the certificate was revoked",
    "EXPIRED": "the certificate had expired at signing time",
    "NOT_YET_VALID": "the certificate was not yet valid at signing time",
    "NO_CERTIFICATE_CHAIN_FOUND": "the chain does not reach a trust anchor",
    "CHAIN_CONSTRAINTS_FAILURE": "the chain breaks a CA constraint",
    "TRY_LATER": "revocation status unknown",
    "REVOCATION_OUT_OF_BOUNDS_NO_POE": "no usable revocation data for the signing time",
    "NO_POE": "no proof the signature existed before the certificate expired",
}


@dataclass
class SignatureCheck:
    field: str
    signer: str = ""
    cert_sha256: str = ""
    signing_time: str | None = None  # claimed by the signer
    timestamp: str | None = None  # the TSA's time, if timestamped (both +07:00)
    level: str = ""  # B-B, B-T, B-LT
    intact: bool = False
    valid: bool = False  # the cryptographic signature checks out
    whole_file: bool = False
    trusted: bool | None = None  # None: no trust anchors configured, chain not judged
    valid_at_signing: bool = False
    revocation: str = "not checked"  # "not revoked (embedded data)", "revoked", ...
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__} | {"ok": self.ok}


@dataclass
class FileCheck:
    path: str
    signatures: list[SignatureCheck] = field(default_factory=list)
    error: str = ""  # the file could not be read as a PDF at all

    @property
    def signed(self) -> bool:
        return bool(self.signatures)

    @property
    def ok(self) -> bool:
        return not self.error and self.signed and all(s.ok for s in self.signatures)

    def summary(self) -> str:
        if self.error:
            return f"BROKEN: {self.error}"
        if not self.signed:
            return "not signed"
        return "; ".join(describe(s) for s in self.signatures)


def describe(s: SignatureCheck) -> str:
    head = f"{'valid' if s.ok else 'BROKEN'} {s.level} signature by {s.signer or '?'}"
    when = f", signed {s.signing_time}" + (f", timestamp {s.timestamp}" if s.timestamp else "")
    return head + when + (f": {'; '.join(s.problems)}" if s.problems else "")


@functools.lru_cache(maxsize=8)
def _roots_cached(spec: str) -> tuple:
    from asn1crypto import pem, x509

    roots = []
    for part in (p for p in spec.split(":") if p.strip()):
        path = Path(part.strip()).expanduser()
        try:
            data = path.read_bytes()
        except OSError as e:
            raise ConfigError(f"sign.trust: cannot read {path}: {e.strerror}") from None
        try:
            blobs = [der for _, _, der in pem.unarmor(data, multiple=True)] if pem.detect(data) else [data]
            roots.extend(x509.Certificate.load(b) for b in blobs)
            for cert in roots:
                cert.native  # noqa: B018 - parse now: a bad file fails here, with its name
        except ValueError as e:
            raise ConfigError(f"sign.trust: {path} is not a PEM/DER certificate file: {e}") from None
    return tuple(roots)


def quiet_libraries() -> None:
    """pyHanko and certvalidator log every failed path search with a traceback, fontTools every table
    it cannot subset; our one-line results say what matters."""
    for name in ("pyhanko", "pyhanko_certvalidator", "fontTools"):
        logging.getLogger(name).setLevel(logging.ERROR)


def load_trust_roots(spec: str) -> list:
    return list(_roots_cached(spec or ""))


def _tst_time(signed_data) -> datetime | None:
    try:
        return signed_data["encap_content_info"]["content"].parsed["gen_time"].native
    except (KeyError, ValueError, AttributeError):
        return None


def _timestamp_token(sig) -> Any:
    from pyhanko.sign.validation.generic_cms import extract_tst_data_iter

    try:
        return next(extract_tst_data_iter(sig.signer_info, signed=False), None)
    except (KeyError, ValueError):
        return None


def signature_timestamp(path: Path, field_name: str) -> str | None:
    """The signature timestamp's time (UTC, ISO 8601) of signature ``field_name`` in ``path``."""
    from pyhanko.pdf_utils.reader import PdfFileReader

    with open(path, "rb") as f:
        for sig in PdfFileReader(f, strict=False).embedded_signatures:
            if sig.field_name == field_name:
                token = _timestamp_token(sig)
                when = _tst_time(token) if token is not None else None
                return _iso(when)
    return None


def _iso(when: datetime | None) -> str | None:
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.astimezone(VIETNAM).isoformat(timespec="seconds")


def _context(sig, roots: list, moment: datetime | None, dss) -> Any:
    from pyhanko_certvalidator import ValidationContext

    kwargs = dict(trust_roots=roots, allow_fetching=False, moment=moment, retroactive_revinfo=True,
                  revocation_mode="hard-fail" if dss is not None else "soft-fail")
    if dss is not None:
        return dss.as_validation_context(kwargs)
    return ValidationContext(**kwargs)


def check_signature(sig, roots: list, dss) -> SignatureCheck:
    """One embedded signature, judged offline at its signing time."""
    from pyhanko.sign.validation.errors import SignatureValidationError
    from pyhanko.sign.validation import validate_pdf_signature
    from pyhanko.sign.validation.status import SignatureCoverageLevel

    from .signing import cert_sha256, common_name

    out = SignatureCheck(field=str(sig.field_name))
    try:
        cert = sig.signer_cert
        out.signer, out.cert_sha256 = common_name(cert), cert_sha256(cert)
        claimed = sig.self_reported_timestamp
        token = _timestamp_token(sig)
        stamped = _tst_time(token) if token is not None else None
    except (ValueError, KeyError, TypeError) as e:
        out.problems.append(f"unreadable signature: {' '.join(str(e).split())}")
        return out
    out.signing_time, out.timestamp = _iso(claimed), _iso(stamped)
    out.level = "B-LT" if (dss is not None and stamped) else ("B-T" if stamped else "B-B")
    moment = stamped or claimed
    try:
        status = validate_pdf_signature(sig, _context(sig, roots, moment, dss),
                                        ts_validation_context=_context(sig, roots, stamped or moment, dss))
    except (SignatureValidationError, ValueError, KeyError, TypeError) as e:
        out.problems.append(f"cannot be validated: {' '.join(str(e).split())}")
        return out
    out.intact, out.valid = status.intact, status.valid
    out.whole_file = status.coverage == SignatureCoverageLevel.ENTIRE_FILE or _only_validation_data_after(status)
    if not out.intact:
        out.problems.append("the signed bytes were changed (integrity check failed)")
    elif not out.valid:
        out.problems.append("the signature value does not match the certificate")
    if not out.whole_file:
        out.problems.append("does not cover the whole file (bytes were added after signing)")
    out.valid_at_signing = _valid_at(cert, moment)
    if not out.valid_at_signing:
        out.problems.append(f"the certificate was not valid at signing time {_iso(moment)}")
    indic = getattr(status.trust_problem_indic, "name", None)
    if roots:
        out.trusted = bool(status.trusted)
        if not out.trusted:
            out.problems.append(INDIC_TEXT.get(indic or "", f"not trusted ({indic or 'unknown reason'})"))
    if stamped is not None:
        ts = status.timestamp_validity
        if ts is None or not (ts.intact and ts.valid):
            out.problems.append("the timestamp is broken")
        elif roots and not ts.trusted:
            out.problems.append("the timestamp authority does not chain to a trust anchor")
    if dss is not None:
        revoked = indic == "REVOKED" or (status.revocation_details is not None)
        out.revocation = "REVOKED" if revoked else (
            "not revoked at signing time (embedded OCSP/CRL)" if roots and out.trusted else "embedded, not judged")
        if revoked and "the certificate was revoked" not in out.problems:
            out.problems.append("the certificate was revoked")
    return out


def _only_validation_data_after(status) -> bool:
    """B-LT: the revocation data (DSS) is appended after the signed revision by design; the signature
    still covers everything else when nothing but validation data and timestamps came after it."""
    from pyhanko.sign.diff_analysis import ModificationLevel
    from pyhanko.sign.validation.status import SignatureCoverageLevel

    level = status.modification_level
    return (status.coverage == SignatureCoverageLevel.ENTIRE_REVISION and level is not None
            and level <= ModificationLevel.LTA_UPDATES)


def _valid_at(cert, moment: datetime | None) -> bool:
    if moment is None:
        return False
    validity = cert["tbs_certificate"]["validity"]
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return validity["not_before"].native <= moment <= validity["not_after"].native


def check_file(path: Path | str, trust: str = "") -> FileCheck:
    """Every signature of the PDF at ``path``; a file pyHanko cannot parse is reported, not raised."""
    from pyhanko.pdf_utils.misc import PdfError
    from pyhanko.pdf_utils.reader import PdfFileReader
    from pyhanko.sign.validation.dss import DocumentSecurityStore
    from pyhanko.sign.validation.errors import ValidationInfoReadingError

    quiet_libraries()
    roots = load_trust_roots(trust)
    result = FileCheck(str(path))
    try:
        with open(path, "rb") as f:
            reader = PdfFileReader(f, strict=False)
            signatures = list(reader.embedded_signatures)
            try:
                dss = DocumentSecurityStore.read_dss(reader)
            except (ValidationInfoReadingError, KeyError, ValueError, PdfError):
                dss = None
            result.signatures = [check_signature(s, roots, dss) for s in signatures]
    except OSError as e:
        result.error = f"cannot read: {e.strerror or e}"
    except (PdfError, ValueError, KeyError, TypeError, IndexError) as e:
        result.error = f"not a readable PDF: {' '.join(str(e).split())[:200]}"
    return result



def explain(result: FileCheck) -> list[str]:
    """``sign-check``'s plain account of a file's signatures."""
    if result.error:
        return [f"{result.path}: BROKEN: {result.error}"]
    if not result.signed:
        return [f"{result.path}: not signed"]
    lines = [f"{result.path}: {len(result.signatures)} signature(s), {'all valid' if result.ok else 'BROKEN'}"]
    for s in result.signatures:
        trust = {None: "not judged (no [sign] trust anchors configured)", True: "reaches a trust anchor",
                 False: "does NOT reach a trust anchor"}[s.trusted]
        lines += [
            f"  {s.field}: {'valid' if s.ok else 'BROKEN'} (PAdES {s.level})",
            f"    signer:      {s.signer} (certificate SHA-256 {s.cert_sha256})",
            f"    signed at:   {s.signing_time or '?'} (as the signer's clock says)",
            f"    timestamp:   {s.timestamp + ' (timestamp authority)' if s.timestamp else 'none'}",
            f"    integrity:   {'intact' if s.intact and s.valid else 'BROKEN'}",
            f"    coverage:    {'whole file' if s.whole_file else 'NOT the whole file'}",
            f"    chain:       {trust}",
            f"    certificate: {'valid' if s.valid_at_signing else 'NOT valid'} at signing time",
            f"    revocation:  {s.revocation}",
        ]
        lines += [f"    problem:     {p}" for p in s.problems]
    return lines
