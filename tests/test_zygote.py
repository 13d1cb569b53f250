"""The resident converter: `digitize run` handed to a warm server's child must behave as a local run.

Real processes throughout (the `digitize` command, its server, the server's children); each test
gets its own short socket folder (a socket path must fit in 107 bytes) and stops its servers.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pikepdf
import psutil
import pytest
from PIL import Image

from digitize import resident, tesslib, zygote, zygote_server
from digitize.errors import ExitCode
from tests.pages import render_text_page
from tests.test_verapdf_resident import wait_until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
STACK = ROOT / "samples" / "14_stack.pdf"  # 5 pages: long enough to interrupt


@pytest.fixture
def zdir() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="dz-"))
    yield folder
    resident.stop_servers(folder)
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def env(zdir, tmp_path) -> dict[str, str]:
    """The environment of every `digitize` below: this test's socket folder and temp dir."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    return {**os.environ, "DIGITIZE_VALIDATOR_DIR": str(zdir), "DIGITIZE_CONVERTER_IDLE": "60", "TMPDIR": str(tmp)}


@pytest.fixture(scope="module")
def scan(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("scan") / "scan.png"
    Image.fromarray(render_text_page(size=(620, 400), font_px=30)).save(path, dpi=(150, 150))
    return path


def digitize(*args: str, env: dict[str, str], cwd: Path | None = None, **extra) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "digitize", *args], env={**env, **extra}, cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def converters(folder: Path) -> list[resident.ServerInfo]:
    return resident.servers(folder, "converter")


def serving(folder: Path) -> resident.ServerInfo:
    """The one converter of FOLDER, once it serves."""
    assert wait_until(lambda: [s.state for s in converters(folder)] == ["serving"]), converters(folder)
    (server,) = converters(folder)
    return server


def warm(env: dict[str, str], tmp_path: Path) -> resident.ServerInfo:
    """Launch the converter with a quick failing run (the first one it serves) and wait until it serves."""
    empty = tmp_path / "launch.png"
    empty.write_bytes(b"")
    assert digitize("run", "--no-validate", str(empty), str(tmp_path / "never.pdf"),
                    env=env).returncode == ExitCode.input_file
    return serving(Path(env["DIGITIZE_VALIDATOR_DIR"]))


def pdf_text(path: Path) -> str:
    return subprocess.run(["pdftotext", "-enc", "UTF-8", str(path), "-"], capture_output=True, text=True,
                          check=True).stdout


def test_first_run_launches_the_server_and_hands_itself_over(zdir, env, scan, tmp_path) -> None:
    assert converters(zdir) == []
    done = digitize("run", "--jobs", "1", "--no-validate", str(scan), str(tmp_path / "out.pdf"), env=env)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out.pdf").is_file()
    server = serving(zdir)
    assert server.served == 1 and server.noun == "converted"  # it waited for the server's start-up


def test_a_converter_that_does_not_come_up_means_a_local_run(zdir, env, scan, tmp_path, monkeypatch) -> None:
    from digitize import zygote

    monkeypatch.setattr(zygote, "START_WAIT", 0.0)
    monkeypatch.setattr(resident, "reach", lambda server, wait: None)  # never up
    monkeypatch.setattr(sys, "argv", ["digitize"])
    assert zygote.handover(["run", str(scan), str(tmp_path / "out.pdf")]) is None  # the caller runs it
    assert oct(zdir.stat().st_mode & 0o777) == "0o700"


@pytest.mark.parametrize("holder, cpu, handed_over", [(4242, 1.5, True), (0, None, True), (4242, 30.0, False),
                                                      (None, None, False), (4242, None, False)])
def test_a_converter_slow_to_start_is_waited_for_while_it_uses_little_cpu(zdir, scan, tmp_path, monkeypatch,
                                                                          holder, cpu, handed_over) -> None:
    """A loaded machine stretches the converter's start in wall time, not in CPU: past START_WAIT the run
    still waits for one that holds its lock and has used little CPU (a local run would pay the same
    imports again), not for one gone (no lock holder, no such process) or busy past START_CPU."""
    monkeypatch.setenv("DIGITIZE_VALIDATOR_DIR", str(zdir))
    monkeypatch.setattr(zygote, "START_WAIT", 0.0)
    monkeypatch.setattr(sys, "argv", ["digitize"])
    calls = []
    up = socket.socket(socket.AF_UNIX)  # what handover closes when done

    def connect(path, timeout=5):  # up on the fourth try, well past START_WAIT
        calls.append(path)
        return up if len(calls) >= 4 else None

    monkeypatch.setattr(resident, "reach", lambda server, wait: calls.append(wait))  # launched, not up in time
    monkeypatch.setattr(resident, "connect", connect)
    monkeypatch.setattr(resident, "lock_holder", lambda lock: holder)
    monkeypatch.setattr(resident, "cpu_seconds", lambda pid: cpu)
    monkeypatch.setattr(zygote, "_delegate", lambda sock, argv, server: 0 if sock is up else 99)
    monkeypatch.setattr(zygote, "_to_serving", lambda argv: None)  # none serves yet
    done = zygote.handover(["run", "--no-validate", str(scan), str(tmp_path / "out.pdf")])
    assert done == (0 if handed_over else None)  # None: the caller runs it locally
    assert len(calls) == (4 if handed_over else 1)


def test_a_run_through_the_server_gives_the_pdf_a_local_run_gives(zdir, env, scan, tmp_path) -> None:
    warm(env, tmp_path)
    local = digitize("run", "--jobs", "1", str(scan), str(tmp_path / "local.pdf"), env=env,
                     DIGITIZE_CONVERTER_RESIDENT="0")
    served = digitize("run", "--jobs", "1", str(scan), str(tmp_path / "served.pdf"), env=env)
    assert (local.returncode, served.returncode) == (0, 0), (local.stderr, served.stderr)
    assert (local.stdout, local.stderr) == (served.stdout, served.stderr) == ("", "")
    assert serving(zdir).served == 2  # after the warming run
    assert pdf_text(tmp_path / "served.pdf") == pdf_text(tmp_path / "local.pdf")
    assert "Hạnh phúc" in pdf_text(tmp_path / "served.pdf")
    with pikepdf.open(tmp_path / "served.pdf") as a, pikepdf.open(tmp_path / "local.pdf") as b:
        assert len(a.pages) == len(b.pages) == 1
        assert a.open_metadata().get("pdfaid:part") == "2"
    (validator,) = resident.servers(zdir, "validator")  # the child validated through the resident JVM
    assert validator.served == 2


@pytest.mark.parametrize("content", [b"", b"just some text, not a PDF\n"], ids=["empty", "text"])
def test_bad_input_gives_the_same_line_and_code_as_locally_and_no_output(zdir, env, tmp_path, content) -> None:
    warm(env, tmp_path)
    bad = tmp_path / "scan.pdf"
    bad.write_bytes(content)
    out = tmp_path / "out"
    out.mkdir()
    local = digitize("run", str(bad), str(out / "a.pdf"), env=env, DIGITIZE_CONVERTER_RESIDENT="0")
    served = digitize("run", str(bad), str(out / "a.pdf"), env=env)
    assert served.returncode == local.returncode == ExitCode.input_file
    assert served.stderr == local.stderr and served.stderr.count("\n") == 1, served.stderr
    assert served.stderr.startswith("digitize: ") and "Traceback" not in served.stderr
    assert list(out.iterdir()) == []
    assert serving(zdir).served == 2  # after the warming run


def test_cwd_relative_paths_config_file_and_environment_are_the_clients(zdir, env, scan, tmp_path) -> None:
    warm(env, tmp_path)
    work = tmp_path / "work"
    (work / "in").mkdir(parents=True)
    shutil.copy(scan, work / "in" / "scan.png")
    (work / "my.toml").write_text('[convert]\nlanguage = "vie"\n', encoding="utf-8")
    done = digitize("--config", "my.toml", "run", "--jobs", "1", "in/scan.png", "out/scan.pdf",
                    "--report", "out/report.json", env=env, cwd=work, DIGITIZE_CONVERT_VALIDATE="false")
    assert done.returncode == 0, done.stderr
    assert serving(zdir).served == 2  # after the warming run
    report = (work / "out" / "report.json").read_text(encoding="utf-8")
    assert '"language": "vie"' in report  # from the config file, found from the client's folder
    assert '"compliant": null' in report  # DIGITIZE_CONVERT_VALIDATE=false: from the client's environment
    assert (work / "out" / "scan.pdf").is_file()
    missing = digitize("--config", "nowhere.toml", "run", "in/scan.png", "out/x.pdf", env=env, cwd=work)
    assert missing.returncode == ExitCode.invalid_config and "nowhere.toml" in missing.stderr


def test_verbose_logging_and_the_umask_are_the_clients(zdir, env, scan, tmp_path) -> None:
    warm(env, tmp_path)
    done = subprocess.run(["sh", "-c", f'umask 077 && exec "$0" -m digitize -v run --jobs 1 --no-validate "$1" "$2"',
                           sys.executable, str(scan), str(tmp_path / "out.pdf")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert serving(zdir).served == 2  # after the warming run
    assert "digitize: INFO: " in done.stderr and "1 pages" in done.stderr
    assert (tmp_path / "out.pdf").stat().st_mode & 0o777 == 0o600


def child_of(server: resident.ServerInfo) -> psutil.Process:
    """The child converting for a client right now, once it works on pages (so it took the request)."""
    found = []
    assert wait_until(lambda: found.extend(psutil.Process(server.pid).children()) or found, 30)
    assert wait_until(lambda: found[0].children(), 30)
    return found[0]


def gone(proc: psutil.Process) -> bool:
    try:
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=["int", "term", "kill"])
def test_stopping_the_client_stops_the_child_and_leaves_nothing(zdir, env, tmp_path, how) -> None:
    server = warm(env, tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    # SIGINT as at a terminal: a test run started in the background (CI) would pass on SIG_IGN,
    # and a client that ignores Ctrl-C rightly lets its run finish
    client = subprocess.Popen([sys.executable, "-m", "digitize", "run", "--jobs", "1", "--no-validate", str(STACK),
                               str(out / "stack.pdf")], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    child = child_of(server)
    time.sleep(0.5)  # well into the pages
    client.send_signal(how)
    _, stderr = client.communicate(timeout=60)
    assert wait_until(lambda: gone(child), 30)
    assert wait_until(lambda: serving(zdir).clients == 0, 30)
    expected = {signal.SIGINT: 130, signal.SIGTERM: -signal.SIGTERM, signal.SIGKILL: -signal.SIGKILL}[how]
    assert client.returncode == expected, stderr
    if how != signal.SIGKILL:
        assert stderr.strip() == "digitize: interrupted" and "Traceback" not in stderr
    assert list(out.iterdir()) == []  # no output, no temporary file beside it
    assert list(Path(env["TMPDIR"]).iterdir()) == []  # the child's page folder is gone


def test_a_server_killed_mid_run_stops_its_child_with_one_line_not_as_interrupted(zdir, env, tmp_path) -> None:
    """Only the server reads the client's INT: an orphaned child converted on, unstoppable (rev16ipc L6).
    It stops and cleans up as after a Ctrl-C, but says why and exits 15: scripts read 130 as a person's
    abort and do not retry (rev2_ipc16 L2)."""
    server = warm(env, tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    client = subprocess.Popen([sys.executable, "-m", "digitize", "run", "--jobs", "1", "--no-validate", str(STACK),
                               str(out / "stack.pdf")], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    child = child_of(server)
    time.sleep(0.5)  # well into the pages
    os.kill(server.pid, signal.SIGKILL)
    _, stderr = client.communicate(timeout=60)
    assert wait_until(lambda: gone(child), 30)
    assert client.returncode == ExitCode.internal, stderr
    assert stderr.splitlines() == ["digitize: the resident converter stopped under this run; run it again"]
    assert list(out.iterdir()) == []  # no output, no temporary file beside it
    assert list(Path(env["TMPDIR"]).iterdir()) == []  # the child's page folder is gone


def test_a_child_that_dies_mid_run_is_one_clear_line(zdir, env, tmp_path) -> None:
    server = warm(env, tmp_path)
    client = subprocess.Popen([sys.executable, "-m", "digitize", "run", "--jobs", "1", "--no-validate", str(STACK),
                               str(tmp_path / "stack.pdf")], env=env, stderr=subprocess.PIPE, text=True)
    child_of(server).kill()
    _, stderr = client.communicate(timeout=60)
    assert client.returncode == ExitCode.internal
    assert stderr.splitlines() == [f"digitize: the resident converter stopped unexpectedly"
                                   f" (see {resident.ResidentServer(server.socket).log})"]
    assert not (tmp_path / "stack.pdf").exists()


def test_two_clients_at_once_both_succeed(zdir, env, scan, tmp_path) -> None:
    warm(env, tmp_path)
    runs = [subprocess.Popen([sys.executable, "-m", "digitize", "run", "--jobs", "1", "--no-validate", str(scan),
                              str(tmp_path / f"out{n}.pdf")], env=env, stderr=subprocess.PIPE, text=True)
            for n in range(2)]
    assert [r.wait(timeout=300) for r in runs] == [0, 0]
    assert serving(zdir).served == 3  # after the warming run
    assert pdf_text(tmp_path / "out0.pdf") == pdf_text(tmp_path / "out1.pdf")


def test_a_server_gone_before_taking_the_request_means_a_local_run(zdir, env, scan, tmp_path) -> None:
    server = warm(env, tmp_path)
    resident.stop_servers(zdir, "converter")
    fake = socket.socket(socket.AF_UNIX)  # accepts, reads, and hangs up without a child
    fake.bind(str(server.socket))
    fake.listen(4)

    def hang_up() -> None:  # every connection: the settingless one and the settings' one (zygote._to_serving)
        while True:
            try:
                conn, _ = fake.accept()
            except OSError:
                return
            conn.recv(65536)
            conn.close()

    threading.Thread(target=hang_up, daemon=True).start()
    try:
        done = digitize("run", "--jobs", "1", "--no-validate", str(scan), str(tmp_path / "out.pdf"), env=env)
    finally:
        fake.close()
    assert done.returncode == 0, done.stderr
    assert done.stderr == "" and (tmp_path / "out.pdf").is_file()


def test_changed_key_inputs_get_a_server_of_their_own(zdir, env, tmp_path) -> None:
    first = warm(env, tmp_path)
    env = {**env, "OPENCV_LOG_LEVEL": "ERROR"}  # read when OpenCV loads: a warm server cannot apply it
    second = digitize("run", str(tmp_path / "launch.png"), str(tmp_path / "never.pdf"), env=env)
    assert second.returncode == ExitCode.input_file
    assert wait_until(lambda: len([s for s in converters(zdir) if s.state == "serving"]) == 2)
    assert first.socket in [s.socket for s in converters(zdir)]


def test_the_key_follows_the_code_and_load_time_environment(tmp_path, monkeypatch) -> None:
    (tmp_path / "digitize").mkdir()
    module = tmp_path / "digitize" / "ocr.py"
    module.write_text("x = 1\n")
    monkeypatch.setattr(zygote, "ROOT", tmp_path)
    first = zygote._key()
    assert zygote._key() == first
    os.utime(module, ns=(module.stat().st_atime_ns, module.stat().st_mtime_ns + 1_000_000))
    touched = zygote._key()
    assert touched != first
    monkeypatch.setenv("DIGITIZE_STORE_URL", "file:///elsewhere")  # read by each run: same server
    assert zygote._key() == touched
    monkeypatch.setenv("TESSDATA_PREFIX", "/elsewhere")  # read when the models load: another server
    assert zygote._key() != touched


@pytest.mark.parametrize("reader,fake", [
    ("_namespace", lambda name: "4026532178" if name == "mnt" else "4026531999"),  # unshare -m, PrivateTmp=
    ("_proc_text", lambda name: "0::/system.slice/digitize-watch.service\n" if name == "cgroup" else "-"),
    ("_proc_text", lambda name: "NoNewPrivs:\t1\nSeccomp:\t2\n" if name == "status" else "-"),
])
def test_another_sandbox_gets_another_converter(monkeypatch, reader, fake) -> None:
    """A run in another mount namespace, cgroup or seccomp/NoNewPrivs sandbox never reaches a server
    started outside it: the child would run with the launcher's namespaces and limits (rev16ipc M1)."""
    outside = zygote._key()
    assert "ns/mnt=" + str(os.stat("/proc/self/ns/mnt").st_ino) in resident.confinement()
    monkeypatch.setattr(resident, reader, fake)
    monkeypatch.setattr(resident, "_confinement", None)  # read once per process: as a process in there would
    assert zygote._key() != outside


@pytest.fixture
def bare_server():
    """A converter's accept loop in this process (no fork), on a private socket; its signal setup undone after."""
    folder = Path(tempfile.mkdtemp(prefix="zs-"))
    path = folder / "converter-test.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(4)
    lock = resident.hold_lock(resident.ResidentServer(path).lock)
    saved = {s: signal.getsignal(s) for s in (signal.SIGCHLD, signal.SIGTERM)}
    server = zygote_server._Server(listener, path, 60.0, lock, {})
    yield server
    signal.set_wakeup_fd(-1)
    for signum, handler in saved.items():
        signal.signal(signum, handler)
    for fd in (server.wake_r, server.wake_w, lock):
        os.close(fd)
    listener.close()
    shutil.rmtree(folder, ignore_errors=True)


def _status(server) -> bytes:
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.connect(str(server.path))
    client.sendall(b"STATUS\n")
    assert server._accept()
    client.settimeout(10)
    return client.recv(4096)


def test_a_huge_request_length_is_refused_and_the_server_goes_on(bare_server) -> None:
    """recvmsg of a client-given size raised MemoryError out of the loop: the converter died (rev16ipc L1)."""
    for line in (b"RUN 99999999999999999\n", b"RUN %d\n" % (zygote_server.MAX_REQUEST + 1), b"RUN -5\n",
                 b"R" * 100_000 + b"\n"):
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.connect(str(bare_server.path))
        client.sendall(line)
        assert bare_server._accept()  # refused: the loop goes on
        client.settimeout(10)
        try:
            assert client.recv(64) == b""  # closed unanswered: the client runs locally
        except ConnectionResetError:  # closed with our bytes unread: the same
            pass
        client.close()
    assert _status(bare_server).startswith(b"OK\t")


def test_a_client_that_drips_bytes_is_dropped_after_one_overall_wait(bare_server, monkeypatch) -> None:
    """A 5 s timeout per read let a byte every 4 s hold the loop (and every other client) for ever (rev16ipc L1)."""
    monkeypatch.setattr(zygote_server, "REQUEST_WAIT", 1.0, raising=False)
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.connect(str(bare_server.path))
    dropped = threading.Event()

    def drip() -> None:
        try:
            for _ in range(60):  # 15 s of one byte every 0.25 s, never a whole request
                client.sendall(b"S")
                time.sleep(0.25)
        except OSError:
            dropped.set()  # the server closed on us

    dripper = threading.Thread(target=drip)
    dripper.start()
    assert bare_server._accept()
    dripper.join()
    client.close()
    assert dropped.is_set()
    assert _status(bare_server).startswith(b"OK\t")


def test_a_run_from_another_mount_namespace_is_not_forked(bare_server, monkeypatch) -> None:
    """A sandboxed run racing onto an outside converter's socket: its paths are not the server's (rev16ipc M1)."""
    if subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode != 0:
        pytest.skip("unshare -m is not allowed here")
    forked = []
    monkeypatch.setattr(bare_server, "_fork", lambda conn, fds, request: (forked.append(request), conn.close()))
    client = ("import socket, sys; from digitize import zygote; s = socket.socket(socket.AF_UNIX); "
              "s.connect(sys.argv[1]); socket.send_fds(s, [zygote._request(['--version'])], [0, 1, 2]); "
              "s.settimeout(20); print(repr(s.recv(64)))")
    outside = subprocess.Popen(["unshare", "-m", sys.executable, "-c", client, str(bare_server.path)],
                               stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(zygote.ROOT)})
    assert bare_server._accept()
    assert outside.communicate(timeout=60)[0].strip() == "b''"  # closed without OK: it runs locally
    assert forked == []
    inside = socket.socket(socket.AF_UNIX)
    inside.connect(str(bare_server.path))
    socket.send_fds(inside, [zygote._request(["--version"])], [0, 1, 2])
    assert bare_server._accept()
    inside.close()
    assert len(forked) == 1 and forked[0]["argv"] == ["--version"]  # this namespace's run is taken


def test_a_server_whose_loaded_files_changed_stops_taking_runs(tmp_path) -> None:
    lib = tmp_path / "lib.py"
    lib.write_text("x = 1\n")
    loaded = {str(lib): (lib.stat().st_ino, lib.stat().st_size, lib.stat().st_mtime_ns)}
    assert zygote_server._changed(loaded) is None
    lib.write_text("x = 22\n")
    assert zygote_server._changed(loaded) == str(lib)


def test_idle_server_exits_and_removes_its_socket(zdir, env, tmp_path) -> None:
    server = warm({**env, "DIGITIZE_CONVERTER_IDLE": "3"}, tmp_path)
    assert wait_until(lambda: not server.socket.exists() and not resident.alive(server.pid), 30)
    assert converters(zdir) == []
    assert_clean_log(server)


def assert_clean_log(server: resident.ServerInfo) -> None:
    log = resident.ResidentServer(server.socket).log.read_text(encoding="utf-8")
    assert "stopped after" in log and "Traceback" not in log, log


def test_off_switch_means_no_server(zdir, env, scan, tmp_path) -> None:
    done = digitize("run", "--jobs", "1", "--no-validate", str(scan), str(tmp_path / "out.pdf"), env=env,
                    DIGITIZE_CONVERTER_RESIDENT="0")
    assert done.returncode == 0, done.stderr
    (tmp_path / "off.toml").write_text("[converter]\nresident = false\n", encoding="utf-8")
    done = digitize("--config", str(tmp_path / "off.toml"), "run", "--jobs", "1", "--no-validate", str(scan),
                    str(tmp_path / "out2.pdf"), env=env)
    assert done.returncode == 0, done.stderr
    assert not [p for p in zdir.iterdir() if p.name.startswith("converter-")]


def test_a_serving_converter_honours_settings_that_turn_it_off(zdir, env, scan, tmp_path) -> None:
    """A client reaches a serving converter before it reads any setting; the child reads the run's own
    (its --config here) and declines, without taking the run, when they say no resident converter."""
    server = warm(env, tmp_path)
    (tmp_path / "off.toml").write_text("[converter]\nresident = false\n", encoding="utf-8")
    time.sleep(3)
    before = serving(zdir)
    done = digitize("--config", str(tmp_path / "off.toml"), "run", "--jobs", "1", "--no-validate", str(scan),
                    str(tmp_path / "out.pdf"), env=env)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert (tmp_path / "out.pdf").is_file()
    after = serving(zdir)
    assert after.served == server.served  # converted by the client itself
    assert after.idle >= before.idle  # a declined run is no work: a converter only such runs reach idles out
    log = resident.ResidentServer(server.socket).log.read_text(encoding="utf-8")
    assert "declined" in log and "Traceback" not in log, log


def test_a_child_serves_only_runs_whose_settings_name_its_folder(tmp_path, monkeypatch) -> None:
    """zygote_server._serves, as a child asks it once it stands in the client's folder and environment."""
    ours, other = tmp_path / "ours", tmp_path / "other"
    ours.mkdir(mode=0o700)
    other.mkdir(mode=0o700)
    identity = zygote_server._identity(ours)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DIGITIZE_VALIDATOR_DIR", str(ours))
    assert zygote_server._serves(["run", "a.png", "b.pdf"], identity)
    monkeypatch.setenv("DIGITIZE_VALIDATOR_DIR", str(other))
    assert not zygote_server._serves(["run", "a.png", "b.pdf"], identity)
    monkeypatch.delenv("DIGITIZE_VALIDATOR_DIR")
    (tmp_path / "c.toml").write_text(f"[validator]\ndir = '{ours}'\n", encoding="utf-8")
    assert zygote_server._serves(["--config", "c.toml", "run", "a.png", "b.pdf"], identity)
    (tmp_path / "c.toml").write_text(f"[validator]\ndir = '{ours}'\n[converter]\nresident = false\n", encoding="utf-8")
    assert not zygote_server._serves(["--config", "c.toml", "run", "a.png", "b.pdf"], identity)
    (tmp_path / "c.toml").write_text("[validator\n", encoding="utf-8")  # a bad file: the local run says why
    assert not zygote_server._serves(["--config", "c.toml", "run", "a.png", "b.pdf"], identity)
    assert not zygote_server._serves(["run", "a.png", "b.pdf"], None)


@pytest.mark.parametrize("name, value", [("DIGITIZE_SIGN_PIN", "1234"), ("DIGITIZE_CONVERTER_RESIDENT", "0"),
                                         ("DIGITIZE_CONVERTER_RESIDENT", "1")])
def test_a_pin_or_the_converter_switch_in_the_environment_means_settings_first(monkeypatch, name, value) -> None:
    """A PIN never leaves the client; the switch keeps runs away from a converter (a stuck one, say)."""
    monkeypatch.setenv(name, value)
    monkeypatch.setattr(resident, "connect", lambda *a, **k: pytest.fail("connected without reading settings"))
    assert zygote._to_serving(["run", "a.png", "b.pdf"]) is None


def test_an_ignored_cache_folder_is_warned_about_once_by_the_run(tmp_path, monkeypatch, caplog) -> None:
    """Neither the settingless try nor a child's check of the settings says it (unheard, logging off),
    or marks it said: the run's own settings do, once."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    monkeypatch.setenv("DIGITIZE_CACHE", str(shared / "cache"))
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.delenv("DIGITIZE_VALIDATOR_DIR", raising=False)
    monkeypatch.setattr(resident, "_ignored", set())
    monkeypatch.setattr(resident, "connect", lambda *a, **k: pytest.fail("reached through an ignored cache"))
    monkeypatch.chdir(tmp_path)
    assert zygote._to_serving(["run", "a.png", "b.pdf"]) is None
    zygote_server._serves(["run", "a.png", "b.pdf"], zygote_server._identity(tmp_path))
    assert resident._ignored == set() and "ignoring cache folder" not in caplog.text
    resident.cache_dir()
    assert "ignoring cache folder" in caplog.text


def test_a_run_that_launches_the_converter_boots_the_validator_too(zdir, env, tmp_path) -> None:
    empty = tmp_path / "launch.png"
    empty.write_bytes(b"")  # fails before any validation: the JVM was started at the launch
    assert digitize("run", str(empty), str(tmp_path / "never.pdf"), env=env).returncode == ExitCode.input_file
    # boot() returns at once and the JVM takes its lock on its own: on a loaded machine, a moment later
    assert wait_until(lambda: resident.servers(zdir, "validator"), 30)
    status = digitize("validator", "status", env=env).stdout
    assert "serving" in status or "starting" in status, status
    assert digitize("servers", "stop", env=env).returncode == 0


def test_servers_status_and_stop_list_both_kinds(zdir, env, tmp_path) -> None:
    server = warm(env, tmp_path)
    status = digitize("servers", "status", env=env)
    assert status.returncode == 0 and f"converter serving: pid {server.pid}," in status.stdout, status.stdout
    assert "1 converted" in status.stdout  # the warming run
    assert "not running" in digitize("validator", "status", env=env).stdout  # the validator's command: validators only
    stop = digitize("servers", "stop", env=env)
    assert stop.returncode == 0 and f"converter stopped: pid {server.pid}," in stop.stdout, stop.stdout
    assert not server.socket.exists() and not resident.alive(server.pid)
    assert "not running" in digitize("servers", "status", env=env).stdout
    assert_clean_log(server)


@pytest.mark.parametrize("argv, expected", [
    (["run", "a", "b"], None),
    (["-v", "--config", "c.toml", "run", "a", "b"], "c.toml"),
    (["--config=c.toml", "-vq", "run"], "c.toml"),
    (["run", "--help"], False),
    (["--version"], False),
    (["batch", "x"], False),
    (["--frobnicate", "run"], False),
    (["--config"], False),
    ([], False),
])
def test_only_run_goes_to_the_server(argv, expected) -> None:
    assert zygote._run_arguments(argv) == expected


@pytest.mark.parametrize("answers", [[b"OK 7\nEXIT 2\n"], [b"OK 7\n", b"EXIT 2\n"], [b"OK 7\nEX", b"IT 2\n"]])
def test_the_exit_code_is_read_however_the_answers_arrive(answers, tmp_path) -> None:
    """A run that fails at once answers OK and EXIT in one read: the exit code must not be lost."""
    client, child = socket.socketpair()

    def answer() -> None:
        _, fds, _, _ = socket.recv_fds(child, 65536, 3)
        for fd in fds:
            os.close(fd)
        for part in answers:
            child.sendall(part)
            time.sleep(0.05)
        child.close()

    thread = threading.Thread(target=answer)
    thread.start()
    with client:
        code = zygote._delegate(client, ["run", "in.png", "out.pdf"], zygote.ConverterServer(tmp_path / "c.sock"))
    thread.join()
    assert code == 2


# -- what the converter is given (issue 9, finding 1) ---------------------------------------------

SECRETS = {"DIGITIZE_STORE_SECRET_KEY": "s3cr3t-key-of-root", "DIGITIZE_INDEX_DSN": "postgresql://u:pw-of-root@db/x",
           "PGPASSWORD": "pw-of-root-2"}


def proc_text(pid: int, what: str) -> str:
    return Path(f"/proc/{pid}/{what}").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")


def test_the_converter_gets_no_secrets_and_no_folder_path_in_its_argv(zdir, env, scan, tmp_path) -> None:
    """A run's secrets stay with it (a conversion needs none); `ps` shows no socket folder."""
    env = {**{k: v for k, v in env.items() if k != "GLIBC_TUNABLES"}, **SECRETS}  # a tester's own tunables pass
    server = warm(env, tmp_path)
    command, environment = proc_text(server.pid, "cmdline"), proc_text(server.pid, "environ")
    assert str(zdir) not in command, command
    assert not [v for v in SECRETS.values() if v in environment]
    assert "glibc.malloc.hugetlb" not in environment  # its children's pages come small (pageworkers.small_pages)
    before = serving(zdir).served
    done = digitize("run", "--jobs", "1", "--no-validate", str(scan), str(tmp_path / "out.pdf"), env=env)
    assert done.returncode == 0, done.stderr
    assert serving(zdir).served == before + 1  # converted by the server's child, given _request's environment


def test_the_request_carries_no_secrets(monkeypatch) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DIGITIZE_CONVERT_LANGUAGE", "vie")
    request = zygote._request(["run", "a.png", "b.pdf"])
    assert b"DIGITIZE_CONVERT_LANGUAGE=vie" in request
    assert not [v for v in SECRETS.values() if v.encode() in request]


def test_ctrl_c_during_a_batchs_early_key_process_is_one_line(monkeypatch, capsys):
    """Ctrl-C while the launcher forks a signing batch's key process (config, PIN file, fork) or
    imports the CLI: "interrupted", exit 130, no traceback (review2 of sign16, LOW 6)."""
    from digitize import launcher, signing

    def interrupted(argv):
        raise KeyboardInterrupt

    monkeypatch.setattr(zygote, "handover", lambda args: None)
    monkeypatch.setattr(signing, "early_key_process", interrupted)
    try:
        code = launcher.main(["batch", "src"])
    except KeyboardInterrupt:  # it would end the process with a traceback
        pytest.fail("Ctrl-C escaped the launcher")
    assert code == 130
    assert capsys.readouterr().err == "digitize: interrupted\n"


PAGE_IMPORTS = r"""
import json, sys, tempfile
from pathlib import Path
from digitize import convert, zygote_server
from digitize.sources import open_source
zygote_server.warm_up("vie+eng")
before = set(sys.modules)
opts = convert.ConvertOptions(jobs=1, validate=False)
with tempfile.TemporaryDirectory() as tmp:
    for path in sorted(Path(sys.argv[1]).glob("h*.*")):
        with open_source(path, opts) as src:
            for i in range(src.page_count):
                convert.process_page(src.page(i), i + 1, Path(tmp) / f"{path.stem}-{i}.pdf", opts)
print(json.dumps(sorted(set(sys.modules) - before)))
"""


def test_the_converters_warm_up_leaves_no_module_for_a_page_to_import() -> None:
    """Every module a page imports on first use is imported again in every run's page worker (~2-5 ms
    each): the resident converter imports them once, before it forks. Measured on the hard samples,
    which take every path (pieces, JBIG2, fax, spreads, seals)."""
    found = subprocess.run([sys.executable, "-c", PAGE_IMPORTS, str(ROOT / "samples" / "hard")], capture_output=True,
                           text=True, check=True, env={**os.environ, "OMP_THREAD_LIMIT": "1"})
    assert json.loads(found.stdout.splitlines()[-1]) == []


CLIENT_TO_SERVING = r"""
import sys
from digitize import launcher, zygote
zygote._to_serving(["run", "in.jpg", "out.pdf"])  # none serves: the folder, key and connect are all done
zygote._request(["run", "in.jpg", "out.pdf"])
modules = sorted(sys.modules)
import json  # only now: json imports re
print(json.dumps(modules))
"""


def test_a_run_reaches_a_serving_converter_before_reading_settings(tmp_path) -> None:
    """The settings (config, with eleven dataclasses and dataclasses' import of inspect) were ~25 ms of
    the client's ~70 (README.md, Benchmarks, twenty-first session): a serving converter's child reads them."""
    folder = tmp_path / "s"
    folder.mkdir(mode=0o755)
    found = subprocess.run([sys.executable, "-c", CLIENT_TO_SERVING], capture_output=True, text=True, check=True,
                           cwd=tmp_path, env={**os.environ, "HOME": str(tmp_path), "DIGITIZE_VALIDATOR_DIR": str(folder)})
    modules = set(json.loads(found.stdout.splitlines()[-1]))
    assert not modules & {"digitize.config", "dataclasses", "inspect", "typing", "logging", "tomllib", "hashlib",
                          "threading"}
    assert oct(folder.stat().st_mode & 0o777) == "0o755"  # a folder it did not make is refused, never chmodded


def test_the_client_path_imports_neither_pathlib_nor_re(tmp_path) -> None:
    """pathlib (with re, fnmatch, urllib.parse and ipaddress), the secrets module's re and urllib.parse,
    and socket.py and signal.py (their enums, selectors) were ~8 ms of a run's ~29 ms client (README.md,
    Benchmarks, twenty-second session). Run without site (-S), so that only this project's imports
    count, not those of how it is installed."""
    folder = tmp_path / "s"
    folder.mkdir(mode=0o700)
    found = subprocess.run([sys.executable, "-S", "-c", CLIENT_TO_SERVING], capture_output=True, text=True,
                           check=True, cwd=tmp_path, env={**os.environ, "HOME": str(tmp_path), "PYTHONPATH": str(zygote.ROOT),
                                                          "DIGITIZE_VALIDATOR_DIR": str(folder)})
    modules = set(json.loads(found.stdout.splitlines()[-1]))
    assert "digitize.secretnames" in modules  # the request was made: its environment was stripped
    assert not modules & {"pathlib", "re", "fnmatch", "urllib", "urllib.parse", "ipaddress", "digitize.secrets",
                          "socket", "selectors", "signal", "enum"}


def test_the_settingless_way_makes_no_folder(tmp_path, monkeypatch) -> None:
    """Where no folder is, no converter serves: only a run's own settings decide where one is made."""
    monkeypatch.setenv("DIGITIZE_VALIDATOR_DIR", str(tmp_path / "none"))
    monkeypatch.setattr(resident, "connect", lambda *a, **k: pytest.fail("no folder, nothing to reach"))
    assert zygote._to_serving(["run", "a.png", "b.pdf"]) is None
    assert not (tmp_path / "none").exists()


CLIENT_IMPORTS = r"""
import json, sys
from digitize import launcher, zygote
from digitize.config import load_settings
zygote.converter_server(load_settings(None))
zygote._request(["run", "in.jpg", "out.pdf"])
print(json.dumps(sorted(sys.modules)))
"""


def test_the_client_of_a_run_imports_nothing_it_does_not_use(tmp_path) -> None:
    """Every `digitize run` starts a Python that only hands the run over: typing and logging (with
    traceback, textwrap, string, threading's users) were ~12 ms of its ~80 (README.md, Benchmarks, twentieth
    session), imported for annotations and a log filter it never uses. Neither is, nor anything heavy."""
    found = subprocess.run([sys.executable, "-c", CLIENT_IMPORTS], capture_output=True, text=True, check=True,
                           cwd=tmp_path, env={**os.environ, "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path)})
    modules = set(json.loads(found.stdout.splitlines()[-1]))
    assert not modules & {"typing", "logging", "traceback", "textwrap", "tomllib", "numpy", "cv2", "PIL", "click",
                          "pikepdf", "hashlib"}


def test_a_debian_update_of_the_library_setups_build_stands_in_for_is_watched(tmp_path, monkeypatch) -> None:
    """The converter loaded setup's Tesseract build, never Debian's file: without this, a Debian update
    (a security fix) of libtesseract went unseen until the converter idled out, its runs on the old build."""
    debian = tmp_path / "libtesseract.so.5.0.3"
    debian.write_bytes(b"debian's")
    stamp = (str(debian), debian.stat().st_size, int(debian.stat().st_mtime))
    monkeypatch.setattr(tesslib, "_loaded_stamp", stamp)
    loaded = zygote_server._loaded_files()
    assert str(debian) in loaded and zygote_server._changed(loaded) is None
    debian.write_bytes(b"debian's, updated")
    assert zygote_server._changed(loaded) == str(debian)
    # updated between loading the build and the converter's first look: changed already (second review, L6)
    assert zygote_server._changed(zygote_server._loaded_files()) == str(debian)
