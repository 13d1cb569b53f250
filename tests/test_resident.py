"""Shared machinery of the resident servers: one launch when several processes need a server."""

from __future__ import annotations

import os
import time

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
    assert resident.reach(server, 0.5) is None
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
