"""The poppler wrapper's bookkeeping (real pdftoppm)."""

from __future__ import annotations

import subprocess

from digitize import poppler


def test_version_is_asked_once_per_installed_binary(monkeypatch):
    poppler._versions.clear()
    first = poppler.version()
    assert first.startswith("pdftoppm version")
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: calls.append(a) or subprocess.CompletedProcess(
        a, 0, "", "pdftoppm version 99.0\n"))
    assert poppler.version() == first and calls == []  # cached
    poppler._versions.clear()  # as after an upgrade (another mtime): asked again
    assert poppler.version() == "pdftoppm version 99.0" and len(calls) == 1
    poppler._versions.clear()


def test_version_without_poppler_is_empty(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    assert poppler.version() == ""
