"""Shared machinery of the resident servers: one launch when several processes need a server."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from digitize import resident


def test_only_the_first_process_may_launch_and_a_stale_claim_expires(tmp_path):
    server = resident.ResidentServer(tmp_path / "x.sock")
    assert resident.claim_launch(server) is True
    assert resident.claim_launch(server) is False  # another process is launching it
    old = time.time() - resident.CLAIM_SECONDS - 1
    os.utime(server.claim, (old, old))  # that launch failed long ago
    assert resident.claim_launch(server) is True


def test_clients_wait_while_another_process_launches(tmp_path, monkeypatch):
    server = resident.ResidentServer(tmp_path / "x.sock")
    launched = []
    monkeypatch.setattr(resident.ResidentServer, "launch", lambda self: launched.append(1) or 999_999_999)
    assert resident.claim_launch(server)  # another process is launching it
    for _ in range(3):  # three clients at once, none of which sees the server up within its wait
        resident._launched.clear()  # each is its own process
        assert resident.reach(server, 0.05) is None
    assert launched == []


def test_a_launch_that_died_is_retried_at_once_by_its_launcher(tmp_path, monkeypatch):
    server = resident.ResidentServer(tmp_path / "x.sock")
    launched = []
    monkeypatch.setattr(resident.ResidentServer, "launch", lambda self: launched.append(1) or 999_999_999)
    resident._launched.clear()
    assert resident.reach(server, 10) is None  # back at once after the second launch died, not after 10 s
    assert launched == [1, 1]  # its own claim does not hold back the second try; then it gives up


def test_a_connection_clears_the_claim(tmp_path):
    import socket

    server = resident.ResidentServer(tmp_path / "x.sock")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(server.socket))
    listener.listen(1)
    try:
        assert resident.claim_launch(server)
        sock = resident.reach(server, 1)
        assert sock is not None and not server.claim.exists()
        sock.close()
    finally:
        listener.close()


def test_a_server_whose_backlog_is_full_is_waited_for_not_taken_for_none(tmp_path):
    """A server slow to accept under load fills its backlog; a socket with a timeout meets EAGAIN
    there at once. That is a busy server, not "nobody listens" (a CI run under load failed on it)."""
    import socket
    import threading

    path = tmp_path / "x.sock"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(path))
    listener.listen(0)
    queued = []
    try:
        while True:  # fill the backlog: the next connect would block
            sock = socket.socket(socket.AF_UNIX)
            sock.setblocking(False)
            queued.append(sock)
            try:
                sock.connect(str(path))
            except BlockingIOError:
                break
        accepted = []

        def accept_all() -> None:  # the queued connection, then ours if it waited
            listener.settimeout(1)
            try:
                while True:
                    accepted.append(listener.accept()[0])
            except OSError:
                pass

        later = threading.Timer(0.5, accept_all)
        later.start()
        started = time.monotonic()
        sock = resident.connect(path)
        later.join()
        assert sock is not None and time.monotonic() - started >= 0.4
        sock.close()
        for conn in accepted:
            conn.close()
    finally:
        for sock in queued:
            sock.close()
        listener.close()


# -- the socket folder and who is at the other end (issue 9, finding 1) ---------------------------

OTHER = 65534  # "another user": nobody


def other_users(path, follow: bool = True) -> None:
    os.chown(path, OTHER, OTHER, follow_symlinks=follow)


def test_a_runtime_folder_of_another_user_is_ignored(tmp_path, monkeypatch):
    """Root with a clerk's $XDG_RUNTIME_DIR (kept by su or sudo -E) keeps its sockets in its own cache."""
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    other_users(runtime)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    monkeypatch.setenv("DIGITIZE_CACHE", str(tmp_path / "cache"))
    assert resident.socket_dir() == tmp_path / "cache" / "run"
    os.chown(runtime, os.getuid(), os.getgid())
    assert resident.socket_dir() == runtime / "digitize"


def test_a_folder_linked_by_another_user_is_refused_and_left_alone(tmp_path):
    target = tmp_path / "target"
    target.mkdir(mode=0o755)
    target.chmod(0o755)
    link = tmp_path / "run"
    link.symlink_to(target)
    other_users(link, follow=False)
    assert resident.private(link) is False
    assert resident.socket_path(link, "converter", "k") is None
    assert target.stat().st_mode & 0o777 == 0o755  # not made root's private folder
    assert not (target / "k").exists()


def test_a_link_of_our_own_in_a_trusted_folder_is_followed(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "run").symlink_to(tmp_path / "real")
    assert resident.private(tmp_path / "run" / "sockets")
    assert (tmp_path / "real" / "sockets").stat().st_mode & 0o777 == 0o700


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o1777])
def test_a_folder_on_the_way_that_others_may_change_is_refused(tmp_path, mode):
    """Others who may rename folders on the way could swap ours for theirs after the check."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(mode)
    if mode & 0o1000:  # sticky, like /tmp: safe only when root's (no one renames another's entry)
        other_users(shared)
    assert resident.private(shared / "run") is False
    assert not (shared / "run").exists()


def test_a_root_owned_sticky_folder_like_tmp_may_hold_ours(tmp_path):
    shared = tmp_path / "tmp"
    shared.mkdir()
    shared.chmod(0o1777)
    assert resident.private(shared / "run")
    theirs = shared / "theirs"
    theirs.mkdir()
    other_users(theirs)
    assert resident.private(theirs) is False


def test_a_folder_of_another_user_is_refused(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir(mode=0o700)
    other_users(folder)
    assert resident.private(folder) is False


def test_the_folder_is_used_through_the_descriptor_opened_once(tmp_path):
    """After the check, renaming the folder and planting another at its path changes nothing."""
    folder = tmp_path / "run"
    assert resident.private(folder)
    name = resident.anchored(folder / "x.sock")
    assert name.startswith("/proc/self/fd/")
    folder.rename(tmp_path / "moved")
    planted = tmp_path / "run"
    planted.mkdir()
    assert os.path.realpath(name) == str(tmp_path / "moved" / "x.sock")


@pytest.mark.parametrize("kind", ["lock", "log", "claim"])
def test_lock_log_and_claim_links_are_not_followed(tmp_path, kind):
    """A link planted where the lock, log or claim goes never truncates or appends to its target."""
    folder = tmp_path / "run"
    assert resident.private(folder)
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    server = resident.ResidentServer(folder / "x.sock", ("/bin/echo", "written"))
    getattr(server, kind).symlink_to(victim)
    if kind == "lock":
        assert resident.lock_holder(server.lock) is None
        with pytest.raises(OSError):
            resident.hold_lock(server.lock)
    elif kind == "log":
        with pytest.raises(OSError):
            server.launch()
    else:
        resident.claim_launch(server)  # O_EXCL: a planted link is someone's claim, never written through
    time.sleep(0.2)
    assert victim.read_text() == "precious\n"


def test_a_lock_file_of_another_user_is_not_used(tmp_path):
    folder = tmp_path / "run"
    assert resident.private(folder)
    lock = folder / "x.sock.lock"
    lock.write_text("")
    other_users(lock)
    with pytest.raises(OSError):
        resident.hold_lock(lock)


def _listen_as_other_user(path) -> tuple[int, int]:
    """A server bound at PATH that listens as another user (its pid, and a pipe saying what it got)."""
    import socket

    ready_r, ready_w = os.pipe()
    got_r, got_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(ready_r)
            os.close(got_r)
            listener = socket.socket(socket.AF_UNIX)
            listener.bind(str(path))
            os.chmod(path, 0o777)
            os.setgid(OTHER)
            os.setuid(OTHER)
            listener.listen(1)  # SO_PEERCRED says who called listen()
            os.write(ready_w, b"1")
            conn, _ = listener.accept()
            conn.settimeout(2)
            try:
                data = conn.recv(4096)
            except OSError:
                data = b""
            os.write(got_w, b"got:" + data)
        finally:
            os._exit(0)
    os.close(ready_w)
    os.close(got_w)
    assert os.read(ready_r, 1) == b"1"
    os.close(ready_r)
    return pid, got_r


def test_clients_send_nothing_to_a_server_of_another_user(tmp_path):
    """Whoever listens at our socket's path gets neither our descriptors, environment nor requests."""
    folder = tmp_path / "run"
    assert resident.private(folder)
    path = folder / "converter-k.sock"
    pid, got = _listen_as_other_user(path)
    try:
        assert resident.connect(path) is None
        assert resident.ask(path, "STATUS") is None
    finally:
        os.waitpid(pid, 0)
    assert os.read(got, 4096) == b"got:"
    os.close(got)


def test_status_says_why_no_server_can_run(tmp_path):
    import subprocess
    import sys

    folder = tmp_path / "run"
    folder.mkdir(mode=0o700)
    other_users(folder)
    done = subprocess.run([sys.executable, "-m", "digitize", "servers", "status"], capture_output=True, text=True,
                          env={**os.environ, "DIGITIZE_VALIDATOR_DIR": str(folder)}, timeout=120)
    assert done.returncode == 0
    assert f"no resident server can run: {folder} belongs to uid {OTHER}" in done.stdout, done.stdout


def test_a_cache_other_accounts_can_change_is_ignored(tmp_path, monkeypatch):
    """sudo -E keeps another user's HOME: its cache (jars, class archives we would run) is not ours."""
    import pwd

    own = pwd.getpwuid(os.geteuid()).pw_dir
    tmp_path.chmod(0o755)
    mine = tmp_path / "mine"
    mine.mkdir(mode=0o700)
    monkeypatch.setenv("DIGITIZE_CACHE", str(mine / "cache"))
    assert resident.cache_dir() == mine / "cache"  # ours, made when needed
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    monkeypatch.setenv("DIGITIZE_CACHE", str(shared / "cache"))
    assert resident.cache_dir() == Path(own) / ".cache" / "digitize"
    link = tmp_path / "link"
    link.symlink_to(shared)  # a trusted name leading into a folder anyone can write
    monkeypatch.setenv("DIGITIZE_CACHE", str(link / "cache"))
    assert resident.cache_dir() == Path(own) / ".cache" / "digitize"
    if os.geteuid() != 0:
        return
    fake = tmp_path / "fakehome"
    (fake / ".cache" / "digitize").mkdir(parents=True)
    for folder in (fake, fake / ".cache", fake / ".cache" / "digitize"):
        os.chown(folder, 65534, 65534)
    monkeypatch.delenv("DIGITIZE_CACHE")
    monkeypatch.setenv("HOME", str(fake))
    assert resident.cache_dir() == Path(own) / ".cache" / "digitize"
    os.chown(fake / ".cache" / "digitize", 0, 0)  # ours, but inside a folder another user could swap
    assert resident.cache_dir() == Path(own) / ".cache" / "digitize"


def test_folders_checked_once_for_many_paths_judge_each_path_alike(tmp_path):
    """trusted_path(..., passed=set) skips folders above that passed already (a classpath's jars share
    them): the verdict for every path is the one a fresh check gives, in any order."""
    tmp_path.chmod(0o755)
    good, bad = tmp_path / "good", tmp_path / "bad"
    good.mkdir(mode=0o755)
    bad.mkdir(mode=0o755)
    for folder in (good, bad):
        for name in ("a.jar", "b.jar"):
            (folder / name).write_bytes(b"PK")
            (folder / name).chmod(0o644)
    (good / "b.jar").chmod(0o666)  # a jar others may rewrite, in a folder that passes
    bad.chmod(0o777)  # a folder others may change: both its jars fail
    paths = [good / "a.jar", good / "b.jar", bad / "a.jar", bad / "b.jar", good]
    fresh = [resident.trusted_path(p) for p in paths]
    assert fresh == [True, False, False, False, True]
    for order in (paths, paths[::-1]):
        passed: set[str] = set()
        assert [resident.trusted_path(p, passed=passed) for p in order] == [fresh[paths.index(p)] for p in order]
    passed = {str(tmp_path)}  # the folders that passed, as trusted_path records them
    tmp_path.chmod(0o777)  # a folder recorded as passed is not looked at again in the same check...
    try:
        assert resident.trusted_path(good / "a.jar", passed=passed)
        assert not resident.trusted_path(good / "a.jar")  # ...but a fresh check sees it
        assert not resident.trusted_path(tmp_path, passed=passed)  # and a path itself is always judged
    finally:
        tmp_path.chmod(0o755)


def test_cpu_seconds_of_a_process_and_of_none():
    spent = resident.cpu_seconds(os.getpid())
    sum(range(3_000_000))  # some CPU of our own
    assert spent is not None and resident.cpu_seconds(os.getpid()) > spent
    child = os.fork()
    if child == 0:
        os._exit(0)
    os.waitpid(child, 0)
    assert resident.cpu_seconds(child) is None  # gone
