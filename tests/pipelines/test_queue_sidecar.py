"""Queue mode reads a scan's sidecar as local mode does (review rev16batch H1): never through a symlink, not
even one swapped in after a check, so no file the submitter can read travels in a task or the ledger."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import pipelines.queued as queued
from pipelines.metadata import SidecarError

SECRET = "TOP-SECRET-QUEUE-KEY-0123456789abcdef"


@pytest.fixture
def inbox(tmp_path):
    (tmp_path / "queue-secret").write_text(SECRET)
    folder = tmp_path / "inbox"
    folder.mkdir()
    (folder / "scan.pdf").write_bytes(b"%PDF-1.4")
    return folder


def link_sidecar(inbox: Path) -> None:
    """scan.json replaced (atomically, as an attacker's loop does) by a symlink to the secret file."""
    os.symlink(inbox.parent / "queue-secret", inbox / "link.tmp")
    os.replace(inbox / "link.tmp", inbox / "scan.json")


def test_a_regular_sidecar_travels_with_its_name_and_text(inbox):
    (inbox / "scan.json").write_text('{"title": "Đơn"}', encoding="utf-8")
    assert queued._sidecar(inbox / "scan.pdf", inbox) == ("scan.json", '{"title": "Đơn"}')


def test_a_symlinked_sidecar_is_refused_by_name_not_ignored(inbox):
    """Old code: silently ignored (the file filed without its metadata); local mode refuses it."""
    link_sidecar(inbox)
    with pytest.raises(SidecarError, match="scan.json: a symbolic link") as refused:
        queued._sidecar(inbox / "scan.pdf", inbox)
    assert SECRET not in str(refused.value)


def test_a_sidecar_swapped_for_a_link_after_the_check_is_never_read(inbox, monkeypatch):
    """The race of the review's repro, made deterministic: the swap lands right after the last look at the
    name (old code: is_symlink() then is_file(), then open() by name, which followed the link)."""
    (inbox / "scan.json").write_text('{"title": "x"}')
    real_is_file = Path.is_file

    def swapped_after_looking(self):
        answer = real_is_file(self)
        if self.name == "scan.json":
            link_sidecar(inbox)
        return answer

    real_sidecar_path = queued.sidecar_path

    def swapped_after_finding(path):
        found = real_sidecar_path(path)
        link_sidecar(inbox)
        return found

    monkeypatch.setattr(Path, "is_file", swapped_after_looking)
    monkeypatch.setattr(queued, "sidecar_path", swapped_after_finding)
    with pytest.raises(SidecarError) as refused:
        queued._sidecar(inbox / "scan.pdf", inbox)
    assert SECRET not in str(refused.value)


def test_a_sidecar_below_a_symlinked_folder_is_not_read(inbox, tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "scan.pdf").write_bytes(b"%PDF-1.4")
    os.symlink(tmp_path / "queue-secret", tmp_path / "elsewhere" / "scan.json")
    (tmp_path / "elsewhere" / "x.json").write_text("{}")
    os.symlink(tmp_path / "elsewhere", inbox / "case")
    with pytest.raises(SidecarError):
        queued._sidecar(inbox / "case" / "scan.pdf", inbox)
