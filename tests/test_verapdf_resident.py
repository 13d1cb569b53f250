"""The resident validator: one veraPDF server per user that every run connects to over a unix socket.

Real JVMs throughout; each test gets its own short socket folder (a socket path must fit in 107
bytes, which pytest's tmp_path may not) and stops its servers, so none is left behind.
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pikepdf
import pytest
from PIL import Image

from digitize import resident, verapdf
from tests.pages import render_text_page
from tests.test_pdfa import two_page_pdfa

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pdfs(tmp_path_factory) -> tuple[Path, Path]:
    """A valid PDF/A-2b and a plain one-page PDF."""
    folder = tmp_path_factory.mktemp("pdfs")
    plain = folder / "plain.pdf"
    with pikepdf.new() as pdf:
        pdf.add_blank_page()
        pdf.save(plain)
    return two_page_pdfa(folder), plain


@pytest.fixture
def vdir(monkeypatch) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="dv-"))
    monkeypatch.setenv("DIGITIZE_VALIDATOR_DIR", str(folder))
    assert verapdf._resident_server("2b") is not None, "scripts/setup.sh builds the validator jar"
    yield folder
    verapdf._close_shared()
    resident.stop_servers(folder)
    shutil.rmtree(folder, ignore_errors=True)


def compliant(*paths: Path) -> list[bool]:
    return [r.compliant for r in verapdf.validate(list(paths))]


def wait_until(condition, seconds: float = 60) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "digitize", *args], capture_output=True, text=True, timeout=300)


def test_server_validates_a_pdfa_and_rejects_a_plain_pdf(vdir, pdfs) -> None:
    good, plain = pdfs
    results = verapdf.validate([good, plain])
    assert [r.compliant for r in results] == [True, False]
    assert any(f.startswith("6.6.2.1-1") for f in results[1].failures), results[1].failures  # no XMP metadata
    (server,) = resident.servers(vdir, "validator")
    assert server.state == "serving" and (server.served, server.noun) == (2, "validated") and server.pid > 0
    assert oct(vdir.stat().st_mode & 0o777) == "0o700"


def test_a_warm_validation_is_served_by_the_running_server(vdir, pdfs) -> None:
    """A run after the first is answered by the warm server (same pid, one more validated), never by a JVM
    of its own: how fast that is belongs to bench/verapdf_cpu_bench.py, not to a timed assertion here."""
    good, _ = pdfs
    compliant(good, good)
    server = verapdf._resident_server("2b")
    before = resident.ask(server.socket, "STATUS")
    assert compliant(good) == [True]
    after = resident.ask(server.socket, "STATUS")
    assert before and after and after["pid"] == before["pid"]
    assert int(after["validated"]) == int(before["validated"]) + 1


def checked_on_own_connection(server: verapdf.ValidatorServer, order: list[Path]) -> list[bool]:
    """ORDER's verdicts, asked one after the other on a connection of their own."""
    conn = verapdf._ResidentClient(resident.connect(server.socket), server)
    try:
        return [conn.validate(p, 120).compliant for p in order]
    finally:
        conn.close()


def test_two_concurrent_clients_both_get_their_own_answers(vdir, pdfs) -> None:
    good, plain = pdfs
    compliant(good)
    server = verapdf._resident_server("2b")

    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(checked_on_own_connection, server, [good, plain] * 4)
        second = pool.submit(checked_on_own_connection, server, [plain, good] * 4)
    assert first.result() == [True, False] * 4
    assert second.result() == [False, True] * 4


def test_checks_one_at_a_time_keep_to_one_validator_thread_overlapping_ones_get_more(vdir, pdfs) -> None:
    """Each validator thread compiles veraPDF's rule scripts (~0.3 CPU-s); the server started one per
    core. Now one, and another only while all are busy, never more than the cores."""
    good, plain = pdfs
    assert compliant(good, plain, good) == [True, False, True]
    server = verapdf._resident_server("2b")
    assert resident.ask(server.socket, "STATUS")["threads"] == "1"

    with ThreadPoolExecutor(4) as pool:
        answers = [pool.submit(checked_on_own_connection, server, [good, plain] * 3) for _ in range(4)]
    assert [a.result() for a in answers] == [[True, False] * 3] * 4
    assert 1 <= int(resident.ask(server.socket, "STATUS")["threads"]) <= (os.cpu_count() or 1)


def test_checks_one_after_another_wait_for_the_thread_that_answered_rather_than_start_another(
        vdir, pdfs, monkeypatch) -> None:
    """A validator thread hands its answer back before it is back at the queue; on a loaded machine the
    client's next check came first, and the pool started a second thread (compiling the rule scripts
    again, ~0.3 CPU-s) for checks that never overlapped: a CI run's one-at-a-time test saw 2 threads.
    A check while a thread is not on anyone's check now waits for that thread. The server's threads
    are made to linger 300 ms after each answer (DIGITIZE_FAULT_VALIDATOR_LINGER_MS, tests only)."""
    verapdf._close_shared()
    resident.stop_servers(vdir)
    monkeypatch.setenv("DIGITIZE_FAULT_VALIDATOR_LINGER_MS", "300")
    good, plain = pdfs
    assert compliant(good, plain, good, plain) == [True, False, True, False]
    server = verapdf._resident_server("2b")
    assert resident.ask(server.socket, "STATUS")["threads"] == "1"


def test_idle_server_exits_and_removes_its_socket(vdir, pdfs, monkeypatch) -> None:
    monkeypatch.setenv("DIGITIZE_VALIDATOR_IDLE", "1")
    assert compliant(pdfs[0]) == [True]
    (server,) = resident.servers(vdir, "validator")
    verapdf._close_shared()  # an open connection keeps a server up
    assert wait_until(lambda: not server.socket.exists() and not resident.alive(server.pid))
    assert resident.servers(vdir, "validator") == []


def test_second_server_on_the_same_socket_exits_and_the_first_keeps_serving(vdir, pdfs) -> None:
    compliant(pdfs[0])
    (first,) = resident.servers(vdir, "validator")
    command = verapdf._resident_server("2b").command  # the socket as /proc/self/fd/N/<name>: N inherited
    folder = resident.anchor_fd(command[command.index("--serve") + 1])
    second = subprocess.run(command, capture_output=True, text=True, timeout=120, pass_fds=[folder])
    assert second.returncode == 3 and "another validator serves" in second.stdout
    (still,) = resident.servers(vdir, "validator")
    assert (still.pid, still.state) == (first.pid, "serving")
    assert compliant(pdfs[0]) == [True]


def test_racing_launches_end_with_one_server(vdir, pdfs) -> None:
    server = verapdf._resident_server("2b")
    launched = [server.launch() for _ in range(3)]
    assert wait_until(lambda: resident.connect(server.socket) is not None)
    assert wait_until(lambda: sum(map(resident.alive, launched)) == 1)
    (only,) = resident.servers(vdir, "validator")
    assert only.state == "serving"
    assert compliant(pdfs[0]) == [True]


def test_stop_waits_for_a_starting_server(vdir) -> None:
    """What the test session's clean-up relies on: a server still loading veraPDF is stopped too."""
    server = verapdf._resident_server("2b")
    server.launch()
    assert wait_until(lambda: resident.lock_holder(server.lock) is not None)
    (stopped,) = resident.stop_servers(vdir, "validator")
    assert stopped.state == "stopped" and not server.socket.exists()
    assert resident.servers(vdir, "validator") == []


def test_stale_socket_is_replaced(vdir, pdfs) -> None:
    server = verapdf._resident_server("2b")
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(str(server.socket))  # the file stays after close, with nobody listening
    dead.close()
    assert compliant(*pdfs) == [True, False]
    (info,) = resident.servers(vdir, "validator")
    assert info.state == "serving" and info.socket == server.socket


def test_server_stopped_under_a_connected_run_is_replaced(vdir, pdfs) -> None:
    compliant(pdfs[0])
    (first,) = resident.servers(vdir, "validator")
    resident.stop_servers(vdir, "validator")  # this process's connection is now dead
    assert compliant(pdfs[0]) == [True]
    (second,) = resident.servers(vdir, "validator")
    assert second.pid != first.pid


def test_a_client_retires_only_the_server_it_talked_to(vdir, pdfs) -> None:
    """Another client may have retired it already: the fresh server on the same path stays."""
    compliant(pdfs[0])
    (client,) = verapdf._clients.values()
    (first,) = resident.servers(vdir, "validator")
    assert client.server_pid == first.pid
    resident.stop_servers(vdir, "validator")
    verapdf._close_shared()
    compliant(pdfs[0])
    (second,) = resident.servers(vdir, "validator")
    client.retire_server()  # the old connection's server is gone
    assert [s.pid for s in resident.servers(vdir, "validator")] == [second.pid]


def test_a_check_past_its_timeout_retires_the_server(vdir, pdfs) -> None:
    """A file veraPDF loops on would hold a server slot for good: the client that gave up stops it."""
    from digitize.errors import OutputValidationError

    compliant(pdfs[0])
    (first,) = resident.servers(vdir, "validator")
    with pytest.raises(OutputValidationError, match="did not answer within"):
        verapdf.validate([pdfs[0]], timeout=0.0005)
    assert wait_until(lambda: not resident.alive(first.pid), 150)
    assert compliant(pdfs[0]) == [True]
    (second,) = resident.servers(vdir, "validator")
    assert second.pid != first.pid


def test_resident_off_uses_no_socket(vdir, pdfs, monkeypatch) -> None:
    monkeypatch.setenv("DIGITIZE_VALIDATOR_RESIDENT", "0")
    verapdf.prestart()
    assert compliant(*pdfs) == [True, False]
    assert list(vdir.iterdir()) == []


def test_digitize_run_uses_the_server_and_validator_stop_ends_it(vdir, tmp_path) -> None:
    scan = tmp_path / "scan.png"
    Image.fromarray(render_text_page(size=(620, 400), font_px=30)).save(scan, dpi=(150, 150))
    assert "not running" in run_cli("validator", "status").stdout
    for n in range(2):
        done = run_cli("run", "--jobs", "1", str(scan), str(tmp_path / f"out{n}.pdf"))
        assert done.returncode == 0, done.stderr
    (server,) = resident.servers(vdir, "validator")
    assert (server.served, server.noun) == (2, "validated")
    status = run_cli("validator", "status")
    assert status.returncode == 0 and f"serving: pid {server.pid}," in status.stdout
    stop = run_cli("validator", "stop")
    assert stop.returncode == 0 and f"stopped: pid {server.pid}," in stop.stdout, stop.stdout
    assert not server.socket.exists() and not resident.alive(server.pid)
    again = run_cli("validator", "stop")
    assert again.returncode == 0 and "not running" in again.stdout


def as_other_user(path: Path, line: bytes) -> bytes:
    """What a process of another user (nobody) gets back for LINE sent to the unix socket at PATH."""
    import os

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read)
            os.setgid(65534)
            os.setuid(65534)
            sock = socket.socket(socket.AF_UNIX)
            sock.settimeout(20)
            sock.connect(str(path))
            answer = b""
            try:
                sock.sendall(line)
                while not answer.endswith(b"\n"):
                    chunk = sock.recv(4096)
                    if not chunk:
                        break
                    answer += chunk
            except ConnectionError:  # closed on us, unanswered
                pass
            os.write(write, b"answer:" + answer)
        except BaseException as e:  # noqa: BLE001 - reported to the test
            os.write(write, f"error:{e!r}".encode())
        finally:
            os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read, "rb") as f:
        return f.read()


def test_the_server_answers_no_other_user(vdir, pdfs) -> None:
    """Even if its folder let others in, another user's process learns nothing (not even whether a path exists)."""
    assert compliant(pdfs[0]) == [True]
    server = verapdf._resident_server("2b")
    vdir.chmod(0o711)  # what the folder's checks prevent; the server must hold on its own
    server.socket.chmod(0o777)
    try:
        for line in (b"STATUS\n", b"/etc/shadow\n"):
            assert as_other_user(server.socket, line) == b"answer:", line
    finally:
        vdir.chmod(0o700)
    assert compliant(pdfs[0]) == [True]  # its own user is still served


def _exchange(path: Path, data: bytes) -> bytes:
    """What the server answers to DATA on a fresh connection of ours (b"" if it closes unanswered)."""
    sock = resident.connect(path)
    sock.settimeout(60)
    try:
        try:
            sock.sendall(data)
        except ConnectionError:
            return b""
        answer = b""
        while not answer.endswith(b"\n"):
            try:
                chunk = sock.recv(4096)
            except ConnectionError:
                break
            if not chunk:
                break
            answer += chunk
        return answer
    finally:
        sock.close()


def test_a_line_longer_than_any_path_ends_its_connection_not_the_server(vdir, pdfs) -> None:
    """readLine() would buffer gigabytes sent without an end of line (rev16ipc L2)."""
    assert compliant(pdfs[0]) == [True]
    server = verapdf._resident_server("2b")
    assert _exchange(server.socket, b"/" + b"x" * 8192 + b"\n") == b""
    assert _exchange(server.socket, b"STATUS\n").startswith(b"OK\t")
    assert compliant(pdfs[0]) == [True]


def _take_a_slot(path: Path, held: list) -> bool:
    """Whether a new connection of ours was taken (not answered BUSY); kept in HELD."""
    sock = resident.connect(path)
    if sock is None:
        return False
    held.append(sock)
    sock.settimeout(30)
    try:
        sock.sendall(b"STATUS\n")  # a taken slot answers OK and then waits for the next line
        return sock.recv(16).startswith(b"OK\t")
    except OSError:
        return False


def test_a_run_told_busy_before_its_first_line_validates_by_itself(vdir, pdfs, monkeypatch) -> None:
    """The client's half, with a fake server doing what the old full JVM did: BUSY and close as soon
    as it accepts, before the run's path is sent. The run's write then meets a closed socket; the
    BUSY in its buffer still sends it to a JVM of its own, never 'could not be replaced' (rev2_ipc16 M1)."""
    server = verapdf._resident_server("2b")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(server.socket))
    listener.listen(4)
    connect = resident.connect
    turned_away = []

    def connect_then_busy(path, timeout=5):
        sock = connect(path, timeout)
        if sock is not None:  # the fake server answers and closes before the client sends anything
            accepted, _ = listener.accept()
            accepted.sendall(b"BUSY\n")
            accepted.close()
            turned_away.append(path)
        return sock

    monkeypatch.setattr(resident, "connect", connect_then_busy)
    try:
        assert [r.compliant for r in verapdf.validate([pdfs[0], pdfs[1]])] == [True, False]
    finally:
        listener.close()
        server.socket.unlink()
    assert turned_away == [server.socket]  # asked once, not retried as if the server had died
    assert server.socket not in verapdf._clients and verapdf._shared  # its own JVM answered


def _past_the_cap(server: Path) -> list:
    """Connections of ours that fill the server's 256 slots (the caller's own connection is one)."""
    held = []
    for _ in range(256 - 1):
        sock = socket.socket(socket.AF_UNIX)
        held.append(sock)
        sock.settimeout(60)
        assert wait_until(lambda: sock.connect_ex(str(server)) in (0, errno.EISCONN), 60)
        # queued in order: the server takes these first
    return held


def test_a_client_past_the_cap_is_told_busy_after_its_line_not_before(vdir, pdfs) -> None:
    """The server's half, the real jar: past the cap it reads the client's first line before BUSY
    and close, so a line sent late (within BUSY_WAIT) still gets BUSY, not a broken pipe; one that
    never comes gets BUSY after that wait, not a connection held for good (rev2_ipc16 M1)."""
    assert compliant(pdfs[0]) == [True]
    server = verapdf._resident_server("2b")
    held = _past_the_cap(server.socket)
    try:
        assert _exchange(server.socket, b"STATUS\n") == b"BUSY\n"
        late = resident.connect(server.socket)
        held.append(late)
        time.sleep(0.3)  # the old server had closed by now: this write would meet a closed socket
        late.sendall(b"STATUS\n")
        late.settimeout(30)
        assert late.recv(16) == b"BUSY\n"
        silent = resident.connect(server.socket)
        held.append(silent)
        silent.settimeout(30)
        started = time.monotonic()
        assert silent.recv(16) == b"BUSY\n" and silent.recv(16) == b""
        assert time.monotonic() - started >= 0.5  # given its time to send a line first
    finally:
        for sock in held:
            sock.close()
    assert wait_until(lambda: _exchange(server.socket, b"STATUS\n").startswith(b"OK\t"), 30)


def test_connections_past_the_cap_are_closed_and_the_others_served(vdir, pdfs) -> None:
    """A thread per connection without end would exhaust the JVM (rev16ipc L2)."""
    assert compliant(pdfs[0]) == [True]
    server = verapdf._resident_server("2b")
    held = _past_the_cap(server.socket)
    try:
        assert _exchange(server.socket, b"STATUS\n") == b"BUSY\n"
        verapdf._close_shared()  # a run that connects now is told BUSY and validates by itself
        assert wait_until(lambda: _exchange(server.socket, b"STATUS\n").startswith(b"OK\t"), 30)
        assert wait_until(lambda: _take_a_slot(server.socket, held), 30)  # the slot it freed, taken again
        assert [r.compliant for r in verapdf.validate([pdfs[0], pdfs[1]])] == [True, False]
        assert server.socket not in verapdf._clients and verapdf._shared  # its own JVM answered
    finally:
        for sock in held:
            sock.close()
    assert wait_until(lambda: _exchange(server.socket, b"STATUS\n").startswith(b"OK\t"), 30)
    assert compliant(pdfs[0]) == [True]


def test_the_validator_reads_its_flavours_profile_alone_not_verapdfs_whole_directory(pdfs, tmp_path) -> None:
    """veraPDF's profile directory unmarshals all its built-in profiles (3 MB of XML, ~0.8 CPU-s of
    every JVM start, resident or not); the validator reads PDF/A-2b's alone and still judges alike."""
    good, plain = pdfs
    found = verapdf._stream_command("2b")
    assert found is not None, "scripts/setup.sh builds the validator jar"
    classes = tmp_path / "classes.log"
    command = list(found[0])
    command.insert(command.index("-cp"), f"-Xlog:class+load:file={classes}")  # after -Xlog:disable
    done = subprocess.run(command, input=f"{good}\n{plain}\n",
                          capture_output=True, text=True, timeout=300)
    lines = done.stdout.splitlines()
    assert lines[:2] == ["READY", "PASS"], done.stdout + done.stderr
    assert lines[2].startswith("FAIL") and "6.6.2.1-1" in lines[2], lines
    loaded = classes.read_text()
    assert "org.verapdf.pdfa.validation.profiles.ValidationProfile " in loaded
    assert "ProfileDirectoryImpl" not in loaded
