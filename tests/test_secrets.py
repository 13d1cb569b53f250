"""The one masking function: every credential form it must hide, and the names it must call secret."""

from __future__ import annotations

import json
import logging

import pytest

from digitize import config, secrets


@pytest.fixture(autouse=True)
def clean_memory():
    secrets.forget_all()
    yield
    secrets.forget_all()


@pytest.mark.parametrize("name", ["password", "PASSWORD", "sslpassword", "sslkey", "secret_key", "access_key",
                                  "DIGITIZE_STORE_SECRET_KEY", "DIGITIZE_STORE_ACCESS_KEY", "AWS_ACCESS_KEY_ID",
                                  "X-Amz-Signature", "X-Amz-Credential", "X-Amz-Security-Token", "api_key", "token",
                                  "GITHUB_TOKEN", "PGPASSWORD", "oidc_client_secret", "private_key", "pin",
                                  "DIGITIZE_SIGN_PIN"])
def test_secret_names(name):
    assert secrets.is_secret_key(name)


@pytest.mark.parametrize("name", ["dsn", "url", "host", "user", "language", "source_pages", "sslmode", "sslcert",
                                  "DIGITIZE_DATA_DIR", "DIGITIZE_INDEX_DSN", "passfile_dir_x", "doc_id", "pages",
                                  "token_label", "key_label", "pin_file", "DIGITIZE_SIGN_PKCS12"])
def test_ordinary_names(name):
    assert not secrets.is_secret_key(name)


@pytest.mark.parametrize("text, hidden", [
    ("postgresql://clerk:pa55w0rd@db:5432/records", "pa55w0rd"),
    ("postgresql://clerk:p%40ss%2Fw@[::1]:5432/records", "p%40ss%2Fw"),
    ("mysql://u:hunter2@h/db", "hunter2"),
    ("s3://AKIAEXAMPLE:wJalrXUtnFEMI@minio:9000/bucket", "wJalrXUtnFEMI"),
    ("postgresql://db/records?user=clerk&password=hunter2&sslmode=require", "hunter2"),
    ("postgresql://db/records?sslpassword=keypass1&sslkey=/etc/k/client.key", "keypass1"),
    ("postgresql://db/records?sslpassword=keypass1&sslkey=/etc/k/client.key", "/etc/k/client.key"),
    ("host=db dbname=records user=clerk password='two words' sslmode=require", "two words"),
    ("host=db password=hunter2", "hunter2"),
    ("https://minio/b/k?X-Amz-Credential=AKIA%2F2024&X-Amz-Signature=abcdef0123", "abcdef0123"),
    ('{"secret_key": "s3cr3t-value", "region": "vn"}', "s3cr3t-value"),
    ('secret_key = "s3cr3t-value"', "s3cr3t-value"),
    ("DIGITIZE_STORE_SECRET_KEY=s3cr3t-value other=1", "s3cr3t-value"),
    ("Authorization: Bearer-xyz", "Bearer-xyz"),
])
def test_mask_hides_credentials(text, hidden):
    masked = secrets.mask(text)
    assert hidden not in masked and secrets.MASK in masked


@pytest.mark.parametrize("text", ["sqlite:////var/lib/digitize/index.sqlite3", "postgresql://clerk@db:5432/records",
                                  "s3://127.0.0.1:9000/edossiers", "file:///srv/objects",
                                  "case 000.00.31.H56-241015-0027 not found", "postgresql://[::1]:5432/db?sslmode=require"])
def test_mask_leaves_texts_without_credentials_alone(text):
    assert secrets.mask(text) == text


def test_mask_keeps_user_and_host_but_not_an_access_key():
    assert secrets.mask("postgresql://u:p@[::1]:5432/db") == "postgresql://u:***@[::1]:5432/db"
    assert secrets.mask("s3://AKIAEXAMPLE:wJalr@minio:9000/b") == "s3://***:***@minio:9000/b"


def test_remembered_values_are_masked_anywhere():
    secrets.remember("Tr0ub4dor&3")
    assert secrets.mask("psycopg said: auth failed for Tr0ub4dor&3 ...") == "psycopg said: auth failed for *** ..."
    assert "Tr0ub4dor" not in secrets.mask("quoted Tr0ub4dor%263")


def test_loaded_settings_remember_their_secrets(tmp_path):
    toml = tmp_path / "d.toml"
    toml.write_text('[store]\naccess_key = "AKIAEXAMPLE"\nsecret_key = "wJalrXUtnFEMI"\n', encoding="utf-8")
    config.load_settings(toml, env={"DIGITIZE_INDEX_DSN": "postgresql://c@db/r?sslpassword=keypass1"})
    assert secrets.mask("x wJalrXUtnFEMI AKIAEXAMPLE keypass1 y") == "x *** AKIAEXAMPLE *** y"  # a key ID is no secret


def test_config_show_masks_every_secret_setting():
    s = config.Settings()
    s.store.url = "s3://AKIAEXAMPLE:wJalrXUtnFEMI@minio:9000/bucket"
    s.store.secret_key, s.store.access_key = "wJalrXUtnFEMI", "AKIAEXAMPLE"
    s.index.dsn = "postgresql://clerk:pa55w0rd@db/records?sslpassword=keypass1&sslkey=/etc/k/client.key"
    shown = json.dumps(config.settings_as_dict(s))
    for secret in ("wJalrXUtnFEMI", "AKIAEXAMPLE", "pa55w0rd", "keypass1", "/etc/k/client.key"):
        assert secret not in shown


def test_environments_for_other_processes_lose_every_secret_and_every_dsn():
    env = {"DIGITIZE_STORE_SECRET_KEY": "x", "DIGITIZE_INDEX_DSN": "postgresql://h/db", "DIGITIZE_DATA_DIR": "/d",
           "PATH": "/usr/bin", "PGPASSWORD": "pw", "DIGITIZE_STORE_URL": "s3://127.0.0.1:9000/b",
           "DIGITIZE_SIGN_PIN": "1234", "AWS_SECRET_ACCESS_KEY": "k", "DATABASE_URL": "postgres://h/x",
           "CELERY_BROKER": "redis://:hunter2@h:6379/0", "DIGITIZE_CONVERT_JOBS": "2"}
    assert set(secrets.without_secrets(env)) == {"DIGITIZE_DATA_DIR", "PATH", "DIGITIZE_CONVERT_JOBS"}
    assert secrets.secret_env_names(env) == set(env) - {"DIGITIZE_DATA_DIR", "PATH", "DIGITIZE_CONVERT_JOBS"}
    assert "DIGITIZE_INDEX_DSN" in secrets.secret_env_names() and secrets.is_secret_env("DIGITIZE_STORE_URL")


def test_settings_that_hold_or_carry_secrets():
    assert secrets.is_secret_key("store", "secret_key") and secrets.is_secret_key("index", "dsn")
    assert secrets.is_secret_key("sign", "pin") and not secrets.is_secret_key("convert", "language")


def test_masking_filter_masks_message_fields_and_traceback():
    secrets.remember("wJalrXUtnFEMI")
    try:
        raise RuntimeError("boom postgresql://u:hunter2@h/db wJalrXUtnFEMI")
    except RuntimeError:
        record = logging.LogRecord("t", logging.ERROR, __file__, 1, "dsn %s", ("postgresql://u:hunter2@h/db",),
                                   exc_info=__import__("sys").exc_info())
    record.fields = {"dsn": "postgresql://u:hunter2@h/db", "secret_key": "abc"}
    assert secrets.MaskingFilter().filter(record)
    text = logging.Formatter().format(record) + repr(record.fields)
    assert "hunter2" not in text and "wJalrXUtnFEMI" not in text and "abc" not in text and "boom" in text


@pytest.mark.parametrize("name", ["DIGITIZE_STORE_SECRET_KEY", "DIGITIZE_STORE_ACCESS_KEY", "DIGITIZE_STORE_URL",
                                  "DIGITIZE_INDEX_DSN", "PGPASSWORD", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                                  "MINIO_ROOT_PASSWORD", "DATABASE_URL", "DIGITIZE_SIGN_PIN"])
def test_secret_variables_never_travel(name) -> None:
    assert secrets.is_secret_env(name)


@pytest.mark.parametrize("name", ["PATH", "HOME", "TMPDIR", "LANG", "TESSDATA_PREFIX", "OMP_THREAD_LIMIT",
                                  "DIGITIZE_CACHE", "DIGITIZE_VALIDATOR_DIR", "DIGITIZE_CONVERT_LANGUAGE",
                                  "DIGITIZE_CONFIG", "XDG_RUNTIME_DIR"])
def test_what_a_run_needs_travels(name) -> None:
    assert not secrets.is_secret_env(name)


SEPARATED = ["a_b", "a-b", "a.b", "a b", "a\tb", "a\u00a0b", "a\u2003b", "a\x1cb", "a\u3000b", "a__--..  b", "_a_",
             " 'x-Amz-Signature' ", '"PGPASSWORD"', "sslkey.\u2028", "ĐƠN_secret", "", "  ", "_-.", "key\u0085id"]


@pytest.mark.parametrize("name", SEPARATED)
def test_name_words_split_as_the_regular_expression_did(name) -> None:
    """secretnames splits names without `re` (the client of every run must not import it): the same
    words as re.split at [_-.] and whitespace, Unicode whitespace included."""
    import re

    from digitize import secretnames

    expected = tuple(w for w in re.split(r"[_\-.\s]+", name.strip().strip("\"'").lower()) if w)
    assert secretnames._words(name) == expected


@pytest.mark.parametrize("name", ["PGPASSWORD", "DIGITIZE_STORE_URL", "MY_DSN", "X_API_KEY", "session.key", "PATH",
                                  "DIGITIZE_CACHE", "LANG", "token_label", "DIGITIZE_SIGN_PIN", "HOME"])
def test_a_name_alone_is_judged_as_with_an_empty_value(name) -> None:
    """The client of a run strips the environment it hands over by names alone (secretnames)."""
    from digitize import secretnames

    assert secretnames.is_secret_env_name(name) == secrets.is_secret_env(name, "")
    assert secrets.is_secret_env("MY_URL", "postgresql://u:hunter2@h/db")  # a value still counts where known
    assert not secretnames.is_secret_env_name("MY_URL")




@pytest.mark.parametrize("hook, line", [
    ("https://onestop.example/api/v1/events", "GET /api/v1/events?after=5 -> 200; stored /api/v1/events/x"),
    ("https://hooks.example/digitize", "index /var/lib/digitize/index.db; /digitize/x"),
    ("https://hooks.example/webhook-receiver-2024/in", "POST /webhook-receiver-2024/in from /var/lib"),
])
def test_a_webhooks_plain_path_leaves_log_lines_alone(hook, line):
    """Review web15b L2: every webhook path of 8+ characters was registered whole, so `GET /api/v1/events`
    became `GET ***` and /var/lib/digitize/index.db became /var/lib***/index.db in every log line."""
    try:
        config.remember_secrets(config.Settings(web=config.WebSettings(webhook_urls=hook)))
        assert secrets.mask(line) == line
    finally:
        secrets.forget_all()


def test_a_webhooks_token_path_segments_and_query_values_are_masked():
    hook = ("https://hooks.example.vn/services/T0001/B0002/XyZsecretPart42abc, "
            "https://teams.example/webhookb2/3f2b6a9e-8c1d-4e7f-9a0b-1c2d3e4f5a6b/in, "
            "https://motcua.example.vn/in?sig=0a1b2c3d4e5f6789&v=1")
    try:
        config.remember_secrets(config.Settings(web=config.WebSettings(webhook_urls=hook)))
        masked = secrets.mask(f"POST {hook} failed")
        for secret in ("XyZsecretPart42abc", "3f2b6a9e-8c1d-4e7f-9a0b-1c2d3e4f5a6b", "0a1b2c3d4e5f6789"):
            assert secret not in masked
        assert "/services/T0001/B0002/***" in masked and "/webhookb2/***/in" in masked and "/in?sig=***" in masked
    finally:
        secrets.forget_all()


@pytest.mark.parametrize("url, hidden", [
    ("redis://:Tr0ub4dor@3-horse-battery@broker.lan:6379/0", "3-horse-battery"),
    ("s3s://minio:Blue@Horse-Battery-9@minio.lan:9000/", "Horse-Battery-9"),
    ("store URL 's3s://minio:Blue@Horse-Battery-9@minio.lan:9000/' must be s3://host:port/bucket", "Horse-Battery"),
])
def test_a_url_password_with_an_at_sign_is_masked_to_its_last_at(url, hidden):
    """urllib, redis-py and kombu split userinfo at the last @ (review rev17ops M6)."""
    masked = secrets.mask(url)
    assert hidden not in masked and "lan:" in masked and "Blue" not in masked


def test_a_url_user_with_an_at_sign_leaves_no_password_shown():
    """review2 r2ops N9: urllib, redis-py and kombu take "alice@corp" for the user of this URL; the password
    was shown, and not remembered."""
    from urllib.parse import urlsplit

    url = "redis://alice@corp:Queue-Pass-0042@broker.lan:6379/0"
    assert urlsplit(url).password == "Queue-Pass-0042"
    masked = secrets.mask(url)
    assert "Queue-Pass-0042" not in masked and masked == "redis://alice@corp:***@broker.lan:6379/0"
    try:
        secrets.remember_in(url)
        assert secrets.mask("auth failed for Queue-Pass-0042") == "auth failed for ***"
    finally:
        secrets.forget_all()
    assert secrets.mask("mail alice@corp: see http://a@b:8080/x") == "mail alice@corp: see http://a@b:8080/x"


def test_a_url_with_a_port_and_an_at_sign_in_its_path_is_not_taken_for_a_password():
    """review3 r3ops R4: with "@" allowed in the user, "sftp://user@host:22/home/u@x/f" gave user "user@host",
    password "22/home/u", masked and remembered (masked in every later line); urllib's host ends at the "/"."""
    for url in ("sftp://user@host:22/home/u@x/f", "http://a@b:80/c@d", "https://svc@host:8443/hook@v2"):
        assert secrets.mask(url) == url
    try:
        secrets.remember_in("https://svc@host:8443/hook@v2")
        assert secrets.mask("GET 8443/hook") == "GET 8443/hook"
    finally:
        secrets.forget_all()
    masked = secrets.mask("sftp://u@h:22/x@y,redis://alice@corp:Queue-Pass-0042@broker.lan:6379/0")
    assert "Queue-Pass-0042" not in masked and masked.startswith("sftp://u@h:22/x@y,")


def test_a_remembered_url_password_with_an_at_sign_is_masked_anywhere():
    secrets.remember_in("redis://:Tr0ub4dor@3-horse-battery@b:6379/0")
    assert "3-horse-battery" not in secrets.mask("auth failed for Tr0ub4dor@3-horse-battery")


@pytest.mark.parametrize("text, kept", [
    ("postgresql://u:s3cr#et99@db/x and mail a@b.c", "a@b.c"),
    ("redis://:p@ss@h:1/0, retrying", "h:1/0, retrying"),
    ("http://host:8080/path?x=1 then", "http://host:8080/path?x=1 then"),
])
def test_url_masking_keeps_what_follows_the_host(text, kept):
    assert kept in secrets.mask(text)


@pytest.mark.parametrize("header", ["Authorization: Bearer eyJhbGciOiJIUzI1NiJ9abc",
                                    "authorization=Basic eyJhbGciOiJIUzI1NiJ9abc", '"Authorization": "Token eyJhbGci"'])
def test_an_authorization_scheme_word_does_not_let_its_token_through(header):
    """review rev17ops L2: the value was taken up to the first space, "Bearer"."""
    assert "eyJ" not in secrets.mask(header)


def test_the_cli_log_handler_makes_every_record_one_printable_masked_line(capsys):
    """Review rev17ops M1: one sanitiser in the formatter every handler gets, not one per call site."""
    from digitize.cli import _setup_logging

    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        _setup_logging(0)
        secrets.remember("Sup3rSecretValue-77")
        logging.getLogger("x").warning("%s and %s", "a\nb\x1b[2J\u202ec\x9b", "Sup3rSecretValue-77")
    finally:
        root.handlers[:], _ = saved[0], root.setLevel(saved[1])
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and " digitize: WARNING: a b" in err and "***" in err
    assert not any(c in err for c in "\x1b\u202e\x9b") and "Sup3rSecretValue" not in err


def test_an_environ_block_that_cannot_be_read_is_said_not_silently_skipped(monkeypatch, caplog):
    """review2 r2ops N10: without /proc the secrets stayed in the block and nothing said so."""
    import logging

    monkeypatch.setattr(secrets, "_environ_block", lambda: None)
    monkeypatch.setenv("PGPASSWORD", "pg-secret-value-0042")
    with caplog.at_level(logging.WARNING, "digitize"):
        assert secrets.wipe_environ_block() == []
    assert "stay readable" in caplog.text and "PGPASSWORD" in caplog.text and "pg-secret-value-0042" not in caplog.text
