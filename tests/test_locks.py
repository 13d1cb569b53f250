"""digitize/locks.py: flock locks between writers, released with their holder, removed on leaving."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest

from digitize.locks import LockTimeout, held


def test_two_holders_in_one_process_exclude_each_other_and_the_file_goes_with_the_last(tmp_path):
    name = tmp_path / "x.lock"
    with held(name):
        with pytest.raises(LockTimeout):
            with held(name, wait=0):
                pass
    assert not name.exists()
    with held(name, wait=0):
        assert name.exists()


def test_a_waiter_gets_the_lock_when_its_holder_lets_go_and_says_it_waited(tmp_path):
    name, order, busy = tmp_path / "x.lock", [], threading.Event()

    def second():
        with held(name, wait=30, on_busy=busy.set):
            order.append("second")

    with held(name):
        thread = threading.Thread(target=second)
        thread.start()
        assert busy.wait(30)
        order.append("first")
    thread.join(30)
    assert order == ["first", "second"]


def test_a_killed_holder_releases_its_lock(tmp_path):
    name = tmp_path / "x.lock"
    code = ("import sys, time; from pathlib import Path; from digitize.locks import held\n"
            f"with held(Path({str(name)!r})):\n    print('held', flush=True); time.sleep(60)\n")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=os.environ)
    try:
        assert child.stdout.readline().strip() == "held"
        with pytest.raises(LockTimeout):
            with held(name, wait=0):
                pass
    finally:
        child.kill()
        child.wait()
    with held(name, wait=5):  # its lock went with it (the file it left is taken over)
        pass


def test_a_symlink_at_the_lock_name_is_never_followed(tmp_path):
    target = tmp_path / "target"
    target.write_text("keep")
    os.symlink(target, tmp_path / "x.lock")
    with pytest.raises(OSError):
        with held(tmp_path / "x.lock", wait=0):
            pass
    assert target.read_text() == "keep"
