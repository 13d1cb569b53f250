"""Opening a signing key for pyHanko: a PKCS#12 file (cryptography) or a PKCS#11 token session
(python-pkcs11), and turning their failures into one-line errors: PIN problems are the user's to fix
(SigningError), a token gone or not answering means "try again later" (SignerUnavailableError).

Each opener returns pyHanko's signer and a ``close(reset=False)``; ``reset`` also finalizes the
PKCS#11 library, so that a token plugged back in is found again.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from pathlib import Path
from typing import Any

from . import lazyimports
from .config import SignSettings
from .errors import ConfigError, SignerUnavailableError, SigningError

lazyimports.install()  # before any pyHanko import: its unused eager imports deferred
log = logging.getLogger("digitize")


def x509_to_asn1(cert) -> Any:
    from asn1crypto import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    return x509.Certificate.load(cert.public_bytes(Encoding.DER))


def open_pkcs12(cfg: SignSettings, pin: str | None):
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
    chain = [x509_to_asn1(c) for c in extra or []]
    signing_cert = x509_to_asn1(cert)
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

    class KeptKeySigner(prepared_signer_class(SimpleSigner)):
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


@functools.lru_cache(maxsize=None)
def prepared_signer_class(base: type) -> type:
    """pyHanko's signer class ``base``, with the CMS parts that repeat built once.

    asn1crypto encodes a structure built in memory again every time its bytes are asked for, and a
    level asks its children up to three times, so the cost grows with the depth: pyHanko's signed
    attributes (the signing-certificate-v2 attribute nests the issuer's name six levels down) and
    SignerInfo cost ~20 ms of CPU per signature, against ~1 ms for the RSA operation. Here the
    signing-certificate-v2 attribute, which depends on the certificate only, is made once per signer,
    and the signed attributes and the SignerInfo are handed on re-read from their own DER, so they
    are encoded once. pyHanko still assembles the CMS: its bytes are the same (tests compare them)."""
    from asn1crypto import cms
    from pyhanko.sign import attributes
    from pyhanko.sign.general import as_signing_certificate_v2, simple_cms_attribute

    class FixedAttribute(attributes.CMSAttributeProvider):
        def __init__(self, attribute: cms.CMSAttribute):
            self.attribute_type = attribute["type"].native
            self._attribute = attribute

        async def get_attribute(self, dry_run=False) -> cms.CMSAttribute:
            return self._attribute

    class CertificateAttributeOnce(attributes.SignedAttributeProviderSpec):
        """pyHanko's own spec, with its signing-certificate-v2 provider for our certificate swapped
        for the attribute made once."""

        def __init__(self, spec, cert, fixed: FixedAttribute):
            self._spec, self._cert, self._fixed = spec, cert, fixed

        def signed_attr_providers(self, data_digest: bytes, digest_algorithm: str):
            for provider in self._spec.signed_attr_providers(data_digest, digest_algorithm):
                if type(provider) is attributes.SigningCertificateV2Provider and provider.signing_cert is self._cert:
                    yield self._fixed
                else:
                    yield provider

    class Prepared(base):
        _certificate_attribute: tuple[Any, FixedAttribute] | None = None

        def certificate_attribute(self) -> FixedAttribute:
            cert = self.signing_cert
            if self._certificate_attribute is None or self._certificate_attribute[0] is not cert:
                attribute = simple_cms_attribute("signing_certificate_v2", as_signing_certificate_v2(cert))
                self._certificate_attribute = (cert, FixedAttribute(cms.CMSAttribute.load(attribute.dump())))
            return self._certificate_attribute[1]

        def _signed_attr_provider_spec(self, *args, **kwargs):
            spec = super()._signed_attr_provider_spec(*args, **kwargs)
            return CertificateAttributeOnce(spec, self.signing_cert, self.certificate_attribute())

        async def signed_attrs(self, *args, **kwargs):
            return cms.CMSAttributes.load((await super().signed_attrs(*args, **kwargs)).dump())

        def signer_info(self, digest_algorithm, signed_attrs, signature):
            return cms.SignerInfo.load(super().signer_info(digest_algorithm, signed_attrs, signature).dump())

    Prepared.__name__ = Prepared.__qualname__ = f"Prepared{base.__name__}"
    return Prepared


def prepare_certificate_attribute(signer) -> None:
    """Build a prepared signer's certificate attribute now (see prepared_signer_class)."""
    if hasattr(signer, "certificate_attribute"):
        signer.certificate_attribute()


def is_pin_error(e: Exception) -> bool:
    """Whether the token refused the PIN (wrong, locked, expired): trying it again can lock the token."""
    import pkcs11

    return isinstance(e, (pkcs11.PinIncorrect, pkcs11.PinLocked, pkcs11.PinExpired, pkcs11.PinInvalid,
                          pkcs11.PinLenRange))


def token_error(e: Exception) -> SigningError:
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


def open_pkcs11(cfg: SignSettings, pin: str | None):
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
        raise token_error(e) from None
    try:
        # a key marked CKA_ALWAYS_AUTHENTICATE (a qualified-signature card's) wants the PIN again at
        # each signature (C_Login, context-specific): without it every file was "token unavailable
        # (UserNotLoggedIn)" and waited for ever. The PIN stays in this process's memory, as for a re-login.
        again = {"base_sign_kwargs": {"pin": pin}} if _always_authenticate(session, cfg.key_label or cfg.cert_label) \
            else {}
        signer = prepared_signer_class(p11.PKCS11Signer)(session, cert_label=cfg.cert_label or cfg.key_label,
                                  key_label=cfg.key_label or cfg.cert_label, **again)
        # fetch it now: a wrong label fails here, not on the first file. An ECDSA key signs the digest
        # pyHanko made (CKM_ECDSA): many tokens, SoftHSM2 among them, have no hash-and-sign ECDSA
        # mechanism, and refused every file with "MechanismInvalid"; the signature is the same
        signer.use_raw_mechanism = signer.signing_cert.public_key.algorithm == "ec"
        signer.cert_registry.register_multiple(_token_chain(session, signer.signing_cert))
    except pkcs11.PKCS11Error as e:
        session.close()
        raise token_error(e) from None
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


def _always_authenticate(session, label: str) -> bool:
    """Whether the private key LABEL must be authenticated at every use; False where the token
    does not say (the attribute is optional)."""
    import pkcs11
    from pkcs11 import Attribute, ObjectClass

    try:
        # the query pyHanko finds its signing key with (one key, or pyHanko refuses the label)
        for key in session.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.SIGN: True,
                                        Attribute.LABEL: label}):
            return bool(key[Attribute.ALWAYS_AUTHENTICATE])
    except pkcs11.PKCS11Error:
        return False
    return False


def _token_chain(session, cert) -> list:
    """issuer_chain among the token's certificates; [] (with a warning) when they cannot be read: the
    chain is a help to verifiers, never a reason not to sign."""
    try:
        return issuer_chain(cert, token_certificates(session))
    except Exception as e:  # noqa: BLE001 - a token's odd objects, a PKCS#11 error while listing them
        log.warning("the token's CA certificates could not be read (%s): the signature carries the signer's "
                    "certificate alone", type(e).__name__)
        return []


def token_certificates(session) -> list:
    """Every certificate object on the token (a CA's token holds its CA certificates beside the
    user's); one that does not parse is skipped."""
    from asn1crypto import x509
    from pkcs11 import Attribute, ObjectClass

    found = []
    for obj in session.get_objects({Attribute.CLASS: ObjectClass.CERTIFICATE}):
        try:
            cert = x509.Certificate.load(bytes(obj[Attribute.VALUE]))
            cert.native  # noqa: B018 - parse it whole now, not when the CMS is made
        except Exception:  # noqa: BLE001 - a malformed object on the token is not ours to judge
            continue
        found.append(cert)
    return found


def issuer_chain(cert, candidates: list, depth: int = 8) -> list:
    """``cert``'s issuers among ``candidates``, nearest first, up to a self-signed one. They go into
    the signature's CMS, as a PKCS#12's CA certificates do: a verifier that trusts only the national
    root can then build the path through the CA that issued the officer's certificate (without them
    the signature "does not reach a trust anchor"). Only the chain: other certificates on the token
    are not published in every file."""
    chain, current = [], cert
    for _ in range(depth):
        if current.self_signed != "no":
            break
        issuer = next((c for c in candidates if c.subject == current.issuer and c not in chain and c != current
                       and (current.authority_key_identifier is None or c.key_identifier is None
                            or current.authority_key_identifier == c.key_identifier)), None)
        if issuer is None:
            break
        chain.append(issuer)
        current = issuer
    return chain


def is_pkcs11_error(e: BaseException) -> bool:
    try:
        import pkcs11
    except ImportError:
        return False
    return isinstance(e, pkcs11.PKCS11Error)
