"""Storage commands through the real CLI entry point: output, exit codes, one-line errors."""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import stat
import urllib.request

import pytest

from digitize.cli import main
from digitize.errors import ExitCode
from storage.archive import Archive
from settings_env import settings_env

pytestmark = pytest.mark.integration
CASE = "000.00.31.H56-241015-0027"


@pytest.fixture
def run(settings, monkeypatch, tmp_path, capsys):
    """Run ``digitize ARGS`` with the fixture's backend; returns (exit code, stdout, stderr)."""
    monkeypatch.chdir(tmp_path)
    for name, value in settings_env(settings).items():
        monkeypatch.setenv(name, value)

    def invoke(*args: str):
        code = main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    return invoke


@pytest.fixture
def stored_case(settings, make_document):
    docs = [make_document(pages=("Giấy chứng nhận quyền sử dụng đất",), title="Sổ đỏ"),
            make_document(pages=("Bản vẽ",), title="Bản vẽ")]
    with Archive.open(settings) as archive:
        for doc in docs:
            archive.store(doc.original, doc.pdfa, doc.report, doc.meta)
    return docs


def test_search_prints_case_document_page_and_highlighted_snippet(run, stored_case):
    code, out, _ = run("search", "quyen", "su", "dung", "dat")
    assert code == 0
    assert out.splitlines() == [f"{CASE}  doc 1 #1 page 1  Sổ đỏ",
                                "    Giấy chứng nhận [quyền] [sử] [dụng] [đất]"]


def test_show_lists_the_dossier_in_order(run, stored_case):
    code, out, _ = run("show", CASE)
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == f"case {CASE}" and lines[1] == "2 documents:"
    assert lines[2].split()[0] == "1" and lines[2].endswith("Sổ đỏ") and lines[3].endswith("Bản vẽ")


def test_get_writes_verified_files_and_manifest(run, stored_case, tmp_path):
    code, out, _ = run("get", CASE, "-o", str(tmp_path / "out"))
    assert code == 0 and "2 files verified" in out
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert [(tmp_path / "out" / d["file"]).read_bytes() for d in manifest["documents"]] == [
        d.pdfa.read_bytes() for d in stored_case]


def _events(settings, case_id=CASE):
    with Archive.open(settings) as archive:
        return archive.index.events(case_id=case_id)


def test_cli_reads_go_through_the_gate_and_are_recorded_with_the_os_user(run, stored_case, settings, tmp_path):
    """review rev17cli M1: show left no event; get, link and verify were recorded as "digitize", the pipelines'
    own name, so a case's log could not tell an operator's export from the service's work."""
    me = "cli:" + pwd.getpwuid(os.geteuid()).pw_name
    before = len(_events(settings))
    assert run("show", CASE)[0] == 0
    shown = _events(settings)[before:]
    assert [(e.event_type, e.actor, e.detail) for e in shown] == [
        ("retrieved", me, "viewed the case record and its document list")]
    assert shown[0].tool.endswith(" cli")
    assert run("get", CASE, "-o", "out")[0] == 0
    got = _events(settings)[before + 1:]
    assert [e.actor for e in got] == [me] * 3 and all(e.event_type == "retrieved" for e in got)
    assert got[-1].detail == f"downloaded the dossier (2 documents) to {tmp_path / 'out'}"
    assert run("verify", "--case", CASE)[0] == 0
    checked = [e for e in _events(settings) if e.event_type == "fixity-checked"]
    assert [e.actor for e in checked] == [me] * 2


def test_get_writes_a_private_folder_and_private_files(run, stored_case, tmp_path):
    """review rev17cli M2: under the shell's umask 022 the dossier came out 0755 / 0644, readable by every
    local user, though the archive it comes from is private."""
    old = os.umask(0o022)
    try:
        assert run("get", CASE, "-o", str(tmp_path / "out"))[0] == 0
    finally:
        os.umask(old)
    written = [tmp_path / "out", *(tmp_path / "out").iterdir()]
    assert len(written) == 4
    for path in written:
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path
    (tmp_path / "shared").mkdir(mode=0o755)
    os.chmod(tmp_path / "shared", 0o755)
    code, _, err = run("get", CASE, "-o", str(tmp_path / "shared"))  # a folder of the operator's, left open
    assert code == 0 and "is open to other users (mode 755)" in err
    assert all(stat.S_IMODE(p.stat().st_mode) & 0o077 == 0 for p in (tmp_path / "shared").iterdir())


def test_get_never_writes_through_a_temp_name_swapped_for_a_symlink(run, stored_case, tmp_path, monkeypatch):
    """review rev17cli L1: the temp file was closed and re-opened by name, so another account that can write
    the output folder could swap it for a symlink and have the dossier written into a file of its choice."""
    import digitize.fsutil as fsutil

    victim = tmp_path / "victim-bashrc"
    victim.write_text("export PATH=...\n")
    real_open = os.open

    def racing_open(path, flags, mode=0o777, *, dir_fd=None):
        fd = real_open(path, flags, mode, dir_fd=dir_fd)
        if str(path).endswith(".part"):  # what another account does between creating and writing
            os.unlink(path, dir_fd=dir_fd)
            os.symlink(victim, path, dir_fd=dir_fd)
        return fd

    monkeypatch.setattr(fsutil.os, "open", racing_open)
    code, out, err = run("get", CASE, "-o", "out")
    monkeypatch.undo()
    assert victim.read_text() == "export PATH=...\n"
    assert code == ExitCode.file_access and "temp file was replaced" in err
    assert not any(p.is_symlink() for p in (tmp_path / "out").iterdir())


def test_get_never_writes_through_an_output_folder_planted_as_a_symlink(run, stored_case, tmp_path):
    """review r2cli N4: another account that can write the parent plants ``shared/out -> /home/victim/project``;
    get -o shared/out deleted the victim's manifest.json, wrote the dossier there and exited 0."""
    victim, shared = tmp_path / "victim", tmp_path / "shared"
    victim.mkdir()
    shared.mkdir()
    (victim / "manifest.json").write_text('{"mine": true}')
    (shared / "out").symlink_to(victim)
    code, _, err = run("get", CASE, "-o", str(shared / "out"))
    assert code == ExitCode.file_access and err == f"digitize: cannot write {shared / 'out'}: it is a symlink " \
                                                    "(refused: never written through)\n"
    assert [p.name for p in victim.iterdir()] == ["manifest.json"]
    assert (victim / "manifest.json").read_text() == '{"mine": true}'
    if os.geteuid() == 0:  # a real folder another account made there is not ours to fill either
        (shared / "out").unlink()
        (shared / "out").mkdir()
        os.chown(shared / "out", 65534, 65534)
        code, _, err = run("get", CASE, "-o", str(shared / "out"))
        assert code == ExitCode.file_access and "belongs to another account (uid 65534)" in err
        assert list((shared / "out").iterdir()) == []


def test_get_never_writes_through_a_symlink_in_a_folder_above_that_another_account_can_re_point(run, stored_case,
                                                                                                  tmp_path):
    """review3 r3ops R5: only the last part of -o was opened O_NOFOLLOW: with shared/a -> elsewhere planted by
    another account, get -o shared/a/out made and filled elsewhere/out. A link only we or root can change
    (/var/run -> /run) is still followed."""
    victim, shared = tmp_path / "victim", tmp_path / "shared"
    victim.mkdir()
    shared.mkdir()
    os.chmod(shared, 0o777)  # anyone can plant a link here
    (shared / "a").symlink_to(victim)
    code, _, err = run("get", CASE, "-o", str(shared / "a" / "out"))
    assert code == ExitCode.file_access and f"cannot write {shared / 'a'}: a symlink another account" in err
    assert list(victim.iterdir()) == []
    os.chmod(tmp_path, 0o755)
    (tmp_path / "mine").symlink_to(victim)
    assert run("get", CASE, "-o", str(tmp_path / "mine" / "new" / "out"))[0] == 0
    assert (victim / "new" / "out" / "manifest.json").is_file()
    assert stat.S_IMODE((victim / "new").stat().st_mode) == 0o700


def test_get_checks_the_hash_before_the_name_so_a_corrupt_object_keeps_the_good_copy(run, stored_case, settings,
                                                                                    tmp_path):
    """review rev17cli L2: the bytes took their name before the check, so a corrupt object deleted the good
    copy an earlier get left, and the earlier manifest.json stayed, naming a file no longer there."""
    out = tmp_path / "out"
    assert run("get", CASE, "-o", str(out))[0] == 0
    first = sorted(p.name for p in out.iterdir() if p.name != "manifest.json")[0]
    good = (out / first).read_bytes()
    with Archive.open(settings) as archive:
        doc = archive.documents(CASE)[0]
        archive.objects.delete(doc.pdfa_key)
        archive.objects.put(doc.pdfa_key, b"corrupt", hashlib.sha256(b"corrupt").hexdigest())
    code, _, err = run("get", CASE, "-o", str(out))
    assert code == ExitCode.verification and "not written" in err
    assert (out / first).read_bytes() == good
    assert not (out / "manifest.json").exists() and not list(out.glob(".*.part"))
    failed = [e for e in _events(settings) if e.outcome == "failure"]
    assert len(failed) == 1 and failed[0].checksum == hashlib.sha256(b"corrupt").hexdigest()


def test_get_into_a_folder_where_a_file_should_go_is_a_file_error(run, stored_case, tmp_path):
    (tmp_path / "out" / "0001-so-do.pdf").mkdir(parents=True)
    code, _, err = run("get", CASE, "-o", "out")
    assert code == ExitCode.file_access and "0001-so-do.pdf" in err and "internal error" not in err


def test_get_url_gives_presigned_links_on_s3_and_a_clear_error_on_folders(run, stored_case, settings):
    code, out, err = run("get", CASE, "--url")
    if settings.store_url.startswith("file:"):
        assert code == ExitCode.bad_args and err.startswith("digitize: presigned URLs need an S3 store")
    else:
        assert code == 0
        with urllib.request.urlopen(out.splitlines()[0].split()[1]) as r:
            assert r.read() == stored_case[0].pdfa.read_bytes()


def test_get_url_records_links_issued_not_retrievals_and_long_links_need_an_opt_in(run, stored_case, settings):
    """review rev17cli L5: each link was recorded as a successful, checksummed retrieval that never happened,
    and links valid up to a week needed nothing more than --expires."""
    code, _, err = run("get", CASE, "--url", "--expires", "10080")
    assert code == ExitCode.bad_args and "needs --expires-long" in err
    if settings.store_url.startswith("file:"):
        return  # no presigned URLs on a folder store (the test above)
    before = len(_events(settings))
    code, out, _ = run("get", CASE, "--url", "--expires", "10080", "--expires-long")
    assert code == 0 and len(out.splitlines()) == 2
    issued = _events(settings)[before:]
    assert [(e.checksum, e.detail.split(",")[0]) for e in issued] == [
        (None, "issued a presigned URL to pdfa of document 1"), (None, "issued a presigned URL to pdfa of document 2")]
    assert all("not recorded" in e.detail for e in issued)


def test_verify_exits_zero_when_intact_and_11_when_an_object_is_missing(run, stored_case, settings):
    code, out, _ = run("verify", "--all")
    assert code == 0 and out.strip().endswith("0 problems")
    with Archive.open(settings) as archive:
        archive.objects.delete(archive.documents(CASE)[1].pdfa_key)
    code, out, err = run("verify", "--case", CASE)
    assert code == ExitCode.verification
    assert out.startswith("missing: ") and err == "digitize: fixity check found 1 problems in " + CASE + "\n"


def test_verify_reports_an_unreadable_object_and_checks_the_rest(run, settings, make_document, monkeypatch):
    """review rev17cli M3: the first object it could not read (EIO, a 403, a reset) ended the audit: the
    rest unchecked, no fixity-checked event at all, and exit 10 ("store unavailable") instead of 11."""
    from digitize.errors import StorageError

    with Archive.open(settings) as archive:
        rows = [archive.store(d.original, d.pdfa, d.report, d.meta)
                for d in (make_document(title="A"), make_document(title="B"), make_document(title="C"))]
        store = type(archive.objects)  # the backend's class
    bad = rows[0].pdfa_key
    real = store.read_chunks

    def failing(self, key):
        if key == bad:
            raise StorageError(f"cannot read object {key}: Input/output error")
        yield from real(self, key)

    monkeypatch.setattr(store, "read_chunks", failing)
    code, out, _ = run("verify", "--all")
    assert code == ExitCode.verification
    assert f"unreadable: {bad} (doc {rows[0].doc_id}): cannot read object" in out
    assert "checked 3 documents, 9 objects in all: 1 problems" in out
    checked = [e for e in _events(settings) if e.event_type == "fixity-checked"]
    assert sorted(e.outcome for e in checked) == ["failure", "success", "success"]


def test_verify_takes_a_store_that_answers_but_serves_no_read_for_an_outage(run, settings, make_document,
                                                                            monkeypatch):
    """review3 r3ops R2: the probe asked only whether the bucket answers, so a store that fails every GET (read
    quorum lost, GetObject denied, KMS down) was filed as every object damaged: exit 11 and a permanent failure
    event per document. A blip that the probe outlasts is re-read, not recorded."""
    from digitize.errors import StorageError

    with Archive.open(settings) as archive:
        rows = [archive.store(d.original, d.pdfa, d.report, d.meta)
                for d in (make_document(title="A"), make_document(title="B"), make_document(title="C"))]
        store = type(archive.objects)
    real = store.read_chunks

    def denied(self, key):
        raise StorageError(f"reading {key}: S3 operation failed; code: AccessDenied")
        yield b""

    monkeypatch.setattr(store, "read_chunks", denied)  # the bucket answers (probe), no object reads
    code, _, err = run("verify", "--all")
    assert code == ExitCode.storage and "object store unavailable" in err
    assert not [e for e in _events(settings) if e.event_type == "fixity-checked"]  # no false findings
    blipped: list[str] = []

    def blip(self, key):
        if key == rows[1].pdfa_key and not blipped:
            blipped.append(key)
            raise StorageError(f"reading {key}: SlowDown")
        yield from real(self, key)

    monkeypatch.setattr(store, "read_chunks", blip)
    code, out, _ = run("verify", "--all")
    assert blipped and code == 0 and out.strip().endswith("0 problems")
    checked = [e for e in _events(settings) if e.event_type == "fixity-checked"]
    assert [e.outcome for e in checked] == ["success"] * 3


def test_verify_tells_damaged_objects_from_a_store_that_is_down_by_asking_the_store(run, settings, make_document,
                                                                                    monkeypatch):
    """review r2cli N2: "the first 9 objects all unreadable" was taken for an outage, so damage in the oldest
    documents (one bad folder, one bad region of the disk) ended the audit with exit 10, the rest unchecked."""
    from digitize.errors import StorageError

    with Archive.open(settings) as archive:
        for doc in (make_document(title=t) for t in "ABCD"):
            archive.store(doc.original, doc.pdfa, doc.report, doc.meta)
        store = type(archive.objects)
        first = [k for d in archive.index.stored_documents()[:3] for k in d.keys()]
    real = store.read_chunks

    def failing(self, key):
        if key in first:
            raise StorageError(f"cannot read object {key}: Input/output error")
        yield from real(self, key)

    monkeypatch.setattr(store, "read_chunks", failing)
    code, out, _ = run("verify", "--all")
    assert code == ExitCode.verification
    assert sum(line.startswith("unreadable: ") for line in out.splitlines()) == 9
    assert "checked 4 documents, 12 objects in all: 9 problems" in out
    checked = [e for e in _events(settings) if e.event_type == "fixity-checked"]
    assert sorted(e.outcome for e in checked) == ["failure"] * 3 + ["success"]

    def down(self):
        raise StorageError(f"reaching {self.description}: MaxRetryError: connection refused")

    monkeypatch.setattr(store, "probe", down)  # the store itself does not answer: an outage, exit 10
    code, _, err = run("verify", "--all")
    assert code == ExitCode.storage and "connection refused" in err
    assert len([e for e in _events(settings) if e.event_type == "fixity-checked"]) == 4  # no false findings


def test_verify_reports_an_object_it_cannot_even_stat_and_checks_the_rest(run, settings, make_document, monkeypatch):
    """review r2cli N1: exists() was Path.is_file(), which re-raises EIO/EACCES, so a bad inode or a case
    folder this account cannot search still ended the audit as "internal error", exit 15."""
    import errno

    if not settings.store_url.startswith("file:"):
        return  # a folder store's stat; S3 errors already come as StorageError
    with Archive.open(settings) as archive:
        rows = [archive.store(d.original, d.pdfa, d.report, d.meta)
                for d in (make_document(title="A"), make_document(title="B"), make_document(title="C"))]
        bad = str(archive.objects._path(rows[0].pdfa_key))
    real = os.stat

    def failing_stat(path, *args, **kwargs):
        if os.fspath(path) == bad:
            raise OSError(errno.EIO, "Input/output error", bad)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", failing_stat)
    code, out, err = run("verify", "--all")
    monkeypatch.undo()
    assert (code, err) == (ExitCode.verification, "digitize: fixity check found 1 problems in all\n")
    assert f"unreadable: {rows[0].pdfa_key} (doc {rows[0].doc_id}): cannot check object" in out
    assert "checked 3 documents, 9 objects in all: 1 problems" in out
    checked = [e for e in _events(settings) if e.event_type == "fixity-checked"]
    assert sorted(e.outcome for e in checked) == ["failure", "success", "success"]


def test_verify_removes_the_temp_files_of_killed_uploads(run, stored_case, settings):
    """review rev17cli L3: a FolderStore upload killed mid-write left .NAME.XXXX.part beside the objects
    (up to 2 GB each); list_keys skips dotfiles, so verify said "0 problems" forever."""
    if not settings.store_url.startswith("file:"):
        return  # an S3 server keeps interrupted uploads out of the listing
    with Archive.open(settings) as archive:
        folder = archive.objects._path(archive.documents(CASE)[0].pdfa_key).parent
    old, fresh = folder / ".original-0123456789abcdef.tif.k3j4_x9a.part", folder / ".pdfa-0123456789abcdef.pdf.abcd1234.part"
    for part in (old, fresh):
        part.write_bytes(b"x" * 1000)
    os.utime(old, (os.stat(old).st_mtime - 3600,) * 2)
    code, out, _ = run("verify", "--all")
    assert code == 0
    assert f"repaired (partial): {CASE}/0001/{old.name}: temp file of an interrupted upload removed" in out
    assert not old.exists() and fresh.exists()  # a live upload's file is left to it


def test_cases_import_link_and_unmatched(run, make_document, settings, tmp_path):
    with Archive.open(settings) as archive:
        doc = make_document(case_id=None, title="Tờ khai")
        loose = archive.store(doc.original, doc.pdfa, doc.report, doc.meta)
    export = tmp_path / "cases.csv"
    export.write_text(f"case_id,applicant\n{CASE},Phạm Văn Đông\nbad-id,x\n", encoding="utf-8")
    code, out, err = run("cases", "import", str(export))
    assert code == ExitCode.input_file and out.startswith("1 cases created, 0 updated, 1 rows with errors")
    assert "row 2: case ID 'BAD-ID'" in err
    code, out, _ = run("cases", "unmatched")
    assert code == 0 and out.splitlines()[0].startswith(f"doc {loose.doc_id}")
    code, out, _ = run("cases", "link", str(loose.doc_id), CASE)
    assert code == 0 and out.strip() == f"doc {loose.doc_id} is now #1 of {CASE}"
    assert run("cases", "unmatched")[1].strip() == "0 unmatched documents"


@pytest.mark.parametrize("args, code, message", [
    (("show", "000.00.31.H56-241015-0099"), ExitCode.not_found, "digitize: case 000.00.31.H56-241015-0099 not found"),
    (("show", "000.00.31.H56-241399-0001"), ExitCode.bad_args, "not a real date (month 13)"),
    (("search", "--", "-- ,"), ExitCode.bad_args, "has no words"),
    (("cases", "import", "missing.csv"), ExitCode.file_access, "case export not found"),
    (("get", CASE), ExitCode.bad_args, "give -o DIR"),
])
def test_user_errors_are_one_line_with_their_exit_code(run, args, code, message):
    result, out, err = run(*args)
    assert result == code and message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_terminal_escapes_from_imported_data_never_reach_the_terminal(run, settings, make_document, tmp_path):
    evil = "\x1b]0;pwned\x07\x1b[2J\x9b31m\u202e"
    with Archive.open(settings) as archive:
        doc = make_document(pages=(f"quyen {evil} dat",), title=f"Sổ đỏ{evil}", case_id=None)
        loose = archive.store(doc.original, doc.pdfa, doc.report, doc.meta)
    export = tmp_path / "cases.csv"
    export.write_text(f"case_id,applicant,status\n{CASE},Phạm{evil}Đông,x{evil}\n", encoding="utf-8")
    assert run("cases", "import", str(export))[0] == 0
    outputs = [run("cases", "unmatched"), run("cases", "link", str(loose.doc_id), CASE), run("show", CASE),
               run("search", "quyen"), run("search", "pham"), run("get", CASE, "-o", str(tmp_path / "out"))]
    assert [code for code, _, _ in outputs] == [0] * len(outputs)
    text = "".join(out + err for _, out, err in outputs)
    assert "Phạm" in text and "Sổ đỏ" in text
    assert not any(c in text for c in "\x1b\x07\x9b\u202e")


def test_reindex_fills_an_empty_index_from_the_store_and_refuses_a_full_one(run, make_document, settings, tmp_path,
                                                                            monkeypatch):
    with Archive.open(settings) as archive:
        doc = make_document(case_id=None, title="Tờ khai")
        loose = archive.store(doc.original, doc.pdfa, doc.report, doc.meta)
        archive.link(loose.doc_id, CASE)
    code, _, err = run("reindex")
    assert code == ExitCode.bad_args and "already holds documents" in err
    monkeypatch.setenv("DIGITIZE_INDEX_DSN", f"sqlite:///{tmp_path / 'new-index.sqlite'}")
    code, out, _ = run("reindex")
    assert code == 0 and out.strip() == "reindexed 1 documents and 1 links; 0 objects skipped"
    code, out, _ = run("show", CASE)
    assert code == 0 and "Tờ khai" in out
