"""Page worker processes: forked, killed past a deadline, and a dead one fails its file at once.

Pages run in forked workers even for one job: a page that hangs inside Tesseract (where no
timeout reaches) is stopped by killing its worker, never by hanging the caller. fork, not
spawn: the workers inherit the imported modules and the loaded Tesseract models for free
(copy-on-write).

A worker killed from outside (the OOM killer, a crash in a C library) breaks the pool, and
every page still in it fails at once with a line that says how the worker ended.
(``multiprocessing.Pool`` would quietly fork a replacement and lose the page: the file then
waited out its deadline and was called an OCR timeout.)
"""

from __future__ import annotations

import ctypes
import multiprocessing
import multiprocessing.util
import os
import resource
import signal
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Callable, Sequence

from .errors import InputTooLargeError, OcrError, OcrTimeoutError

PR_SET_PDEATHSIG = 1  # prctl option (linux/prctl.h): a signal for us when our parent ends
PR_GET_DUMPABLE, PR_SET_DUMPABLE = 3, 4  # prctl options: may a process of our uid ptrace us
SIGNAL_HINTS = {signal.SIGKILL: "out of memory?", signal.SIGSEGV: "a crash in a C library",
                signal.SIGBUS: "a crash in a C library", signal.SIGABRT: "a crash in a C library"}


def die_with_parent(parent: int, signum: int = signal.SIGKILL) -> None:
    """This forked process gets SIGNUM (killed, by default) when the thread that forked it ends
    (kill -9 of a batch or a watch included), so no worker outlives the run it serves (Linux only)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signum)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # it died before prctl took effect
        os._exit(1)


def undumpable() -> None:
    """No process of this uid may read this process's memory (/proc/PID/mem, ptrace) or copy its
    file descriptors (pidfd_getfd) any more: a page worker or a tool run on untrusted input (same
    uid, our child) cannot take the signer's key or an authenticated signer connection from us.
    The flag is this process's own (a child that sets itself dumpable again gains nothing over us);
    root or CAP_SYS_PTRACE still can (SECURITY.md). Linux only; elsewhere nothing happens."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def dumpable() -> bool | None:
    """This process's PR_GET_DUMPABLE (None where prctl is not there)."""
    try:
        return bool(ctypes.CDLL(None, use_errno=True).prctl(PR_GET_DUMPABLE, 0, 0, 0, 0))
    except (OSError, AttributeError):
        return None


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
    worker's connection to it) is wiped before any page runs. Nor do they need a secret: every
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
    limit_memory(memory_mb)


def _bounded(fn: Callable, memory_mb: int, *args):
    """``fn(*args)`` in a worker; running out of its memory limit is the input's fault (exit 2)."""
    try:
        return fn(*args)
    except MemoryError:
        raise InputTooLargeError(f"a page needs more than the {memory_mb} MB a page worker may use "
                                 "(decompression bomb?); raise convert.max_memory_mb if genuine") from None


class PagePool:
    """``processes`` forked workers; kept ones serve file after file (see ``keep``)."""

    def __init__(self, processes: int, memory_mb: int = 0):
        self.processes, self.memory_mb = processes, memory_mb
        self.executor = ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("fork"),
                                            initializer=_init_page_worker, initargs=(os.getpid(), memory_mb))
        self.workers: list = []  # the worker processes, once forked (at the first submit)

    def run(self, fn: Callable, tasks: Sequence[tuple], deadline: float,
            while_running: Callable[[], None] = lambda: None) -> list:
        """``fn(*task)`` for every task, results in order. Any failure ends the workers (a failed
        file's other pages go too) and is raised; a task past DEADLINE seconds (counted from the
        previous result) raises OcrTimeoutError, a dead worker OcrError."""
        n = 1
        try:
            futures = [self.executor.submit(_bounded, fn, self.memory_mb, *task) for task in tasks]
            self.workers = list(getattr(self.executor, "_processes", {}).values())  # forked by now
            while_running()  # e.g. boot the validator: after the fork, so workers hold none of it
            results = []
            for n, future in enumerate(futures, start=1):
                try:
                    results.append(future.result(timeout=deadline))
                except TimeoutError:
                    if not future.done():
                        raise OcrTimeoutError(f"page {n}: not finished within {deadline:g} s; "
                                              "its worker was stopped") from None
                    results.append(future.result())  # done meanwhile, or the task's own TimeoutError
            return results
        except BrokenProcessPool:  # in a result, or at submit (a kept worker died since its check)
            cause = self.death()  # before end() adds SIGKILLs of its own
            self.end()
            raise OcrError(f"page {n} not converted: {cause}") from None
        except BaseException:
            self.end()
            raise

    def death(self) -> str:
        """How the worker that broke the pool ended, as a user reads it. The executor then
        terminates the others (SIGTERM): an ending of another kind is the cause."""
        until = time.monotonic() + 2.0  # the executor's thread may be reaping them right now
        codes = [worker.exitcode for worker in self.workers]
        while None in codes and time.monotonic() < until:
            time.sleep(0.05)
            codes = [worker.exitcode for worker in self.workers]
        endings = [code for code in codes if code]
        endings.sort(key=lambda code: code == -signal.SIGTERM)
        if not endings:
            return "a page worker process ended abruptly"
        if endings[0] > 0:
            return f"a page worker process exited with code {endings[0]}"
        try:
            name = signal.Signals(-endings[0]).name
        except ValueError:
            name = f"signal {-endings[0]}"
        hint = SIGNAL_HINTS.get(-endings[0])
        return f"a page worker process was killed by {name}" + (f" ({hint})" if hint else "")

    def end(self) -> None:
        """Stop the workers now, whatever they are doing (a hung page, a failed file), and every
        tool each one started: a killed worker's pdftoppm would otherwise run on, unbounded, as
        an orphan. Each worker leads its own process group; the group outlives a dead leader
        (and its id is never reused while it has members), so killing it cannot hit a stranger."""
        for worker in self.workers:
            try:
                os.killpg(worker.pid, signal.SIGKILL)
            except (OSError, TypeError):  # no such group (not yet forked, or all gone)
                pass
            try:
                worker.kill()
            except (OSError, ValueError, AttributeError):
                pass
        self.executor.shutdown(wait=True, cancel_futures=True)

    def alive(self) -> bool:
        """Whether every worker still lives (an idle kept one may have been killed since)."""
        return all(worker.is_alive() for worker in self.workers)

    def close(self) -> None:
        """Let idle workers exit."""
        self.executor.shutdown(wait=True)


_kept: PagePool | None = None
_keep = False


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
