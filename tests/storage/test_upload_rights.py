"""An upload is filed with its sender's rights as they are when it is filed, not as they were when it was sent
(review finding, 2026-12-01): storage/access.py's UploadScope.at_filing re-reads the account or token and uses
the intersection of the rights saved with the job (the snapshot) and the current ones, on both index backends."""

from __future__ import annotations

import json

import pytest

from storage import access
from storage.access import Principal, UploadRefused, UploadScope

A, B = "000.00.31.H56", "000.00.12.H29"
CASE_A, CASE_B = f"{A}-241015-0027", f"{B}-241016-0003"
PASSWORD = "mot-mat-khau-dai"


def set_rights(archive, name: str, role: str, agencies: list[str]) -> None:
    """What an admin narrowing an account does (no CLI for it yet): the account row changed in place."""
    with archive.index.transaction():
        archive.index._execute("UPDATE users SET role = ?, agencies = ? WHERE name = ?",
                               (role, json.dumps(agencies), name))


def delete_user(index, name: str) -> None:
    with index.transaction():
        index._execute("DELETE FROM users WHERE name = ?", (name,))


def snapshot(archive, name: str) -> UploadScope:
    """The scope saved with an upload job at upload time (web/uploads.py keeps asdict(principal))."""
    return UploadScope(access.principal_for_user(archive.index, name))


def test_an_unchanged_sender_files_as_before(archive):
    access.add_user(archive.index, "lan", "scanner", [A], PASSWORD)
    scope = snapshot(archive, "lan").at_filing(archive.index)
    assert scope(CASE_A) and not scope(CASE_B) and scope(None, A) and not scope(None, B)


@pytest.mark.parametrize("change, words", [
    (lambda index: index.set_user_disabled("lan", True, access.now_iso()), "user lan was disabled"),
    (lambda index: delete_user(index, "lan"), "user lan was deleted"),
])
def test_a_sender_disabled_or_deleted_since_the_upload_files_nothing(archive, change, words):
    access.add_user(archive.index, "lan", "scanner", [A], PASSWORD)
    saved = snapshot(archive, "lan")
    change(archive.index)
    with pytest.raises(UploadRefused, match=words) as refused:
        saved.at_filing(archive.index)
    assert "kept" in str(refused.value)


def test_a_sender_disabled_while_its_scan_converts_is_refused_at_the_next_question(archive):
    access.add_user(archive.index, "lan", "scanner", [A], PASSWORD)
    scope = snapshot(archive, "lan").at_filing(archive.index)
    assert scope(CASE_A)
    archive.index.set_user_disabled("lan", True, access.now_iso())
    with pytest.raises(UploadRefused, match="disabled"):
        scope(CASE_A)


def test_narrowed_rights_are_intersected_with_the_snapshot(archive):
    access.add_user(archive.index, "lan", "scanner", [A, B], PASSWORD)
    saved = snapshot(archive, "lan")
    set_rights(archive, "lan", "scanner", [A])  # agency B taken away after the upload
    scope = saved.at_filing(archive.index)
    assert scope(CASE_A) and not scope(CASE_B) and not scope(None, B)
    set_rights(archive, "lan", "scanner", [A, B])  # widened again: still only what the snapshot allowed ...
    assert UploadScope(Principal("lan", "scanner", (A,))).at_filing(archive.index)(CASE_A)
    assert not UploadScope(Principal("lan", "scanner", (A,))).at_filing(archive.index)(CASE_B)
    set_rights(archive, "lan", "officer", [A, B])  # ... and no upload right at all: nothing
    with pytest.raises(UploadRefused, match="may no longer upload"):
        saved.at_filing(archive.index)
    set_rights(archive, "lan", "scanner", ["000.00.99.H99"])  # none of the agencies it sent for
    with pytest.raises(UploadRefused, match="no longer has any of the agencies"):
        saved.at_filing(archive.index)


def test_an_archivist_made_a_scanner_keeps_only_the_scanners_agencies(archive):
    access.add_user(archive.index, "thu", "archivist", [], PASSWORD)
    saved = snapshot(archive, "thu")
    set_rights(archive, "thu", "scanner", [A])
    scope = saved.at_filing(archive.index)
    assert scope(CASE_A) and not scope(CASE_B)


def test_a_revoked_or_unknown_token_files_nothing(archive):
    access.create_token(archive.index, "motcua", "archivist", [])
    saved = UploadScope(Principal("motcua", "archivist", (), "token"))
    assert saved.at_filing(archive.index)(CASE_B)
    archive.index.revoke_token("motcua", access.now_iso())
    with pytest.raises(UploadRefused, match="API token motcua was revoked"):
        saved.at_filing(archive.index)
    with pytest.raises(UploadRefused, match="API token ghost was deleted"):
        UploadScope(Principal("ghost", "archivist", (), "token")).at_filing(archive.index)


def test_a_job_saved_without_a_sender_files_nothing(archive):
    with pytest.raises(UploadRefused):
        UploadScope.of({}).at_filing(archive.index)


def test_a_token_expired_since_the_upload_files_nothing(archive, monkeypatch):
    """Review web15 L7 (tokens expire): like a revoked one, a token past its expiry at filing files nothing."""
    from datetime import datetime, timedelta, timezone

    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    secret = access.create_token(archive.index, "onestop", "scanner", [A], 1, now=t0)
    monkeypatch.setattr(access, "_utc_now", lambda: t0 + timedelta(hours=23))
    saved = UploadScope(access.authenticate_token(archive.index, secret))
    assert saved.at_filing(archive.index)(CASE_A)
    monkeypatch.setattr(access, "_utc_now", lambda: t0 + timedelta(days=1))
    with pytest.raises(UploadRefused, match="API token onestop expired at 2026-01-02T00:00:00"):
        saved.at_filing(archive.index)
