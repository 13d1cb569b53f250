"""Settings: defaults < TOML file < DIGITIZE_* environment; errors are ConfigError; secrets masked."""

from __future__ import annotations

from pathlib import Path

import pytest

from digitize import config
from digitize.errors import ConfigError, DigitizeError, ExitCode

TOML = """
data_dir = "/srv/digitize"

[convert]
language = "vie"
jpeg_quality = 70
ocr_timeout = 60
validate = false

[store]
url = "s3://minio:9000/archive"
access_key = "AKIA"
secret_key = "s3cr3t"

[watch]
poll = 2.5
"""


@pytest.fixture(autouse=True)
def elsewhere(tmp_path, monkeypatch):
    """Run in an empty folder so a ./digitize.toml of the developer is never picked up."""
    monkeypatch.chdir(tmp_path)


def write_toml(tmp_path: Path, text: str = TOML, name: str = "settings.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_need_no_file_and_no_server(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))  # default_data_dir reads os.environ
    s = config.load_settings(env={})
    assert s.source == "defaults"
    assert s.convert.language == "vie+eng" and s.convert.jpeg_quality == 80 and s.convert.validate is True
    assert s.data_dir == str(tmp_path / "xdg" / "digitize")
    assert s.store_url == (tmp_path / "xdg" / "digitize" / "objects").as_uri()
    assert s.index_dsn == "sqlite:///" + str(tmp_path / "xdg" / "digitize" / "index.sqlite3")
    assert s.convert.jobs >= 1


def test_toml_overrides_defaults_with_types(tmp_path):
    path = write_toml(tmp_path)
    s = config.load_settings(path, env={})
    assert s.source == f"defaults < {path}"
    assert s.data_dir == "/srv/digitize"
    assert (s.convert.language, s.convert.jpeg_quality, s.convert.validate) == ("vie", 70, False)
    assert s.convert.ocr_timeout == 60.0 and isinstance(s.convert.ocr_timeout, float)
    assert s.watch.poll == 2.5 and s.convert.page_kb == config.ConvertSettings().page_kb  # untouched keys keep defaults
    assert s.store_url == "s3://minio:9000/archive"
    assert s.index_dsn == "sqlite:////srv/digitize/index.sqlite3"


def test_environment_overrides_toml(tmp_path):
    env = {"DIGITIZE_CONFIG": str(write_toml(tmp_path)), "DIGITIZE_CONVERT_JPEG_QUALITY": "65",
           "DIGITIZE_CONVERT_VALIDATE": "yes", "DIGITIZE_STORE_URL": "file:///mnt/archive",
           "DIGITIZE_INDEX_DSN": "postgresql://u:pw@db/records", "DIGITIZE_DATA_DIR": "/var/lib/digitize",
           "DIGITIZE_WATCH_STABLE_SECONDS": "0.5",
           "DIGITIZE_VERAPDF": "/opt/verapdf/verapdf", "DIGITIZE_CACHE": "/tmp/c", "HOME": "/root"}
    s = config.load_settings(env=env)
    assert s.source.endswith(" < environment") and s.source.startswith("defaults < ")
    assert (s.convert.jpeg_quality, s.convert.validate, s.convert.language) == (65, True, "vie")
    assert s.store_url == "file:///mnt/archive" and s.store.secret_key == "s3cr3t"
    assert s.index_dsn == "postgresql://u:pw@db/records"
    assert s.data_dir == "/var/lib/digitize" and s.watch.stable_seconds == 0.5


def test_explicit_path_beats_digitize_config_and_local_file(tmp_path):
    write_toml(tmp_path, '[convert]\nlanguage = "local"\n', "digitize.toml")
    assert config.load_settings(env={}).convert.language == "local"
    other = write_toml(tmp_path, '[convert]\nlanguage = "env"\n', "env.toml")
    assert config.load_settings(env={"DIGITIZE_CONFIG": str(other)}).convert.language == "env"
    explicit = write_toml(tmp_path, '[convert]\nlanguage = "explicit"\n', "explicit.toml")
    assert config.load_settings(explicit, env={"DIGITIZE_CONFIG": str(other)}).convert.language == "explicit"


@pytest.mark.parametrize("text,message", [
    ("[convert]\nlanguge = 'vie'\n", "unknown setting convert.languge"),
    ("colour = 1\n", "unknown setting colour"),
    ("convert = 3\n", "must be a table"),
    ("[convert]\njobs = 'many'\n", "convert.jobs"),
    ("[convert]\nvalidate = 'maybe'\n", "not a valid bool"),
    ("[convert\n", "not valid TOML"),
    ("[sign]\ntrust = ['/etc/ca.pem']\n", "sign.trust: a TOML list is given; this setting is one string"),
    ("[store]\nurl = {name = 'x'}\n", "store.url: a TOML table is given"),
])
def test_bad_toml_is_a_config_error(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message) as e:
        config.load_settings(write_toml(tmp_path, text), env={})
    assert e.value.exit_code == ExitCode.invalid_config
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("name,value", [("DIGITIZE_CONVERT_JOBS", "four"), ("DIGITIZE_CONVERT_JOBS", ""),
                                        ("DIGITIZE_STORE_BUCKET", "x"), ("DIGITIZE_BATCH_REPORT_", "x")])
def test_bad_environment_is_a_config_error(name, value):
    with pytest.raises(ConfigError, match="environment"):
        config.load_settings(env={name: value})


def test_missing_and_non_utf8_files_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        config.load_settings(tmp_path / "nope.toml", env={})
    bad = tmp_path / "latin1.toml"
    bad.write_bytes('[convert]\nlanguage = "Tiếng Việt"\n'.encode("utf-16"))
    with pytest.raises(ConfigError, match="not valid TOML"):
        config.load_settings(bad, env={})


def test_config_path_that_is_a_folder_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError):
        config.load_settings(tmp_path, env={})


def test_a_secret_given_as_a_list_is_not_repeated_in_the_error(tmp_path):
    with pytest.raises(ConfigError) as e:
        config.load_settings(write_toml(tmp_path, "[sign]\npin = ['424242']\n"), env={})
    assert "424242" not in str(e.value) and "sign.pin" in str(e.value)


def test_float_for_an_integer_setting_is_refused(tmp_path):
    with pytest.raises(ConfigError):
        config.load_settings(write_toml(tmp_path, "[convert]\njobs = 2.5\n"), env={})


def test_show_masks_secrets_and_passwords(tmp_path):
    s = config.load_settings(write_toml(tmp_path), env={"DIGITIZE_INDEX_DSN": "postgresql://clerk:pa55@db:5432/records"})
    shown = config.settings_as_dict(s)
    assert shown["store"]["secret_key"] == "***" and shown["store"]["access_key"] == "***"
    assert shown["index"]["dsn"] == "postgresql://clerk:***@db:5432/records"
    assert shown["effective_index_dsn"] == "postgresql://clerk:***@db:5432/records"
    assert "pa55" not in repr(shown) and "s3cr3t" not in repr(shown)
    assert shown["convert"]["language"] == "vie"
    raw = config.settings_as_dict(s, masked=False)
    assert raw["store"]["secret_key"] == "s3cr3t" and "pa55" in raw["index"]["dsn"]


def test_empty_secrets_are_not_shown_as_masked():
    shown = config.settings_as_dict(config.load_settings(env={}))
    assert shown["store"]["secret_key"] == "" and shown["effective_store_url"].startswith("file://")


@pytest.mark.parametrize("url,masked", [
    ("postgresql://u:p@host/db", "postgresql://u:***@host/db"),
    ("s3://key:secret@minio:9000/bucket", "s3://***:***@minio:9000/bucket"),  # an S3 user is an access key
    ("postgresql://host/db", "postgresql://host/db"),
    ("sqlite:////var/lib/index.sqlite3", "sqlite:////var/lib/index.sqlite3"),
])
def test_mask_url(url, masked):
    assert config.mask_url(url) == masked


def test_mask_url_keeps_ipv6_hosts_valid():
    assert config.mask_url("postgresql://u:p@[::1]:5432/db") == "postgresql://u:***@[::1]:5432/db"


def test_mask_url_hides_password_in_query():
    assert "hunter2" not in config.mask_url("postgresql://db/records?user=clerk&password=hunter2")


def test_config_error_is_a_digitize_error():
    assert issubclass(ConfigError, DigitizeError)


def test_watch_agencies_is_a_list_from_toml_or_a_comma_separated_variable(tmp_path):
    path = tmp_path / "w.toml"
    path.write_text('[watch]\nagencies = ["000.00.31.H56", " H56.32 "]\n', encoding="utf-8")
    assert config.load_settings(path, env={}).watch.agencies == ["000.00.31.H56", "H56.32"]
    env = {"DIGITIZE_WATCH_AGENCIES": "000.00.31.H56, 000.00.12.H29,"}
    assert config.load_settings("/dev/null", env=env).watch.agencies == ["000.00.31.H56", "000.00.12.H29"]
    assert config.Settings().watch.agencies == []


@pytest.mark.parametrize("where, value", [("file", "nan"), ("file", "inf"), ("env", "nan"), ("env", "-inf")])
def test_a_float_setting_must_be_finite(tmp_path, where, value):
    """`nan` is a TOML float and float("nan") parses from the environment: a session idle time or a token
    cache lifetime of nan never expires (every comparison with it is false), inf waits for ever."""
    if where == "file":
        path = tmp_path / "digitize.toml"
        path.write_text(f"[web]\ntoken_cache_seconds = {value}\nsession_idle = 60.0\n")
        with pytest.raises(ConfigError, match="token_cache_seconds"):
            config.load_settings(path, env={})
    else:
        with pytest.raises(ConfigError, match="session_idle"):
            config.load_settings(None, env={"DIGITIZE_WEB_SESSION_IDLE": value})


# -- the settings file is code-equivalent (review rev17ops H1) ------------------------------------

def test_a_digitize_toml_in_a_folder_others_can_write_is_refused(tmp_path, monkeypatch):
    """A clerk-writable share (or USB stick) must not choose the store, the validator or a PKCS#11 library
    that the run loads: refused loudly (exit 9), not silently ignored, so the operator sees the plant."""
    share = tmp_path / "share"
    share.mkdir()
    share.chmod(0o1777)
    (share / "digitize.toml").write_text('[store]\nurl = "s3s://evil.example/loot"\n')
    monkeypatch.chdir(share)
    with pytest.raises(ConfigError, match="current folder.*writable by other users") as e:
        config.load_settings(env={})
    assert e.value.exit_code == ExitCode.invalid_config and "evil" not in str(e.value)


@pytest.mark.parametrize("mode", [0o666, 0o620, 0o602])
def test_a_config_file_others_can_write_is_refused(tmp_path, mode):
    f = tmp_path / "d.toml"
    f.write_text("[convert]\njobs = 1\n")
    f.chmod(mode)
    for how in ({"path": f, "env": {}}, {"env": {"DIGITIZE_CONFIG": str(f)}}):
        with pytest.raises(ConfigError, match="writable by other users"):
            config.load_settings(**how)


def test_a_local_digitize_toml_that_is_a_symlink_or_not_a_file_is_refused(tmp_path):
    target = write_toml(tmp_path, '[convert]\nlanguage = "x"\n', "real.toml")
    (tmp_path / "digitize.toml").symlink_to(target)
    with pytest.raises(ConfigError, match="symbolic link"):
        config.load_settings(env={})
    (tmp_path / "digitize.toml").unlink()
    os_fifo = tmp_path / "digitize.toml"
    import os

    os.mkfifo(os_fifo)  # O_NONBLOCK: a FIFO never hangs the run
    with pytest.raises(ConfigError, match="not a regular file"):
        config.load_settings(env={})


def test_a_config_file_of_another_user_is_refused(tmp_path, monkeypatch):
    import os

    path = write_toml(tmp_path, "[convert]\njobs = 1\n")
    if os.geteuid() == 0:
        os.chown(path, 65534, 65534)  # nobody's file, read by root
    else:
        monkeypatch.setattr(os, "geteuid", lambda: os.stat(path).st_uid + 4242)  # as if run by someone else
    with pytest.raises(ConfigError, match="belongs to uid"):
        config.load_settings(path, env={})


def test_a_huge_config_file_is_refused_and_dev_null_is_no_file(tmp_path):
    path = tmp_path / "big.toml"
    path.write_text("# " + "x" * config.CONFIG_MAX + "\n")
    with pytest.raises(ConfigError, match="larger than"):
        config.load_settings(path, env={})
    assert config.load_settings("/dev/null", env={}).source == "defaults < /dev/null"


def test_a_safe_local_digitize_toml_is_still_read(tmp_path):
    (tmp_path).chmod(0o755)
    write_toml(tmp_path, '[convert]\nlanguage = "local"\n', "digitize.toml")
    assert config.load_settings(env={}).convert.language == "local"


def test_every_secret_setting_can_come_from_a_systemd_credential(tmp_path):
    """Review rev17ops L3: only the PIN, queue and link secrets could; the store keys, index DSN and the portal's
    keys had to sit in the TOML or in digitize.env (and so in every worker's environment block)."""
    creds = tmp_path / "creds"
    creds.mkdir(mode=0o700)
    values = {}
    for section, key in config.CREDENTIAL_SETTINGS:
        path = creds / config.credential_name(section, key)
        values[section, key] = f"postgresql://u:pw-{key}@db/x" if key == "dsn" else f"value-of-{section}-{key}-0042"
        path.write_text(values[section, key] + "\n")
        path.chmod(0o400)
    s = config.load_settings(env={"CREDENTIALS_DIRECTORY": str(creds), "DIGITIZE_WEB_SECRET_KEY": "from-env-wins-0042"})
    assert s.store.secret_key == values["store", "secret_key"] and s.index.dsn == values["index", "dsn"]
    assert s.web.oidc_client_secret == values["web", "oidc_client_secret"] and s.source.endswith("< credentials")
    assert s.web.secret_key == "from-env-wins-0042"  # a setting given elsewhere is not replaced
    assert config.credential_name("store", "secret_key") == "digitize-store-secret-key"
    (creds / "digitize-store-access-key").chmod(0o644)
    with pytest.raises(ConfigError, match="store.access_key credential"):
        config.load_settings(env={"CREDENTIALS_DIRECTORY": str(creds)})


def test_a_config_file_with_a_secret_that_others_can_read_is_warned_about(tmp_path, caplog):
    import logging

    path = write_toml(tmp_path, '[store]\nsecret_key = "s3cr3t-value-0042"\n')
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING, "digitize"):
        config.load_settings(path, env={})
        assert "every user of this machine can read it" in caplog.text and "s3cr3t" not in caplog.text
        caplog.clear()
        path.chmod(0o640)
        config.load_settings(path, env={})
        config.load_settings(write_toml(tmp_path, "[convert]\njobs = 1\n", "plain.toml"), env={})
    assert not caplog.text


def test_an_explicit_symlinked_config_loads_when_no_other_account_can_change_it(tmp_path):
    """review2 r2ops N7: /etc/digitize/digitize.toml -> envs/prod.toml (Ansible, NixOS, a k8s ConfigMap) was
    refused (exit 9, and the unit then stays down); it loads when the link, its target and the folders on
    the way are root's or this user's alone, and is refused when another account could re-point it."""
    import os

    etc = tmp_path / "etc"
    (etc / "envs").mkdir(parents=True)
    os.chmod(tmp_path, 0o755)
    os.chmod(etc, 0o755)
    write_toml(etc / "envs", '[convert]\nlanguage = "prod"\n', "prod.toml")
    (etc / "digitize.toml").symlink_to("envs/prod.toml")
    assert config.load_settings(etc / "digitize.toml", env={}).convert.language == "prod"
    assert config.load_settings(env={"DIGITIZE_CONFIG": str(etc / "digitize.toml")}).convert.language == "prod"
    os.chmod(etc, 0o777)  # anyone could re-point the link
    with pytest.raises(ConfigError, match="symbolic link that another account could re-point"):
        config.load_settings(etc / "digitize.toml", env={})
    os.chmod(etc, 0o755)
    os.chmod(etc / "envs", 0o777)  # or replace its target
    with pytest.raises(ConfigError, match="symbolic link that another account could re-point"):
        config.load_settings(etc / "digitize.toml", env={})


@pytest.mark.skipif(__import__("os").geteuid() != 0, reason="needs a folder of another account")
def test_a_symlinked_config_whose_middle_hop_another_account_can_re_point_is_refused(tmp_path):
    """review3 r3ops R3: cfg/digitize.toml -> alice/hop -> cfg/real.toml passed: only the link as written and the
    final target were checked, so alice could re-point her hop to any root-owned file root then read as settings."""
    import os

    os.chmod(tmp_path, 0o755)
    cfg, alice = tmp_path / "cfg", tmp_path / "alice"
    cfg.mkdir(mode=0o755)
    alice.mkdir(mode=0o755)
    os.chown(alice, 65534, 65534)
    write_toml(cfg, '[convert]\nlanguage = "real"\n', "real.toml")
    (alice / "hop").symlink_to(cfg / "real.toml")
    os.lchown(alice / "hop", 65534, 65534)
    (cfg / "digitize.toml").symlink_to(alice / "hop")
    with pytest.raises(ConfigError, match="symbolic link that another account could re-point"):
        config.load_settings(cfg / "digitize.toml", env={})
    (cfg / "mine").symlink_to(cfg / "real.toml")  # a chain of links root alone can change still loads
    (cfg / "chain.toml").symlink_to("mine")
    assert config.load_settings(cfg / "chain.toml", env={}).convert.language == "real"


@pytest.mark.parametrize("text, secret", [
    ('[queue]\nsecret_file = "/etc/digitize/queue-secret"\n', False),  # the README's queue example
    ('[store]\nlink_secret_file = "/etc/digitize/link-secret"\n', False),
    ('[index]\ndsn = "postgresql://app:Pg-Pass-0042@db/x"\n', True),
    ('[queue]\nsecret = "q-secret-value-0042"\n', True),
    ('[store]\nurl = "s3://minio.lan/bucket"\n', False),
])
def test_only_a_secret_itself_is_warned_about_not_where_one_is_kept(tmp_path, caplog, text, secret):
    """review2 r2ops N8: `secret_file = "/etc/x"` (a path) in a root-owned 0644 config warned on every run."""
    import logging

    path = write_toml(tmp_path, text)
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING, "digitize"):
        config.load_settings(path, env={})
    assert ("every user of this machine can read it" in caplog.text) is secret
