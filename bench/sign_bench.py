#!/usr/bin/env python3
"""Signing benchmark (on demand, not in CI): signatures per minute and the share of a page's time it adds.

1. Signatures/min: one Signer per key (opened once, as in a worker), signing the same one-page PDF/A
   N times (PAdES B-B, visible mark), with a PKCS#12 (RSA-2048) and with a SoftHSM2 token
   (RSA-2048 through python-pkcs11). A fresh self-signed certificate and token are made in a temp dir.
2. Share of a page's time: ``convert_file`` on a generated A4 page at 300 dpi (Vietnamese text), with
   no signer, with the PKCS#12 and with the token, alternating, R rounds each: the signature's time
   over the signed run's total (veraPDF checks once either way: the signed file, when signing). The
   first round of each (imports, font subset, validator start) is not counted.

    .venv/bin/python bench/sign_bench.py                  # ~1-2 min; table on stdout
    .venv/bin/python bench/sign_bench.py --signatures 50 --rounds 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

PIN = "123456"


def make_key(folder: Path):
    """A self-signed RSA-2048 signing certificate: key PEM, PKCS#12 and certificate DER."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from pki import self_signed

    p12, cert_pem, key = self_signed(folder, "Nguyễn Thị Lan", PIN, rsa_bits=2048)
    pem = folder / "key.pem"
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    der = folder / "cert.der"
    der.write_bytes(x509.load_pem_x509_certificate(cert_pem.read_bytes()).public_bytes(serialization.Encoding.DER))
    return pem, p12, der


def make_token(folder: Path, pem: Path, der: Path) -> tuple[str, Path]:
    from pki import softhsm_module

    conf = folder / "softhsm2.conf"
    (folder / "tokens").mkdir()
    conf.write_text(f"directories.tokendir = {folder / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n")
    env = {**os.environ, "SOFTHSM2_CONF": str(conf)}
    module = softhsm_module()
    for args in (["softhsm2-util", "--init-token", "--free", "--label", "bench", "--so-pin", "00" + PIN, "--pin", PIN],
                 ["softhsm2-util", "--import", str(pem), "--token", "bench", "--label", "signer", "--id", "01",
                  "--pin", PIN],
                 ["pkcs11-tool", "--module", module, "--token-label", "bench", "--login", "--pin", PIN,
                  "--write-object", str(der), "--type", "cert", "--label", "signer", "--id", "01"]):
        subprocess.run(args, check=True, capture_output=True, env=env)
    os.environ["SOFTHSM2_CONF"] = str(conf)
    return module, conf


def make_page(folder: Path) -> Path:
    from PIL import Image

    from pages import render_text_page

    path = folder / "page.png"
    Image.fromarray(render_text_page(size=(2480, 3508), font_px=80, margin=180)).save(path, dpi=(300, 300))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--signatures", type=int, default=30, help="signatures per key for the rate")
    parser.add_argument("--rounds", type=int, default=3, help="page conversions per variant (after a warm-up)")
    args = parser.parse_args()

    from digitize import signing
    from digitize.config import SignSettings
    from digitize.convert import ConvertOptions, convert_file

    with tempfile.TemporaryDirectory(prefix="sign-bench-") as tmp_name:
        tmp = Path(tmp_name)
        os.environ.setdefault("DIGITIZE_VALIDATOR_DIR", str(tmp / "run"))
        pem, p12, der = make_key(tmp)
        module, _ = make_token(tmp, pem, der)
        keys = {
            "PKCS#12": SignSettings(pkcs12=str(p12), pin=PIN),
            "SoftHSM2": SignSettings(pkcs11_module=module, token_label="bench", key_label="signer", pin=PIN),
        }
        signers = {name: signing.Signer(cfg, cfg.pin) for name, cfg in keys.items()}
        page = make_page(tmp)
        opts = ConvertOptions(language="vie", jobs=1)
        plain = tmp / "plain.pdf"
        convert_file(page, plain, opts)

        rates = {}
        for name, signer in signers.items():
            signer.sign(plain, tmp / "warm.pdf")
            t = time.perf_counter()
            for _ in range(args.signatures):
                signer.sign(plain, tmp / "signed.pdf")
            rates[name] = args.signatures / (time.perf_counter() - t) * 60

        variants = {"unsigned": None, **signers}
        totals: dict[str, list[float]] = {v: [] for v in variants}
        adds: dict[str, list[float]] = {v: [] for v in variants}
        checks: dict[str, list[float]] = {v: [] for v in variants}
        for round_no in range(args.rounds + 1):
            for name, signer in variants.items():
                doc = convert_file(page, tmp / f"out-{round_no}.pdf", opts, signer=signer)
                if round_no == 0:
                    continue  # warm-up
                totals[name].append(doc.timings["total"])
                adds[name].append(doc.timings.get("sign", 0.0))
                checks[name].append(doc.timings.get("validate", 0.0))
        for signer in signers.values():
            signer.close()

    base = statistics.median(totals["unsigned"])
    load = os.getloadavg()[0]
    print(f"\n1-minute load average at the end: {load:.2f} (2 cores; other jobs were running)\n")
    check_base = statistics.median(checks["unsigned"])
    print("| key | signatures/min (one open signer) | page s, unsigned | page s, signed | signing s | "
          "veraPDF s (unsigned / signed file) | share of page time |")
    print("|---|---|---|---|---|---|---|")
    for name in signers:
        total, added = statistics.median(totals[name]), statistics.median(adds[name])
        print(f"| {name} | {rates[name]:.0f} | {base:.2f} | {total:.2f} | {added:.3f} | "
              f"{check_base:.2f} / {statistics.median(checks[name]):.2f} | {added / total * 100:.1f} % |")


if __name__ == "__main__":
    main()
