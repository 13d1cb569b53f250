"""Which variables are secrets: what resident servers and handed-over runs are never given."""

from __future__ import annotations

import pytest

from digitize import config, secrets


@pytest.mark.parametrize("name", ["DIGITIZE_STORE_SECRET_KEY", "DIGITIZE_STORE_ACCESS_KEY", "DIGITIZE_STORE_URL",
                                  "DIGITIZE_INDEX_DSN", "PGPASSWORD", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                                  "MINIO_ROOT_PASSWORD", "DATABASE_URL", "DIGITIZE_SIGN_PIN"])
def test_secret_variables(name) -> None:
    assert secrets.is_secret_env(name)


@pytest.mark.parametrize("name", ["PATH", "HOME", "TMPDIR", "LANG", "TESSDATA_PREFIX", "OMP_THREAD_LIMIT",
                                  "DIGITIZE_CACHE", "DIGITIZE_VALIDATOR_DIR", "DIGITIZE_CONVERT_LANGUAGE",
                                  "DIGITIZE_CONFIG", "XDG_RUNTIME_DIR"])
def test_what_a_run_needs_is_not_a_secret(name) -> None:
    assert not secrets.is_secret_env(name)


def test_every_setting_config_calls_secret_is_one() -> None:
    for section in ("store", "index"):
        for key in vars(getattr(config.Settings(), section)):
            if key in config.SECRET_KEYS:
                assert secrets.is_secret_key(section, key), (section, key)
                assert f"DIGITIZE_{section}_{key}".upper() in secrets.secret_env_names()
    assert secrets.is_secret_key("index", "dsn") and secrets.is_secret_key("store", "url")
    assert not secrets.is_secret_key("convert", "language")
