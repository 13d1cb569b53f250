"""``digitize reindex``: fill an empty index from the object store alone (the index was lost).

Every document comes back from its JSON sidecar, and every place it has in another dossier from its link
records (storage/sidecar.py): shared with a second case, or an unmatched document filed into a case. What
the store holds is read defensively: an object must hash to the digest its key carries, sizes are capped,
every field is checked (case IDs normalised, sequences 1 to SEQUENCE_MAX, hashes hex, numbers in range), a sidecar's
object keys must be the ones its own case, sequence and hashes give, and a link must name a document whose
sidecar was read. Anything else is reported and skipped, never indexed. Case records come from the one-stop
system again (``cases import``); the access log of the lost index is not in the store and starts afresh.

Link records are signed when ``[store] link_secret`` is set (storage/sidecar.py), and a rebuild given that key
skips unsigned and badly signed ones (reported), so a bucket writer without the key cannot forge a record that
shares (or moves) another agency's document into a case of theirs. Without the key a rebuild refuses to
start when any link record is signed (the store's links were meant to be checked: a host that lacks the
key, or lost it, would otherwise restore forged records too), unless told ``unverified_links``
(``reindex --unverified-links``); a store whose records are all unsigned is rebuilt trusting them, as before.
Sidecars are not signed: a bucket writer can still add a document of their own (with its content-addressed
objects) to any case, or alter a sidecar and its key together. Give bucket write access to
the digitize service alone, and compare a rebuilt index with what the officers expect before opening it to them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from digitize.errors import BadArgsError, ConfigError, DigitizeError, StorageError
from digitize.identifiers import normalize_case_id

from .index import Index, now_iso
from .keys import (check_key, check_sequence, check_sha256, document_prefix, is_link_key, object_key,
                   original_extension)
from .models import DocumentRow, Event, PageText, SignatureRow
from .objects import ObjectStore
from .sidecar import SCHEMA, LinkRecord, parse_link

SIDECAR_MAX_BYTES = 256 * 1024 * 1024  # page text of a very long dossier; a larger "sidecar" is not one
MAX_PAGES = 100_000
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


def _whole(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _confidence(value: Any) -> float:
    """A page's OCR confidence: a finite number from 0 to 100 (compared before float(): 10**400 overflows)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 100:
        raise BadArgsError(f"ocr_confidence {str(value)[:20]!r} must be a number from 0 to 100")
    return float(value)


def _list(value: Any, name: str) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        raise BadArgsError(f"{name} must be a list")
    return value


def _signature(record: Any) -> SignatureRow:
    fields = ("field", "signer", "cert_sha256", "signing_time", "level")
    if not isinstance(record, dict) or not all(isinstance(record.get(f), str) and len(record[f]) <= 10_000
                                               for f in fields) or \
            not isinstance(record.get("timestamp"), (str, type(None))) or len(record.get("timestamp") or "") > 64:
        raise BadArgsError("a signature record is incomplete")
    return SignatureRow.from_record(record)


def document_from_sidecar(key: str, data: bytes) -> tuple[DocumentRow, list[PageText], list[SignatureRow]]:
    """A stored document's row, page texts and signatures from its sidecar; BadArgsError if anything is off."""
    if b"\\u0000" in data:  # PostgreSQL text cannot hold NUL: one such sidecar would stop the whole rebuild
        raise BadArgsError("it holds a NUL character")
    raw = json.loads(data.decode("utf-8"))
    try:  # JSON's "\ud800" is a lone surrogate no index can encode: it would stop the whole rebuild too
        json.dumps(raw, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise BadArgsError("it holds a lone surrogate (text no index can store)") from None
    if not isinstance(raw, dict) or raw.get("schema") != SCHEMA:
        raise BadArgsError(f"not a {SCHEMA} sidecar")
    if not isinstance(raw.get("case_id"), (str, type(None))):
        raise BadArgsError("case_id must be text")
    case_id = normalize_case_id(raw["case_id"]) if raw.get("case_id") else None
    sequence = check_sequence(raw.get("sequence"))
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
    if not isinstance(pages, list) or len(pages) > MAX_PAGES or \
            not all(isinstance(p, dict) and _whole(p.get("number"), 1, MAX_PAGES)
                    and isinstance(p.get("text", ""), str) for p in pages):
        raise BadArgsError(f"pages must be a list of {{number (1 to {MAX_PAGES}), text}}")
    scored = [_confidence(p["ocr_confidence"]) for p in pages if p.get("ocr_confidence") is not None]
    signatures = [_signature(s) for s in _list(raw.get("signatures"), "signatures")]
    row = DocumentRow(case_id=case_id, sequence=sequence, original_sha256=original_sha, pdfa_sha256=pdfa_sha,
                      meta_sha256=hashlib.sha256(data).hexdigest(), original_key=original_key, pdfa_key=pdfa_key,
                      meta_key=key, archive={str(k): v for k, v in archive.items()}, pages=len(pages),
                      languages=_text(raw.get("language"), "language", 200),
                      ocr_confidence=round(sum(scored) / len(scored), 2) if scored else None,
                      created_at=_text(raw.get("created_at"), "created_at", 64) or now_iso(), **values)
    return row, [PageText(int(p["number"]), p.get("text", "")) for p in pages], signatures


MAX_MOVES = 64  # move records per document: a real chain has a few; more are not followed


@dataclass
class _Document:
    row: DocumentRow  # its case_id/sequence become its last place once its moves are followed
    pages: list[PageText]
    signatures: list[SignatureRow]
    origin: str | None = None  # the case its sidecar names
    moves: list[LinkRecord] = field(default_factory=list)


def rebuild_index(objects: ObjectStore, index: Index, actor: str, tool: str,
                  link_secret: bytes | None = None, unverified_links: bool = False) -> RebuildReport:
    """Fill ``index`` (which must hold no document) from ``objects``; what cannot be trusted is skipped.
    ``link_secret``: link records must be signed with it (else skipped); None: they are not checked, and if
    any carries a signature the rebuild stops (ConfigError) before writing, unless ``unverified_links``.

    Everything is read and checked first, then each document is inserted once, directly at the place its
    move records lead to (a linked document's first place may since hold another unmatched document: both
    sidecars sit under ``_unmatched/0001/``); a place claimed twice is reported before anything is written."""
    if index.stored_documents() or index.pending_documents():
        raise BadArgsError("the index already holds documents: reindex fills an empty index (point index.dsn at a "
                           "new database, or move the old index file aside)")
    report = RebuildReport()
    keys = sorted(objects.list_keys(""))
    docs: dict[str, _Document] = {}  # meta_key -> the document read from its sidecar
    for key in (k for k in keys if k.rsplit("/", 1)[-1].startswith("meta-") and k.endswith(".json")):
        try:
            row, pages, signatures = document_from_sidecar(key, _read(objects, key, SIDECAR_MAX_BYTES))
        except (DigitizeError, ValueError, TypeError, KeyError, AttributeError, RecursionError) as e:
            report.skipped.append((key, str(e)[:300] or type(e).__name__))  # ValueError: also bad JSON, UTF-8
            continue
        docs[key] = _Document(row, pages, signatures, row.case_id)
    links = _read_links(objects, keys, docs, report, link_secret)
    if link_secret is None and not unverified_links and any(r.signed for r in _all_links(docs, links)):
        raise ConfigError("this store's link records are signed, but store.link_secret is not set here: set the "
                          "same key (DIGITIZE_STORE_LINK_SECRET) so forged records are skipped, or run reindex "
                          "--unverified-links to restore every well-formed record unchecked")
    placed, shares = _place(docs, links, report)
    try:
        with index.transaction():  # all or nothing: a half-filled index would refuse the rerun
            _write(index, docs, placed, shares, actor, tool, report)
    except DigitizeError as e:
        raise StorageError(f"reindex stopped and kept nothing (run it again): {e}") from e
    return report


def _all_links(docs: dict[str, _Document], shares: list[LinkRecord]) -> list[LinkRecord]:
    return [*shares, *(r for doc in docs.values() for r in doc.moves)]


def _write(index: Index, docs: dict[str, _Document], placed: list[_Document], shares: list[LinkRecord],
           actor: str, tool: str, report: RebuildReport) -> None:
    for doc in placed:
        row = doc.row
        try:
            row.doc_id = index.insert_pending(row)
            stored = Event("stored", "success", actor, tool, doc_id=row.doc_id, case_id=doc.origin,
                           checksum=row.pdfa_sha256, detail=f"reindexed from {row.meta_key}")
            index.finalize(row, doc.pages, [stored, *(_linked(actor, tool, int(row.doc_id), r) for r in doc.moves)],
                           doc.signatures)
        except ValueError as e:  # a value the checks let through but the database refuses: name the sidecar
            raise StorageError(f"{row.meta_key}: {type(e).__name__}: {str(e)[:200]}") from e
        report.documents += 1
        report.links += len(doc.moves)
    for record in shares:
        doc_id = int(docs[record.meta_key].row.doc_id)
        index.share(doc_id, record.case_id, record.sequence, _linked(actor, tool, doc_id, record))
        report.links += 1


def _read_links(objects: ObjectStore, keys: list[str], docs: dict[str, _Document],
                report: RebuildReport, secret: bytes | None = None) -> list[LinkRecord]:
    """Every link record that names a document read here and sits at the place it gives: moves are
    attached to their document, shares returned. A record equal to one already read (the same fields in other
    bytes, so under another key: a signature covers the fields, not the bytes) is dropped, never counted."""
    shares: list[LinkRecord] = []
    seen: set[LinkRecord] = set()
    for key in (k for k in keys if is_link_key(k)):
        try:
            record = parse_link(_read(objects, key, 4096), secret)
            if record in seen:
                continue
            doc = docs.get(record.meta_key)
            if doc is None or doc.row.meta_sha256 != record.meta_sha256:
                raise BadArgsError("it names no document whose sidecar was read")
            if key.rsplit("/", 1)[0] != document_prefix(record.case_id, record.sequence):
                raise BadArgsError("it is not stored at the place it gives")
            if record.kind == "moved" and len(doc.moves) >= MAX_MOVES:
                raise BadArgsError(f"more than {MAX_MOVES} moves of one document")
        except (BadArgsError, StorageError) as e:
            report.skipped.append((key, str(e)))
            continue
        seen.add(record)
        (shares if record.kind == "shared" else doc.moves).append(record)
    return shares


def _chain(origin: tuple[str | None, int], moves: list[LinkRecord]) -> list[LinkRecord]:
    """The longest run of moves, each from the place the one before it reached. (A move repeated after its
    record was lost writes one from the document's first place: the longest run still ends at its last.)"""
    budget = [10_000]

    def longest(place: tuple[str | None, int], unused: list[LinkRecord]) -> list[LinkRecord]:
        best: list[LinkRecord] = []
        for i, record in enumerate(unused):
            if record.moved_from == place and budget[0] > 0:
                budget[0] -= 1
                rest = longest((record.case_id, record.sequence), unused[:i] + unused[i + 1:])
                if len(rest) + 1 > len(best):
                    best = [record, *rest]
        return best

    return longest(origin, moves)


def _place(docs: dict[str, _Document], shares: list[LinkRecord],
           report: RebuildReport) -> tuple[list[_Document], list[LinkRecord]]:
    """Each document at its last place, and the shares that fit; a document or share whose place (or a
    document whose original and pages) another already took is reported and left out, so the writes that
    follow meet no uniqueness rule."""
    places: set[tuple[str, int]] = set()
    originals: set[tuple[str, str]] = set()
    placed: list[_Document] = []
    for key, doc in docs.items():
        row, moves = doc.row, _chain((doc.row.case_id, doc.row.sequence), doc.moves)
        report.skipped += [(key, f"a move to {r.case_id} from a place the document never had")
                           for r in doc.moves if r not in moves]
        doc.moves = moves
        if moves:
            row.case_id, row.sequence = moves[-1].case_id, moves[-1].sequence
        place = (row.case_id or "", row.sequence)
        if place in places or (row.original_sha256, row.source_pages) in originals:
            report.skipped.append((key, f"#{row.sequence} of {row.case_id or 'the unmatched'} (or its original) "
                                        "is another document's"))
            continue
        places.add(place)
        originals.add((row.original_sha256, row.source_pages))
        placed.append(doc)
    indexed = {doc.row.meta_key for doc in placed}
    shared: set[tuple[str, str]] = set()
    fitting: list[LinkRecord] = []
    for record in shares:
        row = docs[record.meta_key].row
        if record.meta_key not in indexed or row.case_id == record.case_id or \
                (record.case_id, record.meta_key) in shared:
            continue  # its document is left out, or already in that dossier
        if (record.case_id, record.sequence) in places:
            report.skipped.append((record.meta_key, f"shared with {record.case_id}: #{record.sequence} is taken"))
            continue
        places.add((record.case_id, record.sequence))
        shared.add((record.case_id, record.meta_key))
        fitting.append(record)
    return placed, fitting


def _linked(actor: str, tool: str, doc_id: int, record: LinkRecord) -> Event:
    return Event("linked", "success", actor, tool, doc_id=doc_id, case_id=record.case_id,
                 detail=f"reindexed: {record.kind} as #{record.sequence} of {record.case_id}")
