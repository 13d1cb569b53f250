"""A desk retry interrupted after the scan's name was retaken keeps the scan under a hidden private name;
the desk lists it as an interrupted retry (never out of sight) and can retry it under its own name (L3)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from pipelines import failed


def test_an_interrupted_retry_whose_name_was_retaken_is_listed_and_can_be_retried(tmp_path):
    bad = tmp_path / "failed"
    bad.mkdir()
    (bad / "scan.pdf").write_bytes(b"%PDF-1.4 the first scan")
    [item] = failed.list_failed(bad)

    def receive_interrupted(stream, name):  # meanwhile a new scan.pdf is quarantined; then the copy fails
        (bad / "scan.pdf").write_bytes(b"%PDF-1.4 another scan")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        failed.take(bad, item, receive_interrupted, keep_case_id=True, durable=lambda: None)
    listed = {f.parts[-1]: f for f in failed.list_failed(bad)}
    assert len(listed) == 2 and "scan.pdf" in listed
    [hidden] = [name for name in listed if name != "scan.pdf"]
    assert hidden.startswith(failed.TAKING) and hidden.endswith("-scan.pdf")
    assert listed[hidden].reason("en") == failed.INTERRUPTED_EN and listed[hidden].agencies == ()

    got = {}

    def receive(stream, name):
        got[name] = stream.read()
        target = tmp_path / "job" / name
        target.parent.mkdir(exist_ok=True)
        target.write_bytes(got[name])
        return target

    failed.take(bad, listed[hidden], receive, keep_case_id=True, durable=lambda: None)
    assert got == {"scan.pdf": b"%PDF-1.4 the first scan"}
    assert sorted(p.name for p in bad.iterdir()) == ["scan.pdf"]


def test_only_names_take_gives_count_as_interrupted_retries():
    assert failed.taken_name(".taking-0123456789abcdef-a b.pdf") == "a b.pdf"
    assert failed.taken_name(".taking-xyz-a.pdf") is None and failed.taken_name(".hidden.pdf") is None


def test_an_interrupted_retry_is_attributed_by_its_folder_like_a_scan_without_sidecar(tmp_path):
    case = "000.00.31.H56-241015-0027"
    folder = tmp_path / "failed" / case
    folder.mkdir(parents=True)
    (folder / ".taking-0123456789abcdef-01-Don.pdf").write_bytes(b"%PDF-1.4")
    [item] = failed.list_failed(tmp_path / "failed")
    assert item.case_ids == (case,) and item.agencies == ("000.00.31.H56",)
