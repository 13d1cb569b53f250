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
import stat
import sys
import tempfile
import threading
import time
import weakref
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

from . import lazyimports, signkeys, signmark
from .config import Settings, SignSettings
from .errors import ConfigError, DigitizeError, FileAccessError, SignerUnavailableError, SigningError, error_class

lazyimports.install()  # before any pyHanko import: its unused eager imports deferred

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
    if not getattr(cfg, "timeout", 1) > 0:
        raise ConfigError(f"sign.timeout must be a number of seconds above 0, not {cfg.timeout!r}")


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

        def _enforce_certification_constraints(self, reader):
            """pyHanko's check, which imports its whole validation package at every signature (~50 ms of
            CPU at a process's first one: lazyimports keeps it out of the key's opening), only where it
            can refuse: a certifying signature, or a document with a certification (/Perms /DocMDP).
            Without either pyHanko's check passes (it reads that entry and finds nothing). Any /Perms
            at all, even null or malformed, goes to pyHanko: it decides, as it would have."""
            if self.signature_meta.certify or "/Perms" in reader.root:
                super()._enforce_certification_constraints(reader)

    return TimedPdfSigner


_living: "weakref.WeakSet[Signer]" = weakref.WeakSet()


def _fresh_locks_in_child() -> None:
    """A child forked while another thread of its parent signed inherits that signer's lock held by a
    thread it does not have: its first signature would wait for ever (review r2sign13 L3)."""
    for signer in list(_living):
        signer._loop_lock = threading.Lock()


os.register_at_fork(after_in_child=_fresh_locks_in_child)


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
        self.refused: SigningError | None = None  # the token refused its PIN at a signature: never again
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
        self._loop: Any = None  # (event loop, the pid that made it): _run
        self._loop_lock = threading.Lock()
        _living.add(self)  # a forked child gets a lock of its own (_fresh_locks_in_child)

    def close(self) -> None:
        self._drop_loop()
        self._close(reset=self.broken)

    def _run(self, coro, context) -> Any:
        """Run one of pyHanko's signing coroutines to its end on this signer's own event loop.

        Why: pyHanko's ``sign_pdf`` wraps each signature in ``asyncio.run``, i.e. a new event loop,
        a new thread pool for the token's calls and a thread to shut that pool down again, made and
        torn down at every signature (~0.6 ms of CPU and two thread starts per file). One loop per
        signer and process instead, with one thread for the token's calls (python-pkcs11 then always
        talks to the token from the same thread), kept until the signer closes; a forked child that
        inherited the signer makes its own. One signature at a time on it (a lock). What
        ``asyncio.run`` also did is done here: the validation context's network sessions (B-LT) are
        closed once the signature is done, and what a run left on the loop is cancelled (_cancel_left).
        The loop polls (poll(2)) rather than using epoll: an epoll instance is shared with a forked
        child, and the child closing the loop it inherited (its garbage collection does) deleted the
        parent's wake-up pipe from it: the parent's next host lookup never woke its loop, and its
        signature failed at the CA services' timeout. poll's registrations live in the process."""
        import asyncio
        import selectors
        from concurrent.futures import ThreadPoolExecutor

        async def released():
            try:
                return await coro
            finally:
                if context is not None:
                    await context.aclose()

        with self._loop_lock:
            try:
                if self._loop is None or self._loop[1] != os.getpid():
                    loop = asyncio.SelectorEventLoop(selectors.PollSelector())
                    loop.set_default_executor(ThreadPoolExecutor(1, thread_name_prefix="digitize-sign-token"))
                    self._loop = (loop, os.getpid())
            except BaseException:
                coro.close()  # never started: no "coroutine was never awaited" line beside the file's error
                raise
            loop = self._loop[0]
            try:
                return loop.run_until_complete(released())
            finally:
                self._cancel_left(loop)

    def _cancel_left(self, loop) -> None:
        """What ``asyncio.run`` did after each run: cancel the tasks left on the loop and let them end (a
        failed pyHanko call's other fetches; after a Ctrl-C, the interrupted signature itself, whose
        ``finally`` then closes its network sessions). The loop and its one token thread are kept: a
        token call already running finishes there, and the next one queues behind it, never two calls
        on the token's session at once (dropping the loop on Ctrl-C started a second thread that did,
        review r2sign13 M1). A second Ctrl-C while this waits gives up on the loop."""
        import asyncio

        try:
            left = asyncio.all_tasks(loop)
            for task in left:
                task.cancel()  # a token call's future ends at once: this does not wait for the token
            if left:
                loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
        except BaseException:
            self._drop_loop(locked=True)
            raise

    def _drop_loop(self, locked: bool = False) -> None:
        """Close this process's signing loop, if any, without waiting for its token thread (a hung
        C_Sign must not hold the close: the thread is told to end when it returns). The interpreter's
        exit still joins that thread (``concurrent.futures`` does, for every pool): a CLI run or a
        watcher stopped during a token call that never returns prints its line and does not exit; a
        batch's key process leaves through ``os._exit`` and is killed by its batch."""
        if not locked and not self._loop_lock.acquire(timeout=1.0):
            return  # a signature still running (a hung token): its loop goes with the process
        try:
            made, self._loop = self._loop, None
            if made is not None and made[1] == os.getpid() and not made[0].is_running():
                with contextlib.suppress(Exception):
                    made[0].close()  # shuts its executor down with wait=False
        finally:
            if not locked:
                self._loop_lock.release()

    def prepare(self) -> "Signer":
        """Cut the mark's font for this signer's name now (cached on disk), not at the first file, and
        load what the first signature's appearance would (signmark.warm_appearance): in a batch this
        runs in the signer's thread while the workers convert, not while a worker waits."""
        if self._font is not None:
            signmark.warm_appearance(signmark.pdf_font(self._font, self.name))
        return self

    @property
    def visible(self) -> bool:
        """A mark is drawn on page 1 (a conversion then hands over page 1's top band: signmark.place)."""
        return self._font is not None

    @property
    def validate_unsigned(self) -> bool:
        """veraPDF checks the PDF/A before signing too ([sign] validate_unsigned; convert._sign)."""
        return bool(getattr(self.cfg, "validate_unsigned", False))

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
                    self._run(pdf_signer.async_sign_pdf(writer, output=out, bytes_reserved=SIGNATURE_BYTES),
                              meta.validation_context)
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
            if signkeys.is_pin_error(cause):  # a key asking for its PIN at every signature refused it:
                self.refused = error  # each further try would count toward locking the token
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
    if signer is not None and signer.refused is not None:
        _refused[key] = signer.refused
        signer.close()
        del _signers[key]
        raise signer.refused
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
                   "pyhanko.stamp", "pyhanko_certvalidator", "fontTools.ttLib")
# only with a timestamp (B-T) or revocation data (B-LT): aiohttp, ~0.3 s of CPU (lazyimports defers it)
TSA_MODULES = ("pyhanko.sign.timestamps.aiohttp_client",)
LTV_MODULES = ("pyhanko_certvalidator.fetchers.aiohttp_fetchers",)
TOKEN_MODULES = ("pkcs11", "pyhanko.sign.pkcs11",  # modules only: no PKCS#11 library is loaded
                 "concurrent.futures.thread")  # pyHanko signs on a token from a thread pool
# what a worker's first signature still imported (bench/sign_bench.py "fresh worker"): the mark's
# font table, PDF filters, XMP metadata, time zone data; some may be absent (no Adobe Glyph List:
# the mark's font keeps its glyph names, signmark.pdf_font)
FIRST_SIGNATURE_MODULES = ("pyhanko.pdf_utils.filters", "pyhanko.pdf_utils.metadata.xmp_xml",
                           "fontTools.ttLib.tables._l_o_c_a", "PIL.ImageFont", "tzdata.zoneinfo")
# what a forked worker's conversion imports (np.unique: numpy.ma), preloaded with signing's modules by a
# process that forks converting workers; not by a batch's key process, which converts nothing
CONVERTING_WORKER_MODULES = ("numpy.ma",)


def preload(cfg: SignSettings, converts: bool = True) -> None:
    """Import what signing needs, once, in the process that forks the workers (batch, worker): each
    worker then starts with it instead of importing it again before its first signature, time a
    busy batch would take from conversion. A token's library is not initialised here (that must
    happen after the fork: _in_child, signer_for); the mark's font is found and cut once. aiohttp
    only when a timestamp or revocation data is configured; fontTools' subsetter never (the mark's
    font is cut by preflight's signer, cached on disk: lazyimports). ``converts``: this process forks
    workers that convert (not a batch's key process)."""
    import importlib

    for name in SIGNING_MODULES + (TOKEN_MODULES if cfg.pkcs11_module else ()) + (TSA_MODULES if cfg.tsa_url else ()) \
            + (LTV_MODULES if cfg.ltv else ()):
        importlib.import_module(name)
    for name in FIRST_SIGNATURE_MODULES + (CONVERTING_WORKER_MODULES if converts else ()):
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

HANDSHAKE_TIMEOUT = 10.0  # seconds a connection may take to prove it holds the authkey
MAX_HEADER = 64 << 10  # bytes of a request's or an answer's JSON: two paths, a shape, a record or a line
MAX_MESSAGE = 4000  # characters of an error in an answer: 12 bytes each at worst in JSON, under MAX_HEADER
MAX_BAND = 64 << 20  # bytes of page 1's top band (one grey byte per pt: ~0.2 MB for A4, 2 MB for A0)


# The signer's wire format: no pickle either way. A worker that holds the authkey may still run code
# an untrusted page's decoder planted in it; what it sends is read as data (JSON, then the band's raw
# bytes of the shape it announced), each frame's length checked before anything is allocated.
def _encode_request(source: Path, target: Path, band: Any) -> list[bytes]:
    import json

    shape = None
    if band is not None:
        import numpy as np

        band = np.ascontiguousarray(band, dtype=np.uint8)
        shape = list(band.shape)
    frames = [json.dumps({"source": str(source), "target": str(target), "band": shape}).encode()]
    return frames + ([band.tobytes()] if band is not None else [])


def _read_request(conn) -> tuple[Path, Path, Any]:
    """(source, target, band) from a worker; ValueError for anything but that shape."""
    import json

    request = json.loads(conn.recv_bytes(MAX_HEADER))
    source, target, shape = request["source"], request["target"], request["band"]
    if not isinstance(source, str) or not isinstance(target, str):
        raise ValueError("paths must be strings")
    if shape is None:
        return Path(source), Path(target), None
    if (not isinstance(shape, list) or len(shape) != 2 or not all(type(n) is int and n > 0 for n in shape)
            or shape[0] * shape[1] > MAX_BAND):
        raise ValueError("the band must be rows x columns of grey bytes")
    import numpy as np

    raw = conn.recv_bytes(shape[0] * shape[1])
    if len(raw) != shape[0] * shape[1]:
        raise ValueError("the band's bytes do not match its shape")
    return Path(source), Path(target), np.frombuffer(bytearray(raw), dtype=np.uint8).reshape(shape)


def _encode_answer(status: str, value: Any) -> bytes:
    """("ok", a SignatureRecord or None: the key process's opening went well), or ("error" | "refused",
    a DigitizeError: its class's name and its one line)."""
    import json

    if status == "ok":
        return json.dumps({"status": "ok", "record": asdict(value) if value is not None else None}).encode()
    status = "refused" if status == "refused" else "error"
    message = str(value)  # a pyHanko or TSA text may be long: cut, so the answer fits MAX_HEADER and stays
    if len(message) > MAX_MESSAGE:  # the permanent error it is, not an unreachable signer
        message = message[:MAX_MESSAGE - 1] + "\u2026"
    return json.dumps({"status": status, "error": type(value).__name__, "message": message}).encode()


def _decode_answer(data: bytes) -> tuple[str, Any]:
    import json

    answer = json.loads(data)
    if answer["status"] == "ok":
        record = answer["record"]
        return "ok", SignatureRecord(**record) if record is not None else None
    status = "refused" if answer["status"] == "refused" else "error"
    return status, error_class([str(answer["error"])], SigningError)(str(answer["message"]))


SUN_PATH_MAX = 107  # bytes of an AF_UNIX socket's path (108 with its NUL)
SOCKET_NAME = "s"


def _socket_folder() -> Path:
    """A private (0700) folder for the signer's socket, on a base short enough for AF_UNIX's 107
    bytes ($XDG_RUNTIME_DIR, else the temp folder, else /tmp; never an abstract socket, which any
    process of the host could reach). Named as fsutil's work folders, so a sweep removes it after a
    crash; with a host name too long for that, a shorter name."""
    from . import fsutil, resident

    sweepable = f"digitize-{fsutil._owner()}-signer-"
    failed: list[str] = []
    # an inherited runtime folder that is not ours (su, sudo -E) is skipped, as resident.socket_dir
    # does; one we cannot write in (read-only, full) gives way to the next base
    for base in (resident.runtime_dir() or "", tempfile.gettempdir(), "/tmp"):
        if not base or not os.path.isabs(base) or not os.path.isdir(base) or base in failed:
            continue
        for prefix in (sweepable, "digitize-signer-"):
            # mkdtemp adds 8 characters, then "/" and the socket's name
            if len(os.fsencode(os.path.join(base, prefix))) + 8 + 1 + len(SOCKET_NAME) <= SUN_PATH_MAX:
                if prefix == sweepable:
                    fsutil.sweep_orphans(base, force=True)  # a crashed batch's folder, if any
                try:
                    return Path(tempfile.mkdtemp(prefix=prefix, dir=base))
                except OSError as e:
                    failed.append(base)
                    why = f"cannot start the batch's signer in {base}: {e.strerror or e}"
                    break
    if failed:
        raise SigningError(why)
    raise SigningError("cannot start the batch's signer: no folder with a path short enough for its socket")


class _Bounded:
    """A connection as multiprocessing's authkey challenge sees it, each of whose messages must arrive
    whole within ``timeout``: a peer that connects and says nothing, or stops partway through a message
    (its length sent, its bytes not), cannot hold its connection's thread for ever. The message is read
    here, in multiprocessing's framing (a 4-byte big-endian length, -1 then an 8-byte one), because
    Connection.recv_bytes would block in os.read once the first byte came."""

    def __init__(self, conn, timeout: float):
        self._conn, self._timeout = conn, timeout

    def send_bytes(self, data) -> None:
        self._conn.send_bytes(data)

    def recv_bytes(self, maxlength=None) -> bytes:
        import struct

        deadline = time.monotonic() + self._timeout
        size, = struct.unpack("!i", self._read(4, deadline))
        if size == -1:
            size, = struct.unpack("!Q", self._read(8, deadline))
        if size < 0 or (maxlength is not None and size > maxlength):
            raise OSError("bad message length")
        return self._read(size, deadline)

    def _read(self, size: int, deadline: float) -> bytes:
        import select

        data, fd = bytearray(), self._conn.fileno()
        while len(data) < size:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError("no (whole) answer to the challenge")
            chunk = os.read(fd, size - len(data))
            if not chunk:
                raise EOFError
            data += chunk
        return bytes(data)


class SigningService:
    """The batch's one signer, in the batch process, for all its workers (RemoteSigner).

    Why: opening the key (pyHanko, aiohttp and certvalidator imported, key opened, certificate checked,
    the mark's font cut: ~1 s of CPU) no longer runs before the workers start: they are forked first
    and convert their first files while this thread does it, and no file is signed (so none stored)
    before it passed. pyHanko is imported once per batch, in one process only: workers import none
    of it, and a token has one session and one login per batch. That process is the batch's key
    process (KeyProcess, forked at the batch's start, taken here by the key's identity) when there is
    one: it is asked to open the key (log in) when this service is made, i.e. for a batch with files
    to sign, and this thread waits for its opening and hands it each request it admitted; without one
    (run_batch called directly) the key is opened in this thread, as the key process does. A preflight that fails (wrong PIN,
    token absent, expired certificate) is kept in ``error``: the batch stops with that one line, and
    every file already converted gets that error instead of a signature. ``lock`` is held while the
    key is opened or a file signed: the batch holds it while it forks workers, so that no child
    inherits a half-taken lock of pyHanko's or the token library's.

    Every wait is bounded by ``[sign] timeout``: a key that does not open, or a signature that does
    not end (a wedged reader or network HSM), sets ``error`` (``overdue``, called by the batch's
    loop), and the batch stops with one line instead of waiting for ever.

    Workers talk to it over a Unix socket in a private folder, authenticated with a random key
    (multiprocessing's challenge, run in each connection's own thread), one connection per worker;
    the socket's peer must be one of the batch's own workers (``members``, forked by this process:
    its kernel-given pid, SO_PEERCRED), so a page worker (a worker's child, which decodes untrusted
    images) is refused whatever it holds; page workers also wipe the key and close the connection
    and listening socket they inherit before any page (``forget_service``);
    the PDF/A stays on disk, only its path, the signed file's path and page 1's top band are sent.
    It signs only a regular file of this user in the batch's kept folder or in a work folder of one
    of its workers, into that file's name + ".signed", which must not exist yet."""

    def __init__(self, settings: Settings, kept: Path | None = None, members: Callable[[], Any] | None = None):
        from multiprocessing.connection import Listener

        from .pageworkers import undumpable

        undumpable()  # before the key exists: no child of this uid reads it or copies a connection
        self.settings = settings
        self.kept = Path(os.path.realpath(kept)) if kept is not None else None  # the batch's kept folder
        self.timeout = float(getattr(settings.sign, "timeout", 120.0))  # > 0: check_settings
        self._folder = _socket_folder()
        self.authkey = os.urandom(32)
        # the batch's worker pids (see _admits); none given: no other process is answered (fail closed)
        self.members: Callable[[], Any] = members if members is not None else tuple
        self._owner = os.getpid()
        try:  # no authkey here: the challenge runs in each connection's thread (_authenticate)
            self._listener = Listener(str(self._folder / SOCKET_NAME), "AF_UNIX", backlog=256)
        except OSError as e:
            shutil.rmtree(self._folder, ignore_errors=True)
            raise SigningError(f"cannot start the batch's signer in {self._folder.parent}: {e.strerror or e}") from None
        self.address = self._listener.address
        self.ready = threading.Event()
        self.error: SigningError | None = None
        self.lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._started: float | None = None  # time.monotonic() of start()
        # time.monotonic() when the key began to open: at the first file that asks for a signature,
        # never before (review rev3 sign16b H1: a batch whose files were all stored already, or all
        # failed, tried the PIN on every run and said nothing; a stale PIN locks a USB token)
        self._opening_since: float | None = None
        self._opening_lock = threading.Lock()
        self._signing: float | None = None  # since when a signature is in progress
        self._conns: set = set()  # the workers' open connections
        # the key already opening in a child forked at the batch's start (start_key_process), if any
        self._keys: KeyProcess | None = _key_processes.pop(_key(settings.sign), None) \
            if settings.sign.configured else None
        _services.append(self)

    def remote(self) -> "RemoteSigner":
        remote = RemoteSigner(self.address, self.authkey, self.settings.sign.visible, self.timeout)
        remote.validate_unsigned = bool(getattr(self.settings.sign, "validate_unsigned", False))
        return remote

    def start(self) -> None:
        """Open the key in a thread of its own, then answer the workers (call after they are forked)."""
        if self._thread is None:
            self._started = time.monotonic()
            self._thread = threading.Thread(target=self._run, name="digitize-signer", daemon=True)
            self._thread.start()

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Open the key now (if no signature asked for it yet) and wait until it is open or failed."""
        self._begin_opening()
        return self.ready.wait(timeout)

    @contextlib.contextmanager
    def forking(self):
        """Held while the batch forks workers (see ``lock``); a key open or a signature that holds
        the lock longer than ``timeout`` stops the batch instead."""
        if not self.lock.acquire(timeout=self.timeout):
            if self.overdue() is None:
                self.error = SignerUnavailableError(f"the batch's signer was busy for {self.timeout:g} s "
                                                    "([sign] timeout): is the token or its reader answering?")
            raise self.error
        try:
            yield
        finally:
            self.lock.release()

    def overdue(self, shut: bool = True) -> SigningError | None:
        """The batch's loop asks: a key still not open, or a signature still running, after
        ``timeout`` seconds sets ``error`` (the token or its reader stopped answering)."""
        now = time.monotonic()
        began = self._opening_since
        if self.error is None and not self.ready.is_set() and began is not None and now - began > self.timeout:
            self.fail(SignerUnavailableError(f"the signing key did not open within {self.timeout:g} s "
                                             "([sign] timeout): is the token or its reader answering?"), shut)
        since = self._signing
        if self.error is None and since is not None and now - since > self.timeout:
            self.fail(SignerUnavailableError(f"a signature took longer than {self.timeout:g} s "
                                             "([sign] timeout): is the token or its reader answering?"), shut)
        return self.error

    def fail(self, error: SigningError, shut: bool = True) -> None:
        """Stop signing: every worker waiting gets ERROR now (a hung signature's worker: its
        connection is shut), so each cleans up its file instead of waiting or being killed."""
        import socket

        self.error = error
        self.ready.set()
        for conn in list(self._conns) if shut else ():
            with contextlib.suppress(Exception), socket.socket(fileno=os.dup(conn.fileno())) as sock:
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        import socket

        self._closed = True
        with contextlib.suppress(ValueError):
            _services.remove(self)
        with contextlib.suppress(Exception):  # wakes the accept() of the signer's thread
            self._listener._listener._socket.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self._listener.close()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(1.0)
        shutil.rmtree(self._folder, ignore_errors=True)
        # the key is closed here, under the lock, not by close_signers at exit while a thread may be in
        # C_Sign; a signature still running after a while (a hung token) keeps its session to the exit
        if self.lock.acquire(timeout=min(5.0, self.timeout)):
            try:
                close_signers()
                if self._keys is not None:
                    self._keys.close()
            finally:
                self.lock.release()
        else:
            _signers.clear()
            if self._keys is not None:
                self._keys.close(grace=0.0)  # a hung signature: the key process is killed

    def _begin_opening(self) -> None:
        """Open the key (in a thread of its own) at the first signature asked, once: a batch that signs
        nothing never tries the PIN."""
        with self._opening_lock:
            if self._opening_since is not None or self.ready.is_set():
                return
            self._opening_since = time.monotonic()
        threading.Thread(target=self._open, name="digitize-signer-open", daemon=True).start()

    def _open(self) -> None:
        if self._keys is not None:  # opened in the key process since the batch's start: wait for it
            with self.lock:
                try:
                    self.error = self._keys.opened()
                finally:
                    self.ready.set()
            return
        with self.lock, _collector_paused():
            try:
                self.error = _opening(self.settings)
            finally:
                self.ready.set()

    def _run(self) -> None:
        # workers are answered (and wait in sign) while the key opens, at the first signature asked
        # (_begin_opening): a hung opening is then the batch's to notice (overdue), not a silent socket's
        while not self._closed:
            try:
                conn = self._listener.accept()  # no handshake here: one silent client holds no other
            except Exception:  # noqa: BLE001 - closed
                if self._closed:
                    return
                continue
            threading.Thread(target=self._serve, args=(conn,), name="digitize-signer-conn", daemon=True).start()

    def _authenticate(self, conn) -> bool:
        from multiprocessing.connection import answer_challenge, deliver_challenge

        bounded = _Bounded(conn, min(HANDSHAKE_TIMEOUT, self.timeout))
        try:
            deliver_challenge(bounded, self.authkey)
            answer_challenge(bounded, self.authkey)
        except Exception as e:  # noqa: BLE001 - AuthenticationError, EOFError, OSError
            log.debug("the signer refused a connection: %s: %s", type(e).__name__, e)
            return False
        return True

    def _admits(self, conn) -> bool:
        """Whether the peer is this process or one of the batch's workers (by the pid the kernel
        recorded at connect, SO_PEERCRED): never a page worker, which is a worker's child."""
        import socket
        import struct

        try:
            with socket.socket(fileno=os.dup(conn.fileno())) as sock:
                pid, uid, _ = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                                  struct.calcsize("3i")))
        except OSError:
            return False
        if uid != os.geteuid():
            return False
        if pid == os.getpid():
            return True
        members = self.members
        for _ in range(3):  # the batch's thread may be adding a worker to the pool's table right now
            try:
                allowed = members is not None and pid in set(members())
                break
            except RuntimeError:
                continue
        else:
            return False
        return allowed and _child_of_mine(pid)

    def _serve(self, conn) -> None:
        with conn:
            if not self._admits(conn):
                log.debug("the signer refused a connection: not one of the batch's workers")
                return
            if not self._authenticate(conn):
                return
            self._conns.add(conn)
            try:
                self._answer(conn)
            finally:
                self._conns.discard(conn)

    def _answer(self, conn) -> None:
        while True:
            try:
                source, target, band = _read_request(conn)
                conn.send_bytes(_encode_answer(*self.sign(source, target, band)))
            except EOFError:
                return
            except OSError as e:
                if e.errno is None:  # multiprocessing's "bad message length": a frame over its cap
                    log.warning("the batch's signer dropped a malformed request (a frame over its size limit)")
                return
            except Exception as e:  # noqa: BLE001 - a malformed request or answer: one line, connection closed
                log.debug("the signer dropped a connection: %s: %s", type(e).__name__, e, exc_info=True)
                log.warning("the batch's signer dropped a malformed request (%s)", type(e).__name__)
                return

    def _confined(self, source: Path, target: Path) -> SigningError | None:
        """Why the service refuses these paths, if it does: anything holding the authkey (a page
        worker decoding an untrusted image) must not get any other file of this user signed or
        overwritten."""
        from . import fsutil

        refused = SigningError(f"the batch's signer refuses to sign {source.name}: not a conversion of this batch")
        if not source.is_absolute() or Path(os.path.realpath(source)) != source or target != Path(f"{source}.signed"):
            return refused
        if self.kept is None or not source.is_relative_to(self.kept):
            temp = Path(os.path.realpath(tempfile.gettempdir()))
            if not source.is_relative_to(temp) or source == temp:
                return refused
            found = fsutil.WORK_DIR.match(source.relative_to(temp).parts[0])
            mine = fsutil._owner().partition("-")[2]
            if found is None or f"{found[2]}@{found[3]}" != mine or not _child_of_mine(int(found[1])):
                return refused
        try:
            fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            return refused
        try:
            st = os.fstat(fd)
        finally:
            os.close(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
            return refused
        try:
            os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
        except OSError:
            return refused
        return None

    def sign(self, source: Path, target: Path, band: Any) -> tuple[str, Any]:
        """("ok", SignatureRecord) or ("error", the DigitizeError to raise in the worker)."""
        self._begin_opening()
        if not self.ready.wait(self.timeout):
            self.overdue(shut=False)  # not this worker's own connection: it gets the error
        if self.error is not None:
            return "error", self.error
        refused = self._confined(source, target)
        if refused is not None:
            return "error", refused
        waited = 0.0
        while not self.lock.acquire(timeout=0.5):  # in steps: an error set meanwhile is answered at once
            waited += 0.5
            if self.error is not None:
                return "error", self.error
            if waited >= self.timeout:
                return "error", SignerUnavailableError(f"the batch's signer was busy for {self.timeout:g} s: "
                                                       "the file waits")
        try:
            if self.error is not None:
                return "error", self.error
            self._signing = time.monotonic()
            return "ok", self._key().sign(source, target, band)
        except DigitizeError as e:
            return "error", e
        except Exception as e:  # noqa: BLE001
            log.debug("signing %s failed", source, exc_info=True)
            return "error", SigningError(f"signing failed: {type(e).__name__}: {' '.join(str(e).split())}")
        finally:
            self._signing = None
            self.lock.release()


    def _key(self):
        """The key, checked as at the batch's start: one that went bad mid-batch (its certificate
        expired, its PIN refused at a re-login) stops the batch with that line instead of failing
        every file after its conversion. A token gone (SignerUnavailableError) is opened again at
        the next file, which waits meanwhile."""
        if self._keys is not None:  # its key, or none: never a second key opened in this process
            if self._keys.alive:
                return self._keys.signer(lambda e: self.fail(e, shut=False))
            error = self.error or SigningError("the batch's key process ended: signing stopped; the files "
                                               "not signed wait for the next run")
            self.fail(error, shut=False)
            raise error
        try:
            signer = signer_for(self.settings)  # a token gone: logs in again
            if getattr(signer, "cert", None) is not None:
                check_certificate(signer.cert, datetime.now(VIETNAM).replace(microsecond=0))
        except SignerUnavailableError:
            raise
        except SigningError as e:
            self.fail(e, shut=False)
            raise
        return signer


# the mark's font tables pyHanko's font engine reads (Signer.prepare): their fontTools modules, ~0.1-0.2 s
MARK_FONT_TABLES = ("head", "hhea", "hmtx", "maxp", "name", "OS/2", "post", "cmap", "glyf", "loca", "fvar", "CPAL",
                    "GDEF", "GSUB", "GPOS")


def _warm_key(cfg: SignSettings) -> None:
    """What opening the key and its first signature import and load, none of it the key itself (no
    PIN used, no token's library initialised): pyHanko and its dependencies (preload), the mark's
    PIL font loaded into FreeType, pyHanko's filters and images, time zone data, the token's thread
    pool. A key process does this as soon as it is forked, before it is asked to open the key."""
    import importlib

    from .sigcheck import quiet_libraries

    quiet_libraries()
    preload(cfg, converts=False)
    # what the first signature still imported (a key process has not imported what a batch process
    # had): the mark's PIL font, pyHanko's filters and images, time zone data, the token's thread
    # pool, and for a visible mark OpenCV (its place on page 1's band, signmark.ink_mask: ~30 ms of CPU,
    # more on a busy machine, that the first file's worker would wait for; an invisible signature never
    # needs it: 15 MB and a thread in the key process for nothing)
    for name in ("pyhanko.pdf_utils.images", "concurrent.futures.thread") + (("cv2",) if cfg.visible else ()):
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    if cfg.visible:
        signmark.text_width(signmark.VIETNAMESE_SAMPLE, signmark.find_font(cfg.font))  # FreeType loads it once
        from fontTools.ttLib import getTableClass

        for tag in MARK_FONT_TABLES:  # their modules, imported by pyHanko's font engine at the font's first parse
            with contextlib.suppress(ImportError, KeyError):
                getTableClass(tag)


def _open_key(settings: Settings) -> Signer:
    """Open this process's signer for a batch and load what its first signature would: the modules
    and font (_warm_key: already done in a key process), the key, the mark's font cut for the
    signer's name, the certificate attribute (the batch's ``key opened``: bench/sign_bench.py times
    this function)."""
    _warm_key(settings.sign)
    signer = signer_for(settings)
    signer.prepare()
    signkeys.prepare_certificate_attribute(signer._signer)
    return signer


def _opening(settings: Settings) -> SigningError | None:
    """_open_key's outcome as one line: None when the key is open."""
    try:
        _open_key(settings)
    except SigningError as e:  # a SignerUnavailableError too: the token is not there
        return e
    except Exception as e:  # noqa: BLE001 - one line, never a traceback
        log.debug("opening the signing key failed", exc_info=True)
        return SigningError(f"cannot open the signing key: {type(e).__name__}: {' '.join(str(e).split())}")
    return None


OPEN_REQUEST = b'{"open": true}'  # a key process's first message: open the key now (then requests follow)


class KeyProcess:
    """A batch's key, opened and used in a child forked at the very start of ``digitize batch``.

    Why: opening the key is ~0.4-0.6 s of CPU, nearly all of it pyHanko's imports, once per batch.
    In the batch process it ran while both workers converted, so on two busy cores it took that
    time from conversion (~25-30 ms of CPU per document on a 24-document batch: most of what
    signing added). At the batch's start one core is idle: the batch process imports the conversion
    code and lists the files (~0.5 s, one core) before it forks its workers. Forked then, this
    process imports pyHanko and loads the mark's font on the idle core (_warm_key); the batch
    process never loads pyHanko or the token's library at all.

    It opens the key (a token's login, a PKCS#12's decryption) only when asked (``ask_open``: the
    batch's SigningService, made only for a batch with files to sign). Each wrong PIN tried on a
    token counts toward locking it: a run that ends before (a usage error, a missing or empty
    folder, everything already stored) never tries the PIN; the process is closed at exit.

    Only the batch's SigningService (its thread, under its lock) talks to it, over a socket pair
    made for it, in the workers' wire format (JSON frames, no pickle either way: _encode_request,
    _read_request, _encode_answer, _decode_answer): the service checks each request first
    (``_confined``), and the end the batch process holds is closed in every worker it forks
    (``forget``, from use_service), so neither a worker nor a page worker can reach it. It keeps
    only the [sign] settings (the PIN with them, never in argv or the environment: _sign_only),
    dies with the batch process (PDEATHSIG), ignores the terminal's Ctrl-C (the batch stops it),
    is not dumpable, and ends when its socket closes. One that dies stops the batch's signing (one
    line); the key is never opened in the batch process instead. Not a resident signer: one per
    batch, its token session closed with it."""

    def __init__(self, settings: Settings):
        from multiprocessing import Pipe

        here, there = Pipe(duplex=True)  # a socket pair; not inherited across exec
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            here.close()
            code = 0
            try:
                _key_process_main(_sign_only(settings), there, parent)
            except BaseException:  # noqa: BLE001 - never a traceback from here, the batch reports
                code = 1
            finally:
                os._exit(code)
        there.close()
        self.pid, self._conn, self._owner = pid, here, parent
        self.alive, self._asked = True, False

    def ask_open(self) -> None:
        """Ask it to open the key now (without waiting: ``opened`` reads the answer)."""
        if self._asked or not self.alive:
            return
        self._asked = True
        try:
            self._conn.send_bytes(OPEN_REQUEST)
        except OSError:
            self.alive = False

    def opened(self) -> SigningError | None:
        """Ask for the key's opening if not yet asked, and wait for it: None, or the one-line error
        it ended with."""
        self.ask_open()
        try:
            status, error = _decode_answer(self._conn.recv_bytes(MAX_HEADER))
        except (EOFError, OSError):
            self.alive = False
            return SigningError("the batch's key process ended before the key was opened")
        except Exception as e:  # noqa: BLE001 - an answer that cannot be read
            self.alive = False
            return SigningError(f"the batch's key process gave an unreadable answer ({type(e).__name__})")
        if status != "ok":
            self.alive = False
            return error
        return None

    def signer(self, refused: Callable[[SigningError], None]) -> "_KeyProcessSigner":
        return _KeyProcessSigner(self, refused)

    def sign(self, source: Path, target: Path, band: Any, refused: Callable[[SigningError], None]):
        """Its signature of SOURCE; a key that went bad (``refused``) or a key process that died or
        answered nonsense stops the batch's signing through ``refused`` (SigningService.fail)."""
        try:
            for frame in _encode_request(source, target, band):
                self._conn.send_bytes(frame)
            status, value = _decode_answer(self._conn.recv_bytes(MAX_HEADER))
        except (EOFError, OSError):
            why = "ended"
        except Exception as e:  # noqa: BLE001 - an answer that cannot be read
            why = f"gave an unreadable answer ({type(e).__name__})"
        else:
            if status == "refused":  # the key went bad mid-batch (see SigningService._key)
                refused(value)
            if status != "ok":
                raise value
            return value
        self.alive = False  # never replaced by a key opened in the batch process
        error = SigningError(f"the batch's key process {why}: signing stopped; the files not signed wait "
                             "for the next run")
        refused(error)
        raise error

    def forget(self) -> None:
        """In a forked child of the batch process: close the inherited end (the fd only)."""
        if os.getpid() != self._owner:
            with contextlib.suppress(OSError):
                self._conn.close()

    def close(self, grace: float = 5.0) -> None:
        """Ask it to end (closing the token's session), then wait; killed after ``grace`` seconds."""
        import signal
        import socket

        if os.getpid() != self._owner or self.pid is None:
            return
        if not self._asked:
            grace = 0.0  # never asked to open the key: it holds no session, nothing to close (rev3 L2)
        # shut before it is closed: it reads EOF and ends; a thread still waiting for a hung
        # signature's answer gets EOF (never a read on a descriptor number reused meanwhile)
        with contextlib.suppress(OSError), socket.socket(fileno=os.dup(self._conn.fileno())) as sock:
            sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self._conn.close()
        deadline = time.monotonic() + grace
        while True:
            try:
                done, _ = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                break
            if done:
                break
            if time.monotonic() >= deadline:
                with contextlib.suppress(OSError):
                    os.kill(self.pid, signal.SIGKILL)
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(self.pid, 0)
                break
            time.sleep(0.01)
        self.pid, self.alive = None, False


class _KeyProcessSigner:
    """SigningService's view of its key process, duck-typed as the Signer it signs with."""

    cert = None  # checked in the key process, at each file

    def __init__(self, keys: KeyProcess, refused: Callable[[SigningError], None]):
        self._keys, self._refused = keys, refused

    def sign(self, source: Path, target: Path, band: Any = None) -> SignatureRecord:
        return self._keys.sign(source, target, band, self._refused)


def _key_process_main(settings: Settings, conn, parent: int) -> None:  # pragma: no cover - the child
    import signal

    from .pageworkers import die_with_parent, undumpable

    die_with_parent(parent)
    undumpable()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the batch stops on Ctrl-C and closes this process
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _quiet_and_masked()
    try:
        with contextlib.suppress(Exception), _collector_paused():  # an error here: the opening says it
            _warm_key(settings.sign)
        try:
            if conn.recv_bytes(MAX_HEADER) != OPEN_REQUEST:
                return
        except (EOFError, OSError):  # the batch ended before it had anything to sign: no PIN tried
            return
        with _collector_paused():
            error = _opening(settings)
        conn.send_bytes(_encode_answer("error", error) if error is not None else _encode_answer("ok", None))
        if error is not None:
            return
        while True:
            try:
                source, target, band = _read_request(conn)
            except (EOFError, OSError):
                return
            conn.send_bytes(_encode_answer(*_key_process_sign(settings, source, target, band)))
    finally:
        close_signers()


def _sign_only(settings: Settings) -> Settings:  # pragma: no cover - the key process
    """In the key process, which parses PDFs the workers wrote: settings with the [sign] section
    only. The other sections (the store's keys, the index's DSN, the web's and the queue's secrets)
    are blanked in this process's copy of the batch's settings as well, and the masking function
    forgets their values: this process holds no secret it does not need."""
    import dataclasses

    from . import secrets
    from .config import remember_secrets

    for section in dataclasses.fields(settings):
        value = getattr(settings, section.name)
        if section.name != "sign" and dataclasses.is_dataclass(value):
            setattr(settings, section.name, type(value)())
    only = Settings(data_dir="", sign=settings.sign)
    secrets.forget_all()
    remember_secrets(only)
    return only


def _key_process_sign(settings: Settings, source: str, target: str, band: Any) -> tuple[str, Any]:  # pragma: no cover
    """One file in the key process, checked as SigningService._key checks it in-process."""
    try:
        signer = signer_for(settings)  # a token gone: logs in again
        check_certificate(signer.cert, datetime.now(VIETNAM).replace(microsecond=0))
    except SignerUnavailableError as e:
        return "error", e
    except SigningError as e:
        return "refused", e
    try:
        return "ok", signer.sign(Path(source), Path(target), band)
    except DigitizeError as e:
        return ("refused" if signer.refused is not None else "error"), e  # refused: the batch stops signing
    except Exception as e:  # noqa: BLE001
        log.debug("signing %s failed", source, exc_info=True)
        return "error", SigningError(f"signing failed: {type(e).__name__}: {' '.join(str(e).split())}")


def _quiet_and_masked() -> None:  # pragma: no cover - the key process
    """Forked from the launcher, the key process starts before the CLI scrubbed the environment and
    set up its logging: no secret stays in its environment, and its log lines (warnings: the
    CLI's default level) go through the one masking filter, as the CLI's do."""
    from .secrets import drop_secret_environ, mask_logging, scrub_environment

    scrub_pin_from_environment()
    scrub_environment()
    drop_secret_environ()  # PGPASSWORD, AWS_* too: this process needs none of them (review rev3 sign16b L3)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="digitize: %(levelname)s: %(message)s", stream=sys.stderr)
    mask_logging()


_key_processes: dict[int, KeyProcess] = {}  # started, not yet taken by a SigningService


def start_key_process(settings: Settings) -> None:
    """Fork the batch's key process now (see KeyProcess): call it as early as the settings and PIN
    are known, before the batch imports the conversion code. Its SigningService takes it and asks it
    to open the key; one no service took (a batch of no files, an error before) is closed at exit,
    the PIN never tried."""
    cfg = settings.sign
    if not cfg.configured or _key(cfg) in _key_processes:
        return
    _key_processes[_key(cfg)] = KeyProcess(settings)


def early_key_process(argv: list[str]) -> None:
    """For ``digitize [global options] batch ...`` that will sign here with a PIN it needs not ask
    for (environment, PIN file, credential): fork the batch's key process now (start_key_process),
    before the CLI and the conversion code are imported (~0.5 s of CPU on one core, the other
    idle), so that the opening's imports run meanwhile (the key itself opens at the first signature a file asks for). Anything else (another command, help,
    a dry run, queue mode, a PIN to prompt for, settings the CLI will refuse) does nothing here:
    the CLI goes on as before, and batch_cmd forks the key process itself once it has the PIN.
    The CLI's own settings find this process by the key's identity (_key); a key process nothing
    takes is closed at exit."""
    from .zygote import command_arguments

    found = command_arguments(argv)
    if found is None or found[1] != "batch" or {"-h", "--help", "--dry-run"} & set(found[2]):
        return
    config, _, rest = found
    try:
        from .config import load_settings

        settings = load_settings(config)
        cfg = settings.sign
        if not cfg.configured or "--queue" in rest or (settings.queue.url and "--local" not in rest):
            return
        check_settings(cfg)
        pin = read_pin(cfg, interactive=False)
    except Exception:  # noqa: BLE001 - the CLI reads them again and reports what is wrong
        return
    if pin is None:
        return
    cfg.pin = pin
    start_key_process(settings)


def _close_key_processes() -> None:
    """At exit: the key processes no batch took (none was asked to open its key: killed at once)."""
    while _key_processes:
        _, keys = _key_processes.popitem()
        try:
            keys.close(grace=1.0)
        except KeyboardInterrupt:  # Ctrl-C at exit: no traceback; the child dies with us (PDEATHSIG)
            continue


atexit.register(_close_key_processes)


@contextlib.contextmanager
def _collector_paused():
    """Python's cyclic garbage collector off while the batch's key opens, and what the process then
    holds frozen (gc.freeze) once it is open. The opening imports pyHanko and its dependencies
    (hundreds of thousands of objects, none of them garbage that matters): with the collector on,
    the full collections they trigger walk all of them, during the opening and again at the first
    signature (~60 ms of CPU), and every later full collection of the batch would walk them again.
    The batch process forked its workers before (pipelines/batch.py freezes what they inherit
    too); nothing forks while the opening holds the signer's lock. Whatever little cyclic garbage
    the imports left is kept for the batch's lifetime."""
    import gc

    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


def _child_of_mine(pid: int) -> bool:
    """Whether PID is a process this one forked (a batch worker)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rpartition(b")")[2].split()
        return int(fields[1]) == os.getpid()
    except (OSError, ValueError, IndexError):
        return False


class RemoteSigner:
    """A batch worker's signer: the batch's SigningService signs (see there); duck-typed as Signer.
    It waits at most three ``[sign] timeout``s for an answer (the key's opening, the signer's
    lock, the signature), then gives up on that file (the batch has stopped by then)."""

    validate_unsigned = False  # as Signer's: set by SigningService.remote

    def __init__(self, address: str, authkey: bytes, visible: bool, timeout: float = 120.0):
        self.address, self._authkey, self.visible, self.timeout = address, authkey, visible, timeout
        self._conn = None
        self.slots = None  # the batch's CPU slots (a semaphore): given back while waiting for the signature

    def _connect(self):
        from multiprocessing.connection import Client, answer_challenge, deliver_challenge

        conn = Client(self.address, "AF_UNIX")
        try:
            bounded = _Bounded(conn, min(HANDSHAKE_TIMEOUT, self.timeout))
            answer_challenge(bounded, self._authkey)
            deliver_challenge(bounded, self._authkey)
        except BaseException:
            conn.close()
            raise
        return conn

    def sign(self, source: Path, target: Path, top_band: Any = None) -> SignatureRecord:
        from multiprocessing import AuthenticationError

        if self.slots is not None:
            self.slots.release()  # another worker converts while this one waits
        try:
            if self._conn is None:
                self._conn = self._connect()
            for frame in _encode_request(source, target, top_band):
                self._conn.send_bytes(frame)
            if not self._conn.poll(3 * self.timeout):
                raise TimeoutError
            status, value = _decode_answer(self._conn.recv_bytes(MAX_HEADER))
        except (OSError, EOFError, AuthenticationError) as e:  # TimeoutError is an OSError
            self._drop()
            what = "did not answer" if isinstance(e, (TimeoutError, EOFError)) else \
                "refused this worker" if isinstance(e, AuthenticationError) else f"is unreachable ({e.strerror or e})"
            raise SignerUnavailableError(f"the batch's signer {what}: the file waits") from None
        except Exception as e:  # noqa: BLE001 - an answer that cannot be read
            self._drop()
            raise SigningError(f"the batch's signer gave an unreadable answer ({type(e).__name__})") from None
        finally:
            if self.slots is not None:
                self.slots.acquire()
        if status != "ok":
            raise value
        return value

    def _drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(OSError):
                self._conn.close()
        self._conn = None


_services: list[SigningService] = []  # this process's (or, in a forked child, its parent's) services


def _wipe(secret: bytes) -> None:
    """Overwrite a bytes object's contents in place (CPython's layout: the data start at
    ``bytes.__basicsize__ - 1``): every reference to it, in this process only (a forked child's
    pages are its own copies), then holds zeros."""
    import ctypes

    if type(secret) is bytes and secret:
        ctypes.memset(id(secret) + bytes.__basicsize__ - 1, 0, len(secret))


def _close_inherited_listeners() -> None:
    """In a forked child: the batch's listening sockets, copied with the fork, closed here (the fd only:
    the batch's socket file stays), so that only the batch accepts its workers' connections."""
    for service in _services:
        if service._owner != os.getpid():
            with contextlib.suppress(Exception):
                service._listener._listener._socket.close()
            if service._keys is not None:  # the key process's end too: only the batch's signer talks to it
                service._keys.forget()
    for keys in _key_processes.values():
        keys.forget()


def use_service(remote: RemoteSigner | None) -> None:
    """In a batch worker: sign through the batch's SigningService (signer_for returns ``remote``).
    The service's listening socket, inherited with the fork, is closed here: only the batch accepts."""
    global _remote
    if remote is not None:
        from .pageworkers import undumpable

        undumpable()  # its page workers and tools cannot copy its authenticated connection
    _remote = remote
    _close_inherited_listeners()


def forget_service() -> None:
    """In a page worker, before any page: it never signs, so it keeps nothing that reaches the
    batch's signer. The connection it inherited from its batch worker is closed, and the authkey
    (one object, shared by the worker's RemoteSigner and the batch's SigningService copied with the
    forks) is overwritten in this process's memory. The signers it inherited (a PKCS#12 key: the
    private key itself) and the PIN in the settings they and the services hold are dropped too: a
    process that decodes untrusted images keeps no key and no PIN (review r2sign13)."""
    global _remote
    remote, _remote = _remote, None
    keys = [service.authkey for service in _services]
    if remote is not None:
        remote._drop()
        keys.append(remote._authkey)
    _close_inherited_listeners()
    for key in keys:
        _wipe(key)
    for cfg in [signer.cfg for signer in _signers.values()] + [service.settings.sign for service in _services]:
        cfg.pin = ""  # this process's copy of the settings (the parent's own is untouched)
    for signer in list(_living):  # a key that wants its PIN at each signature holds it for pyHanko
        kwargs = getattr(getattr(signer, "_signer", None), "_sign_kwargs", None)
        if isinstance(kwargs, dict):  # (a signer still referenced here, by a run's frame, survives the clear below)
            kwargs.clear()
    _signers.clear()  # not closed: a token's session is the parent's, and a PKCS#12 key needs no closing
    _refused.clear()
