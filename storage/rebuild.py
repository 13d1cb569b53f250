"""``digitize reindex``: fill an empty index from the object store alone (the index was lost).

Every document comes back from its JSON sidecar, and every place it has in another dossier from its link
records (storage/sidecar.py): shared with a second case, or an unmatched document filed into a case. What
the store holds is read as untrusted: an object must hash to the digest its key carries, sizes are capped,
every field is checked (case IDs normalised, sequences 1 to 9999, hashes hex), a sidecar's object keys must be
the ones its own case, sequence and hashes give, and a link must name a document whose sidecar was read.
Anything else is reported and skipped, never indexed. Case records come from the one-stop system again
(``cases import``); the access log of the lost index is not in the store and starts afresh.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from digitize.errors import BadArgsError, DigitizeError, StorageError
from digitize.identifiers import normalize_case_id

from .index import Index, now_iso
from .keys import check_key, check_sha256, document_prefix, is_link_key, object_key, original_extension
from .models import DocumentRow, Event, PageText, SignatureRow
from .objects import ObjectStore
from .sidecar import SCHEMA, LinkRecord, parse_link

SIDECAR_MAX_BYTES = 256 * 1024 * 1024  # page text of a very long dossier; a larger "sidecar" is not one
TEXT_FIELDS = ("title", "doc_type", "procedure_code", "procedure_name", "agency", "scanned_by", "scan_station",
               "source_name", "source_pages")


@dataclass
class RebuildReport:
    documents: int = 0
    links: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (key, why)


def _read(objects: ObjectStore, key: str, cap: int) -> bytes:
    """The object's bytes if they hash to the digest its key names (``...-<16 hex>.json``)."""
    digest, chunks, size = hashlib.sha256(), [], 0
    for block in objects.read_chunks(key):
        size += len(block)
        if size > cap:
            raise BadArgsError(f"larger than {cap} bytes")
        digest.update(block)
        chunks.append(block)
    if not key.rsplit("-", 1)[-1].startswith(digest.hexdigest()[:16]):
        raise BadArgsError("its bytes do not match the hash in its key")
    return b"".join(chunks)


def _text(value: Any, name: str, limit: int = 10_000) -> str:
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > limit:
        raise BadArgsError(f"{name} must be text of at most {limit} characters")
    return value


def document_from_sidecar(key: str, data: bytes) -> tuple[DocumentRow, list[PageText], list[SignatureRow]]:
    """A stored document's row, page texts and signatures from its sidecar; BadArgsError if anything is off."""
    raw = json.loads(data.decode("utf-8"))
    if not isinstance(raw, dict) or raw.get("schema") != SCHEMA:
        raise BadArgsError(f"not a {SCHEMA} sidecar")
    case_id = normalize_case_id(raw["case_id"]) if raw.get("case_id") else None
    sequence = raw.get("sequence")
    if isinstance(sequence, bool) or not isinstance(sequence, int) or not 1 <= sequence <= 9999:
        raise BadArgsError(f"sequence {sequence!r} must be a whole number from 1 to 9999")
    original, pdfa = raw.get("original"), raw.get("pdfa")
    if not isinstance(original, dict) or not isinstance(pdfa, dict):
        raise BadArgsError("original and pdfa are missing")
    prefix = document_prefix(case_id, sequence)
    original_sha, pdfa_sha = check_sha256(str(original.get("sha256"))), check_sha256(str(pdfa.get("sha256")))
    original_key, pdfa_key = check_key(str(original.get("key"))), check_key(str(pdfa.get("key")))
    if original_key != object_key(prefix, "original", original_sha, original_extension(original_key)) or \
            pdfa_key != object_key(prefix, "pdfa", pdfa_sha, "pdf") or not key.startswith(prefix + "/meta-"):
        raise BadArgsError(f"its object keys are not those of {prefix}")
    values = {name: _text(raw.get(name), name) for name in TEXT_FIELDS}
    for name in ("procedure_code", "procedure_name", "agency", "scanned_by", "scan_station"):
        values[name] = values[name] or None
    archive = raw.get("archive") or {}
    if not isinstance(archive, dict) or not all(isinstance(v, str) for v in archive.values()):
        raise BadArgsError("archive must map names to text")
    pages = raw.get("pages") or []
    if not isinstance(pages, list) or not all(isinstance(p, dict) and isinstance(p.get("number"), int)
                                              and isinstance(p.get("text", ""), str) for p in pages):
        raise BadArgsError("pages must be a list of {number, text}")
    scored = [float(p["ocr_confidence"]) for p in pages if isinstance(p.get("ocr_confidence"), (int, float))]
    try:
        signatures = [SignatureRow.from_record(s) for s in raw.get("signatures") or []]
    except (KeyError, TypeError, AttributeError):
        raise BadArgsError("a signature record is incomplete") from None
    row = DocumentRow(case_id=case_id, sequence=sequence, original_sha256=original_sha, pdfa_sha256=pdfa_sha,
                      meta_sha256=hashlib.sha256(data).hexdigest(), original_key=original_key, pdfa_key=pdfa_key,
                      meta_key=key, archive={str(k): v for k, v in archive.items()}, pages=len(pages),
                      languages=_text(raw.get("language"), "language", 200),
                      ocr_confidence=round(sum(scored) / len(scored), 2) if scored else None,
                      created_at=_text(raw.get("created_at"), "created_at", 64) or now_iso(), **values)
    return row, [PageText(int(p["number"]), p.get("text", "")) for p in pages], signatures


def rebuild_index(objects: ObjectStore, index: Index, actor: str, tool: str) -> RebuildReport:
    """Fill ``index`` (which must hold no document) from ``objects``; what cannot be trusted is skipped."""
    if index.stored_documents() or index.pending_documents():
        raise BadArgsError("the index already holds documents: reindex fills an empty index (point index.dsn at a "
                           "new database, or move the old index file aside)")
    report = RebuildReport()
    keys = sorted(objects.list_keys(""))
    homes: dict[str, DocumentRow] = {}  # meta_key -> the document as indexed
    for key in (k for k in keys if k.rsplit("/", 1)[-1].startswith("meta-") and k.endswith(".json")):
        try:
            row, pages, signatures = document_from_sidecar(key, _read(objects, key, SIDECAR_MAX_BYTES))
            row.doc_id = index.insert_pending(row)
        except (BadArgsError, StorageError, ValueError, UnicodeDecodeError, RecursionError) as e:
            report.skipped.append((key, str(e) or type(e).__name__))
            continue
        index.finalize(row, pages, [Event("stored", "success", actor, tool, doc_id=row.doc_id, case_id=row.case_id,
                                          checksum=row.pdfa_sha256, detail=f"reindexed from {key}")], signatures)
        homes[key] = row
        report.documents += 1
    links: list[LinkRecord] = []
    for key in (k for k in keys if is_link_key(k)):
        try:
            record = parse_link(_read(objects, key, 4096))
            home = homes.get(record.meta_key)
            if home is None or home.meta_sha256 != record.meta_sha256:
                raise BadArgsError("it names no document whose sidecar was read")
            if key.rsplit("/", 1)[0] != document_prefix(record.case_id, record.sequence):
                raise BadArgsError("it is not stored at the place it gives")
            links.append(record)
        except (BadArgsError, StorageError) as e:
            report.skipped.append((key, str(e)))
    report.links = _apply_links(index, homes, links, actor, tool, report)
    return report


def _apply_links(index: Index, homes: dict[str, DocumentRow], links: list[LinkRecord], actor: str, tool: str,
                 report: RebuildReport) -> int:
    """Moves first, each from the place the document then had (a chain: unmatched, then case X, then Y),
    then the shares; a record that does not fit is reported."""
    applied = 0
    place = {key: (row.case_id, row.sequence) for key, row in homes.items()}
    moves = [r for r in links if r.kind == "moved"]
    progress = True
    while moves and progress:
        progress = False
        for record in list(moves):
            if place[record.meta_key] == record.moved_from:
                doc_id = int(homes[record.meta_key].doc_id)
                index.link(doc_id, record.case_id, _linked(actor, tool, doc_id, record), record.sequence)
                place[record.meta_key] = (record.case_id, record.sequence)
                moves.remove(record)
                applied, progress = applied + 1, True
    report.skipped += [(r.meta_key, f"a move to {r.case_id} from a place the document never had") for r in moves]
    for record in (r for r in links if r.kind == "shared"):
        doc_id = int(homes[record.meta_key].doc_id)
        try:
            _, new = index.share(doc_id, record.case_id, record.sequence, _linked(actor, tool, doc_id, record))
        except DigitizeError as e:  # a sequence taken twice (ConflictError) or a bad one
            report.skipped.append((record.meta_key, f"shared with {record.case_id}: {e}"))
            continue
        applied += int(new)
    return applied


def _linked(actor: str, tool: str, doc_id: int, record: LinkRecord) -> Event:
    return Event("linked", "success", actor, tool, doc_id=doc_id, case_id=record.case_id,
                 detail=f"reindexed: {record.kind} as #{record.sequence} of {record.case_id}")

