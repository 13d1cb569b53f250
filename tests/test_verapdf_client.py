"""The resident validator's client side, with fakes: where its socket lives, what names it, fallbacks."""

from __future__ import annotations

import socket
from pathlib import Path
from types import SimpleNamespace

import click
import pytest

from digitize import resident, verapdf
from digitize.cli import cli
from digitize.config import Settings, ValidatorSettings
from digitize.errors import OutputValidationError


@pytest.fixture
def fake_build(tmp_path, monkeypatch) -> Path:
    """A validator 'jar' that _stream_command finds, and a socket folder of its own."""
    jar = tmp_path / "validator.jar"
    jar.write_bytes(b"v1")
    monkeypatch.setattr(verapdf, "_stream_command", lambda flavour: (
        ["/usr/bin/java", "-Xss4m", "-cp", str(jar), verapdf.STREAM_CLASS, flavour], tmp_path / "a.jsa"))
    monkeypatch.setenv("DIGITIZE_VALIDATOR_DIR", str(tmp_path / "run"))
    monkeypatch.setenv("DIGITIZE_VALIDATOR_RESIDENT", "1")
    return jar


def test_socket_folder_is_the_setting_then_xdg_runtime_then_the_cache(tmp_path, monkeypatch):
    monkeypatch.delenv("DIGITIZE_VALIDATOR_DIR", raising=False)
    monkeypatch.setenv("DIGITIZE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert verapdf.socket_dir() == tmp_path / "digitize"
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "missing"))
    assert verapdf.socket_dir() == tmp_path / "cache" / "run"
    monkeypatch.setenv("DIGITIZE_VALIDATOR_DIR", str(tmp_path / "mine"))
    assert verapdf.socket_dir() == tmp_path / "mine"


def test_socket_folder_is_made_private(fake_build, tmp_path, monkeypatch):
    """digitize's own folder is set to 0700; one it made is made so (rev16ipc L5)."""
    monkeypatch.delenv("DIGITIZE_VALIDATOR_DIR")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    folder = tmp_path / "digitize"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    assert verapdf._resident_server("2b") is not None
    assert folder.stat().st_mode & 0o777 == 0o700
    monkeypatch.setenv("DIGITIZE_VALIDATOR_DIR", str(tmp_path / "new" / "sockets"))
    assert verapdf._resident_server("2b") is not None
    assert (tmp_path / "new" / "sockets").stat().st_mode & 0o777 == 0o700


def test_a_configured_folder_open_to_others_is_refused_not_chmodded(fake_build, tmp_path):
    """[validator] dir naming the operator's shared folder: its mode stays, no server, one line why (rev16ipc L5)."""
    folder = tmp_path / "run"  # fake_build's [validator] dir
    folder.mkdir(mode=0o750)
    folder.chmod(0o750)
    assert verapdf._resident_server("2b") is None
    assert folder.stat().st_mode & 0o777 == 0o750
    problem = resident.folder_problem(folder)
    assert problem and "\n" not in problem and "chmod 700" in problem and str(folder) in problem
    folder.chmod(0o700)  # the operator's fix
    assert verapdf._resident_server("2b") is not None


def test_a_rebuilt_jar_or_another_flavour_gets_a_server_of_its_own(fake_build):
    first = verapdf._resident_server("2b")
    assert verapdf._resident_server("2b") == first
    assert verapdf._resident_server("2u").socket != first.socket
    fake_build.write_bytes(b"v2, rebuilt")
    assert verapdf._resident_server("2b").socket != first.socket
    assert first.command[-5:] == ("--serve", resident.anchored(first.socket), "--idle-seconds", "60", "2b")


def test_another_mount_namespace_or_cgroup_gets_a_validator_of_its_own(fake_build, monkeypatch):
    """A PrivateTmp= unit's paths are not an outside JVM's: it would answer no-pass (rev16ipc M1)."""
    first = verapdf._resident_server("2b")
    monkeypatch.setattr(resident, "_namespace", lambda name: "4026532178")
    monkeypatch.setattr(resident, "_confinement", None)  # read once per process: as a process in there would
    other = verapdf._resident_server("2b")
    assert other.socket != first.socket
    monkeypatch.setattr(resident, "_proc_text", lambda name: "0::/system.slice/digitize-watch.service\n")
    monkeypatch.setattr(resident, "_confinement", None)
    assert verapdf._resident_server("2b").socket != other.socket


def test_the_server_argv_shows_no_socket_folder(fake_build, tmp_path):
    """`ps` is everyone's: the server gets its folder as a descriptor, named /proc/self/fd/N."""
    server = verapdf._resident_server("2b")
    assert str(tmp_path / "run") not in " ".join(server.command)
    assert server.command[server.command.index("--serve") + 1].startswith("/proc/self/fd/")


def test_idle_time_is_passed_to_the_server(fake_build, monkeypatch):
    monkeypatch.setenv("DIGITIZE_VALIDATOR_IDLE", "12.5")
    assert verapdf._resident_server("2b").command[-3:] == ("--idle-seconds", "12.5", "2b")


@pytest.mark.parametrize("env", [{"DIGITIZE_VALIDATOR_RESIDENT": "0"}, {"DIGITIZE_VALIDATOR_DIR": "/tmp/" + "x" * 120}])
def test_off_or_an_overlong_socket_path_means_no_server(fake_build, monkeypatch, env):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert verapdf._resident_server("2b") is None


class FakeValidator:
    def __init__(self, error: Exception | None = None):
        self.error, self.seen = error, []
        self.server = verapdf.ValidatorServer(Path("/nonexistent/validator-x.sock"), ())

    def validate(self, path, timeout):
        if self.error:
            raise self.error
        self.seen.append(path)
        return verapdf.Validation(str(path), True)


def test_a_server_that_cannot_start_falls_back_to_a_jvm_of_this_process(fake_build, monkeypatch):
    def no_launch(command, log, dump=None, keep=None):
        raise OSError("no /bin/sh")

    monkeypatch.setattr(resident, "launch", no_launch)
    own = FakeValidator()
    monkeypatch.setattr(verapdf, "_shared_validator", lambda flavour: own)
    assert [r.compliant for r in verapdf.validate(["a.pdf"])] == [True]
    assert own.seen == ["a.pdf"]


def test_a_server_gone_twice_is_one_clear_error(fake_build, monkeypatch):
    clients = []

    def gone(flavour, wait):
        clients.append(FakeValidator(verapdf._ValidatorGone("veraPDF stopped unexpectedly")))
        return clients[-1]

    monkeypatch.setattr(verapdf, "_resident", gone)
    monkeypatch.setattr(verapdf, "_forget", lambda client: None)
    with pytest.raises(OutputValidationError, match="stopped while checking a.pdf and could not be replaced"):
        verapdf.validate(["a.pdf"])
    assert len(clients) == 2


def _told_busy_before_sending() -> verapdf._ResidentClient:
    """A client whose server did what a full DigitizeValidator did: BUSY, then closed, before our line."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    theirs.sendall(b"BUSY\n")
    theirs.close()
    return verapdf._ResidentClient(ours, SimpleNamespace(socket=Path("/nonexistent/v.sock")))


def test_busy_said_before_the_clients_line_is_still_busy_not_gone(fake_build, monkeypatch):
    """The write meets a closed socket, but BUSY waits in our buffer: the run validates by itself,
    it does not fail the file as 'stopped and could not be replaced' (rev2_ipc16 M1)."""
    with pytest.raises(verapdf._ValidatorBusy):
        _told_busy_before_sending().validate("a.pdf", 5)
    clients = []
    monkeypatch.setattr(verapdf, "_resident", lambda flavour, wait: clients.append(1) or _told_busy_before_sending())
    own = FakeValidator()
    monkeypatch.setattr(verapdf, "_shared_validator", lambda flavour: own)
    assert [r.compliant for r in verapdf.validate(["a.pdf"])] == [True]
    assert own.seen == ["a.pdf"] and len(clients) == 1


def test_a_closed_socket_without_busy_is_still_gone(fake_build):
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    theirs.sendall(b"PASS\n")  # anything but BUSY: an answer out of step is not trusted
    theirs.close()
    client = verapdf._ResidentClient(ours, SimpleNamespace(socket=Path("/nonexistent/v.sock")))
    with pytest.raises(verapdf._ValidatorGone) as caught:
        client.validate("a.pdf", 5)
    assert not isinstance(caught.value, verapdf._ValidatorBusy)


def test_a_timeout_is_not_retried(fake_build, monkeypatch):
    calls = []

    def slow(flavour, wait):
        calls.append(wait)
        return FakeValidator(OutputValidationError("veraPDF did not answer within 5 s"))

    asked = []
    monkeypatch.setattr(verapdf, "_resident", slow)
    monkeypatch.setattr(verapdf, "_forget", lambda client: None)
    monkeypatch.setattr(FakeValidator, "retire_server", lambda self: asked.append(self.server.socket.name),
                        raising=False)
    with pytest.raises(OutputValidationError, match="within 5 s"):
        verapdf.validate(["a.pdf"], timeout=5)
    assert calls == [5]
    assert asked == ["validator-x.sock"]  # a server stuck on a file is retired


def test_the_config_file_can_turn_it_off(fake_build, tmp_path, monkeypatch):
    monkeypatch.delenv("DIGITIZE_VALIDATOR_RESIDENT")
    monkeypatch.setenv("DIGITIZE_CONFIG", str(tmp_path / "digitize.toml"))
    (tmp_path / "digitize.toml").write_text("[validator]\nresident = true\n", encoding="utf-8")
    assert verapdf._resident_server("2b") is not None
    (tmp_path / "digitize.toml").write_text("[validator]\nresident = false\n", encoding="utf-8")
    assert verapdf._resident_server("2b") is None


def test_under_the_cli_its_loaded_settings_count(fake_build):
    """`digitize --config FILE run ...`: the file the CLI loaded decides, not only the environment."""
    off = Settings(validator=ValidatorSettings(resident=False))
    with click.Context(cli, obj=off):
        assert verapdf._resident_server("2b") is None
    assert verapdf._resident_server("2b") is not None
