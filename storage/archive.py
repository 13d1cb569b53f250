"""The e-dossier archive: the one service pipelines and the CLI use to store, find, search and retrieve.

Store protocol (why it survives kill -9 at any point without duplicates, orphans or loss):

1. the index records a *pending* row with the planned keys before any object is written;
2. original, PDF/A and JSON sidecar are written (never overwriting) and each read back and verified;
3. one index transaction marks the row stored, adds its search text and its events.

A rerun with the same original finds the pending row and resumes it (objects already present and intact
are kept), once it holds the original's claim (storage/claims.py), which a live writer holds until stored; ``verify`` completes or clears pending rows left by a process that never came back.

A shared scan (the same original filed with a second case) is not stored again: :meth:`Archive.share`
links the stored document into the other dossier (an index row and a ``linked`` event, no objects).
"""

from __future__ import annotations

import logging
import zipfile
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Callable

from digitize import __version__
from digitize.config import Settings
from digitize.errors import BadArgsError, NotFoundError
from digitize.fsutil import sha256_bytes, sha256_file
from digitize.identifiers import normalize_case_id, parse_procedure_code
from digitize.records import DocumentReport

from . import fixity, retrieval
from .cases_import import parse_case_row, read_case_rows
from .claims import Claim, claim
from .faults import fault_point
from .index import ConflictError, Index, now_iso, open_index
from .keys import document_prefix, object_key, original_extension
from .models import (
    CaseRecord,
    DocumentMeta,
    DocumentRow,
    Event,
    ImportResult,
    PageText,
    RowError,
    SearchHit,
    SignatureRow,
    StoredDocument,
    description_of,
)
from .objects import ObjectStore, Source, open_store
from .sidecar import build_link, build_sidecar, first_place, has_link, link_key, link_secret

__all__ = ["Archive", "DocumentMeta", "StoredDocument", "ImportResult", "TOOL"]

TOOL = f"digitize-storage {__version__}"
SEQUENCE_ATTEMPTS = 5
log = logging.getLogger("digitize.storage")


def _stored(row: DocumentRow, already: bool) -> StoredDocument:
    return StoredDocument(doc_id=int(row.doc_id), case_id=row.case_id, sequence=row.sequence,
                          original_sha256=row.original_sha256, pdfa_sha256=row.pdfa_sha256,
                          original_key=row.original_key, pdfa_key=row.pdfa_key, meta_key=row.meta_key,
                          pages=row.pages, already_stored=already)


def _tools_summary(report: DocumentReport) -> str:
    return "; ".join(f"{name} {version}" for name, version in sorted(report.tools.items())) or "unknown"


def _signed(report: DocumentReport) -> str:
    sig = report.signature
    return f", PAdES {sig['level']} signed by {sig['signer']} at {sig['signing_time']}" if sig else ""


def _plan_row(meta: DocumentMeta, report: DocumentReport, case_id: str | None, sequence: int,
              original_sha: str, pdfa_sha: str) -> DocumentRow:
    """A pending row with keys for the given hashes; the sidecar hash depends on the other two keys."""
    prefix = document_prefix(case_id, sequence)
    scored = [p.ocr_confidence for p in report.pages if p.word_count]
    row = DocumentRow(
        case_id=case_id, sequence=sequence, original_sha256=original_sha, pdfa_sha256=pdfa_sha, meta_sha256="",
        original_key=object_key(prefix, "original", original_sha, original_extension(meta.source_name)),
        pdfa_key=object_key(prefix, "pdfa", pdfa_sha, "pdf"), meta_key="", **description_of(meta),
        pages=report.page_count, languages=report.language,
        ocr_confidence=round(sum(scored) / len(scored), 2) if scored else None, created_at=now_iso(),
    )
    return _with_sidecar_key(row, meta, report)


def _with_sidecar_key(row: DocumentRow, meta: DocumentMeta, report: DocumentReport) -> DocumentRow:
    meta_sha = sha256_bytes(build_sidecar(row, meta, report))
    meta_key = object_key(document_prefix(row.case_id, row.sequence), "meta", meta_sha, "json")
    return replace(row, meta_sha256=meta_sha, meta_key=meta_key)


class Archive:
    def __init__(self, objects: ObjectStore, index: Index, link_secret: bytes | None = None,
                 group_readable: bool = False):
        self.objects = objects
        self.index = index
        self.link_secret = link_secret  # signs link records ([store] link_secret; storage/sidecar.py)
        self.group_readable = group_readable  # [store] group_readable: also for the copies `get` writes

    @classmethod
    def open(cls, settings: Settings, wait_timeout: float | None = None) -> "Archive":
        """``wait_timeout``: bounds the index's waits (open_index), for a server that must answer."""
        secret = link_secret(settings)
        objects = open_store(settings)
        try:
            return cls(
                objects,
                open_index(settings.index_dsn, settings.store.group_readable, wait_timeout),
                secret,
                settings.store.group_readable,
            )
        except BaseException:
            objects.close()
            raise

    def close(self) -> None:
        self.index.close()
        self.objects.close()

    def __enter__(self) -> "Archive":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- storing -------------------------------------------------------------------------------
    def find(self, original_sha256: str, source_pages: str = "") -> StoredDocument | None:
        row = self.index.find_document(original_sha256, source_pages)
        return _stored(row, already=True) if row and row.status == "stored" else None

    def store(self, original: Path, pdfa: Path, report: DocumentReport, meta: DocumentMeta,
              actor: str = "digitize") -> StoredDocument:
        """Store original + PDF/A + sidecar and index them; idempotent by (original SHA-256, source_pages)."""
        case_id = normalize_case_id(meta.case_id) if meta.case_id else None
        if meta.procedure_code:
            meta = replace(meta, procedure_code=parse_procedure_code(meta.procedure_code).value)
        original_sha = report.input_sha256 or sha256_file(original)
        pdfa_sha = report.output_sha256 or sha256_file(pdfa)
        row = self.index.find_document(original_sha, meta.source_pages)
        if row and row.status == "stored":
            return self.share(int(row.doc_id), case_id, meta.sequence, actor) if case_id else _stored(row, True)
        with claim(self.index, original_sha, meta.source_pages) as held:  # one writer per original (claims.py)
            row = self.index.find_document(original_sha, meta.source_pages)
            if row and row.status == "stored":  # by the writer this one waited for
                return self.share(int(row.doc_id), case_id, meta.sequence, actor) if case_id else _stored(row, True)
            if row is None:
                row = self._insert_pending(meta, report, case_id, original_sha, pdfa_sha)
            else:  # its claim was free: the writer that left it is gone
                log.info("resuming interrupted store of document %s (%s)", row.doc_id, row.original_key)
            row = self._write_objects(row, original, pdfa, pdfa_sha, report, meta, held)
            fault_point("objects-written")
            self.index.finalize(row, [PageText(p.number, p.text) for p in report.pages],
                                self._store_events(row, report, actor),
                                [SignatureRow.from_record(report.signature)] if report.signature else [], held.check)
            return _stored(row, already=False)

    def _insert_pending(self, meta: DocumentMeta, report: DocumentReport, case_id: str | None,
                        original_sha: str, pdfa_sha: str) -> DocumentRow:
        """Claim a sequence number; concurrent writers may race for it, so retry a few times."""
        for _ in range(SEQUENCE_ATTEMPTS):
            sequence = meta.sequence or self.index.next_sequence(case_id)
            row = _plan_row(meta, report, case_id, sequence, original_sha, pdfa_sha)
            try:
                row.doc_id = self.index.insert_pending(row)
                return row
            except ConflictError:
                if self.index.find_document(original_sha, meta.source_pages):
                    raise
                if meta.sequence:
                    raise BadArgsError(f"sequence {meta.sequence} is already used in case {case_id or 'unmatched'}")
        raise ConflictError(f"could not claim a sequence number in case {case_id} after {SEQUENCE_ATTEMPTS} tries")

    def _write_objects(self, row: DocumentRow, original: Path, pdfa: Path, pdfa_sha: str,
                       report: DocumentReport, meta: DocumentMeta, held: Claim) -> DocumentRow:
        """Put the three objects; on a resume, intact objects from the first attempt are kept as they are.
        The claim is checked before each write: none is made for a row another writer may be resuming."""
        s3_meta = {"case-id": row.case_id or "", "procedure-code": row.procedure_code or ""}

        def put(key: str, source: Source, sha: str, content_type: str) -> None:
            held.check()
            self._put(key, source, sha, s3_meta, content_type)

        put(row.original_key, original, row.original_sha256, "application/octet-stream")
        if not self.objects.is_intact(row.pdfa_key, row.pdfa_sha256):
            if row.pdfa_sha256 != pdfa_sha:  # re-converted after a crash: bytes differ, so does the key
                row = self._replan(row, meta, report, held, pdfa_sha256=pdfa_sha)
            put(row.pdfa_key, pdfa, row.pdfa_sha256, "application/pdf")
        if not self.objects.is_intact(row.meta_key, row.meta_sha256):
            sidecar = build_sidecar(row, meta, report)
            if sha256_bytes(sidecar) != row.meta_sha256:
                row = self._replan(row, meta, report, held)
            put(row.meta_key, sidecar, row.meta_sha256, "application/json")
        return row

    def _replan(self, row: DocumentRow, meta: DocumentMeta, report: DocumentReport, held: Claim,
                **changes) -> DocumentRow:
        """New keys for new bytes, recorded in the pending row *before* the write, so nothing is orphaned."""
        prefix = document_prefix(row.case_id, row.sequence)
        row = replace(row, **changes)
        row = _with_sidecar_key(replace(row, pdfa_key=object_key(prefix, "pdfa", row.pdfa_sha256, "pdf")), meta, report)
        with self.index.transaction():  # only while the claim holds: another writer may own the row now
            held.check()
            self.index.update_document(row)
        return row

    def _put(self, key: str, source: Source, sha: str, s3_meta: dict[str, str], content_type: str) -> None:
        self.objects.put(key, source, sha, {**s3_meta, "sha256": sha}, content_type)

    @staticmethod
    def _store_events(row: DocumentRow, report: DocumentReport, actor: str) -> list[Event]:
        def event(kind: str, checksum: str, detail: str, tool: str = TOOL, time: str = "") -> Event:
            return Event(kind, "success", actor, tool, doc_id=row.doc_id, case_id=row.case_id, checksum=checksum,
                         detail=detail, time=time)

        flavour = report.pdfa.get("flavour", "")
        return [
            event("ingested", row.original_sha256, f"received {row.source_name or 'unnamed'} {row.source_pages}".strip(),
                  time=row.created_at),
            event("converted", row.pdfa_sha256, f"{row.pages} pages to PDF/A-{flavour or '?'}" + _signed(report),
                  _tools_summary(report)),
            event("stored", row.pdfa_sha256, f"{row.original_key} {row.pdfa_key} {row.meta_key}"),
            event("verified", row.pdfa_sha256, "3 objects read back, SHA-256 matched"),
        ]

    # -- cases ---------------------------------------------------------------------------------
    def import_cases(self, path: Path) -> ImportResult:
        """Upsert every valid row; a bad row is reported with its number and does not stop the others."""
        result = ImportResult()
        with self.index.transaction():  # one commit: an export of 10 000 rows takes seconds, not minutes
            for number, raw in read_case_rows(Path(path)):
                try:
                    created = self.index.upsert_case(parse_case_row(raw))
                except BadArgsError as e:
                    result.errors.append(RowError(number, str(e)))
                    continue
                if created:
                    result.created += 1
                else:
                    result.updated += 1
        return result

    def link(self, doc_id: int, case_id: str, actor: str = "digitize") -> DocumentRow:
        """Put a document in CASE_ID's dossier: an unmatched one (no case, or one never imported) moves
        there; one that belongs to a known case stays there and is shared with CASE_ID too."""
        case_id = normalize_case_id(case_id)
        doc = self.index.document(doc_id)
        if doc is not None and doc.case_id and self.index.get_case(doc.case_id) is not None:
            return self._share(doc_id, case_id, None, actor)[0]
        return self._move(doc_id, case_id, actor)

    def _move(self, doc_id: int, case_id: str, actor: str) -> DocumentRow:
        event = Event("linked", "success", actor, TOOL, doc_id=doc_id, case_id=case_id, detail=f"linked to {case_id}")
        before = self.index.document(doc_id)
        row = self.index.link(doc_id, case_id, event)
        after = self.index.document(doc_id)
        if before is None or after is None or after.case_id != case_id:
            return row  # not moved: it was shared with that dossier already (that link has its own record)
        if (before.case_id, before.sequence) != (after.case_id, after.sequence):
            self._put_link(after, before, "moved")
        elif (after.case_id, after.sequence) != first_place(after.meta_key) and not has_link(self.objects, after,
                                                                                               "moved",
                                                                                               self.link_secret):
            # moved before, but its record was never stored (the write failed after the index commit):
            # write it now, from the place the document was stored at (a rebuild follows the longest chain)
            origin_case, origin_sequence = first_place(after.meta_key)
            self._put_link(after, replace(after, case_id=origin_case, sequence=origin_sequence), "moved")
        return row

    def _put_link(self, row: DocumentRow, home: DocumentRow, kind: str) -> None:
        """The link as an object of its own (sidecars are immutable), so an index rebuilt from the store
        keeps it (storage/rebuild.py). Written after the index commit; a share asked for again writes it
        again (the same bytes: a no-op) and a move asked for again writes it if it is missing, so one that
        failed here is repaired by repeating the command."""
        data = build_link(row, home, kind, self.link_secret)
        self._put(link_key(row.case_id, row.sequence, data), data, sha256_bytes(data), {}, "application/json")

    def share(self, doc_id: int, case_id: str, sequence: int | None = None, actor: str = "digitize") -> StoredDocument:
        """File stored document ``doc_id`` in ``case_id``'s dossier too (a scan shared by two cases): no second
        copy of its bytes. A document stored with no case moves into the dossier instead."""
        case_id = normalize_case_id(case_id)
        doc = self.index.document(doc_id)
        if doc is not None and doc.status == "stored" and doc.case_id is None:
            return _stored(self._move(doc_id, case_id, actor), already=False)
        row, new = self._share(doc_id, case_id, sequence, actor)
        return _stored(row, already=not new)

    def _share(self, doc_id: int, case_id: str, sequence: int | None, actor: str) -> tuple[DocumentRow, bool]:
        for _ in range(SEQUENCE_ATTEMPTS):
            event = Event("linked", "success", actor, TOOL, doc_id=doc_id, case_id=case_id)
            try:
                row, new = self.index.share(doc_id, case_id, sequence, event)
            except ConflictError:
                if sequence:
                    raise BadArgsError(f"sequence {sequence} is already used in case {case_id}") from None
                continue  # another writer took the next number meanwhile
            if new:
                log.info("document %s shared with %s as #%d", doc_id, case_id, row.sequence)
            home = self.index.document(doc_id)
            if home is not None and home.case_id != case_id:
                self._put_link(row, home, "shared")
            return row, new
        raise ConflictError(f"could not claim a sequence number in case {case_id} after {SEQUENCE_ATTEMPTS} tries")

    def unmatched(self) -> list[DocumentRow]:
        return self.index.unmatched()

    def case(self, case_id: str) -> CaseRecord:
        """The case record; a case known only from its documents gets a bare record."""
        case_id = normalize_case_id(case_id)
        record = self.index.get_case(case_id)
        if record is None and not self.index.documents(case_id):
            raise NotFoundError(f"case {case_id} not found")
        return record or CaseRecord(case_id)

    def documents(self, case_id: str) -> list[DocumentRow]:
        return self.index.documents(normalize_case_id(case_id))

    def search(self, query: str, limit: int = 20) -> list[SearchHit]:
        return self.index.search(query, limit)

    # -- retrieval and fixity ------------------------------------------------------------------
    def retrieve(self, case_id: str, out: Path | zipfile.ZipFile, original: bool = False,
                 actor: str = "digitize", client: str | None = None, add_events=None) -> retrieval.Retrieval:
        """The dossier into a folder ``out`` (private files) or into the ZIP ``out`` being written."""
        case = self.case(case_id)
        into = retrieval.Zip(out) if isinstance(out, zipfile.ZipFile) else retrieval.Folder(Path(out),
                                                                                            self.group_readable)
        try:
            return retrieval.retrieve(self.objects, self.index, case, into, original, actor, TOOL, client, add_events)
        finally:
            into.close()

    def presigned_url(self, case_id: str, expires: timedelta = timedelta(hours=1), original: bool = False,
                      actor: str = "digitize", tool: str = TOOL) -> list[tuple[DocumentRow, str]]:
        case = self.case(case_id)
        return retrieval.presigned_urls(self.objects, self.index, case, expires, original, actor, tool)

    def signatures(self, doc_ids: list[int]) -> dict[int, list[SignatureRow]]:
        return self.index.signatures(doc_ids)

    def verify(self, case_id: str | None = None, actor: str = "digitize",
               stale_after: timedelta = fixity.STALE_PENDING, clock: Callable[[], str] = now_iso,
               trust: str = "") -> fixity.VerifyReport:
        """Fixity of every object, and the signatures of signed PDF/As (chained to ``trust`` when given)."""
        case_id = normalize_case_id(case_id) if case_id else None
        return fixity.verify(self.objects, self.index, case_id, actor, TOOL, stale_after, clock, trust,
                             self.link_secret)

    # -- access (portal and API) ---------------------------------------------------------------
    def gate(self, principal, client: str = "", via: str = "portal"):
        """This archive as ``principal`` may see it: the one place agency scope and roles are enforced.
        ``via``: the way in ("portal", "cli"), named in the events' tool."""
        from .access import Gate

        return Gate(self, principal, client, via)
