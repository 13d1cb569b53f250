"""Page worker processes: forked, killed past a deadline, and a dead one fails its file at once.

Pages run in forked workers even for one job: a page that hangs inside Tesseract (where no
timeout reaches) is stopped by killing its worker, never by hanging the caller. fork, not
spawn: the workers inherit the imported modules and the loaded Tesseract models for free
(copy-on-write).

A worker killed from outside (the OOM killer, a crash in a C library) breaks the pool, and
every page still in it fails at once with a line that says how the worker ended.
(``multiprocessing.Pool`` would quietly fork a replacement and lose the page: the file then
waited out its deadline and was called an OCR timeout.)

Results come back as data, never as pickles (review rev16ipc): a worker decodes untrusted
pages, and one a decoder exploit took over could otherwise run code in its parent by writing
a crafted pickle to its result pipe (``concurrent.futures.ProcessPoolExecutor`` unpickles
whatever arrives there). Each worker has its own pipes: tasks go down as pickles (written by
the parent only: the trusted side), results come up as wire.py frames (JSON and raw bytes,
bounded, read by a strict decoder). A worker that sends anything else fails its page and is
stopped, as a dead one is.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import multiprocessing.connection
import multiprocessing.util
import os
import pickle
import resource
import select
import signal
import stat
import struct
import sys
import threading
import time
import traceback
from typing import Any, Callable, Iterator, Sequence

from . import wire
from .errors import DigitizeError, InputTooLargeError, OcrError, OcrTimeoutError

PR_SET_PDEATHSIG = 1  # prctl option (linux/prctl.h): a signal for us when our parent ends
PR_GET_DUMPABLE, PR_SET_DUMPABLE = 3, 4  # prctl options: may a process of our uid ptrace us
PR_SET_THP_DISABLE = 41  # prctl option: no transparent huge pages for this process and its children
TASK_HEADER = struct.Struct("!Q")  # a task's pickle's length; 0: exit
SIGNAL_HINTS = {signal.SIGKILL: "out of memory?", signal.SIGSEGV: "a crash in a C library",
                signal.SIGBUS: "a crash in a C library", signal.SIGABRT: "a crash in a C library"}


def _prctl(option: int, arg: int = 0) -> int | None:
    """prctl(OPTION, ARG, 0, 0, 0); None where there is no prctl (not Linux)."""
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(option, arg, 0, 0, 0)
    except (OSError, AttributeError):
        return None


def die_with_parent(parent: int, signum: int = signal.SIGKILL) -> None:
    """This forked process gets SIGNUM (killed, by default) when the thread that forked it ends
    (kill -9 of a batch or a watch included), so no worker outlives the run it serves (Linux only)."""
    if _prctl(PR_SET_PDEATHSIG, signum) is None:
        return
    if os.getppid() != parent:  # it died before prctl took effect
        os._exit(1)


def undumpable() -> None:
    """No process of this uid may read this process's memory (/proc/PID/mem, ptrace) or copy its
    file descriptors (pidfd_getfd) any more: a page worker or a tool run on untrusted input (same
    uid, our child) cannot take the signer's key or an authenticated signer connection from us.
    The flag is this process's own (a child that sets itself dumpable again gains nothing over us);
    root or CAP_SYS_PTRACE still can (SECURITY.md). Linux only; elsewhere nothing happens."""
    _prctl(PR_SET_DUMPABLE, 0)


def dumpable() -> bool | None:
    """This process's PR_GET_DUMPABLE (None where prctl is not there)."""
    found = _prctl(PR_GET_DUMPABLE)
    return None if found is None else bool(found)


def small_pages() -> None:
    """Memory this process (and any tool it starts) touches from now on comes in 4 KB pages, not
    2 MB transparent huge pages. numpy asks for huge pages for every array of 4 MB or more
    (madvise), so a page's images were faulted in 2 MB at a time, each zeroed whole; on a virtual
    machine whose host takes back the guest's freed 2 MB blocks (free page reporting) every such
    fault also costs the host a fault per 4 KB, and zeroing them was ~10 % of a run's CPU
    (`perf`: clear_page under do_huge_pmd_anonymous_page), swinging with the host's state. A page
    worker lives for a file or a few: huge pages' fewer TLB misses never paid that back. Model
    weights loaded before the fork keep whatever pages they have."""
    _prctl(PR_SET_THP_DISABLE, 1)


def limit_memory(memory_mb: int) -> None:
    """Cap this process's address space (RLIMIT_AS; inherited by poppler's pdftoppm), so that a
    page that slips past the decoding limits fails with MemoryError instead of taking the machine.
    0 leaves it as it is; a lower limit already set stays."""
    if memory_mb <= 0:
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    wanted = memory_mb << 20
    if hard != resource.RLIM_INFINITY:
        wanted = min(wanted, hard)
    if soft == resource.RLIM_INFINITY or wanted < soft:
        resource.setrlimit(resource.RLIMIT_AS, (wanted, hard))


def _init_page_worker(parent: int, memory_mb: int) -> None:
    """Page workers end with the process that forked them (a batch worker killed with -9
    would otherwise leave them computing pages nobody will collect). They leave
    signals to it: the parent's handlers (watch's graceful SIGTERM) are not theirs, the
    executor's SIGTERM must end them, and a Ctrl-C reaches the parent, which ends them.
    They never sign: what they inherited that reaches a batch's signer (its authkey, a batch
    worker's connection to it) is wiped, and the signers, refusals and PIN they inherited dropped,
    before any page runs. Nor do they need a secret: every
    secret variable (AWS_*, PGPASSWORD too) leaves their environment, so no decoder, tool or
    library child started from one can inherit it."""
    from .secrets import drop_secret_environ

    drop_secret_environ()
    undumpable()  # its own children (decoders, tools) cannot reach into it either
    signing = sys.modules.get("digitize.signing")  # not imported: no signer, nothing to wipe
    if signing is not None:
        signing.forget_service()
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent(parent)
    os.setpgid(0, 0)  # a group of its own: end() kills it with the tools it started (pdftoppm, jbig2dec)
    # which is a background group on its run's terminal: a library's warning written there (`stty tostop`) or a
    # read from it would stop the worker (and its tools: inherited across exec) until its page's deadline
    # killed it, failing a good file (review3 r3pool M2). Ignored, the write goes through and a read fails.
    for signum in (signal.SIGTTOU, signal.SIGTTIN):
        signal.signal(signum, signal.SIG_IGN)
    limit_memory(memory_mb)
    small_pages()


def _bounded(fn: Callable, memory_mb: int, *args):
    """``fn(*args)`` in a worker; running out of its memory limit is the input's fault (exit 2)."""
    try:
        return fn(*args)
    except MemoryError:
        raise InputTooLargeError(f"a page needs more than the {memory_mb} MB a page worker may use "
                                 "(decompression bomb?); raise convert.max_memory_mb if genuine") from None


class _Broken(Exception):
    """A page worker ended, or broke the protocol: the pool ends and the page fails."""

    def __init__(self, worker: "_Worker", why: str = ""):
        super().__init__(why)
        self.worker, self.why = worker, why


class _Worker:
    """One forked page worker. Its tasks come down a pipe only its parent writes (pickles: the
    parent is the trusted side); its results come up another as wire frames (JSON and raw bytes,
    digitize/wire.py), which the parent reads as data, never unpickles."""

    def __init__(self, context, parent: int, memory_mb: int):
        reader, self.tasks = os.pipe()
        self.results, writer = os.pipe()
        # every pipe its parent holds (its own pipes' other ends, its siblings', a tool's or server's) but its own two
        pipes = {fd: info.st_ino for fd, info in _descriptors() if stat.S_ISFIFO(info.st_mode)
                 and fd not in (reader, writer)}
        self.process = context.Process(target=_serve, args=(reader, writer, parent, memory_mb, pipes))
        self.ends: tuple | None = (reader, writer)  # the worker's ends, closed here once it has them
        os.set_blocking(self.results, False)
        os.set_blocking(self.tasks, False)  # a worker that lets its task pipe fill up blocks nobody past a deadline
        self.task: int | None = None  # the index of the task it runs
        self.header, self.body = b"", None  # the frame being read: its header, then its JSON and raw bytes
        self.text = self.size = 0  # the JSON's length in the body, the body's length

    def start(self) -> None:
        """Fork it. Called once it is in its pool's list: a Ctrl-C meanwhile still ends it (review2 r2lows L3).
        Only its pool reaps it (review3 r3speed14 L2): multiprocessing reaps every finished child it knows
        of whenever it starts another, and a released worker reaped so could no longer have its group
        killed (its tools ran on)."""
        try:
            self.process.start()
            multiprocessing.process._children.discard(self.process)  # type: ignore[attr-defined]
        finally:
            self._close_ends()

    def _close_ends(self) -> None:
        if self.ends is not None:
            reader, writer = self.ends
            self.ends = None
            os.close(reader)
            os.close(writer)

    def give(self, index: int, fn: Callable, task: tuple, until: float) -> None:
        """Waits for the worker to take its task only until UNTIL (time.monotonic(); review2 r2lows H1): a
        worker that let its task pipe fill up (it answered tasks it never read) blocks nobody past a
        page's deadline. An honest one reads as it is written, so a task larger than its pipe (a batch's
        2000 paths to count) is taken whole (review3 r3pool M1: it was refused as "did not take its task")."""
        data = pickle.dumps((fn, task), protocol=pickle.HIGHEST_PROTOCOL)
        if not self._write(TASK_HEADER.pack(len(data)) + data, until):
            raise _Broken(self, "did not take its task")
        self.task = index

    def _write(self, message: bytes, until: float) -> bool:
        """MESSAGE down the task pipe, waiting for room until UNTIL; False if there was none in time.
        _Broken if the worker is gone (the pipe's other end closed)."""
        view = memoryview(message)
        while view:
            try:
                view = view[os.write(self.tasks, view):]
            except BlockingIOError:
                left = until - time.monotonic()
                if left <= 0:
                    return False
                room = select.poll()  # not select(): a busy parent's descriptors may pass 1024
                room.register(self.tasks, select.POLLOUT)
                room.poll(min(left, 1.0) * 1000)
            except OSError:  # it died meanwhile: the pipe's other end is gone
                raise _Broken(self) from None
        return True

    def read(self) -> tuple[bool, Any] | None:
        """The frame it finished sending, or None while it is not whole; _Broken at its end (its
        pipe closed) or for anything but one frame for the task it was given."""
        try:
            while True:
                if self.body is None:
                    chunk = os.read(self.results, wire.HEADER.size - len(self.header))
                    if not chunk:
                        raise _Broken(self)
                    if self.task is None:
                        raise _Broken(self, "sent a result nobody asked for")
                    self.header += chunk
                    if len(self.header) < wire.HEADER.size:
                        continue
                    self.text, size = wire.sizes(self.header)  # bounded before anything is read
                    self.body, self.size = bytearray(), self.text + size
                elif len(self.body) < self.size:  # grown as bytes arrive: a header alone costs nothing
                    chunk = os.read(self.results, min(self.size - len(self.body), 1 << 20))
                    if not chunk:
                        raise _Broken(self)
                    self.body += chunk
                if len(self.body) == self.size:
                    body, self.body, self.header = memoryview(self.body), None, b""
                    return wire.read_frame(body[:self.text], body[self.text:])
        except BlockingIOError:
            return None
        except wire.Malformed as e:
            raise _Broken(self, f"sent a malformed result ({e})") from None

    def ended(self, wait: float) -> int | None:
        """Its exit code once it ended within WAIT seconds, else None. Never Process.join(timeout):
        that trusts the sentinel pipe, which the worker can write to, and then waits in waitpid.
        Read without reaping it (review3 r3speed14 L1): its group is killed after this, while the
        group's id is still ours (reaped, a group with no tool left has an id anyone may get)."""
        pid = self.process.pid
        if pid is None:  # not started
            return None
        if wait > 0 and self._status(pid) is None:
            _wait_for_exit(pid, wait)
        return self._status(pid)

    def _status(self, pid: int) -> int | None:
        """Its exit code as multiprocessing gives it (-N: killed by signal N), None while it runs; not reaped."""
        try:
            info = _peek(pid)
        except ChildProcessError:  # reaped already (by close): its code is kept
            return self.process.exitcode
        if info is None:
            return None
        return info.si_status if info.si_code == os.CLD_EXITED else -info.si_status

    def ask_to_exit(self) -> None:
        """Tell it to exit, without waiting (a full task pipe: close() kills it instead)."""
        try:
            self._write(TASK_HEADER.pack(0), time.monotonic())
        except _Broken:
            pass

    def kill_group(self) -> None:
        """Kill the process group it leads (it and every tool it started), only while it is unreaped:
        until then its id, and its group's, cannot be anyone else's."""
        if self.process.pid is not None and _unreaped(self.process.pid):
            _kill_group(self.process.pid)

    def close(self, wait: float) -> None:
        """Ask it to exit (WAIT seconds), or kill it (WAIT 0); either way the tools it left running
        (its process group) are killed, it is reaped and its pipes are closed. A second close does
        nothing (an interrupted reap closes the rest again: never a descriptor number reused since)."""
        if self.tasks < 0:
            return
        pid = self.process.pid
        if pid is not None:  # started
            if wait > 0 and _unreaped(pid):  # reaped, its id may be a stranger's: no wait on it
                self.ask_to_exit()
                _wait_for_exit(pid, wait)  # not reaped yet: its id, its group's, stays ours
            self.kill_group()  # review2 r2speed14 M1: a pdftoppm it left ran on as an orphan
            if self.process.exitcode is None:
                self.process.kill()
            self.process.join()
        self._close_ends()
        fds, self.tasks, self.results = (self.tasks, self.results), -1, -1
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass


def _peek(pid: int):
    """Our child PID's end as waitid reports it WITHOUT reaping it (None while it runs; ChildProcessError once
    reaped): while unreaped, its id and its group's cannot be anyone else's."""
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)


def _unreaped(pid: int) -> bool:
    """Whether our child PID (running or ended) is not yet reaped: its id cannot be anyone else's."""
    try:
        _peek(pid)
    except ChildProcessError:
        return False
    return True


def _kill_group(pid: int | None) -> None:
    """Kill the process group a worker leads: it and every tool it started."""
    with contextlib.suppress(OSError, TypeError):  # no such group (not yet forked, or all gone)
        os.killpg(pid, signal.SIGKILL)


def _wait_for_exit(pid: int, wait: float) -> None:
    """Wait up to WAIT seconds for our unreaped child PID to end, without reaping it. On its pidfd
    (Linux 5.3+), which becomes readable the moment it ends and which the child cannot write to (its
    sentinel pipe it can): a run waits for its workers' exits at every file's end, and polling with a
    backoff overslept each exit by up to its step. Elsewhere, polling waitid(WNOWAIT) every 5 ms."""
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):  # no pidfd: an old kernel or another OS
        pidfd = -1
    if pidfd >= 0:
        try:
            watch = select.poll()
            watch.register(pidfd, select.POLLIN)
            watch.poll(max(wait, 0.0) * 1000)
        finally:
            os.close(pidfd)
        return
    until = time.monotonic() + wait
    while time.monotonic() < until:
        try:
            if _peek(pid) is not None:
                return
        except ChildProcessError:  # reaped already
            return
        time.sleep(0.005)


def _descriptors() -> list[tuple[int, os.stat_result]]:
    """This process's open descriptors but the standard streams, with what each is (Linux: /proc)."""
    found = []
    for name in os.listdir("/proc/self/fd"):
        try:
            if int(name) > 2:
                found.append((int(name), os.fstat(int(name))))
        except OSError:  # the listing's own descriptor, closed by now
            pass
    return found


def _drop_inherited(pipes: dict[int, int]) -> None:
    """Let go of every socket (its parent's database, Redis, S3 or signer connections) and of the parent's pipes
    (PIPES: descriptor -> inode) this forked worker inherited (review2 r2lows M4): one a decoder exploit took
    over cannot talk on them. Each becomes /dev/null rather than closed, so that no object still holding its
    number ever reaches a file opened later. multiprocessing's own pipes (made after PIPES) are kept."""
    null = os.open(os.devnull, os.O_RDWR)
    try:
        for fd, info in _descriptors():
            if fd != null and (stat.S_ISSOCK(info.st_mode) or pipes.get(fd) == info.st_ino):
                os.dup2(null, fd)
    finally:
        os.close(null)


def _receive(tasks: int, size: int) -> bytes | None:
    """SIZE bytes from the task pipe, or None at its end (the parent is gone)."""
    data = bytearray()
    while len(data) < size:
        chunk = os.read(tasks, size - len(data))
        if not chunk:
            return None
        data += chunk
    return bytes(data)


def _serve(tasks: int, results: int, parent: int, memory_mb: int, pipes: dict[int, int]) -> None:
    """A page worker's life: task after task from its parent (a length, then a pickle only the parent
    writes), each answered with one frame."""
    _drop_inherited(pipes)
    _init_page_worker(parent, memory_mb)
    _holding.__dict__.clear()  # the forking thread's held() (its pool, siblings) is not ours (r2speed14 L5)
    while True:
        header = _receive(tasks, TASK_HEADER.size)
        size = TASK_HEADER.unpack(header)[0] if header else 0
        data = _receive(tasks, size) if size else None
        if data is None:
            return
        fn, task = pickle.loads(data)
        try:
            frame = wire.result_frame(_bounded(fn, memory_mb, *task))
        except BaseException as e:  # noqa: BLE001 - the parent raises it, as it would have here
            frame = wire.error_frame(e, "" if isinstance(e, DigitizeError) else traceback.format_exc())
        view = memoryview(frame)
        while view:
            view = view[os.write(results, view):]


def _exiting(pid: int | None) -> bool:
    """Whether our unreaped child PID has begun to exit (Linux: PF_EXITING in /proc/PID/stat), so its exit
    code will come: a worker that closed its pipes but lives on broke the protocol and is not waited for."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat_file:
            flags = int(stat_file.read().rsplit(b")", 1)[1].split()[6])
    except (OSError, IndexError, ValueError):  # reaped meanwhile, or no /proc
        return False
    return bool(flags & 0x4)


DYING_WAIT = 15.0  # seconds a dying worker has to become reapable before it is said to have broken its pipes


class PagePool:
    """``processes`` forked workers; kept ones serve file after file (see ``keep``)."""

    def __init__(self, processes: int, memory_mb: int = 0):
        self.processes, self.memory_mb = processes, memory_mb
        self.workers: list[_Worker] = []  # forked at the first run

    def _fork(self) -> None:
        context = multiprocessing.get_context("fork")
        while len(self.workers) < self.processes:
            worker = _Worker(context, os.getpid(), self.memory_mb)
            self.workers.append(worker)
            worker.start()

    def run(self, fn: Callable, tasks: Sequence[tuple], deadline: float,
            while_running: Callable[[], None] = lambda: None) -> list:
        """``fn(*task)`` for every task, results in order. Any failure ends the workers (a failed
        file's other pages go too) and is raised; a task past DEADLINE seconds (counted from the
        previous result) raises OcrTimeoutError, a dead worker (or one that sent anything but its
        result) OcrError."""
        n = 1
        try:
            self._fork()
            waiting = list(range(len(tasks)))[::-1]  # popped from the end: in order
            done: dict[int, tuple[bool, Any]] = {}

            def hand_out() -> None:  # each task's taking waits at most a deadline of its own
                for worker in self.workers:
                    if worker.task is None and waiting:
                        index = waiting.pop()
                        worker.give(index, fn, tasks[index], time.monotonic() + deadline)

            hand_out()
            while_running()  # e.g. boot the validator: after the fork, so workers hold none of it
            results = []
            for n in range(1, len(tasks) + 1):
                until = time.monotonic() + deadline
                while n - 1 not in done:
                    left = until - time.monotonic()
                    if left <= 0:
                        raise OcrTimeoutError(f"page {n}: not finished within {deadline:g} s; "
                                              "its worker was stopped")
                    self._collect(left, done)
                    hand_out()
                ok, value = done.pop(n - 1)
                if not ok:
                    raise value
                results.append(value)
            return results
        except _Broken as broken:  # a worker died (in a task, or a kept one since its check), or broke the protocol
            worker = broken.worker
            page = n if worker.task is None else worker.task + 1
            cause = f"its page worker {broken.why}; the worker was stopped" if broken.why else self.death(worker)
            self.end()
            raise OcrError(f"page {page} not converted: {cause}") from None
        except BaseException:
            self.end()
            raise

    def _collect(self, timeout: float, done: dict[int, tuple[bool, Any]]) -> None:
        """Wait up to TIMEOUT seconds for the workers; what they finished goes into DONE."""
        watched: dict[int, tuple[_Worker, bool]] = {}
        for worker in self.workers:
            watched[worker.results] = worker, True
            watched[worker.process.sentinel] = worker, False
        ready = multiprocessing.connection.wait(list(watched), timeout)
        for fd in sorted(ready, key=lambda fd: not watched[fd][1]):  # a result before its sender's end
            worker, results = watched[fd]
            if not results:
                raise _Broken(worker)
            index, frame = worker.task, worker.read()
            if frame is not None and index is not None:
                done[index], worker.task = frame, None

    def death(self, worker: _Worker) -> str:
        """How a worker ended, as a user reads it."""
        # its pipes close a moment before it can be reaped; on a loaded machine that moment can last seconds
        code = worker.ended(DYING_WAIT if _exiting(worker.process.pid) else 2.0)
        if code is None:  # alive: it wrote to its sentinel, or closed its result pipe
            return "a page worker process broke its pipes and was stopped"
        if not code:
            return "a page worker process ended abruptly"
        if code > 0:
            return f"a page worker process exited with code {code}"
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = SIGNAL_HINTS.get(-code)
        return f"a page worker process was killed by {name}" + (f" ({hint})" if hint else "")

    def end(self) -> None:
        """Stop the workers now, whatever they are doing (a hung page, a failed file), and every
        tool each one started: a killed worker's pdftoppm would otherwise run on, unbounded, as
        an orphan. Each worker leads its own process group, killed before the worker is reaped
        (death() and alive() do not reap), so killing it cannot hit a stranger."""
        workers, self.workers = self.workers, []
        for worker in workers:
            worker.close(0)

    def alive(self) -> bool:
        """Whether every worker still lives (an idle kept one may have been killed since)."""
        return all(worker.ended(0) is None for worker in self.workers)  # not is_alive(): that reaps

    def close(self) -> None:
        """Let idle workers exit (all asked at once, then reaped within one EXIT_WAIT)."""
        workers, self.workers = self.workers, []
        _reap(workers, EXIT_WAIT)


EXIT_WAIT = 10.0  # seconds an idle worker told to exit has before it is killed
_kept: PagePool | None = None
_keep = False
_holding = threading.local()  # .pool: this thread's held pool (held()); .leaving: its released workers


@contextlib.contextmanager
def held() -> Iterator[None]:
    """Within it, ``run`` calls of this thread share one pool (a process that keeps its workers, see
    ``keep``, has its own): ``digitize run``'s page count and its pages then cost one fork and one
    exit, not two. ``release`` lets the workers go once the pages are done; they are reaped here at
    the end (killed past EXIT_WAIT), so their exit overlaps the merge and the check. Any failure
    here ends them at once, as a failed page does."""
    if getattr(_holding, "leaving", None) is not None:  # nested: the outer one holds
        yield
        return
    failed = True
    try:
        _holding.pool, _holding.leaving = None, []
        yield
        failed = False
    finally:
        # this thread leaves held() first: a Ctrl-C while its workers are let go must not leave it "inside"
        # for good, every later held() then nested and never reaping (review3 r3speed14 L3)
        pool, leaving = getattr(_holding, "pool", None), getattr(_holding, "leaving", None) or []
        _holding.pool = _holding.leaving = None
        if pool is not None:  # not released: a failure's workers too, all closed below at once
            leaving += pool.workers
            pool.workers = []
        _reap(leaving, 0.0 if failed else EXIT_WAIT)


def _reap(workers: list[_Worker], wait: float) -> None:
    """Close WORKERS, asked to exit together, within one WAIT for all (review2 r2speed14 L4: each hung
    one had its own); WAIT 0 kills them at once. A Ctrl-C or anything else raised meanwhile still
    kills and closes every one not yet closed (M2: they ran on, unreaped, with their pipes open)."""
    until = time.monotonic() + wait
    try:
        for worker in workers if wait > 0 else ():
            worker.ask_to_exit()
        while workers:
            workers[0].close(max(0.0, until - time.monotonic()) if wait > 0 else 0.0)
            workers.pop(0)
    except BaseException:
        for worker in workers:
            worker.close(0)
        raise


def release() -> None:
    """The held pool's workers are done: each is told to exit now, and reaped when ``held`` ends."""
    pool = getattr(_holding, "pool", None)
    if pool is not None:
        workers, pool.workers = pool.workers, []
        _holding.leaving.extend(workers)  # before the pool is let go: an interrupt loses no worker
        _holding.pool = None
        for worker in workers:
            worker.ask_to_exit()


def keep() -> None:
    """From now on this process keeps its page workers from file to file: for a process that
    converts file after file (a batch worker), each file then skips a fork of the whole
    process and its copy-on-write faults (~0.1 CPU-s a file), and the workers' memory stays
    warm. A page past its deadline, or any failure, still ends them; the next file forks anew.
    They are closed when this process exits (a multiprocessing child would otherwise wait
    for them forever)."""
    global _keep
    if not _keep:
        _keep = True
        # before multiprocessing's own queue finalizers (priority 10), which would stop the
        # feeder thread that carries the workers' stop signals
        multiprocessing.util.Finalize(None, _close_kept, exitpriority=100)


def _close_kept() -> None:
    global _kept
    if _kept is not None:
        pool, _kept = _kept, None
        pool.close()


def run(fn: Callable, tasks: Sequence[tuple], processes: int, deadline: float,
        while_running: Callable[[], None] = lambda: None, memory_mb: int = 0) -> list:
    """Run the tasks in a new pool, or in this process's kept one (see ``keep``); each worker's
    address space is capped at MEMORY_MB (0: no cap)."""
    global _kept
    if not _keep and getattr(_holding, "leaving", None) is not None:  # within held()
        pool = _holding.pool
        if pool is not None and (pool.memory_mb != memory_mb or not pool.alive()):
            pool.end()
            pool = None
        if pool is None:
            pool = _holding.pool = PagePool(processes, memory_mb)
        pool.processes = max(pool.processes, processes)  # more pages than the count's one worker: more forked
        try:
            return pool.run(fn, tasks, deadline, while_running)
        except BaseException:  # run() ended its workers
            if _holding.pool is pool:
                _holding.pool = None
            raise
    if not _keep:
        pool = PagePool(processes, memory_mb)
        results = pool.run(fn, tasks, deadline, while_running)
        pool.close()
        return results
    if _kept is not None and (_kept.processes != processes or _kept.memory_mb != memory_mb or not _kept.alive()):
        _kept.end()
        _kept = None
    if _kept is None:
        _kept = PagePool(processes, memory_mb)
    pool = _kept
    try:
        return pool.run(fn, tasks, deadline, while_running)
    except BaseException:
        if _kept is pool:
            _kept = None
        raise
