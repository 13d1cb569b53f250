"""A scan shared by two cases belongs to both dossiers, stored once (issue 10, finding 7).

Same tests on (folder + SQLite) and (MinIO + PostgreSQL).
"""

from __future__ import annotations

import pytest

from digitize.errors import BadArgsError
from storage.index import open_index
from storage.keys import is_link_key

pytestmark = pytest.mark.integration
CASE = "000.00.31.H56-241015-0027"
OTHER = "G22.32-240101-0001"


def store(archive, doc):
    return archive.store(doc.original, doc.pdfa, doc.report, doc.meta, actor="tester")


def test_same_original_in_a_second_case_is_linked_not_copied_and_listed_in_both_dossiers(archive, make_document,
                                                                                         tmp_path):
    store(archive, make_document(case_id=OTHER, title="Đơn đề nghị"))
    id_copy = make_document(pages=("Căn cước công dân Nguyễn Văn Đức",), title="CCCD")
    first = store(archive, id_copy)
    keys = sorted(archive.objects.list_keys())
    id_copy.meta.case_id = OTHER
    shared = store(archive, id_copy)
    assert (shared.doc_id, shared.case_id, shared.sequence, shared.already_stored) == (first.doc_id, OTHER, 2, False)
    after = sorted(archive.objects.list_keys())
    assert shared.pdfa_key == first.pdfa_key and [k for k in after if not is_link_key(k)] == keys  # no second copy
    assert [k for k in after if is_link_key(k)] == [k for k in after if k.startswith(f"{OTHER}/0002/link-")]
    assert [(d.doc_id, d.sequence) for d in archive.documents(CASE)] == [(first.doc_id, 1)]
    assert [d.title for d in archive.documents(OTHER)] == ["Đơn đề nghị", "CCCD"]
    for case, position in ((CASE, "0001"), (OTHER, "0002")):
        got = archive.retrieve(case, tmp_path / case)
        assert got.files[-1].path.name == f"{position}-cccd.pdf"
        assert got.files[-1].path.read_bytes() == id_copy.pdfa.read_bytes()
    assert sorted((h.case_id, h.sequence) for h in archive.search("can cuoc")) == [(CASE, 1), (OTHER, 2)]
    linked = [e for e in archive.index.events(doc_id=first.doc_id) if e.event_type == "linked"]
    assert [(e.case_id, e.actor) for e in linked] == [(OTHER, "tester")] and "#2" in linked[0].detail
    assert first.doc_id in {e.doc_id for e in archive.index.events(case_id=OTHER)}
    report = archive.verify()
    assert report.ok and report.documents == 2  # every document once, no orphan, no false alarm
    assert archive.verify(OTHER).ok


def test_storing_the_shared_copy_again_changes_nothing(archive, make_document):
    doc = make_document()
    store(archive, doc)
    doc.meta.case_id = OTHER
    store(archive, doc)
    events = len(archive.index.events())
    again = store(archive, doc)
    assert again.already_stored is True and (again.case_id, again.sequence) == (OTHER, 1)
    doc.meta.case_id = CASE
    assert store(archive, doc).already_stored is True
    assert len(archive.index.events()) == events


def test_dossier_numbers_stay_unique_across_stored_and_shared_documents(archive, make_document):
    shared = store(archive, make_document())
    assert archive.share(shared.doc_id, OTHER).sequence == 1
    assert store(archive, make_document(case_id=OTHER)).sequence == 2
    with pytest.raises(BadArgsError, match="sequence 2 is already used"):
        archive.share(store(archive, make_document()).doc_id, OTHER, sequence=2)
    with pytest.raises(BadArgsError, match="sequence 1 is already used"):
        store(archive, make_document(case_id=OTHER, sequence=1))
    assert [d.sequence for d in archive.documents(OTHER)] == [1, 2]


def test_cases_link_shares_a_document_of_a_known_case_and_moves_an_unmatched_one(archive, make_document, tmp_path):
    export = tmp_path / "cases.csv"
    export.write_text(f"case_id,applicant\n{CASE},Lê Thị Hoa\n", encoding="utf-8")
    archive.import_cases(export)
    filed = store(archive, make_document())
    loose = store(archive, make_document(case_id=None))
    assert archive.link(filed.doc_id, OTHER).sequence == 1
    assert [d.doc_id for d in archive.documents(CASE)] == [filed.doc_id]  # still in its own dossier
    assert archive.link(loose.doc_id, OTHER).sequence == 2
    assert [d.doc_id for d in archive.documents(OTHER)] == [filed.doc_id, loose.doc_id]
    assert [(d.doc_id, d.case_id) for d in archive.unmatched()] == [(loose.doc_id, OTHER)]  # OTHER not imported
    assert archive.link(filed.doc_id, OTHER).sequence == 1  # linked again: nothing changes
    assert [d.doc_id for d in archive.documents(OTHER)] == [filed.doc_id, loose.doc_id]


def test_migration_0002_upgrades_an_index_with_documents(tmp_path):
    index = open_index("sqlite:///" + str(tmp_path / "i.sqlite3"))
    assert index.schema_version() >= 2 and index.migrate() == []
    index.close()
