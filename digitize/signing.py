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
import shutil
import sys
import tempfile
import threading
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

from . import signkeys, signmark
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
    mark: str = ""  # where the visible mark went on page 1 (a blank place, or the inset and why)

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
    """Like ssh with a private key (secrets.read_secret_file: no symlink followed, a regular file of this
    user or root, at most 4 KiB); a PIN file other users may read is refused, its group may (0640)."""
    from .secrets import read_secret_file

    pin = read_secret_file(path, "PIN", group_ok=True)
    if not pin:  # tried on the token, an empty PIN is one more wrong try towards locking it
        raise ConfigError(f"the PIN file {path} is empty")
    return pin


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
        opener = signkeys.open_pkcs11 if cfg.pkcs11_module else signkeys.open_pkcs12
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

    def prepare(self) -> "Signer":
        """Cut the mark's font for this signer's name now (cached on disk), not at the first file."""
        if self._font is not None:
            signmark.pdf_font(self._font, self.name)
        return self

    @property
    def visible(self) -> bool:
        """A mark is drawn on page 1 (a conversion then hands over page 1's top band: signmark.place)."""
        return self._font is not None

    def _validation_context(self):
        from pyhanko_certvalidator import ValidationContext

        from .sigcheck import load_trust_roots

        roots = load_trust_roots(self.cfg.trust) or [_chain_root(self._signer)]
        # the OCSP answer is fetched after the signing time was fixed: it may be (a little) newer
        return ValidationContext(trust_roots=roots, allow_fetching=True, revocation_mode="hard-fail",
                                 retroactive_revinfo=True)

    def sign(self, source: Path, target: Path, top_band: Any = None) -> SignatureRecord:
        """Sign ``source`` into ``target`` (an incremental update: the PDF/A bytes stay as they were).
        ``top_band``: page 1's top as signmark.top_band_grey made it in the conversion; without it
        the page image is read back from ``source``."""
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
        style, where = None, "invisible"
        try:
            with open(source, "rb") as inp:
                writer = IncrementalPdfFileWriter(inp, strict=False)
                if self._font is not None:
                    mark = self._mark(writer, source, when, top_band)
                    spec = fields.SigFieldSpec(FIELD_NAME, on_page=0, box=mark.box)
                    style, where = signmark.stamp_style(mark), mark.where
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
        log.info("signature mark of %s: %s", source.name, where)
        return SignatureRecord(FIELD_NAME, self.name, cert_sha256(self.cert), when.isoformat(),
                               _timestamp_of(target) if self._timestamper else None, self.level, where)

    def _mark(self, writer, source: Path, when: datetime, grey: Any) -> signmark.Mark:
        """The mark on page 1's blank top margin, found from its image (signmark.place)."""
        box = writer.root["/Pages"]["/Kids"][0].get_object()
        while "/Kids" in box:
            box = box["/Kids"][0].get_object()
        x1, y1, x2, y2 = (float(v) for v in box["/MediaBox"])
        if grey is None:
            grey = signmark.page_grey(source, x2 - x1, y2 - y1)
        mark = signmark.place(x2 - x1, y2 - y1, signmark.mark_lines(self.name, when.isoformat()), self._font,
                              self._seal, grey)
        if x1 or y1:  # a media box not at the origin: the box is in the page's own coordinates
            bx1, by1, bx2, by2 = mark.box
            ox, oy = round(x1), round(y1)
            mark = replace(mark, box=(bx1 + ox, by1 + oy, bx2 + ox, by2 + oy))
        return mark

    def _signing_failure(self, e: Exception, source: Path) -> Exception:
        """The one-line error to report. A token error also marks this signer broken (the next file
        logs in again); a CA service (TSA, OCSP) that does not answer makes the file wait too."""
        from pyhanko.sign.timestamps.common_utils import TimestampRequestError

        cause = e
        while cause.__cause__ is not None and not signkeys.is_pkcs11_error(cause):
            cause = cause.__cause__
        text = " ".join(str(e).split())
        if signkeys.is_pkcs11_error(cause):
            error = signkeys.token_error(cause)
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
_remote: "RemoteSigner | None" = None


def _key(cfg: SignSettings) -> int:
    """A token's session belongs to the process that opened it (a PKCS#11 library does not survive a
    fork); a PKCS#12 key is plain memory, so workers forked after preflight use the one it opened
    instead of each decrypting the file again (~0.1 s of CPU per worker)."""
    owner = os.getpid() if cfg.pkcs11_module else 0
    return hash((cfg.pkcs12, cfg.pkcs11_module, cfg.token_label, cfg.key_label, cfg.cert_label, owner))


def signer_for(settings: Settings, interactive: bool = False) -> Signer | None:
    """This process's signer for the settings (None when signing is not configured). The key is opened
    once; a wrong PIN is remembered so a token is never asked again with it (tokens lock after a few
    wrong tries); a token that went away is opened again on the next call."""
    cfg = settings.sign
    if not cfg.configured:
        return None
    if _remote is not None:  # a batch worker: the batch's SigningService signs for it
        return _remote
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


# what signing a file imports: ~1 s of Python at start-up (several on a busy machine)
SIGNING_MODULES = ("pyhanko.sign.signers", "pyhanko.sign.fields", "pyhanko.sign.timestamps",
                   "pyhanko.pdf_utils.incremental_writer", "pyhanko.pdf_utils.font.opentype",
                   "pyhanko.pdf_utils.layout", "pyhanko.pdf_utils.text", "pyhanko.pdf_utils.images",
                   "pyhanko.stamp", "pyhanko_certvalidator", "fontTools.ttLib", "fontTools.subset",
                   "fontTools.ttLib.scaleUpem")
TOKEN_MODULES = ("pkcs11", "pyhanko.sign.pkcs11",  # modules only: no PKCS#11 library is loaded
                 "concurrent.futures.thread")  # pyHanko signs on a token from a thread pool
# what a worker's first signature still imported (bench/sign_bench.py "fresh worker"): the mark's
# font table and glyph names, PDF filters, XMP metadata, time zone data; some may be absent
FIRST_SIGNATURE_MODULES = ("pyhanko.pdf_utils.filters", "pyhanko.pdf_utils.metadata.xmp_xml", "fontTools.agl",
                           "fontTools.ttLib.tables._l_o_c_a", "PIL.ImageFont", "numpy.ma", "tzdata.zoneinfo")


def preload(cfg: SignSettings) -> None:
    """Import what signing needs, once, in the process that forks the workers (batch, worker): each
    worker then starts with it instead of importing it again before its first signature, time a
    busy batch would take from conversion. A token's library is not initialised here (that must
    happen after the fork: _in_child, signer_for); the mark's font is found and cut once."""
    import importlib

    for name in SIGNING_MODULES + (TOKEN_MODULES if cfg.pkcs11_module else ()):
        importlib.import_module(name)
    for name in FIRST_SIGNATURE_MODULES:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    if cfg.visible:
        signmark.find_font(cfg.font)


def settle_pin(settings: Settings, interactive: bool = False) -> str | None:
    """Check the [sign] settings and read the PIN once (a prompt asks on a terminal), in the main
    thread before anything starts; kept in the settings for this process."""
    cfg = settings.sign
    check_settings(cfg)
    pin = read_pin(cfg, interactive)
    if pin is not None:
        cfg.pin = pin
    return pin


def preflight(settings: Settings, interactive: bool = False) -> None:
    """Open the key once before any file is taken, so a wrong PIN or an expired certificate stops a
    watcher or a worker at once (one line) instead of failing every file. A PKCS#12 key stays open
    for this process and the workers it forks. A token is tried in a forked child: a PKCS#11 library
    initialised before a fork is unusable in the children (the watcher opens its own session later).
    A batch does this in its SigningService instead, while its workers already convert."""
    cfg = settings.sign
    if not cfg.configured:
        return
    pin = settle_pin(settings, interactive)
    preload(cfg)
    if not cfg.pkcs11_module:
        key = _key(cfg)
        if key not in _signers:  # kept open: the workers forked next use it (see _key)
            _signers[key] = Signer(cfg, pin).prepare()
        signkeys.prepare_certificate_attribute(_signers[key]._signer)  # once here, not in every worker
        return
    _in_child(lambda: Signer(cfg, pin).prepare().close())


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


# -- a batch: one signer for all its workers, opened while they convert -----------------------------

class SigningService:
    """The batch's one signer, in the batch process, for all its workers (RemoteSigner).

    Why: opening the key (pyHanko, aiohttp and certvalidator imported, key opened, certificate checked,
    the mark's font cut: ~1 s of CPU) no longer runs before the workers start: they are forked first
    and convert their first files while this thread does it, and no file is signed (so none stored)
    before it passed. pyHanko is imported once per batch, in this process only: workers import none
    of it, and a token has one session and one login per batch. A preflight that fails (wrong PIN,
    token absent, expired certificate) is kept in ``error``: the batch stops with that one line, and
    every file already converted gets that error instead of a signature. ``lock`` is held while the
    key is opened or a file signed: the batch holds it while it forks workers, so that no child
    inherits a half-taken lock of pyHanko's or the token library's.

    Workers talk to it over a Unix socket in a private folder, authenticated with a random key
    (multiprocessing.connection), one connection per worker; the PDF/A stays on disk, only its path,
    the signed file's path and page 1's top band are sent."""

    def __init__(self, settings: Settings):
        from multiprocessing.connection import Listener

        self.settings = settings
        self._folder = Path(tempfile.mkdtemp(prefix="digitize-signer-"))  # 0700
        self.authkey = os.urandom(32)
        self._listener = Listener(str(self._folder / "socket"), "AF_UNIX", backlog=256, authkey=self.authkey)
        self.address = self._listener.address
        self.ready = threading.Event()
        self.error: SigningError | None = None
        self.lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False

    def remote(self) -> "RemoteSigner":
        return RemoteSigner(self.address, self.authkey, self.settings.sign.visible)

    def start(self) -> None:
        """Open the key in a thread of its own, then answer the workers (call after they are forked)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="digitize-signer", daemon=True)
            self._thread.start()

    def wait_ready(self, timeout: float | None = None) -> bool:
        return self.ready.wait(timeout)

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._listener.close()
        shutil.rmtree(self._folder, ignore_errors=True)

    def _open(self) -> None:
        with self.lock:
            try:
                signer = signer_for(self.settings)
                signer.prepare()
                signkeys.prepare_certificate_attribute(signer._signer)
            except SigningError as e:  # a SignerUnavailableError too: the token is not there
                self.error = e
            except Exception as e:  # noqa: BLE001 - one line, never a traceback
                log.debug("opening the signing key failed", exc_info=True)
                text = " ".join(str(e).split())
                self.error = SigningError(f"cannot open the signing key: {type(e).__name__}: {text}")
            finally:
                self.ready.set()

    def _run(self) -> None:
        self._open()
        while not self._closed:
            try:
                conn = self._listener.accept()
            except Exception:  # noqa: BLE001 - closed, or a client that failed the handshake
                continue
            threading.Thread(target=self._serve, args=(conn,), name="digitize-signer-conn", daemon=True).start()

    def _serve(self, conn) -> None:
        with conn:
            while True:
                try:
                    source, target, band = conn.recv()
                except (EOFError, OSError):
                    return
                answer = self.sign(Path(source), Path(target), band)
                try:
                    conn.send(answer)
                except (OSError, ValueError):
                    return

    def sign(self, source: Path, target: Path, band: Any) -> tuple[str, Any]:
        """("ok", SignatureRecord) or ("error", the DigitizeError to raise in the worker)."""
        self.ready.wait()
        if self.error is not None:
            return "error", self.error
        with self.lock:
            try:
                return "ok", signer_for(self.settings).sign(source, target, band)  # a token gone: logs in again
            except DigitizeError as e:
                return "error", e
            except Exception as e:  # noqa: BLE001
                log.exception("signing %s failed", source)
                return "error", SigningError(f"signing failed: {type(e).__name__}: {' '.join(str(e).split())}")


class RemoteSigner:
    """A batch worker's signer: the batch's SigningService signs (see there); duck-typed as Signer."""

    def __init__(self, address: str, authkey: bytes, visible: bool):
        self.address, self._authkey, self.visible = address, authkey, visible
        self._conn = None
        self.slots = None  # the batch's CPU slots (a semaphore): given back while waiting for the signature

    def sign(self, source: Path, target: Path, top_band: Any = None) -> SignatureRecord:
        from multiprocessing.connection import Client

        if self.slots is not None:
            self.slots.release()  # another worker converts while this one waits
        try:
            if self._conn is None:
                self._conn = Client(self.address, "AF_UNIX", authkey=self._authkey)
            self._conn.send((str(source), str(target), top_band))
            status, value = self._conn.recv()
        except (OSError, EOFError):
            self._conn = None
            raise SignerUnavailableError("the batch's signer did not answer: the file waits") from None
        finally:
            if self.slots is not None:
                self.slots.acquire()
        if status != "ok":
            raise value
        return value


def use_service(remote: RemoteSigner | None) -> None:
    """In a batch worker: sign through the batch's SigningService (signer_for returns ``remote``)."""
    global _remote
    _remote = remote
