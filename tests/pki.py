"""A throw-away test PKI for signing tests: keys made here, certificates issued by certomancer, whose
animator serves a real RFC 3161 timestamp authority and OCSP responder on loopback; PKCS#12 files
(OpenSSL-compatible, made with cryptography) and SoftHSM2 tokens (softhsm2-util + pkcs11-tool).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography import x509

ARCH = "digitize-test"
SOFTHSM_MODULES = ("/usr/lib/softhsm/libsofthsm2.so", "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so")
KEYS = ("root", "tsa", "ocsp", "officer", "agency", "expired")

CONFIG = """\
external-url-prefix: "{prefix}"
keysets:
  keys:
    path-prefix: {keys}
    keys:
{key_lines}
pki-architectures:
  {arch}:
    keyset: keys
    entity-defaults:
      country-name: VN
      organization-name: "Digitize Test CA"
    entities:
      root: {{common-name: "Digitize Test Root CA"}}
      tsa: {{common-name: "Digitize Test TSA"}}
      ocsp: {{common-name: "Digitize Test OCSP"}}
      officer: {{common-name: "Nguyễn Thị Lan"}}
      agency: {{common-name: "UBND xã Hòa Phước"}}
      expired: {{common-name: "Trần Văn Cũ"}}
    certs:
      root:
        subject: root
        issuer: root
        validity: {{valid-from: "2020-01-01T00:00:00+0000", valid-to: "2060-01-01T00:00:00+0000"}}
        extensions:
          - id: basic_constraints
            critical: true
            value: {{ca: true}}
          - id: key_usage
            critical: true
            smart-value: {{schema: key-usage, params: [digital_signature, key_cert_sign, crl_sign]}}
{services}{signers}
    services:
      ocsp:
        root: {{for-issuer: root, responder-cert: ocsp, signing-key: ocsp}}
      time-stamping:
        tsa: {{signing-key: tsa, signing-cert: tsa}}
"""

SERVICE = """\
      {name}:
        issuer: root
        validity: {{valid-from: "2020-01-01T00:00:00+0000", valid-to: "2060-01-01T00:00:00+0000"}}
        extensions:
          - id: key_usage
            critical: true
            smart-value: {{schema: key-usage, params: [digital_signature]}}
          - id: extended_key_usage
            critical: true
            value: [{usage}]
"""

SIGNER = """\
      {name}:
        subject: {name}
        issuer: root
        validity: {{valid-from: "{start}", valid-to: "{end}"}}
        extensions:
          - id: key_usage
            critical: true
            smart-value: {{schema: key-usage, params: [digital_signature, non_repudiation]}}
          - id: authority_information_access
            smart-value: {{schema: aia-urls, params: {{ocsp-responder-names: [root]}}}}
"""


def self_signed(folder: Path, common_name: str, password: str, rsa_bits: int = 0) -> tuple[Path, Path, object]:
    """A self-signed signing certificate (its own trust anchor): PKCS#12 file, certificate PEM, private key.
    EC P-256 (fast) unless ``rsa_bits``."""
    import datetime as dt

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits) if rsa_bits else \
        ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=365))
            .add_extension(x509.KeyUsage(True, True, False, False, False, False, False, False, False), critical=True)
            .sign(key, hashes.SHA256()))
    p12 = folder / "signer.p12"
    p12.write_bytes(pkcs12.serialize_key_and_certificates(b"signer", key, cert, None,
                                                          serialization.BestAvailableEncryption(password.encode())))
    pem = folder / "signer.pem"
    pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return p12, pem, key


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Pki:
    folder: Path
    prefix: str
    process: subprocess.Popen | None = None

    @property
    def tsa_url(self) -> str:
        return f"{self.prefix}/{ARCH}/tsa/tsa"

    @property
    def root_pem(self) -> Path:
        return self.folder / "root.cert.pem"

    def cert(self, name: str) -> x509.Certificate:
        return x509.load_pem_x509_certificate((self.folder / f"{name}.cert.pem").read_bytes())

    def key(self, name: str):
        return serialization.load_pem_private_key((self.folder / "keys" / f"{name}.key.pem").read_bytes(), None)

    def pkcs12(self, name: str, password: str) -> Path:
        """The signer's key, certificate and the root, as an agency would get them from its CA."""
        path = self.folder / f"{name}.p12"
        path.write_bytes(pkcs12.serialize_key_and_certificates(
            name.encode(), self.key(name), self.cert(name), [self.cert("root")],
            serialization.BestAvailableEncryption(password.encode())))
        return path

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _certomancer(config: Path, *args: str, **kw) -> list[str]:
    return [sys.executable, "-m", "certomancer", "--config", str(config), *args]


def start_pki(folder: Path) -> Pki:
    """Keys, certificates (officer and agency valid now, one expired) and the animator on a free port."""
    keys = folder / "keys"
    keys.mkdir(parents=True)
    for name in KEYS:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        (keys / f"{name}.key.pem").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    port = free_port()
    prefix = f"http://127.0.0.1:{port}"
    signers = "".join([
        SIGNER.format(name="officer", start="2024-01-01T00:00:00+0000", end="2050-01-01T00:00:00+0000"),
        SIGNER.format(name="agency", start="2024-01-01T00:00:00+0000", end="2050-01-01T00:00:00+0000"),
        SIGNER.format(name="expired", start="2020-01-01T00:00:00+0000", end="2021-01-01T00:00:00+0000"),
    ])
    key_lines = "".join(f"      {n}: {{path: {n}.key.pem}}\n" for n in KEYS)
    config = folder / "certomancer.yml"
    services = (SERVICE.format(name="tsa", usage="time_stamping")
                + SERVICE.format(name="ocsp", usage="ocsp_signing") + "          - id: ocsp_no_check\n")
    config.write_text(CONFIG.format(prefix=prefix, keys=keys, key_lines=key_lines, arch=ARCH, signers=signers,
                                    services=services), encoding="utf-8")
    subprocess.run(_certomancer(config, "mass-summon", "--flat", "--no-pfx", ARCH, str(folder)), check=True,
                   capture_output=True, cwd=folder)
    for name in ("root", "officer", "agency", "expired", "tsa", "ocsp"):
        found = folder / f"{name}.cert.pem"
        if not found.is_file():
            raise RuntimeError(f"certomancer did not write {found}: {sorted(p.name for p in folder.iterdir())}")
    pki = Pki(folder, prefix)
    log = open(folder / "animator.log", "wb")
    pki.process = subprocess.Popen(_certomancer(config, "animate", "--port", str(port), "--no-web-ui"),
                                   stdout=log, stderr=subprocess.STDOUT, cwd=folder, start_new_session=True)
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"{prefix}/{ARCH}/certs/root/ca.crt", timeout=2).read()
            break
        except urllib.error.HTTPError:
            break  # it answers
        except OSError:
            if pki.process.poll() is not None or time.monotonic() > deadline:
                pki.stop()
                raise RuntimeError(f"certomancer animator did not start: {(folder / 'animator.log').read_text()}")
            time.sleep(0.2)
    print(f"[pki] certomancer animator (TSA + OCSP) on {prefix}, pid {pki.process.pid}", file=sys.stderr)
    return pki


def softhsm_module() -> str:
    for path in SOFTHSM_MODULES:
        if os.path.isfile(path):
            return path
    raise RuntimeError("SoftHSM2 is not installed (apt-get install softhsm2)")


@dataclass
class SoftToken:
    conf: Path
    module: str
    label: str
    pin: str
    key_label: str

    def env(self) -> dict[str, str]:
        return {"SOFTHSM2_CONF": str(self.conf)}


def _new_token(folder: Path, label: str, pin: str):
    """An empty SoftHSM2 token LABEL in FOLDER: its config file, and a runner for tools with it."""
    tokens = folder / "tokens"
    tokens.mkdir(parents=True, exist_ok=True)
    conf = folder / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n")
    env = {**os.environ, "SOFTHSM2_CONF": str(conf)}
    run = lambda *args: subprocess.run(args, check=True, capture_output=True, env=env)  # noqa: E731
    run("softhsm2-util", "--init-token", "--free", "--label", label, "--so-pin", "0000" + pin, "--pin", pin)
    return conf, run


def make_token(folder: Path, pki: Pki | None, signer: str, label: str = "digitize", pin: str = "123456",
               key_and_cert: tuple[object, x509.Certificate] | None = None,
               ca_certs: tuple[x509.Certificate, ...] = ()) -> SoftToken:
    """A SoftHSM2 token in FOLDER holding SIGNER's private key and certificate under the label SIGNER
    (the test PKI's, or ``key_and_cert``: a cryptography private key, e.g. EC, and its certificate),
    and ``ca_certs`` beside them, as a CA's token holds its own certificates."""
    conf, run = _new_token(folder, label, pin)
    if key_and_cert is None:
        key_pem, cert = pki.folder / "keys" / f"{signer}.key.pem", pki.cert(signer)
    else:
        key_pem, cert = folder / f"{signer}.key.pem", key_and_cert[1]
        key_pem.write_bytes(key_and_cert[0].private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                          serialization.NoEncryption()))
    run("softhsm2-util", "--import", str(key_pem), "--token", label, "--label", signer, "--id", "01", "--pin", pin)
    der = folder / f"{signer}.cert.der"
    der.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    module = softhsm_module()
    run("pkcs11-tool", "--module", module, "--token-label", label, "--login", "--pin", pin,
        "--write-object", str(der), "--type", "cert", "--label", signer, "--id", "01")
    for n, ca in enumerate(ca_certs, start=2):
        ca_der = folder / f"ca{n}.cert.der"
        ca_der.write_bytes(ca.public_bytes(serialization.Encoding.DER))
        run("pkcs11-tool", "--module", module, "--token-label", label, "--login", "--pin", pin,
            "--write-object", str(ca_der), "--type", "cert", "--label", f"CA {n}", "--id", f"{n:02d}")
    return SoftToken(conf, module, label, pin, signer)


def issued_chain(common_name: str) -> tuple[object, x509.Certificate, x509.Certificate, x509.Certificate]:
    """A root CA -> issuing CA -> signer chain, as Vietnam's national root -> a licensed CA -> an
    officer: (signer's key, signer's certificate, issuing CA's certificate, root's certificate)."""
    import datetime as dt

    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.timezone.utc)

    def issue(cn: str, key, issuer: x509.Certificate | None, issuer_key, ca: bool) -> x509.Certificate:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
        builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer.subject if issuer else name)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=365))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
                   .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                   .add_extension(x509.KeyUsage(True, not ca, False, False, False, ca, ca, False, False), critical=True))
        if issuer is not None:
            builder = builder.add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
        return builder.sign(issuer_key or key, hashes.SHA256())

    root_key, ca_key, key = (rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(3))
    root = issue("Test National Root CA", root_key, None, None, True)
    ca = issue("Test Licensed CA", ca_key, root, root_key, True)
    return key, issue(common_name, key, ca, ca_key, False), ca, root


def make_always_auth_token(folder: Path, common_name: str, label: str = "qscd", pin: str = "123456") -> tuple[SoftToken, Path]:
    """A SoftHSM2 token whose RSA key, made on the token, is marked CKA_ALWAYS_AUTHENTICATE (as a
    qualified-signature card's is: the PIN again at every signature), with a certificate for it from a
    throw-away CA: the token and the CA's certificate (PEM), the signature's trust anchor."""
    import datetime as dt

    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    conf, run = _new_token(folder, label, pin)
    module = softhsm_module()
    run("pkcs11-tool", "--module", module, "--token-label", label, "--login", "--pin", pin, "--keypairgen",
        "--key-type", "rsa:2048", "--label", "signer", "--id", "01", "--always-auth")
    pub = folder / "pub.der"
    run("pkcs11-tool", "--module", module, "--token-label", label, "--read-object", "--type", "pubkey", "--id", "01",
        "-o", str(pub))
    now = dt.datetime.now(dt.timezone.utc)
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test QSCD CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(1).not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=365))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(ca_key, hashes.SHA256()))
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(ca_name).public_key(serialization.load_der_public_key(pub.read_bytes()))
            .serial_number(2).not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=365))
            .add_extension(x509.KeyUsage(True, True, False, False, False, False, False, False, False), critical=True)
            .sign(ca_key, hashes.SHA256()))
    der = folder / "signer.cert.der"
    der.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    run("pkcs11-tool", "--module", module, "--token-label", label, "--login", "--pin", pin,
        "--write-object", str(der), "--type", "cert", "--label", "signer", "--id", "01")
    ca_pem = folder / "ca.pem"
    ca_pem.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    return SoftToken(conf, module, label, pin, "signer"), ca_pem
