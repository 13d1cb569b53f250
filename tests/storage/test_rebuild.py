"""An index rebuilt from the object store alone keeps every document and every place it has in another
dossier (shared, or unmatched and then linked), from link records read back as untrusted data."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace

import pytest

from digitize.errors import BadArgsError, StorageError
from storage.index import Index, open_index
from storage.rebuild import rebuild_index
from storage.sidecar import build_link, link_key, parse_link

pytestmark = pytest.mark.integration
CASE = "000.00.31.H56-241015-0027"
OTHER = "000.00.31.H56-241016-0004"
LATER = "000.00.31.H56-241017-0009"


def store(archive, doc):
    return archive.store(doc.original, doc.pdfa, doc.report, doc.meta, actor="tester")


def places(index, case_id: str) -> list[tuple[int, str, str]]:
    return [(d.sequence, d.title, d.meta_key) for d in index.documents(case_id)]


@pytest.fixture
def rebuilt(archive, tmp_path):
    """A fresh SQLite index filled from the archive's store (a folder, or MinIO)."""
    def rebuild():
        index = open_index(f"sqlite:///{tmp_path / 'rebuilt.sqlite'}")
        return index, rebuild_index(archive.objects, index, "tester", "test")

    return rebuild


def test_links_survive_an_index_rebuilt_from_sidecars(archive, make_document, rebuilt):
    store(archive, make_document(case_id=OTHER, title="Đơn đề nghị"))
    id_copy = make_document(pages=("Căn cước công dân",), title="CCCD")
    store(archive, id_copy)
    id_copy.meta.case_id = OTHER
    store(archive, id_copy)  # shared with OTHER as #2
    loose = store(archive, make_document(case_id=None, title="Giấy ủy quyền"))
    archive.link(loose.doc_id, LATER, actor="tester")  # unmatched, then filed into LATER
    assert archive.verify().ok  # the link records are not orphans

    index, report = rebuilt()
    try:
        assert report.skipped == [] and (report.documents, report.links) == (3, 2)
        for case_id in (CASE, OTHER, LATER):
            assert places(index, case_id) == places(archive.index, case_id)
        assert all(d.case_id for d in index.stored_documents())  # the loose one is filed, as before
        assert sorted((h.case_id, h.sequence) for h in index.search("can cuoc")) == [(CASE, 1), (OTHER, 2)]
    finally:
        index.close()


def test_forged_link_records_are_not_trusted(archive, make_document, rebuilt):
    stored = store(archive, make_document(title="CCCD"))
    home = archive.index.document(stored.doc_id)
    good = build_link(replace(home, case_id=OTHER, sequence=3), home, "shared")
    # a record stored at another place than it gives, one with a bad case ID, one naming no document
    archive.objects.put(link_key(LATER, 1, good), good, hashlib.sha256(good).hexdigest())
    bad_case = good.replace(OTHER.encode(), b"../../etc")
    with pytest.raises(BadArgsError):
        parse_link(bad_case)
    raw = json.loads(good)
    raw["document"]["meta_key"] = "000.00.31.H56-241015-0027/0009/meta-0000000000000000.json"
    nobody = json.dumps(raw).encode()
    archive.objects.put(link_key(OTHER, 3, nobody), nobody, hashlib.sha256(nobody).hexdigest())
    index, report = rebuilt()
    try:
        assert report.documents == 1 and report.links == 0 and len(report.skipped) == 2
        assert index.documents(OTHER) == [] and index.documents(LATER) == []
    finally:
        index.close()


def test_a_sidecar_whose_bytes_do_not_match_its_key_is_skipped(archive, make_document, rebuilt, tmp_path, settings):
    if settings.store.url:
        pytest.skip("edits the folder store's file behind its back")
    stored = store(archive, make_document(title="CCCD"))
    root = tmp_path / "data" / "objects"
    path = next(p for p in root.rglob("meta-*.json"))
    path.chmod(0o600)
    path.write_bytes(path.read_bytes().replace(b"CCCD", b"XXXX"))
    index, report = rebuilt()
    try:
        assert report.documents == 0 and [k for k, _ in report.skipped] == [stored.meta_key]
    finally:
        index.close()


def test_rebuild_refuses_an_index_that_holds_documents(archive, make_document):
    store(archive, make_document())
    with pytest.raises(BadArgsError):
        rebuild_index(archive.objects, archive.index, "tester", "test")


def test_a_linked_document_keeps_its_place_when_its_old_sequence_was_reused(archive, make_document, rebuilt):
    first = store(archive, make_document(case_id=None, title="Giấy ủy quyền"))
    archive.link(first.doc_id, LATER, actor="tester")  # frees _unmatched/0001 ...
    second = store(archive, make_document(case_id=None, pages=("Sổ hộ khẩu",), title="Hộ khẩu"))
    assert second.meta_key.split("/")[:2] == first.meta_key.split("/")[:2]  # ... which the next one reuses

    index, report = rebuilt()
    try:
        assert report.skipped == [] and (report.documents, report.links) == (2, 1)
        assert places(index, LATER) == places(archive.index, LATER)
        assert {(d.case_id, d.title) for d in index.stored_documents()} == {(LATER, "Giấy ủy quyền"),
                                                                             (None, "Hộ khẩu")}
    finally:
        index.close()


def forge_sidecar(archive, stored, change, prefix: str | None = None) -> str:
    """A second sidecar beside ``stored``'s (or under ``prefix``), its bytes changed by ``change`` and its key
    hashed to match."""
    raw = json.loads(b"".join(archive.objects.read_chunks(stored.meta_key)))
    change(raw)
    data = json.dumps(raw).encode()
    key = f"{prefix or stored.meta_key.rsplit('/', 1)[0]}/meta-{hashlib.sha256(data).hexdigest()[:16]}.json"
    archive.objects.put(key, data, hashlib.sha256(data).hexdigest())
    return key


@pytest.mark.parametrize("field,value", [("ocr_confidence", 10**400), ("ocr_confidence", float("nan")),
                                         ("number", 10**30), ("text", "a\x00b")], ids=["huge", "nan", "page", "nul"])
def test_a_sidecar_with_numbers_out_of_range_is_skipped(archive, make_document, rebuilt, field, value):
    stored = store(archive, make_document(title="CCCD"))
    forged = forge_sidecar(archive, stored, lambda raw: raw["pages"][0].update({field: value}))
    index, report = rebuilt()
    try:
        assert report.documents == 1 and [k for k, _ in report.skipped] == [forged]
        assert [d.meta_key for d in index.stored_documents()] == [stored.meta_key]
    finally:
        index.close()


def test_a_document_numbered_past_9999_is_rebuilt(archive, make_document, rebuilt):
    """review rev17cli M4: intake takes sequences up to 99 999 and numbers on from there, but reindex skipped
    anything above 9 999, so one clerk's `sequence: 9999` made every later document unrebuildable."""
    store(archive, make_document(title="A", sequence=9999))
    later = store(archive, make_document(title="B"))
    assert later.sequence == 10000
    index, report = rebuilt()
    try:
        assert report.documents == 2 and report.skipped == []
        assert [d.sequence for d in index.documents(CASE)] == [9999, 10000]
    finally:
        index.close()


def test_a_full_dossier_refuses_the_next_document_with_one_clear_error(archive, make_document):
    from storage.keys import SEQUENCE_MAX

    store(archive, make_document(title="A", sequence=SEQUENCE_MAX))
    with pytest.raises(BadArgsError, match=f"is full: its last document is #{SEQUENCE_MAX}"):
        store(archive, make_document(title="B"))
    assert [d.sequence for d in archive.documents(CASE)] == [SEQUENCE_MAX]


def forge_sidecar_at(archive, stored, sequence: int, change) -> str:
    """A sidecar of another document at ``sequence`` of ``stored``'s case (keys recomputed, other pages so the
    rebuild does not take it for a copy of ``stored``), changed by ``change``."""
    from storage.keys import document_prefix, object_key

    prefix = document_prefix(stored.case_id, sequence)

    def moved(raw):
        raw.update(sequence=sequence, source_pages="2-3")
        for role, extension in (("original", "tif"), ("pdfa", "pdf")):
            raw[role]["key"] = object_key(prefix, role, raw[role]["sha256"], extension)
        change(raw)

    return forge_sidecar(archive, stored, moved, prefix)


@pytest.mark.parametrize("where", ["title", "archive", "page"])
def test_a_sidecar_with_a_lone_surrogate_is_skipped(archive, make_document, rebuilt, where):
    """review rev17cli M5: JSON's "\ud800" passed every check and stopped the whole reindex at the database
    ("internal error: UnicodeEncodeError", exit 15, no object named)."""
    changes = {"title": lambda raw: raw.update(title="bad \ud800 title"),
               "archive": lambda raw: raw.update(archive={"box": "x\udfff"}),
               "page": lambda raw: raw["pages"][0].update(text="a\ud800b")}
    stored = store(archive, make_document(title="CCCD"))
    forged = forge_sidecar_at(archive, stored, 2, changes[where])
    index, report = rebuilt()
    try:
        assert report.documents == 1 and [k for k, _ in report.skipped] == [forged]
        assert "lone surrogate" in report.skipped[0][1]
    finally:
        index.close()


def test_a_value_the_database_refuses_stops_the_rebuild_naming_the_sidecar(archive, make_document, rebuilt,
                                                                          monkeypatch):
    stored = store(archive, make_document(title="CCCD"))
    monkeypatch.setattr(Index, "finalize", lambda *a, **k: "x\ud800".encode())
    with pytest.raises(StorageError, match=f"kept nothing.*{stored.meta_key}: UnicodeEncodeError"):
        rebuilt()


def test_a_rebuild_that_fails_half_way_leaves_the_index_empty_for_a_rerun(archive, make_document, rebuilt,
                                                                          monkeypatch):
    store(archive, make_document(title="Đơn"))
    store(archive, make_document(pages=("Căn cước công dân",), title="CCCD"))
    real, calls = Index.finalize, []

    def failing(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise StorageError("index: connection lost")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Index, "finalize", failing)
    with pytest.raises(StorageError):
        rebuilt()
    monkeypatch.undo()
    index, report = rebuilt()  # the first run kept nothing, so this one is allowed
    try:
        assert report.documents == 2 and report.skipped == []
    finally:
        index.close()


def test_repeating_a_move_whose_link_record_failed_writes_it(archive, make_document, rebuilt, monkeypatch):
    loose = store(archive, make_document(case_id=None, title="Giấy ủy quyền"))
    real_put = archive.objects.put

    def failing_put(key, *args, **kwargs):
        if "/link-" in key:
            raise StorageError("store: connection reset")
        return real_put(key, *args, **kwargs)

    monkeypatch.setattr(archive.objects, "put", failing_put)
    with pytest.raises(StorageError):
        archive.link(loose.doc_id, LATER, actor="tester")  # the index moved it; its record is missing
    monkeypatch.undo()
    archive.link(loose.doc_id, LATER, actor="tester")  # repeated: the record is written now
    archive.link(loose.doc_id, LATER, actor="tester")  # and only once
    assert len([k for k in archive.objects.list_keys(LATER + "/") if "/link-" in k]) == 1
    index, report = rebuilt()
    try:
        assert report.skipped == [] and places(index, LATER) == places(archive.index, LATER)
    finally:
        index.close()


def test_verify_counts_a_link_record_naming_no_indexed_document_as_an_orphan(archive, make_document):
    stored = store(archive, make_document(title="CCCD"))
    home = archive.index.document(stored.doc_id)
    raw = json.loads(build_link(replace(home, case_id=OTHER, sequence=3), home, "shared"))
    raw["document"]["meta_key"] = f"{CASE}/0009/meta-{'0' * 16}.json"
    nobody = json.dumps(raw).encode()
    junk = b"not a link record"
    placed = [link_key(OTHER, 3, nobody), f"{OTHER}/0004/link-{hashlib.sha256(junk).hexdigest()[:16]}.json"]
    archive.objects.put(placed[0], nobody, hashlib.sha256(nobody).hexdigest())
    archive.objects.put(placed[1], junk, hashlib.sha256(junk).hexdigest())
    assert sorted((p.kind, p.key) for p in archive.verify().problems) == [("orphan", key) for key in sorted(placed)]


LINK_SECRET = "Lr8-Kq3Zx7Vm1Tc5Wn9Hb2Yd6Pf0Sg4Ja"  # random-looking: the loader refuses "l" * 40 (too few distinct)


@pytest.fixture
def signing(archive):
    """The archive writing its link records signed ([store] link_secret)."""
    archive.link_secret = LINK_SECRET.encode()
    yield archive
    archive.link_secret = None


def forged_share(archive, doc_id: int, case_id: str, sequence: int, key: bytes | None) -> None:
    """What a bucket writer without the link secret can do: a well-formed record at the right place."""
    home = archive.index.document(doc_id)
    data = build_link(replace(home, case_id=case_id, sequence=sequence), home, "shared", key)
    archive.objects.put(link_key(case_id, sequence, data), data, hashlib.sha256(data).hexdigest())


def test_signed_link_records_survive_a_rebuild_and_forged_ones_are_skipped(signing, make_document, tmp_path):
    archive = signing
    id_copy = make_document(pages=("Căn cước công dân",), title="CCCD")
    stored = store(archive, id_copy)
    id_copy.meta.case_id = OTHER
    store(archive, id_copy)  # shared with OTHER as #2: a signed record
    loose = store(archive, make_document(case_id=None, title="Giấy ủy quyền"))
    archive.link(loose.doc_id, LATER, actor="tester")  # moved: a signed record
    forged_share(archive, stored.doc_id, "000.00.12.H29-241016-0003", 1, None)  # another agency's case: unsigned
    forged_share(archive, stored.doc_id, "000.00.12.H29-241016-0004", 1, b"x" * 40)  # signed with another key
    for secret, expected in [(LINK_SECRET.encode(), ([], 2)), (None, (None, 4))]:
        index = open_index(f"sqlite:///{tmp_path / f'rebuilt-{bool(secret)}.sqlite'}")
        try:
            report = rebuild_index(archive.objects, index, "tester", "test", secret, unverified_links=True)
            assert report.links == expected[1]
            if secret:  # with the key: the two forged records are reported and not restored
                assert sorted(why for _, why in report.skipped) == [
                    "a link record whose signature does not match store.link_secret (forged or altered)",
                    "an unsigned link record (written before store.link_secret was set, or forged)"]
                assert index.documents("000.00.12.H29-241016-0003") == []
                assert places(index, OTHER) == places(archive.index, OTHER)
                assert places(index, LATER) == places(archive.index, LATER)
            else:  # without it (the old behaviour): every well-formed record is believed
                assert len(index.documents("000.00.12.H29-241016-0003")) == 1
        finally:
            index.close()


def test_a_signed_link_record_altered_in_the_bucket_is_refused():
    from storage.models import DocumentRow

    home = DocumentRow(case_id=CASE, sequence=1, original_sha256="a" * 64, pdfa_sha256="b" * 64,
                       meta_sha256="c" * 64, original_key="k", pdfa_key="k",
                       meta_key=f"{CASE}/0001/meta-{'c' * 16}.json")
    data = build_link(replace(home, case_id=OTHER, sequence=2), home, "shared", LINK_SECRET.encode())
    assert parse_link(data, LINK_SECRET.encode()).case_id == OTHER
    assert parse_link(data).case_id == OTHER  # readers without the key still read it
    with pytest.raises(BadArgsError, match="does not match"):
        parse_link(data.replace(OTHER.encode(), LATER.encode()), LINK_SECRET.encode())


def test_a_short_link_secret_is_a_config_error():
    from digitize.config import Settings
    from digitize.errors import ConfigError
    from storage.sidecar import link_secret

    settings = Settings()
    assert link_secret(settings) is None
    settings.store.link_secret = "short-secret"
    with pytest.raises(ConfigError, match="fewer than 32"):
        link_secret(settings)


def test_a_rebuild_without_the_key_refuses_a_store_whose_links_are_signed(signing, make_document, tmp_path):
    """A host that lacks (or lost) link_secret must not quietly restore every record, forged ones included."""
    from digitize.errors import ConfigError

    archive = signing
    loose = store(archive, make_document(case_id=None, title="Giấy ủy quyền"))
    archive.link(loose.doc_id, LATER, actor="tester")  # a signed move record
    forged_share(archive, loose.doc_id, "000.00.12.H29-241016-0003", 1, None)  # a bucket writer's, unsigned
    index = open_index(f"sqlite:///{tmp_path / 'rebuilt.sqlite'}")
    try:
        with pytest.raises(ConfigError, match="link records are signed"):
            rebuild_index(archive.objects, index, "tester", "test", None)
        assert not index.stored_documents()  # refused before writing anything
        report = rebuild_index(archive.objects, index, "tester", "test", None, unverified_links=True)
        assert report.links == 2  # told so: every well-formed record, the forged one too
    finally:
        index.close()


def test_copies_of_one_signed_move_record_count_once_and_do_not_crowd_out_real_moves(signing, make_document,
                                                                                     tmp_path):
    """Reformatted copies of a signed record keep a valid MAC (it covers the fields, not the bytes): a bucket
    writer could once fill the per-document move limit with them."""
    from storage.keys import is_link_key
    from storage.rebuild import MAX_MOVES

    archive = signing
    loose = store(archive, make_document(case_id=None, title="Giấy ủy quyền"))
    archive.link(loose.doc_id, LATER, actor="tester")
    key = next(k for k in archive.objects.list_keys(LATER + "/") if is_link_key(k))
    data = b"".join(archive.objects.read_chunks(key))
    for n in range(1, MAX_MOVES + 5):
        copy = data + b" " * n  # the same record, other bytes: its own key
        archive.objects.put(link_key(LATER, 1, copy), copy, hashlib.sha256(copy).hexdigest())
    index = open_index(f"sqlite:///{tmp_path / 'rebuilt.sqlite'}")
    try:
        report = rebuild_index(archive.objects, index, "tester", "test", LINK_SECRET.encode())
        assert report.skipped == [] and report.links == 1 and report.documents == 1
        assert places(index, LATER) == places(archive.index, LATER)
    finally:
        index.close()


def test_verify_flags_unsigned_and_badly_signed_link_records_when_it_has_the_key(signing, make_document):
    archive = signing
    id_copy = make_document(pages=("Căn cước công dân",), title="CCCD")
    stored = store(archive, id_copy)
    id_copy.meta.case_id = OTHER
    store(archive, id_copy)  # shared with OTHER: a signed record, no problem
    forged_share(archive, stored.doc_id, "000.00.12.H29-241016-0003", 1, None)
    forged_share(archive, stored.doc_id, "000.00.12.H29-241016-0004", 1, b"Other-Key-9f3Kq7Zx2Vm5Tc8Wn1Hb4Yd6P")
    problems = archive.verify().problems
    assert sorted((p.kind, p.key.split("/")[0]) for p in problems) == [
        ("link", "000.00.12.H29-241016-0003"), ("link", "000.00.12.H29-241016-0004")], problems
    archive.link_secret = None  # without the key: not checked (and these name an indexed document)
    assert archive.verify().problems == []
