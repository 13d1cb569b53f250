"""Signing settings and the PIN: where it comes from, that it is masked, and that no child process,
argument list or message ever carries it. No keys needed here."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from digitize import config, resident, signing, signmark
from digitize.errors import ConfigError, SignerUnavailableError, SigningError, StorageError

PIN = "4711-bí-mật"


@pytest.fixture(autouse=True)
def elsewhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)


def test_pin_comes_from_the_environment_and_is_masked_in_config_show(monkeypatch):
    settings = config.load_settings(env={"DIGITIZE_SIGN_PIN": PIN, "DIGITIZE_SIGN_PKCS12": "/etc/agency.p12"})
    assert settings.sign.pin == PIN and settings.sign.configured
    shown = json.dumps(config.settings_as_dict(settings), ensure_ascii=False)
    assert PIN not in shown and '"pin": "***"' in shown


def test_pin_file_then_systemd_credential_then_nothing(tmp_path, monkeypatch):
    cfg = config.SignSettings(pkcs12="x.p12")
    assert signing.read_pin(cfg) is None
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / signing.CREDENTIAL_NAME).write_text("from-systemd\n")
    (creds / signing.CREDENTIAL_NAME).chmod(0o400)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    assert signing.read_pin(cfg) == "from-systemd"
    own = tmp_path / "pin.txt"
    own.write_text(PIN + "\n")
    own.chmod(0o644)
    cfg.pin_file = str(own)
    with pytest.raises(ConfigError, match="readable or writable by other users"):
        signing.read_pin(cfg)
    own.chmod(0o640)  # the service's group may read it
    assert signing.read_pin(cfg) == PIN
    cfg.pin = "env-wins"
    assert signing.read_pin(cfg) == "env-wins"


def test_a_missing_pin_file_is_a_config_error(tmp_path):
    cfg = config.SignSettings(pkcs12="x.p12", pin_file=str(tmp_path / "absent"))
    with pytest.raises(ConfigError, match="cannot read the PIN file"):
        signing.read_pin(cfg)


def test_a_symlinked_fifo_or_foreign_pin_file_is_refused(tmp_path):
    """The PIN file is read as the other key files are (secrets.read_secret_file): a symlink is not
    followed (it could point the service at another file it may read), a FIFO is not waited on."""
    real = tmp_path / "real-pin"
    real.write_text(PIN + "\n")
    real.chmod(0o600)
    link = tmp_path / "pin-link"
    link.symlink_to(real)
    cfg = config.SignSettings(pkcs12="x.p12", pin_file=str(link))
    with pytest.raises(ConfigError, match="cannot read the PIN file"):
        signing.read_pin(cfg)
    fifo = tmp_path / "pin-fifo"
    os.mkfifo(fifo, 0o600)
    cfg.pin_file = str(fifo)
    with pytest.raises(ConfigError, match="not a regular file"):
        signing.read_pin(cfg)


def test_a_pin_file_its_group_may_write_or_a_foreign_group_may_read_is_refused(tmp_path):
    """Second review of the group-readable PIN file (issue 11): 0660 let every member of the file's group
    rewrite the PIN (wrong tries lock the token), and 0640 of any group (``users``) handed it to all its members."""
    pin = tmp_path / "pin"
    pin.write_text(PIN + "\n")
    cfg = config.SignSettings(pkcs12="x.p12", pin_file=str(pin))
    pin.chmod(0o640)
    os.chown(pin, -1, os.getegid())
    assert signing.read_pin(cfg) == PIN  # the service's own group may read it
    pin.chmod(0o660)
    with pytest.raises(ConfigError, match="readable or writable by other users") as refused:
        signing.read_pin(cfg)
    assert PIN not in str(refused.value)
    if os.geteuid() == 0:  # only root can give a file to a group it is not in
        pin.chmod(0o640)
        os.chown(pin, -1, os.getegid() + 4242)
        with pytest.raises(ConfigError, match="not this service's own group"):
            signing.read_pin(cfg)
        pin.chmod(0o600)  # the group may not read it: which group it is does not matter
        assert signing.read_pin(cfg) == PIN
    pin.write_text("\n")
    pin.chmod(0o600)
    with pytest.raises(ConfigError, match="is empty"):
        signing.read_pin(cfg)


def _set_acl(path: Path, *entries: tuple[int, int, int]) -> None:
    """A POSIX access ACL (tag, permissions, id) as setfacl writes it; skips where the file system has none."""
    import errno
    import struct

    any_id = 0xFFFFFFFF
    raw = struct.pack("<I", 2) + b"".join(struct.pack("<HHI", tag, perm, any_id if who is None else who)
                                          for tag, perm, who in entries)
    try:
        os.setxattr(path, "system.posix_acl_access", raw)
    except OSError as e:
        if e.errno in (errno.EOPNOTSUPP, errno.ENOTSUP):
            pytest.skip("this file system keeps no POSIX ACLs")
        raise


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to a group the process is not in needs root")
def test_a_systemd_credential_pin_file_is_read_and_a_foreign_acl_entry_refused(tmp_path):
    """Review M4: systemd writes a credential root:root 0400 with an ACL granting the service's user read, which
    fstat shows as 0440 of group root: the group rule refused it. The reverse: an ACL entry for another user
    (user:mallory:r) on a file whose group bits looked like the service's own 0640 passed."""
    user_obj, user, group_obj, mask, other = 0x01, 0x02, 0x04, 0x10, 0x20
    pin = tmp_path / "digitize-sign-pin"
    pin.write_text(PIN + "\n")
    pin.chmod(0o400)
    os.chown(pin, 0, os.getegid() + 4242)  # root's file, of a group the service is not in
    _set_acl(pin, (user_obj, 4, None), (user, 4, os.geteuid()), (group_obj, 0, None), (mask, 4, None),
             (other, 0, None))
    assert os.stat(pin).st_mode & 0o777 == 0o440  # the ACL's mask in the group bits
    cfg = config.SignSettings(pkcs12="x.p12", pin_file=str(pin))
    assert signing.read_pin(cfg) == PIN
    os.chown(pin, 0, os.getegid())
    _set_acl(pin, (user_obj, 6, None), (user, 4, os.geteuid() + 4243), (group_obj, 4, None), (mask, 4, None),
             (other, 0, None))
    with pytest.raises(ConfigError, match=f"ACL entry for user {os.geteuid() + 4243}") as refused:
        signing.read_pin(cfg)
    assert PIN not in str(refused.value)
    _set_acl(pin, (user_obj, 6, None), (user, 6, os.geteuid()), (group_obj, 0, None), (mask, 6, None),
             (other, 0, None))  # the service's own entry, but writable: refused
    with pytest.raises(ConfigError):
        signing.read_pin(cfg)


def test_the_cli_takes_the_pin_out_of_its_environment(monkeypatch):
    from click.testing import CliRunner

    from digitize.cli import cli

    monkeypatch.setenv("DIGITIZE_SIGN_PIN", PIN)
    result = CliRunner().invoke(cli, ["config", "show"])
    assert result.exit_code == 0 and PIN not in result.output
    assert "DIGITIZE_SIGN_PIN" not in os.environ  # children (veraPDF, Tesseract, page workers) never see it


def test_resident_servers_start_without_secrets_in_their_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("DIGITIZE_SIGN_PIN", PIN)
    monkeypatch.setenv("DIGITIZE_STORE_SECRET_KEY", "s3cr3t")
    monkeypatch.setenv("DIGITIZE_SIGN_PKCS12", "/etc/agency.p12")  # a path, not a secret: kept
    pid = resident.launch(["/bin/sleep", "30"], tmp_path / "server.log")
    try:
        deadline = time.monotonic() + 5
        environ = b""
        while time.monotonic() < deadline and b"DIGITIZE_SIGN_PKCS12" not in environ:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
            time.sleep(0.05)
    finally:
        os.kill(pid, signal.SIGTERM)
    assert b"DIGITIZE_SIGN_PKCS12=/etc/agency.p12" in environ
    assert PIN.encode() not in environ and b"s3cr3t" not in environ


@pytest.mark.parametrize("sign, message", [
    (dict(pkcs12="a.p12", pkcs11_module="/lib/x.so", key_label="k"), "not both"),
    (dict(pkcs11_module="/lib/x.so"), "key_label"),
    (dict(pkcs12="a.p12", kind="office"), "personal"),
    (dict(pkcs12="a.p12", ltv=True), "tsa_url"),
    (dict(pkcs12="a.p12", kind="agency"), "seal"),
])
def test_inconsistent_settings_are_refused(sign, message):
    with pytest.raises(ConfigError, match=message):
        signing.check_settings(config.SignSettings(**sign))


def test_a_token_that_went_away_is_a_signing_error_the_pipelines_retry():
    error = SignerUnavailableError("token gone")
    assert isinstance(error, SigningError) and isinstance(error, StorageError)
    assert int(error.exit_code) == 10 and int(SigningError("wrong PIN").exit_code) == 13


def test_the_mark_sits_top_right_inside_the_page_and_grows_with_the_seal(tmp_path):
    font = signmark.find_font()
    assert font.name == "LiberationSerif-Regular.ttf"
    lines = signmark.mark_lines("Nguyễn Thị Lan", "2026-12-01T18:34:15+07:00")
    x1, y1, x2, y2 = signmark.place(595.3, 841.9, lines, font, None).box
    assert (x2, y2) == (595 - signmark.INSET, 841 - signmark.INSET)
    assert 100 < x2 - x1 < 200 and y2 - y1 == 2 * signmark.LEADING + 2 * signmark.PADDING
    seal = signmark.Seal(tmp_path / "seal.png", 113.4, 113.4)
    sx1, sy1, sx2, sy2 = signmark.place(595.3, 841.9, lines, font, seal).box
    assert sx2 - sx1 >= (x2 - x1) + 114 and sy2 - sy1 == 114


def test_a_font_without_vietnamese_is_refused(tmp_path):
    dejavu = next(Path("/usr/share/fonts").rglob("DejaVuSans.ttf"), None)
    bad = tmp_path / "not-a-font.ttf"
    bad.write_bytes(b"nonsense")
    with pytest.raises(ConfigError, match="Vietnamese"):
        signmark.find_font(str(bad))
    if dejavu is not None:  # DejaVu Sans has Vietnamese: accepted
        assert signmark.find_font(str(dejavu)) == dejavu


def test_the_font_handed_to_pyhanko_is_small_and_has_1000_units_per_em(tmp_path, monkeypatch):
    from fontTools.ttLib import TTFont

    monkeypatch.setenv("DIGITIZE_CACHE", str(tmp_path))
    scaled = signmark.pdf_font(signmark.find_font(), "Nguyễn Thị Lan")
    with TTFont(str(scaled)) as tt:
        assert tt["head"].unitsPerEm == 1000
        cmap = tt.getBestCmap()
    assert all(ord(c) in cmap for c in "Nguyễn Thị Lan2026-12-01T18:34:15+07:00")
    assert len(cmap) < 40 and scaled.stat().st_size < signmark.find_font().stat().st_size / 10
    assert signmark.pdf_font(signmark.find_font(), "Nguyễn Thị Lan") == scaled  # cached
