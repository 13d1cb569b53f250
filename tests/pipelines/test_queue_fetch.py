"""A queued delivery's fetch of its staged original (pipelines/queued._fetch): the bytes checked against the
task's SHA-256, written as a new private scratch file, and not flushed to disk (it is no output)."""

from __future__ import annotations

import hashlib
import os
import stat
from types import SimpleNamespace

import pytest

import pipelines.queued as queued
from digitize.errors import StorageError
from storage.objects import FolderStore

DATA = b"%PDF-1.4 staged original\n" * 100
SHA = hashlib.sha256(DATA).hexdigest()


@pytest.fixture
def store(tmp_path, monkeypatch):
    objects = FolderStore(tmp_path / "objects")
    source = tmp_path / "in.pdf"
    source.write_bytes(DATA)
    objects.put(f"_staging/{SHA}", source, SHA)
    monkeypatch.setattr(queued, "archive_for", lambda settings: SimpleNamespace(objects=objects))
    return objects


def spec(**changes) -> dict:
    return {"key": f"_staging/{SHA}", "sha256": SHA, "name": "case/scan.pdf", **changes}


def test_fetch_writes_the_checked_bytes_privately_without_syncing_the_scratch_copy(store, tmp_path, monkeypatch):
    synced = []
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd))
    path = queued._fetch(None, spec(), tmp_path / "work")
    assert path == tmp_path / "work" / "case" / "scan.pdf"
    assert path.read_bytes() == DATA
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert synced == []  # a scratch copy: two disk flushes per task were pure latency


def test_fetch_refuses_bytes_that_are_not_the_tasks(store, tmp_path):
    with pytest.raises(StorageError, match="expected " + "0" * 64):
        queued._fetch(None, spec(sha256="0" * 64), tmp_path / "work")


def test_fetch_never_writes_through_a_planted_file_or_link(store, tmp_path):
    target = tmp_path / "elsewhere"
    (tmp_path / "work" / "case").mkdir(parents=True)
    (tmp_path / "work" / "case" / "scan.pdf").symlink_to(target)
    with pytest.raises(OSError):
        queued._fetch(None, spec(), tmp_path / "work")
    assert not target.exists()
