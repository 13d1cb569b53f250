"""Page workers: results in order, a hung page killed, a killed worker failing its file at once,
kept workers serving file after file and letting their process exit."""

from __future__ import annotations

import errno
import faulthandler
import fcntl
import multiprocessing
import os
import pickle
import re
import signal
import stat
import struct
import sys
import time
import types

import pytest

from digitize import pageworkers
from digitize.errors import InputError, OcrError, OcrTimeoutError
from digitize.records import PageReport  # registered with wire.carried in this process, the parent


def square(x: int) -> tuple[int, int]:
    return x * x, os.getpid()


def sleepy(x: int) -> int:
    time.sleep(x)
    return x


def killed(x: int) -> int:
    if x == 3:
        os.kill(os.getpid(), signal.SIGKILL)  # what the OOM killer does
    time.sleep(0.2)
    return x


def crashes(x: int) -> int:
    faulthandler.disable()  # pytest's, inherited: no dump of this test's stack
    os.abort()  # what a C library's assertion does


def fails(x: int) -> int:
    if x == 2:
        raise InputError("page 2 is broken")
    return x


def times_out(x: int) -> int:
    raise TimeoutError("a socket of the task's own")


@pytest.fixture
def kept(monkeypatch):
    """This test process keeps its workers, as a batch worker does; they are ended afterwards."""
    monkeypatch.setattr(pageworkers, "_keep", True)
    monkeypatch.setattr(pageworkers, "_kept", None)
    yield
    if pageworkers._kept is not None:
        pageworkers._kept.end()


def test_results_come_in_task_order_from_forked_workers() -> None:
    results = pageworkers.run(square, [(n,) for n in range(8)], processes=2, deadline=60)
    assert [r[0] for r in results] == [n * n for n in range(8)]
    assert os.getpid() not in {r[1] for r in results}


def test_a_page_past_its_deadline_is_stopped() -> None:
    start = time.monotonic()
    # 3 s: page 1 (and its worker's start) must end within the deadline, also on a loaded machine
    with pytest.raises(OcrTimeoutError, match="page 2: not finished within 3 s; its worker was stopped"):
        pageworkers.run(sleepy, [(0,), (600,)], processes=1, deadline=3)
    assert time.monotonic() - start < 600  # stopped: the page's 600 s never waited out


@pytest.mark.parametrize("fn, how", [(killed, r"killed by SIGKILL \(out of memory\?\)"),
                                     (crashes, r"killed by SIGABRT \(a crash in a C library\)")])
def test_a_killed_worker_fails_the_file_at_once_and_says_how(fn, how) -> None:
    with pytest.raises(OcrError, match=rf"^page \d not converted: a page worker process was {how}$") as failure:
        pageworkers.run(fn, [(n,) for n in range(1, 7)], processes=2, deadline=600)
    assert not isinstance(failure.value, OcrTimeoutError)  # at once: not at the page deadline


def test_a_task_error_is_raised_as_it_is() -> None:
    with pytest.raises(InputError, match="page 2 is broken"):
        pageworkers.run(fails, [(1,), (2,), (3,)], processes=2, deadline=60)
    with pytest.raises(TimeoutError, match="a socket of the task's own") as failure:
        pageworkers.run(times_out, [(1,)], processes=1, deadline=60)
    assert not isinstance(failure.value, OcrError)


def test_kept_workers_serve_file_after_file_and_a_failure_ends_them(kept) -> None:
    first = {pid for _, pid in pageworkers.run(square, [(1,), (2,)], processes=1, deadline=60)}
    second = {pid for _, pid in pageworkers.run(square, [(3,)], processes=1, deadline=60)}
    assert first == second  # the same worker: no fork per file
    with pytest.raises(InputError):
        pageworkers.run(fails, [(1,), (2,)], processes=1, deadline=60)
    assert pageworkers._kept is None
    third = {pid for _, pid in pageworkers.run(square, [(4,)], processes=1, deadline=60)}
    assert third.isdisjoint(first)


def ended(pid: int) -> None:
    """Until our child PID has ended (not reaped: its pool sees it), however loaded the machine."""
    deadline = time.monotonic() + 60
    while os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
        assert time.monotonic() < deadline, f"worker {pid} still runs"
        time.sleep(0.01)


def test_a_kept_worker_killed_while_idle_is_replaced(kept) -> None:
    (pid,) = {pid for _, pid in pageworkers.run(square, [(1,)], processes=1, deadline=60)}
    os.kill(pid, signal.SIGKILL)
    ended(pid)
    results = pageworkers.run(square, [(2,)], processes=1, deadline=60)
    assert results[0][0] == 4 and results[0][1] != pid


def _batch_worker() -> None:
    pageworkers.keep()
    pageworkers.run(square, [(1,), (2,)], processes=2, deadline=60)


def test_a_process_that_keeps_page_workers_still_exits() -> None:
    """A multiprocessing child joins its children at exit: kept workers must be closed first."""
    child = multiprocessing.get_context("fork").Process(target=_batch_worker)
    child.start()
    child.join(60)
    alive = child.is_alive()
    if alive:
        child.kill()
    assert not alive and child.exitcode == 0


def default_signals(x: int) -> bool:
    return signal.getsignal(signal.SIGTERM) is signal.SIG_DFL and signal.getsignal(signal.SIGINT) is signal.SIG_IGN


def test_workers_do_not_keep_the_parents_signal_handlers() -> None:
    """watch's graceful SIGTERM is the parent's: a worker the executor terminates must end."""
    previous = signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        assert pageworkers.run(default_signals, [(1,)], processes=1, deadline=60) == [True]
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_kept_worker_that_dies_before_the_submit_is_a_clear_error(kept, monkeypatch) -> None:
    (pid,) = {pid for _, pid in pageworkers.run(square, [(1,)], processes=1, deadline=60)}
    monkeypatch.setattr(pageworkers.PagePool, "alive", lambda self: True)  # it died after the check
    os.kill(pid, signal.SIGKILL)
    ended(pid)
    with pytest.raises(OcrError, match="page 1 not converted: a page worker process was killed by SIGKILL"):
        pageworkers.run(square, [(2,)], processes=1, deadline=60)
    assert pageworkers._kept is None


def dies_slowly(x: int) -> int:
    """A worker whose exit takes seconds once it began, as a killed one's can on a loaded machine: its main
    thread exits (the process is exiting), then its result pipe closes, and only 3 s later is it reapable."""
    import ctypes
    import threading

    results, leader = _result_pipe(), f"/proc/{os.getpid()}/stat"

    def finish() -> None:
        while open(leader, "rb").read().rsplit(b")", 1)[1].split()[0] != b"Z":  # the main thread is gone
            time.sleep(0.01)
        os.close(results)
        time.sleep(3)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=finish).start()
    ctypes.CDLL(None).pthread_exit(None)
    return x


def test_a_worker_that_takes_seconds_to_die_is_said_to_be_killed_not_to_have_broken_its_pipes() -> None:
    """death() waited 2 s for a dead worker's exit code: under load a SIGKILLed worker was reported as one
    that broke its pipes."""
    with pytest.raises(OcrError, match=r"^page 1 not converted: a page worker process was killed by SIGKILL"):
        pageworkers.run(dies_slowly, [(1,)], processes=1, deadline=60)


def secret_variables(x: int) -> list[str]:
    return sorted(k for k in ("AWS_SECRET_ACCESS_KEY", "PGPASSWORD", "DIGITIZE_STORE_SECRET_KEY") if k in os.environ)


def test_workers_drop_every_secret_variable_before_any_page(monkeypatch) -> None:
    """A page worker decodes untrusted pages and starts tools (or a library does, with os.environ):
    it needs no secret, so none is left in its environment (review rev16ipc M2)."""
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "leaked-aws-key")
    monkeypatch.setenv("PGPASSWORD", "leaked-pg")
    monkeypatch.setenv("DIGITIZE_STORE_SECRET_KEY", "leaked-store")
    assert pageworkers.run(secret_variables, [(1,)], processes=1, deadline=60) == [[]]
    assert os.environ["PGPASSWORD"] == "leaked-pg"  # the parent's own stays: its libraries read it


def thp_flag(_: int) -> str:
    """This process's transparent-huge-page switch as the kernel reports it (THP_enabled: 1 or 0)."""
    with open("/proc/self/status", encoding="ascii") as status:
        return next((line.split()[1] for line in status if line.startswith("THP_enabled:")), "")


def test_page_workers_touch_memory_in_small_pages() -> None:
    """numpy asks for 2 MB huge pages for each large array; zeroing those in page workers was ~10 % of a
    run's CPU on a virtual machine (issue 13's speed, twenty-fifth session), so workers turn them off."""
    parent = thp_flag(0)
    if parent != "1":  # no such line, or off already: the old code would pass too
        pytest.skip(f"this process's THP_enabled is {parent or 'not reported'}")
    assert pageworkers.run(thp_flag, [(1,)], processes=1, deadline=60) == ["0"]
    assert thp_flag(0) == parent  # the parent's own setting stays


class _Planted:
    """What a decoder exploit would send its parent: unpickling it creates a file (it could run anything)."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return open, (self.marker, "x")


def _writable_pipes() -> dict[int, int]:
    """This process's descriptors open for writing into a pipe, by their pipe's inode."""
    found = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            info = os.fstat(int(name))
            if stat.S_ISFIFO(info.st_mode) and fcntl.fcntl(int(name), fcntl.F_GETFL) & os.O_ACCMODE == os.O_WRONLY:
                found[info.st_ino] = int(name)
        except OSError:
            pass
    return found


def compromised(marker: str, before: list[int]) -> str:
    """A page worker a decoder exploit took over: it writes a crafted pickle, in multiprocessing's framing,
    to every pipe it may write to that its parent did not have before the run (its result pipe is one),
    then carries on as if nothing happened."""
    payload = pickle.dumps(_Planted(marker))
    for inode, fd in _writable_pipes().items():
        if inode not in before:
            os.write(fd, struct.pack("!i", len(payload)) + payload)
    time.sleep(1)
    return "done"


def test_a_worker_that_sends_a_pickle_runs_no_code_in_its_parent(tmp_path) -> None:
    """Results come back as data (wire.py), never unpickled: a page worker taken over through a decoder
    cannot run code in its batch worker (review rev16ipc); its page fails with one line instead."""
    marker = tmp_path / "planted"
    failure: BaseException | None = None
    try:
        pageworkers.run(compromised, [(str(marker), list(_writable_pipes()))], processes=1, deadline=20)
    except Exception as e:  # noqa: BLE001 - judged below, after the file
        failure = e
    time.sleep(0.5)  # the old executor unpickled in its own thread
    assert not marker.exists(), "the page worker's pickle was unpickled in its parent"
    assert isinstance(failure, OcrError) and not isinstance(failure, OcrTimeoutError), repr(failure)
    assert re.fullmatch(r"page 1 not converted: its page worker sent a malformed result \(.+\); "
                        r"the worker was stopped", str(failure)), str(failure)


def array_and_report(x: int):
    import numpy as np

    band = np.arange(x * 6, dtype=np.uint8).reshape(x * 2, 3)
    return PageReport(x, 10, 20, 300.0, "file", "grey", 0, 0.0, "ocr", 91.5, 2, "jpeg", 99, text="Quyết định",
                      paper={"box": (1, 2, 3, 4)}, top_band=band), b"\x00raw", {"n": np.int64(x)}


def test_reports_arrays_and_bytes_come_back_whole() -> None:
    (report, raw, extra), = pageworkers.run(array_and_report, [(2,)], processes=1, deadline=60)
    assert report.text == "Quyết định" and report.paper == {"box": (1, 2, 3, 4)} and raw == b"\x00raw"
    assert report.top_band.shape == (4, 3) and report.top_band.dtype.name == "uint8"
    assert report.top_band.tolist() == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 10, 11]]
    assert extra == {"n": 2} and type(extra["n"]) is int


def os_error(x: int) -> int:
    open(f"/nonexistent-{x}/page.pdf", "rb")
    return x


def test_an_os_error_keeps_its_errno_and_file_name() -> None:
    """convert tells a full disk (ENOSPC) from other failures by the errno of its page worker's error."""
    with pytest.raises(FileNotFoundError) as failure:
        pageworkers.run(os_error, [(7,)], processes=1, deadline=60)
    assert failure.value.errno == 2 and failure.value.filename == "/nonexistent-7/page.pdf"


def writable_pipes(x: int) -> tuple[int, list[int]]:
    return os.getpid(), list(_writable_pipes())


def test_a_worker_cannot_write_to_any_task_pipe(kept) -> None:
    """Tasks are pickles only the parent writes: a worker closes the writing ends of its siblings' task
    pipes it inherited with the fork (and its own never reaches it)."""
    pageworkers.run(square, [(1,)], processes=3, deadline=60)  # forks the three
    workers = pageworkers._kept.workers
    tasks = {os.fstat(worker.tasks).st_ino for worker in workers}
    results = {worker.process.pid: os.fstat(worker.results).st_ino for worker in workers}
    seen = set()
    for pid, pipes in pageworkers.run(writable_pipes, [(n,) for n in range(9)], processes=3, deadline=60):
        assert results[pid] in pipes and not tasks & set(pipes)
        seen.add(pid)
    assert len(seen) > 1


def _result_pipe() -> int:
    frame = sys._getframe()
    while frame.f_code.co_name != "_serve":
        frame = frame.f_back
    return frame.f_locals["results"]


def half_a_frame(before: list[int], everywhere: bool) -> int:
    """10 of the 100 bytes it announces: to its result pipe, or to every pipe it may write to."""
    for fd in [fd for inode, fd in _writable_pipes().items() if inode not in before] if everywhere else [_result_pipe()]:
        os.write(fd, struct.pack("!II", 100, 0) + b"{" * 10)
    time.sleep(600)
    return 0


@pytest.mark.parametrize("everywhere, failure", [
    (False, "page 1: not finished within 2 s; its worker was stopped"),
    (True, "page 1 not converted: a page worker process broke its pipes and was stopped")])
def test_a_worker_stalling_partway_through_its_result_or_writing_to_its_sentinel_holds_nobody(everywhere, failure):
    """Half a frame is waited for only until the page's deadline; bytes in the pipe multiprocessing watches
    for the process's end (Process.join would then block in waitpid) end the worker at once."""
    start = time.monotonic()
    with pytest.raises(OcrError, match=f"^{re.escape(failure)}$"):
        pageworkers.run(half_a_frame, [(list(_writable_pipes()), everywhere)], processes=1, deadline=2)
    assert time.monotonic() - start < 600  # not the worker's 600 s sleep (waitpid for it)


def answers_ahead(x: int, pad: str) -> int:
    """A hostile worker: it shrinks its task pipe to one page, sends answers for forty tasks it never
    reads (so its parent keeps handing it more), then sleeps."""
    frame = sys._getframe()
    while frame.f_code.co_name != "_serve":
        frame = frame.f_back
    fcntl.fcntl(frame.f_locals["tasks"], 1031, 4096)  # F_SETPIPE_SZ
    text = b'{"ok":0}'
    os.write(frame.f_locals["results"], (struct.pack("!II", len(text), 0) + text) * 40)
    time.sleep(600)
    return 0


def test_a_worker_that_takes_no_more_tasks_cannot_block_its_parent() -> None:
    """The parent never blocks writing a task (review2 r2lows H1): a worker that answers ahead and lets
    its task pipe fill up fails its page at once instead of hanging the parent past every deadline."""
    faulthandler.dump_traceback_later(60, exit=True)  # the old code blocked forever in give()
    try:
        with pytest.raises(OcrError, match=r"^page \d+ not converted: its page worker did not take its task; "
                                           r"the worker was stopped$"):
            pageworkers.run(answers_ahead, [(n, "x" * 1000) for n in range(60)], processes=1, deadline=2)
    finally:
        faulthandler.cancel_dump_traceback_later()


def length(text: str) -> int:
    return len(text)


def test_a_task_larger_than_a_pipe_is_taken_whole(kept) -> None:
    """An honest worker reads its task as it is written (review3 r3pool M1): one larger than its task pipe
    (a batch's 2000 paths for page counting are ~100 kB; a pipe holds 64 kB, or one page once the user's
    pipe quota is spent) reaches it instead of failing as "did not take its task"; kept workers too."""
    for n in (1 << 20, 3 << 20):
        assert pageworkers.run(length, [("x" * n,), ("y" * n,)], processes=2, deadline=60) == [n, n]


def sockets_and_pipes(x: int) -> tuple[list[int], list[int]]:
    """This worker's open sockets, and the inodes of the pipes it holds (std streams aside)."""
    sockets, pipes = [], []
    for name in os.listdir("/proc/self/fd"):
        try:
            mode, inode = os.fstat(int(name))[stat.ST_MODE], os.fstat(int(name)).st_ino
        except OSError:
            continue
        if int(name) > 2 and stat.S_ISSOCK(mode):
            sockets.append(int(name))
        if int(name) > 2 and stat.S_ISFIFO(mode):
            pipes.append(inode)
    return sockets, pipes


def test_a_worker_holds_none_of_its_parents_sockets_or_pipes() -> None:
    """A worker taken over through a decoder cannot talk on its parent's database, Redis, MinIO or signer
    connection, nor write to a pipe of its parent's (review2 r2lows M4): they are gone before any page."""
    import socket

    a, b = socket.socketpair()  # stands for an authenticated connection
    r, w = os.pipe()  # stands for a pipe to a tool or server the parent started
    try:
        (sockets, pipes), = pageworkers.run(sockets_and_pipes, [(0,)], processes=1, deadline=60)
        assert sockets == []
        assert os.fstat(r).st_ino not in pipes
    finally:
        a.close(), b.close(), os.close(r), os.close(w)


def test_a_ctrl_c_just_after_a_worker_is_forked_still_ends_it(monkeypatch) -> None:
    """A KeyboardInterrupt between a worker's fork and its pool's record of it left it running, unreaped
    (review2 r2lows L3); the pool now knows a worker before it forks it, and ends it with the others."""
    started = []
    start = multiprocessing.process.BaseProcess.start

    def start_then_interrupted(process) -> None:
        start(process)
        started.append(process)
        raise KeyboardInterrupt

    monkeypatch.setattr(multiprocessing.process.BaseProcess, "start", start_then_interrupted)
    with pytest.raises(KeyboardInterrupt):
        pageworkers.run(square, [(1,)], processes=1, deadline=60)
    monkeypatch.undo()
    try:
        assert started and started[0].exitcode is not None, "the worker forked before the Ctrl-C still runs"
    finally:
        if started and started[0].exitcode is None:
            started[0].kill()
            started[0].join()


PROBE = """
import os, sys
from digitize import cli, pageworkers


def environ_block(x):
    with open("/proc/self/environ", "rb") as f:
        return f.read()


@cli.cli.command("probe")
def probe():
    sys.stdout.buffer.write(pageworkers.run(environ_block, [(1,)], processes=1, deadline=60)[0])


sys.exit(cli.main(["--config", "/dev/null", "probe"]))
"""


def test_a_page_worker_cannot_read_the_services_secrets_in_its_proc_environ(tmp_path) -> None:
    """Review rev17ops M4: unsetenv drops only the pointer; the bytes execve put on the stack stayed in
    /proc/self/environ of every forked worker (a decoder's read-a-file bug reads them)."""
    import subprocess
    import sys
    from pathlib import Path

    secret = {"DIGITIZE_SIGN_PIN": "pin-731945", "PGPASSWORD": "pgSecretPw99", "DIGITIZE_QUEUE_SECRET": "q" * 40,
              "AWS_SECRET_ACCESS_KEY": "awsSecretKey-0042"}
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, timeout=120, cwd=tmp_path,
                          env={**os.environ, **secret, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    assert done.returncode == 0, done.stderr[-2000:]
    names = {entry.partition(b"=")[0] for entry in done.stdout.split(b"\0")}
    assert b"HOME" in names or b"PATH" in names  # it is the worker's environment block
    for value in secret.values():
        assert value.encode() not in done.stdout


def starts_a_tool(x: int, pid_file: str) -> int:
    """Page 2 waits on a tool (as on pdftoppm); page 1 fails a second later."""
    if x == 1:
        time.sleep(1)
        raise InputError("page 1 is broken")
    import subprocess

    with subprocess.Popen(["sleep", "60"]) as tool:
        with open(pid_file, "w") as out:
            out.write(str(tool.pid))
        tool.wait()
    return x


def _running(pid: int) -> bool:
    """Whether PID runs (a zombie nobody reaps, its parent gone, has stopped)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _tool_ends_with_its_worker(tasks: list, processes: int, deadline: float, raises, tmp_path) -> None:
    pid_file = tmp_path / "tool.pid"
    with pytest.raises(raises):
        pageworkers.run(starts_a_tool, [(n, str(pid_file)) for n in tasks], processes=processes, deadline=deadline)
    _assert_ends(int(pid_file.read_text()))


def _assert_ends(*pids: int) -> None:
    """Every one of PIDS stops running within 30 s (an event waited for, not a timing); any left is
    the test's own orphan, killed."""
    try:
        until = time.monotonic() + 30
        while any(map(_running, pids)) and time.monotonic() < until:
            time.sleep(0.05)
        assert not any(map(_running, pids)), "a tool outlived the page worker that started it"
    finally:
        for pid in filter(_running, pids):
            os.kill(pid, signal.SIGKILL)


def test_a_failed_files_workers_take_their_tools_with_them(tmp_path) -> None:
    """A worker ended because a sibling page failed leaves no tool running as an orphan (review
    rev17input H1: its pdftoppm rendered on, with no time limit, for hours)."""
    _tool_ends_with_its_worker([1, 2], 2, 60, InputError, tmp_path)


def test_a_worker_past_its_deadline_takes_its_tools_with_it(tmp_path) -> None:
    _tool_ends_with_its_worker([2], 1, 1, OcrTimeoutError, tmp_path)


ON_A_TERMINAL = r'''
import fcntl, os, termios
fcntl.ioctl(0, termios.TIOCSCTTY, 0)  # the pty is this session's terminal, this process in its foreground
attrs = termios.tcgetattr(0)
attrs[3] |= termios.TOSTOP  # an operator's `stty tostop`: a background process that writes to it is stopped
termios.tcsetattr(0, termios.TCSANOW, attrs)
from digitize import pageworkers
def warns(x):
    os.write(2, b"a library's warning\n")
    return x
print("RESULT", pageworkers.run(warns, [(1,), (2,)], processes=1, deadline=5), flush=True)
'''


def test_a_worker_writing_to_its_runs_terminal_is_not_stopped(tmp_path) -> None:
    """A page worker leads its own process group, a background one on the run's terminal (review3 r3pool M2):
    with `stty tostop` a library's warning on stderr stopped it (SIGTTOU) until its page's deadline killed it
    and a good file failed (exit 6)."""
    import subprocess
    from pathlib import Path

    master, slave = os.openpty()
    with subprocess.Popen([sys.executable, "-c", ON_A_TERMINAL], stdin=slave, stdout=slave, stderr=slave, cwd=tmp_path,
                          start_new_session=True,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}) as run:
        os.close(slave)
        out = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the session's last process closed the terminal
                break
            if not chunk:
                break
            out += chunk
        os.close(master)
        assert run.wait(60) == 0, out.decode(errors="replace")[-2000:]
    assert b"RESULT [1, 2]" in out and out.count(b"a library's warning") == 2


def _reaped(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)
        return False
    except ChildProcessError:  # not our child any more: reaped
        return True


def _has_pidfd() -> bool:
    try:
        os.close(os.pidfd_open(os.getpid()))
    except (AttributeError, OSError):  # Linux < 5.3, or a seccomp profile refusing it
        return False
    return True


def _ends_when_asked(worker) -> None:
    worker.start()
    try:
        assert worker.ended(0.2) is None  # alive, idle: not ended within the wait
        worker.ask_to_exit()
        assert worker.ended(30.0) == 0
    finally:
        worker.close(0)


@pytest.mark.skipif(not _has_pidfd(), reason="no pidfd here: ended() polls (its fallback)")
def test_ended_waits_on_the_exit_itself_not_in_sleeps(monkeypatch) -> None:
    """A run waits for its workers' exits at every file's end: on the exit (a pidfd), not in a sleep
    loop that overslept each one by up to 50 ms. Only pageworkers' sleep is refused (review2
    r2speed14 L2: another thread's sleep must not fail)."""
    worker = pageworkers._Worker(multiprocessing.get_context("fork"), os.getpid(), 0)
    monkeypatch.setattr(pageworkers, "time", types.SimpleNamespace(
        monotonic=time.monotonic, sleep=lambda s: pytest.fail("ended() slept instead of waiting")))
    _ends_when_asked(worker)


def test_ended_without_pidfd_polls_for_the_exit(monkeypatch) -> None:
    """Where pidfd_open is refused (an old kernel, a seccomp profile), the exit is still seen (review2
    r2speed14 L1: the fallback was never run)."""
    def refused(pid: int) -> int:
        raise OSError(errno.ENOSYS, "pidfd_open")

    monkeypatch.setattr(pageworkers, "os", types.SimpleNamespace(**{**vars(os), "pidfd_open": refused}))
    _ends_when_asked(pageworkers._Worker(multiprocessing.get_context("fork"), os.getpid(), 0))


def _leaves_a_tool_and_hangs_at_exit(x: int) -> int:
    """Starts a tool (in the worker's process group) and a thread that holds up the worker's exit."""
    import subprocess
    import threading

    tool = subprocess.Popen(["sleep", "300"])
    threading.Thread(target=time.sleep, args=(300,)).start()  # not a daemon: exit waits for it
    return tool.pid


def test_a_held_pool_serves_the_count_and_the_pages_then_its_workers_are_reaped() -> None:
    with pageworkers.held():
        counted = pageworkers.run(square, [(1,)], processes=1, deadline=60)
        pages = pageworkers.run(square, [(n,) for n in range(4)], processes=2, deadline=60)
        assert counted[0][1] in {pid for _, pid in pages}  # the count's worker went on to the pages: no fork for it
        assert len({pid for _, pid in pages}) == 2  # grown to the pages' two workers
        pageworkers.release()  # told to exit; reaped at the end of held()
        assert pageworkers.run(square, [(5,)], processes=1, deadline=60)[0][1] not in {pid for _, pid in pages}
    assert all(_reaped(pid) for pid in {counted[0][1], *(pid for _, pid in pages)})


@pytest.mark.parametrize("released", (False, True))
def test_a_failure_in_a_held_pool_ends_its_workers_and_tools_at_once(monkeypatch, released) -> None:
    """A failure (a Ctrl-C before or after release()) kills the workers and their tools: no polite wait
    for hung ones (review2 r2speed14 M3: a mutant that waited passed)."""
    with pytest.raises(RuntimeError, match="the merge failed"):
        with pageworkers.held():
            tools = pageworkers.run(_leaves_a_tool_and_hangs_at_exit, [(1,), (2,)], processes=2, deadline=60)
            pids = [worker.process.pid for worker in pageworkers._holding.pool.workers]
            if released:
                pageworkers.release()
            monkeypatch.setattr(pageworkers, "_wait_for_exit",
                                lambda pid, wait: pytest.fail("a failed run waited for its workers"))
            raise RuntimeError("the merge failed")
    _assert_ends(*tools)
    assert all(_reaped(pid) for pid in pids)
    monkeypatch.undo()
    with pageworkers.held():  # a failed page ends the held pool; the next run forks anew
        with pytest.raises(InputError):
            pageworkers.run(fails, [(1,), (2,)], processes=1, deadline=60)
        assert pageworkers.run(square, [(3,)], processes=1, deadline=60)[0][0] == 9


def test_a_released_worker_past_its_exit_wait_is_killed_with_its_tools(monkeypatch) -> None:
    """Killed with its process group, while its id is still ours (review2 r2speed14 M1: the worker
    alone was killed; its pdftoppm ran on, an orphan with no deadline)."""
    monkeypatch.setattr(pageworkers, "EXIT_WAIT", 0.5)
    with pageworkers.held():
        (tool,) = pageworkers.run(_leaves_a_tool_and_hangs_at_exit, [(1,)], processes=1, deadline=60)
        (pid,) = [worker.process.pid for worker in pageworkers._holding.pool.workers]
        pageworkers.release()
    _assert_ends(tool)
    assert _reaped(pid)


def test_an_interrupt_while_released_workers_are_reaped_still_ends_them(monkeypatch, tmp_path) -> None:
    """A Ctrl-C (the watcher's second SIGTERM) during the end's wait kills and closes every worker
    not yet closed (review2 r2speed14 M2: they ran on, unreaped, their pipes open); closing one
    again closes nothing (its descriptor numbers may be another file's by then)."""
    def ctrl_c(pid: int, wait: float) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        with pageworkers.held():
            tools = pageworkers.run(_leaves_a_tool_and_hangs_at_exit, [(1,), (2,)], processes=2, deadline=60)
            workers = list(pageworkers._holding.pool.workers)
            numbers = [worker.tasks for worker in workers]
            pageworkers.release()
            monkeypatch.setattr(pageworkers, "_wait_for_exit", ctrl_c)
    _assert_ends(*tools)
    assert all(_reaped(worker.process.pid) for worker in workers)
    for worker, tasks in zip(workers, numbers):
        with open(tmp_path / "another file", "w") as other:
            os.dup2(other.fileno(), tasks)  # as if its number had been reused
            try:
                worker.close(0)
                os.fstat(tasks)  # still open: not closed a second time
            finally:
                os.close(tasks)


def test_hung_released_workers_share_one_exit_wait(monkeypatch) -> None:
    """All were asked to exit together: N hung workers cost one EXIT_WAIT, not N (review2 r2speed14 L4)."""
    now, waits = [0.0], []

    def waited_out(pid: int, wait: float) -> None:  # as a hung worker would: the whole wait passes
        waits.append(wait)
        now[0] += wait

    with pageworkers.held():
        tools = pageworkers.run(_leaves_a_tool_and_hangs_at_exit, [(1,), (2,)], processes=2, deadline=60)
        pageworkers.release()
        monkeypatch.setattr(pageworkers, "time", types.SimpleNamespace(monotonic=lambda: now[0]))
        monkeypatch.setattr(pageworkers, "_wait_for_exit", waited_out)
    try:
        assert waits == [pageworkers.EXIT_WAIT]  # the second one, past the shared wait, was killed
    finally:
        _assert_ends(*tools)


def holds_nothing(x: int) -> bool:
    return vars(pageworkers._holding) == {}


def test_a_worker_forked_within_held_holds_nothing_of_its_parents() -> None:
    """A run() inside a worker would otherwise reuse its parent's pool copy, whose pipes it let go of (review2
    r2speed14 L5)."""
    with pageworkers.held():
        assert pageworkers.run(holds_nothing, [(1,)], processes=1, deadline=60) == [True]


def _unreaped_at_each_group_kill(monkeypatch) -> list[bool]:
    """For each os.killpg from now on: was the group's leader still unreaped (its id still ours)?"""
    seen, real = [], os.killpg

    def spy(pgid: int, signum: int) -> None:
        seen.append(pageworkers._unreaped(pgid))
        real(pgid, signum)

    monkeypatch.setattr(os, "killpg", spy)
    return seen


@pytest.mark.parametrize("how", ("dies in a task", "kept, killed while idle"))
def test_a_dead_workers_group_is_killed_before_the_worker_is_reaped(monkeypatch, request, how) -> None:
    """death() and alive() read how a worker ended without reaping it, so end() kills its group while the
    group's id is still ours (review3 r3speed14 L1: reaped first, a group with no tool left had an id the
    kernel could hand to a stranger, who then got the SIGKILL)."""
    if how == "dies in a task":
        seen = _unreaped_at_each_group_kill(monkeypatch)
        with pytest.raises(OcrError, match="killed by SIGKILL"):
            pageworkers.run(killed, [(3,)], processes=1, deadline=60)
    else:
        request.getfixturevalue("kept")
        (pid,) = {pid for _, pid in pageworkers.run(square, [(1,)], processes=1, deadline=60)}
        os.kill(pid, signal.SIGKILL)
        ended(pid)
        seen = _unreaped_at_each_group_kill(monkeypatch)
        assert pageworkers.run(square, [(2,)], processes=1, deadline=60)[0][0] == 4  # alive() saw it dead
    assert seen and all(seen), f"a group was killed after its leader was reaped: {seen}"


def _leaves_a_tool(x: int) -> int:
    import subprocess

    return subprocess.Popen(["sleep", "300"]).pid


def test_only_the_pool_reaps_its_workers_so_a_released_ones_tools_still_end() -> None:
    """A released worker that exited is not reaped by multiprocessing when anything forks another process
    (Process.start reaps every finished child it started): held() still finds it unreaped and kills the
    tools it left (review3 r3speed14 L2: the tool ran on)."""
    with pageworkers.held():
        (tool,) = pageworkers.run(_leaves_a_tool, [(1,)], processes=1, deadline=60)
        (pid,) = [worker.process.pid for worker in pageworkers._holding.pool.workers]
        pageworkers.release()
        ended(pid)  # exited, not reaped
        assert pageworkers.run(square, [(2,)], processes=1, deadline=60)[0][0] == 4  # a fork
    _assert_ends(tool)
    assert _reaped(pid)


@pytest.mark.parametrize("failed", (False, True))
def test_a_ctrl_c_during_helds_cleanup_leaves_the_thread_outside_held(monkeypatch, failed) -> None:
    """An interrupt while held() lets its workers go (asking them to exit, or killing them) still ends
    them, and leaves this thread outside held() (review3 r3speed14 L3: every later held() took the nested
    branch and never reaped its workers)."""
    def ctrl_c_once(*args) -> None:
        monkeypatch.undo()
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        with pageworkers.held():
            (pid,) = {pid for _, pid in pageworkers.run(square, [(1,)], processes=1, deadline=60)}
            monkeypatch.setattr(pageworkers._Worker, "ask_to_exit", ctrl_c_once)
            monkeypatch.setattr(pageworkers, "_kill_group", ctrl_c_once)
            if failed:
                raise RuntimeError("the merge failed")
    assert getattr(pageworkers._holding, "leaving", None) is None
    assert _reaped(pid)
    with pageworkers.held():
        (later,) = {pid for _, pid in pageworkers.run(square, [(2,)], processes=1, deadline=60)}
    assert _reaped(later)  # reaped at held()'s end: not a nested held()
