"""Archive service end to end, same tests on (folder + SQLite) and (MinIO + PostgreSQL)."""

from __future__ import annotations

import json

import pytest

from digitize.errors import BadArgsError, NotFoundError, VerificationError
from digitize.fsutil import sha256_bytes, sha256_file

pytestmark = pytest.mark.integration
CASE = "000.00.31.H56-241015-0027"  # the case make_document files under (see conftest)
OTHER_CASE = "G22.32-240101-0001"


def store(archive, doc):
    return archive.store(doc.original, doc.pdfa, doc.report, doc.meta, actor="tester")


def test_store_keeps_original_pdfa_and_sidecar_under_readable_keys(archive, make_document):
    doc = make_document(title="Đơn đề nghị", procedure_code="1.004616.000.00.00.H56")
    result = store(archive, doc)
    assert result.already_stored is False and result.sequence == 1 and result.pages == 1
    assert result.original_key.startswith(f"{CASE}/0001/original-{result.original_sha256[:16]}")
    assert result.original_key.endswith(".tif") and result.pdfa_key.endswith(".pdf")
    assert b"".join(archive.objects.read_chunks(result.original_key)) == doc.original.read_bytes()
    assert archive.objects.sha256(result.pdfa_key) == sha256_file(doc.pdfa)
    sidecar = json.loads(b"".join(archive.objects.read_chunks(result.meta_key)))
    assert (sidecar["title"], sidecar["case_id"], sidecar["procedure_code"]) == ("Đơn đề nghị", CASE,
                                                                                 "1.004616.000.00.00.H56")
    assert sidecar["pages"][0]["text"] == "Giấy chứng nhận quyền sử dụng đất"
    kinds = [e.event_type for e in archive.index.events(doc_id=result.doc_id)]
    assert kinds == ["ingested", "converted", "stored", "verified"]


def test_second_store_of_same_original_returns_already_stored_and_writes_nothing(archive, make_document):
    doc = make_document()
    first = store(archive, doc)
    keys_before = list(archive.objects.list_keys())
    events_before = len(archive.index.events())
    again = store(archive, doc)
    assert again.already_stored is True and again.doc_id == first.doc_id
    assert list(archive.objects.list_keys()) == keys_before
    assert len(archive.index.events()) == events_before
    assert archive.find(doc.report.input_sha256) == again


def test_slices_of_one_scanned_stack_are_separate_documents(archive, make_document):
    doc = make_document(source_pages="1-2")
    store(archive, doc)
    doc.meta.source_pages = "3-4"
    second = store(archive, doc)
    assert second.already_stored is False and second.sequence == 2
    assert archive.find(doc.report.input_sha256, "1-2").sequence == 1


def test_sequences_follow_dossier_order_and_a_taken_one_is_refused(archive, make_document):
    assert [store(archive, make_document()).sequence for _ in range(3)] == [1, 2, 3]
    with pytest.raises(BadArgsError, match="sequence 2 is already used"):
        store(archive, make_document(sequence=2))
    assert [d.sequence for d in archive.documents(CASE)] == [1, 2, 3]


def test_bad_case_id_is_refused_before_anything_is_written(archive, make_document):
    with pytest.raises(BadArgsError, match="not a real date"):
        store(archive, make_document(case_id="000.00.31.H56-241315-0027"))
    assert list(archive.objects.list_keys()) == []


def test_unknown_case_is_kept_as_unmatched_and_linked_later(archive, make_document):
    loose = store(archive, make_document(case_id=None))
    assert loose.original_key.startswith("_unmatched/0001/")
    assert [d.doc_id for d in archive.unmatched()] == [loose.doc_id]
    linked = archive.link(loose.doc_id, OTHER_CASE.lower())
    assert (linked.case_id, linked.sequence) == (OTHER_CASE, 1)
    assert [d.doc_id for d in archive.documents(OTHER_CASE)] == [loose.doc_id]
    assert archive.unmatched() == [linked] or archive.case(OTHER_CASE)  # no case record imported yet
    with pytest.raises(NotFoundError):
        archive.link(12345, OTHER_CASE)


def test_get_returns_byte_identical_files_whose_sha256_match_the_index(archive, make_document, tmp_path):
    docs = [make_document(title=t) for t in ("Đơn đề nghị", "Bản vẽ hiện trạng", "Giấy tờ ../../etc/passwd")]
    for doc in docs:
        store(archive, doc)
    got = archive.retrieve(CASE, tmp_path / "out")
    assert [f.path.name for f in got.files] == ["0001-don-de-nghi.pdf", "0002-ban-ve-hien-trang.pdf",
                                                "0003-giay-to-etc-passwd.pdf"]
    for doc, file, row in zip(docs, got.files, archive.documents(CASE)):
        assert file.path.read_bytes() == doc.pdfa.read_bytes()
        assert sha256_file(file.path) == row.pdfa_sha256 == file.sha256
    manifest = json.loads(got.manifest.read_text())
    assert [d["sha256"] for d in manifest["documents"]] == [r.pdfa_sha256 for r in archive.documents(CASE)]
    originals = archive.retrieve(CASE, tmp_path / "orig", original=True)
    assert [f.path.read_bytes() for f in originals.files] == [d.original.read_bytes() for d in docs]
    retrieved = [e for e in archive.index.events(case_id=CASE) if e.event_type == "retrieved"]
    assert len(retrieved) == 6 and {e.outcome for e in retrieved} == {"success"}


def test_get_of_unknown_case_is_not_found(archive, tmp_path):
    with pytest.raises(NotFoundError, match="not found"):
        archive.retrieve(OTHER_CASE, tmp_path / "out")


def tamper(archive, key: str) -> None:
    """Flip one byte of a stored object behind the archive's back (a disk or an admin gone wrong)."""
    data = bytearray(b"".join(archive.objects.read_chunks(key)))
    data[len(data) // 2] ^= 0x01
    if hasattr(archive.objects, "root"):
        path = archive.objects.root / key
        path.chmod(0o644)
        path.write_bytes(bytes(data))
    else:  # a raw PUT to the same key: a bucket without object lock lets an admin replace it
        import io

        archive.objects.client.put_object(archive.objects.bucket, key, io.BytesIO(bytes(data)), len(data))


def test_verify_catches_a_flipped_byte_and_get_refuses_the_file(archive, make_document, tmp_path):
    first, second = store(archive, make_document()), store(archive, make_document())
    assert archive.verify(CASE).ok
    tamper(archive, second.pdfa_key)
    report = archive.verify(CASE)
    assert [(p.kind, p.key) for p in report.problems] == [("corrupt", second.pdfa_key)]
    outcomes = [e.outcome for e in archive.index.events(doc_id=second.doc_id) if e.event_type == "fixity-checked"]
    assert outcomes == ["success", "failure"]
    with pytest.raises(VerificationError, match="does not match the index"):
        archive.retrieve(CASE, tmp_path / "out")
    assert not (tmp_path / "out" / "0002-don-de-nghi.pdf").exists()
    assert (tmp_path / "out" / "0001-don-de-nghi.pdf").read_bytes() == b"".join(
        archive.objects.read_chunks(first.pdfa_key))


def test_verify_reports_missing_and_orphan_objects(archive, make_document):
    stored = store(archive, make_document())
    archive.objects.delete(stored.meta_key)
    archive.objects.put(f"{CASE}/0099/pdfa-{'0' * 16}.pdf", b"stray", sha256_bytes(b"stray"))
    report = archive.verify()
    assert sorted((p.kind, p.key) for p in report.problems) == [
        ("missing", stored.meta_key), ("orphan", f"{CASE}/0099/pdfa-{'0' * 16}.pdf")]
    assert (report.documents, report.objects) == (1, 3)


def test_search_finds_pages_without_accents_and_names_case_document_and_page(archive, make_document):
    store(archive, make_document(pages=("Trang bìa", "Giấy chứng nhận quyền sử dụng đất ở"), title="Sổ đỏ"))
    hits = archive.search("quyen su dung dat")
    assert [(h.case_id, h.sequence, h.page) for h in hits] == [(CASE, 1, 2)]
    assert "[quyền] [sử] [dụng] [đất]" in hits[0].snippet


def test_import_cases_upserts_and_reports_bad_rows(archive, tmp_path):
    export = tmp_path / "cases.csv"
    export.write_text(
        "Mã hồ sơ;Mã thủ tục;Tên thủ tục;Người nộp;Ngày tiếp nhận;OrganId;FileCatalog;FileNotation\n"
        f"{CASE};1.004616.000.00.00.H56;Cấp giấy chứng nhận;Nguyễn Văn Đức;15/10/2024;000.00.31.H56;2024;HS-27\n"
        "000.00.31.H56-241315-0001;;;;;;;\n"
        f"{OTHER_CASE};2.001234;;Lê Thị Hoa;2024-01-01;;;\n"
        "000.00.31.H56-241016-0001;1.0046;;;;;;\n", encoding="utf-8")
    result = archive.import_cases(export)
    assert (result.created, result.updated) == (2, 0)
    assert [(e.row, e.message) for e in result.errors] == [
        (2, "case ID '000.00.31.H56-241315-0001': date 241315 is not a real date (month 13)"),
        (4, "procedure code '1.0046' must look like 1.004616 or 1.004616.000.00.00.H56")]
    case = archive.case(CASE)
    assert (case.applicant, case.received_date, case.archive["FileNotation"]) == ("Nguyễn Văn Đức", "2024-10-15", "HS-27")
    as_json = tmp_path / "cases.json"
    as_json.write_text(json.dumps({"cases": [{"case_id": CASE, "status": "Đã trả kết quả"}]}), encoding="utf-8")
    assert archive.import_cases(as_json).updated == 1
    assert archive.case(CASE).status == "Đã trả kết quả"
    assert [h.case_id for h in archive.search("nguyen van duc")] == [CASE]
