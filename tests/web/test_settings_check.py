"""web/settings_check.py: [web] settings that would make the portal forgeable or its provider spoofable are
one-line config errors (exit 9) before it starts, with the secret masked (review web15 M2, M3, L1)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from digitize.config import Settings
from digitize.errors import ConfigError, ExitCode
from portal_data import digitize_env
from web.app import create_app

GOOD_KEY = "Zq8-vN3xKp7Lw2Rt6Yb9Hc4Md1Fj5Gs0"


def settings_with(tmp_path, **web) -> Settings:
    settings = Settings(data_dir=str(tmp_path / "data"))
    for key, value in web.items():
        setattr(settings.web, key, value)
    return settings


@pytest.mark.parametrize("web, message", [
    ({"secret_key": "changeme"}, "secret_key has 8 characters, fewer than 32"),  # M2: the review's forged cookie
    ({"secret_key": "a" * 40}, "secret_key has only 1 distinct"),
    ({"oidc_issuer": "http://idp.example/x"}, "oidc_issuer must be an https URL"),  # M3
    ({"oidc_issuer": "http://10.0.0.5/realms/p"}, "oidc_issuer must be an https URL"),
    ({"oidc_issuer": "ftp://idp.example/x"}, "oidc_issuer must be an https URL"),
    ({"webhook_urls": "https://hooks.example/T1/B2/c3"}, "webhook_secret is empty"),  # L1
    ({"webhook_urls": "https://hooks.example/x", "webhook_secret": "short"}, "fewer than 32"),
    ({"webhook_urls": "file:///etc/passwd", "webhook_secret": GOOD_KEY}, "not an http\\(s\\) URL"),
    ({"webhook_urls": "https://ok.example/a, ftp://h.example/x", "webhook_secret": GOOD_KEY}, "not an http\\(s\\) URL"),
    ({"token_cache_seconds": 10.5}, "token_cache_seconds must be 0 to 10 "),  # L7: a revoked token lived on
    ({"token_cache_seconds": -1.0}, "token_cache_seconds must be 0 to 10 "),
])
def test_unsafe_web_settings_are_config_errors(tmp_path, web, message):
    with pytest.raises(ConfigError, match=message) as refused:
        create_app(settings_with(tmp_path, **web))
    assert "\n" not in str(refused.value)
    for secret in ("changeme", "short"):
        assert secret not in str(refused.value)


@pytest.mark.parametrize("web", [
    {}, {"secret_key": GOOD_KEY}, {"oidc_issuer": "https://sso.example.gov.vn/realms/province"},
    {"oidc_issuer": "http://127.0.0.1:8081/province"}, {"oidc_issuer": "http://localhost/p"},
    {"oidc_issuer": "http://[::1]:9/p"},
    {"webhook_urls": "https://a.example/hook, http://127.0.0.1:9/h", "webhook_secret": GOOD_KEY},
    {"token_cache_seconds": 10.0}, {"token_cache_seconds": 0.0},
])
def test_safe_web_settings_are_accepted(tmp_path, web):
    create_app(settings_with(tmp_path, **web))


@pytest.mark.parametrize("key, message", [
    ("hunter2-pass", "secret_key has 12 characters"),
    ("  ", "secret_key is set but blank"),  # review web15b M1: from an env file's unfilled template
])
def test_serve_with_a_weak_or_blank_key_exits_9_with_one_masked_line(tmp_path, key, message):
    env = {**digitize_env(tmp_path / "data"), "DIGITIZE_WEB_SECRET_KEY": key}
    done = subprocess.run([sys.executable, "-m", "digitize", "serve", "--port", "9"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == ExitCode.invalid_config == 9, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and message in done.stderr
    assert "hunter2-pass" not in done.stderr + done.stdout


@pytest.mark.parametrize("blank", [" ", "   ", "\t", " \n "])
def test_a_blank_secret_key_never_signs_sessions(tmp_path, blank):
    """Review web15b M1: the check stripped a blank key to "not set" while the portal signed every cookie with
    the blank value itself (a forged admin session answered 200). One function now reads the key for both,
    and a set-but-blank key is a config error (not a silent random key the operator does not know of)."""
    from web.auth import session_secret

    settings = settings_with(tmp_path, secret_key=blank)
    with pytest.raises(ConfigError, match="secret_key is set but blank"):
        create_app(settings)
    with pytest.raises(ConfigError, match="secret_key is set but blank"):
        session_secret(settings)


def test_the_key_that_signs_is_the_key_that_was_checked(tmp_path):
    from web.auth import session_secret

    assert session_secret(settings_with(tmp_path, secret_key=f"  {GOOD_KEY}\n")) == GOOD_KEY


@pytest.mark.parametrize("max_upload_mb, message", [(0, "max_upload_mb must be 1 to"), (-5, "max_upload_mb must be 1"),
                                                    (4096, r"max_upload_mb must be 1 to \[convert\] max_input_mb \(2048\)")])
def test_the_desk_upload_cap_is_checked_at_start(tmp_path, max_upload_mb, message):
    """Review rev17desk L3: 0 refused every upload as "larger than 0 MB"; over [convert] max_input_mb an upload
    was kept whole, then refused by its job as too large."""
    with pytest.raises(ConfigError, match=message):
        create_app(settings_with(tmp_path, max_upload_mb=max_upload_mb))


def test_a_failed_folder_others_may_write_or_a_link_is_refused_at_start(tmp_path):
    """Review rev17desk L3: nothing checked the failed/ folder the desk takes scans out of, though watch checks
    it for itself (this account's or root's, no group/other write)."""
    import os

    settings = settings_with(tmp_path)
    inbox = tmp_path / "inbox"
    settings.watch.inbox = str(inbox)
    create_app(settings)  # no failed/ yet: the watcher makes it
    (inbox / "failed").mkdir(parents=True)
    create_app(settings)
    os.chmod(inbox / "failed", 0o777)
    with pytest.raises(ConfigError, match="writable by other accounts"):
        create_app(settings)
    os.chmod(inbox / "failed", 0o755)
    (tmp_path / "elsewhere").mkdir()
    settings.watch.failed_dir = str(tmp_path / "linked")
    (tmp_path / "linked").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ConfigError, match="symlink is never followed"):
        create_app(settings)
