"""PAdES signing of the PDF/A copies with pyHanko: a PKCS#12 file or a PKCS#11 token (python-pkcs11).

One :class:`Signer` per process holds the key open (for a token: one session, one login) and signs
file after file; a token that goes away mid-run raises :class:`SignerUnavailableError` (the file is
retried later) and the next file logs in again. Levels: B-B; B-T with ``tsa_url`` (RFC 3161
timestamp); B-LT with ``ltv`` (chain and OCSP/CRL answers embedded). The PIN comes from
``DIGITIZE_SIGN_PIN`` (``sign.pin``), ``sign.pin_file`` or ``$CREDENTIALS_DIRECTORY/digitize-sign-pin``
(systemd), or a prompt on a terminal; it is never put in argv, a log line or a message, and is
taken out of the environment so that no child process (veraPDF, Tesseract, page workers) sees it.

pyHanko and python-pkcs11 are imported only when signing is configured.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import hashlib
import logging
import os
import sys
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

from . import signmark
from .config import Settings, SignSettings
from .errors import ConfigError, DigitizeError, FileAccessError, SignerUnavailableError, SigningError

log = logging.getLogger("digitize")

VIETNAM = timezone(timedelta(hours=7))  # no daylight saving: a fixed offset is exact
PIN_ENV = "DIGITIZE_SIGN_PIN"
CREDENTIAL_NAME = "digitize-sign-pin"
FIELD_NAME = "DigitizeSignature"
SIGNATURE_BYTES = 16384  # reserved for the CMS: enough for a chain, a timestamp token and no more


@dataclass(frozen=True)
class SignatureRecord:
    """What the index keeps about a signature we made."""

    field: str
    signer: str
    cert_sha256: str
    signing_time: str  # ISO 8601, +07:00
    timestamp: str | None  # the TSA's time (ISO 8601, +07:00) for B-T and B-LT
    level: str  # "B-B", "B-T", "B-LT"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def scrub_pin_from_environment() -> None:
    """The PIN was read into the settings: no child process may inherit it."""
    os.environ.pop(PIN_ENV, None)


def check_settings(cfg: SignSettings) -> None:
    if cfg.pkcs12 and cfg.pkcs11_module:
        raise ConfigError("sign: set pkcs12 or pkcs11_module, not both")
    if cfg.pkcs11_module and not (cfg.key_label or cfg.cert_label):
        raise ConfigError("sign: a token needs key_label (or cert_label)")
    if cfg.kind not in ("personal", "agency"):
        raise ConfigError(f"sign.kind must be 'personal' or 'agency', not {cfg.kind!r}")
    if cfg.ltv and not cfg.tsa_url:
        raise ConfigError("sign.ltv (PAdES B-LT) needs sign.tsa_url: revocation data is tied to a timestamp")
    if cfg.kind == "agency" and cfg.visible and not cfg.seal:
        raise ConfigError("sign.kind = 'agency' needs sign.seal (the seal PNG shown in the mark)")


def read_pin(cfg: SignSettings, interactive: bool = False) -> str | None:
    """The PIN from the settings (env), a file (systemd credential), or a terminal prompt; None if none."""
    if cfg.pin:
        return cfg.pin
    if cfg.pin_file:
        return _read_pin_file(Path(cfg.pin_file))
    credentials = os.environ.get("CREDENTIALS_DIRECTORY")
    if credentials and (Path(credentials) / CREDENTIAL_NAME).is_file():
        return _read_pin_file(Path(credentials) / CREDENTIAL_NAME)
    if interactive and sys.stdin is not None and sys.stdin.isatty():
        import click

        what = f"token {cfg.token_label}" if cfg.pkcs11_module else Path(cfg.pkcs12).name
        return click.prompt(f"PIN for {what}", hide_input=True, err=True)
    return None


def _read_pin_file(path: Path) -> str:
    """Like ssh with a private key: a PIN file others may read is refused, not used."""
    try:
        if path.stat().st_mode & 0o007:
            raise ConfigError(f"PIN file {path} is readable by other users: chmod o-rwx it")
        return path.read_text(encoding="utf-8").strip("\r\n")
    except OSError as e:
        raise ConfigError(f"cannot read PIN file {path}: {e.strerror}") from None


def _x509_to_asn1(cert) -> Any:
    from asn1crypto import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    return x509.Certificate.load(cert.public_bytes(Encoding.DER))


def common_name(cert) -> str:
    """The subject's CN (asn1crypto certificate), else its whole subject."""
    try:
        return cert.subject.native.get("common_name") or cert.subject.human_friendly
    except (AttributeError, ValueError):
        return "?"


def cert_sha256(cert) -> str:
    return hashlib.sha256(cert.dump()).hexdigest()


def check_certificate(cert, when: datetime) -> None:
    """Refuse a certificate that is not valid now, or not meant for signatures."""
    name = common_name(cert)
    not_before, not_after = cert["tbs_certificate"]["validity"]["not_before"].native, \
        cert["tbs_certificate"]["validity"]["not_after"].native
    if when > not_after:
        raise SigningError(f"the signing certificate of {name} expired on {not_after:%Y-%m-%d}: renew it")
    if when < not_before:
        raise SigningError(f"the signing certificate of {name} is not valid before {not_before:%Y-%m-%d}")
    usage = cert.key_usage_value
    if usage is not None and not ({"digital_signature", "non_repudiation"} & set(usage.native)):
        raise SigningError(f"the certificate of {name} is not for signing (key usage {', '.join(usage.native)})")


def _open_pkcs12(cfg: SignSettings, pin: str | None):
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, pkcs12
    from asn1crypto import keys
    from pyhanko_certvalidator.registry import SimpleCertificateStore

    try:
        data = Path(cfg.pkcs12).read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read sign.pkcs12 {cfg.pkcs12}: {e.strerror}") from None
    try:
        key, cert, extra = pkcs12.load_key_and_certificates(data, pin.encode("utf-8") if pin else None)
    except ValueError:
        hint = "wrong PIN (password)" if pin else "no PIN given (DIGITIZE_SIGN_PIN or sign.pin_file)"
        raise SigningError(f"cannot open {Path(cfg.pkcs12).name}: {hint}, or not a PKCS#12 file") from None
    if key is None or cert is None:
        raise SigningError(f"{Path(cfg.pkcs12).name} holds no private key with its certificate")
    key_info = keys.PrivateKeyInfo.load(key.private_bytes(Encoding.DER, PrivateFormat.PKCS8, NoEncryption()))
    chain = [_x509_to_asn1(c) for c in extra or []]
    signing_cert = _x509_to_asn1(cert)
    registry = SimpleCertificateStore.from_certs([signing_cert, *chain])
    signer = _kept_key_signer_class()(signing_cert=signing_cert, signing_key=key_info, cert_registry=registry)
    signer.parsed_key = key
    return signer, lambda reset=False: None


@functools.lru_cache(maxsize=1)
def _kept_key_signer_class():
    """pyHanko's SimpleSigner parses its private key again for every signature (0.1 s for RSA-2048,
    more than the signature itself): this one keeps the parsed key for RSA PKCS#1 v1.5 and ECDSA."""
    from cryptography.hazmat.primitives.asymmetric.ec import ECDSA, EllipticCurvePrivateKey
    from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
    from pyhanko.sign.signers import SimpleSigner
    from pyhanko_certvalidator.util import get_pyca_cryptography_hash

    class KeptKeySigner(SimpleSigner):
        parsed_key = None

        def sign_raw(self, data: bytes, digest_algorithm: str) -> bytes:
            try:
                mechanism = self.get_signature_mechanism_for_digest(digest_algorithm).signature_algo
            except ValueError:
                return super().sign_raw(data, digest_algorithm)
            hash_algo = get_pyca_cryptography_hash(digest_algorithm)
            key = self.parsed_key
            if isinstance(key, RSAPrivateKey) and mechanism == "rsassa_pkcs1v15":
                return key.sign(data, PKCS1v15(), hash_algo)
            if isinstance(key, EllipticCurvePrivateKey) and mechanism == "ecdsa":
                return key.sign(data, ECDSA(hash_algo))
            return super().sign_raw(data, digest_algorithm)

    return KeptKeySigner


def _token_error(e: Exception) -> SigningError:
    """A PKCS#11 failure in one line: PIN problems are the user's, device problems mean 'retry later'."""
    import pkcs11

    name = type(e).__name__
    if isinstance(e, pkcs11.PinIncorrect):
        return SigningError("wrong PIN for the signing token (nothing was signed or stored)")
    if isinstance(e, (pkcs11.PinLocked, pkcs11.PinExpired)):
        return SigningError(f"the signing token's PIN is {name[3:].lower()}: unlock it with the CA's tool")
    gone = (pkcs11.TokenNotPresent, pkcs11.DeviceRemoved, pkcs11.DeviceError, pkcs11.SessionClosed,
            pkcs11.ObjectHandleInvalid, pkcs11.KeyHandleInvalid,
            pkcs11.SessionHandleInvalid, pkcs11.TokenNotRecognised, pkcs11.DeviceMemory, pkcs11.GeneralError,
            pkcs11.SlotIDInvalid, pkcs11.UserNotLoggedIn, pkcs11.NoSuchToken)
    if isinstance(e, gone):
        return SignerUnavailableError(f"signing token unavailable ({name}): the file waits until it is back")
    return SigningError(f"signing token error: {name} {' '.join(str(e).split())}".strip())


def _open_pkcs11(cfg: SignSettings, pin: str | None):
    import pkcs11
    from pyhanko.config.pkcs11 import TokenCriteria
    from pyhanko.sign import pkcs11 as p11

    if not Path(cfg.pkcs11_module).is_file():
        raise ConfigError(f"sign.pkcs11_module {cfg.pkcs11_module} does not exist")
    if pin is None:
        raise SigningError("no PIN for the signing token: set DIGITIZE_SIGN_PIN or sign.pin_file, "
                           "or run interactively")
    criteria = TokenCriteria(label=cfg.token_label) if cfg.token_label else None
    try:
        session = p11.open_pkcs11_session(cfg.pkcs11_module, token_criteria=criteria, user_pin=pin)
    except pkcs11.PKCS11Error as e:
        if "No token" in str(e) or isinstance(e, pkcs11.NoSuchToken):
            raise SignerUnavailableError(f"signing token {cfg.token_label or ''} not found: "
                                         "plug it in (the file waits)".replace("  ", " ")) from None
        raise _token_error(e) from None
    try:
        signer = p11.PKCS11Signer(session, cert_label=cfg.cert_label or cfg.key_label,
                                  key_label=cfg.key_label or cfg.cert_label)
        signer.signing_cert  # noqa: B018 - fetch it now: a wrong label fails here, not on the first file
    except pkcs11.PKCS11Error as e:
        session.close()
        raise _token_error(e) from None
    except Exception as e:  # noqa: BLE001 - pyHanko's "could not find certificate/key" errors
        session.close()
        raise SigningError(f"on token {cfg.token_label}: {' '.join(str(e).split())}") from None

    def close(reset: bool = False) -> None:
        with contextlib.suppress(Exception):
            session.close()
        if reset:  # the token went away: the library must look for it afresh (C_Finalize, then C_Initialize)
            with contextlib.suppress(Exception):
                pkcs11.lib(cfg.pkcs11_module).finalize()

    return signer, close


@functools.lru_cache(maxsize=1)
def _timed_pdf_signer_class():
    """pyHanko's PdfSigner with the signing time chosen by us (``signing_time``), so the CMS signing
    time and the one printed in the mark are the same instant."""
    from pyhanko.sign.signers import PdfSigner

    class TimedPdfSigner(PdfSigner):
        signing_time: datetime | None = None

        def init_signing_session(self, pdf_out, existing_fields_only=False):
            session = super().init_signing_session(pdf_out, existing_fields_only)
            session.system_time = self.signing_time or session.system_time
            return session

    return TimedPdfSigner


class Signer:
    """An open key (PKCS#12 or token session) that signs PDF/A files one after another."""

    def __init__(self, cfg: SignSettings, pin: str | None):
        from .sigcheck import quiet_libraries

        check_settings(cfg)
        quiet_libraries()
        self.cfg = cfg
        opener = _open_pkcs11 if cfg.pkcs11_module else _open_pkcs12
        self._signer, self._close = opener(cfg, pin)
        self.cert = self._signer.signing_cert
        self.name = cfg.name or common_name(self.cert)
        self.broken = False
        try:
            check_certificate(self.cert, datetime.now(timezone.utc))
            self._font = signmark.find_font(cfg.font) if cfg.visible else None
            self._seal = signmark.load_seal(cfg.seal) if cfg.visible and cfg.kind == "agency" and cfg.seal else None
        except BaseException:
            self._close()  # a token's session is not left open behind a refused certificate
            raise
        self._timestamper = None
        if cfg.tsa_url:
            from pyhanko.sign.timestamps import HTTPTimeStamper

            self._timestamper = HTTPTimeStamper(cfg.tsa_url)
        self.level = "B-LT" if cfg.ltv else ("B-T" if cfg.tsa_url else "B-B")

    def close(self) -> None:
        self._close(reset=self.broken)

    def _validation_context(self):
        from pyhanko_certvalidator import ValidationContext

        from .sigcheck import load_trust_roots

        roots = load_trust_roots(self.cfg.trust) or [_chain_root(self._signer)]
        # the OCSP answer is fetched after the signing time was fixed: it may be (a little) newer
        return ValidationContext(trust_roots=roots, allow_fetching=True, revocation_mode="hard-fail",
                                 retroactive_revinfo=True)

    def sign(self, source: Path, target: Path) -> SignatureRecord:
        """Sign ``source`` into ``target`` (an incremental update: the PDF/A bytes stay as they were)."""
        from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
        from pyhanko.sign import fields, signers

        if self.broken:
            raise SignerUnavailableError("signing token unavailable: the file waits until it is back")
        when = datetime.now(VIETNAM).replace(microsecond=0)
        check_certificate(self.cert, when)
        meta = signers.PdfSignatureMetadata(
            field_name=FIELD_NAME, reason=self.cfg.reason or None, location=self.cfg.location or None,
            name=self.name, md_algorithm="sha256", subfilter=fields.SigSeedSubFilter.PADES,
            embed_validation_info=self.cfg.ltv, use_pades_lta=False,
            validation_context=self._validation_context() if self.cfg.ltv else None)
        spec = fields.SigFieldSpec(FIELD_NAME)
        style = None
        try:
            with open(source, "rb") as inp:
                writer = IncrementalPdfFileWriter(inp, strict=False)
                if self._font is not None:
                    mark = self._mark(writer, when)
                    spec = fields.SigFieldSpec(FIELD_NAME, on_page=0, box=mark.box)
                    style = signmark.stamp_style(mark)
                pdf_signer = _timed_pdf_signer_class()(meta, self._signer, timestamper=self._timestamper,
                                                       stamp_style=style, new_field_spec=spec)
                pdf_signer.signing_time = when
                with open(target, "wb") as out:
                    pdf_signer.sign_pdf(writer, output=out, bytes_reserved=SIGNATURE_BYTES)
        except DigitizeError:
            raise
        except Exception as e:  # noqa: BLE001 - pyHanko, python-pkcs11, aiohttp and the OS raise their own
            log.debug("signing %s failed", source, exc_info=True)
            raise self._signing_failure(e, source) from None
        return SignatureRecord(FIELD_NAME, self.name, cert_sha256(self.cert), when.isoformat(),
                               _timestamp_of(target) if self._timestamper else None, self.level)

    def _mark(self, writer, when: datetime) -> signmark.Mark:
        box = writer.root["/Pages"]["/Kids"][0].get_object()
        while "/Kids" in box:
            box = box["/Kids"][0].get_object()
        x1, y1, x2, y2 = (float(v) for v in box["/MediaBox"])
        return signmark.place(x2 - x1, y2 - y1, signmark.mark_lines(self.name, when.isoformat()), self._font,
                              self._seal)

    def _signing_failure(self, e: Exception, source: Path) -> Exception:
        """The one-line error to report. A token error also marks this signer broken (the next file
        logs in again); a CA service (TSA, OCSP) that does not answer makes the file wait too."""
        from pyhanko.sign.timestamps.common_utils import TimestampRequestError

        cause = e
        while cause.__cause__ is not None and not _is_pkcs11_error(cause):
            cause = cause.__cause__
        text = " ".join(str(e).split())
        if _is_pkcs11_error(cause):
            error = _token_error(cause)
            self.broken = isinstance(error, SignerUnavailableError)
            return error
        if isinstance(e, TimestampRequestError) or type(e).__module__.startswith("aiohttp"):
            return SignerUnavailableError(f"a CA service did not answer (timestamp {self.cfg.tsa_url} or "
                                          f"revocation): {text or type(e).__name__}; the file waits")
        if isinstance(e, OSError) and e.filename:
            return FileAccessError(f"cannot sign {source.name}: {e.strerror or text}")
        if self.cfg.ltv and ("revocation" in text.lower() or "validat" in text.lower()):
            return SigningError(f"cannot collect revocation data for B-LT: {text}")
        return SigningError(f"signing failed: {type(e).__name__}: {text}")


def _is_pkcs11_error(e: BaseException) -> bool:
    try:
        import pkcs11
    except ImportError:
        return False
    return isinstance(e, pkcs11.PKCS11Error)


def _chain_root(signer) -> Any:
    """The self-signed certificate the signer's own chain ends in (for collecting B-LT data when no
    trust anchors are configured: the chain still has to be complete)."""
    certs = list(signer.cert_registry) if signer.cert_registry is not None else []
    for cert in certs:
        if cert.self_signed in ("maybe", "yes"):
            return cert
    return signer.signing_cert


def _timestamp_of(path: Path) -> str | None:
    from .sigcheck import signature_timestamp

    return signature_timestamp(path, FIELD_NAME)


# -- one signer per process -------------------------------------------------------------------

_signers: dict[int, Signer] = {}
_refused: dict[int, SigningError] = {}


def _key(cfg: SignSettings) -> int:
    return hash((cfg.pkcs12, cfg.pkcs11_module, cfg.token_label, cfg.key_label, cfg.cert_label, os.getpid()))


def signer_for(settings: Settings, interactive: bool = False) -> Signer | None:
    """This process's signer for the settings (None when signing is not configured). The key is opened
    once; a wrong PIN is remembered so a token is never asked again with it (tokens lock after a few
    wrong tries); a token that went away is opened again on the next call."""
    cfg = settings.sign
    if not cfg.configured:
        return None
    key = _key(cfg)
    if key in _refused:
        raise _refused[key]
    signer = _signers.get(key)
    if signer is not None and not signer.broken:
        return signer
    if signer is not None:
        signer.close()
        del _signers[key]
    check_settings(cfg)
    pin = read_pin(cfg, interactive)
    try:
        signer = Signer(cfg, pin)
    except SignerUnavailableError:
        raise
    except SigningError as e:
        _refused[key] = e
        raise
    if interactive and pin and not cfg.pin:
        cfg.pin = pin  # asked once per process
    _signers[key] = signer
    return signer


def close_signers() -> None:
    while _signers:
        _, signer = _signers.popitem()
        signer.close()


atexit.register(close_signers)


def preflight(settings: Settings, interactive: bool = False) -> None:
    """Open the key once before any file is taken, so a wrong PIN or an expired certificate stops a
    watcher or a batch at once (one line) instead of failing every file. A token is tried in a forked
    child: a PKCS#11 library initialised before a fork is unusable in the children (batch workers and
    the watcher open their own session later)."""
    cfg = settings.sign
    if not cfg.configured:
        return
    check_settings(cfg)
    pin = read_pin(cfg, interactive)
    if pin is not None:
        cfg.pin = pin
    if not cfg.pkcs11_module:
        Signer(cfg, pin).close()
        return
    _in_child(lambda: Signer(cfg, pin).close())


def _in_child(action: Callable[[], None]) -> None:
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        os.close(read_fd)
        code, message = 0, b""
        try:
            action()
        except SigningError as e:
            code, message = (2 if isinstance(e, SignerUnavailableError) else 1), str(e).encode()
        except Exception as e:  # noqa: BLE001
            code, message = 3, f"{type(e).__name__}: {e}".encode()
        os.write(write_fd, message[:4000])
        os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        message = pipe.read().decode("utf-8", "replace")
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code == 2:
        raise SignerUnavailableError(message)
    if code == 3:
        raise SigningError(f"cannot open the signing key: {message}")
    if code != 0:
        raise SigningError(message or f"cannot open the signing key (exit {code})")
