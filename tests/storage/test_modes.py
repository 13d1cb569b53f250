"""The archive on disk is private: folders 0700 (0750 group-readable), objects 0444 & ~umask, index 0600/0640."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from digitize.config import Settings
from storage.archive import Archive
from storage.modes import current_umask


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask():
    old = os.umask(0o022)

    def set_mask(value: int) -> None:
        os.umask(value)

    yield set_mask
    os.umask(old)


def store_one(settings: Settings, make_document) -> Path:
    doc = make_document()
    with Archive.open(settings) as archive:
        stored = archive.store(doc.original, doc.pdfa, doc.report, doc.meta)
    return Path(settings.data_dir) / "objects" / stored.pdfa_key


def test_current_umask_reads_without_changing_it(umask):
    umask(0o027)
    assert current_umask() == 0o027 and current_umask() == 0o027


@pytest.mark.parametrize("mask, group, folders, objects, index", [
    (0o022, False, 0o700, 0o444, 0o600),  # a login shell's umask: nothing for other users anyway
    (0o027, False, 0o700, 0o440, 0o600),  # the systemd unit's UMask
    (0o027, True, 0o750, 0o440, 0o640),
    (0o077, True, 0o700, 0o400, 0o600),  # the umask always narrows
])
def test_data_dir_objects_and_index_are_private(tmp_path, make_document, umask, mask, group, folders, objects, index):
    umask(mask)
    settings = Settings(data_dir=str(tmp_path / "srv" / "digitize"))
    settings.store.group_readable = group
    doc = make_document()
    with Archive.open(settings) as archive:  # open: the -wal and -shm files exist now
        pdfa = Path(settings.data_dir) / "objects" / archive.store(doc.original, doc.pdfa, doc.report, doc.meta).pdfa_key
        sqlite_files = [Path(settings.data_dir) / f"index.sqlite3{s}" for s in ("", "-wal", "-shm")]
        assert [mode(f) for f in sqlite_files] == [index] * 3
    data = Path(settings.data_dir)
    for folder in (tmp_path / "srv", data, data / "objects", pdfa.parent, pdfa.parent.parent):
        assert mode(folder) == folders, folder
    for key in (data / "objects").rglob("*"):
        if key.is_file():
            assert mode(key) == objects, key


def test_an_existing_world_readable_index_is_narrowed(tmp_path, make_document, umask):
    settings = Settings(data_dir=str(tmp_path / "data"))
    (tmp_path / "data").mkdir(mode=0o700)
    index = tmp_path / "data" / "index.sqlite3"
    index.touch()
    index.chmod(0o644)
    store_one(settings, make_document)
    assert mode(index) == 0o600


def test_a_symlinked_index_file_is_not_created_through(tmp_path, umask):
    from storage.modes import private_file

    target = tmp_path / "elsewhere"
    link = tmp_path / "index.sqlite3"
    link.symlink_to(target)
    private_file(link)
    assert not target.exists()


def test_a_second_index_opened_in_a_process_keeps_the_first_ones_view_fresh(tmp_path):
    """Opening the index again (a pool of archives) must not drop the POSIX locks of the connections already
    open: another process closing its own would then delete the WAL under them, and they would read a stale
    index for good (a disabled user still logged in, a new case never seen)."""
    import subprocess
    import sys

    from storage.models import CaseRecord

    settings = Settings(data_dir=str(tmp_path / "data"))
    writer = ("import sys; from digitize.config import Settings; from storage.archive import Archive; "
              "from storage.models import CaseRecord\n"
              "with Archive.open(Settings(data_dir=sys.argv[1])) as a: a.index.upsert_case(CaseRecord(sys.argv[2]))")
    first = Archive.open(settings)
    try:
        first.index.upsert_case(CaseRecord("000.00.31.H56-241015-0027"))
        with Archive.open(settings) as second:
            assert second.index.get_case("000.00.31.H56-241015-0027") is not None
            for number in ("0028", "0029"):  # each writer closes last: SQLite then removes the WAL if it may
                subprocess.run([sys.executable, "-c", writer, settings.data_dir, f"000.00.31.H56-241015-{number}"],
                               check=True, timeout=60,
                               env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
                assert first.index.get_case(f"000.00.31.H56-241015-{number}") is not None, number
    finally:
        first.close()
