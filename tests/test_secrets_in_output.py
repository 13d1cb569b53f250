"""Failing runs with real-looking secrets in the config file and the environment: no output shows any of them.

Every command runs as its own ``digitize`` process, as an operator would run it; stdout, stderr and the
JSON log lines are searched for each secret, raw and URL-encoded.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
CASE = "000.00.31.H56-241015-0027"
SECRETS = {"access": "AKIAIOSFODNN7EXAMPLE", "secret": "wJalrXUtnFEMI-K7MDENG-bPxRfiCY", "pg": "Pg-Pa55w0rd-77",
           "ssl": "Ssl-KeyPass-42", "sslkey": "/etc/digitize/client-key-7f3a.pem"}


def digitize(tmp_path: Path, *args: str, env_extra: dict[str, str], toml: str = "") -> str:
    config = tmp_path / "digitize.toml"
    config.write_text(toml, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGITIZE_")}
    env.update(PYTHONPATH=str(ROOT), DIGITIZE_CONFIG=str(config), DIGITIZE_DATA_DIR=str(tmp_path / "data"),
               DIGITIZE_STORE_RETRIES="1", DIGITIZE_VALIDATOR_DIR=os.environ.get("DIGITIZE_VALIDATOR_DIR", ""),
               **env_extra)
    run = subprocess.run([sys.executable, "-m", "digitize", *args], env=env, cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)
    return f"exit {run.returncode}\n{run.stdout}\n{run.stderr}"


S3_TOML = f"""[store]
url = "s3://{SECRETS['access']}:{SECRETS['secret']}@127.0.0.1:1/bucket"
access_key = "{SECRETS['access']}"
secret_key = "{SECRETS['secret']}"
"""
PG_DSN = (f"postgresql://clerk:{SECRETS['pg']}@127.0.0.1:1/records"
          f"?sslpassword={SECRETS['ssl']}&sslkey={SECRETS['sslkey']}&connect_timeout=2")

RUNS = {
    "config show": (("config", "show"), {"DIGITIZE_INDEX_DSN": PG_DSN}, S3_TOML),
    "wrong DSN scheme": (("show", CASE), {"DIGITIZE_INDEX_DSN": PG_DSN.replace("postgresql", "mysql")}, ""),
    "wrong DSN scheme, keywords": (("show", CASE), {"DIGITIZE_INDEX_DSN": f"host=db password={SECRETS['pg']}"}, ""),
    "wrong store scheme": (("verify", "--all"), {"DIGITIZE_STORE_URL": f"ftp://u:{SECRETS['secret']}@h/x"}, ""),
    "index unreachable": (("-v", "-v", "show", CASE), {"DIGITIZE_INDEX_DSN": PG_DSN}, ""),
    "store unreachable": (("-v", "-v", "verify", "--all"), {}, S3_TOML),
    "watch, store unreachable": (("-v", "watch", "INBOX", "--once", "--log-json"),
                                 {"DIGITIZE_INDEX_DSN": PG_DSN, "DIGITIZE_WATCH_STABLE_SECONDS": "0"}, S3_TOML),
}


@pytest.mark.parametrize("name", RUNS)
def test_no_secret_in_any_output_of_a_failing_run(tmp_path, name):
    args, env, toml = RUNS[name]
    (tmp_path / "INBOX").mkdir()
    Image.new("L", (200, 100), 255).save(tmp_path / "INBOX" / "scan.png", dpi=(200, 200))
    output = digitize(tmp_path, *args, env_extra=env, toml=toml)
    assert output.strip(), name
    for secret in SECRETS.values():
        for form in {secret, quote(secret, safe=""), quote(secret)}:
            assert form not in output, f"{name}: {form!r} in\n{output}"
    if name != "config show":
        assert not output.startswith("exit 0"), output
    assert "Traceback" not in output or name.startswith(("index", "store")), output


CHILD_SECRETS = {"DIGITIZE_QUEUE_SECRET": "q-7Kd92mZpX4vLr8Tn3Bw6Yc1Hs5Fj0Ag", "DIGITIZE_STORE_LINK_SECRET":
                 "l-Vb3Nq8Wz1Xc6Mk2Pr9Ts4Ly7Hd0Gf5J", "DIGITIZE_STORE_SECRET_KEY": SECRETS["secret"],
                 "DIGITIZE_WEB_WEBHOOK_SECRET": "w-Ha8Jq3Lz6Nx1Pc4Rv7Tb0Kd2Mf5Sg9Y", "DIGITIZE_INDEX_DSN": PG_DSN}


def test_no_child_process_inherits_a_secret_variable(tmp_path):
    """Tesseract (here the command, through a stand-in on PATH that records its environment) parses what
    scanning staff feed it: no secret the settings read from the environment may reach it."""
    tesseract = __import__("shutil").which("tesseract")
    if tesseract is None:
        pytest.skip("tesseract not installed")
    bin_dir, dump = tmp_path / "bin", tmp_path / "child-env"
    bin_dir.mkdir()
    fake = bin_dir / "tesseract"
    fake.write_text(f"#!/bin/sh\nenv >> {dump}\nexec {tesseract} \"$@\"\n", encoding="utf-8")
    fake.chmod(0o755)
    Image.new("L", (400, 200), 255).save(tmp_path / "scan.png", dpi=(200, 200))
    output = digitize(tmp_path, "run", "scan.png", "out.pdf", "--no-validate", "--no-sign",
                      env_extra={**CHILD_SECRETS, "PATH": f"{bin_dir}:{os.environ['PATH']}",
                                 "DIGITIZE_LIBTESSERACT": "off", "DIGITIZE_CONVERTER_RESIDENT": "false"})
    assert dump.is_file(), f"the stand-in tesseract never ran:\n{output}"
    seen = dump.read_text(encoding="utf-8")
    for name, value in CHILD_SECRETS.items():
        assert name not in seen and value not in seen, name


def test_tools_parsing_untrusted_files_get_no_secret_of_other_programs(tmp_path, monkeypatch):
    """pdftotext and veraPDF run without PGPASSWORD, AWS_* and the like, which libraries here may still read."""
    from digitize import poppler

    seen = {}

    popen = subprocess.Popen

    def fake_popen(args, **kwargs):
        seen.update(kwargs.get("env") or os.environ)
        return popen(["/bin/false"], **kwargs)

    monkeypatch.setenv("PGPASSWORD", "Pg-Pa55w0rd-77")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRETS["secret"])
    monkeypatch.setattr(poppler, "_require", lambda tool: "/bin/true")
    monkeypatch.setattr(poppler.subprocess, "Popen", fake_popen)
    assert poppler.page_words(tmp_path / "x.pdf", 0, 200) is None
    assert seen and "PGPASSWORD" not in seen and "AWS_SECRET_ACCESS_KEY" not in seen and "PATH" in seen
