"""The JSON sidecar object stored beside each document: descriptive metadata, hashes and page text.

It holds everything the index knows about the document, so an index can be rebuilt (or an interrupted
store completed) from the object store alone. Its bytes are a pure function of the inputs, so a
resumed store produces the same object and key.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from digitize.errors import BadArgsError
from digitize.records import DocumentReport

from .models import DocumentMeta, DocumentRow, PageText, SignatureRow

SCHEMA = "digitize-document/1"


def build_sidecar(row: DocumentRow, meta: DocumentMeta, report: DocumentReport) -> bytes:
    """Sidecar bytes for ``row`` (its own meta key/hash excluded: they are derived from these bytes)."""
    data: dict[str, Any] = {
        "schema": SCHEMA,
        **{k: v for k, v in asdict(meta).items() if k not in {"case_id", "sequence"}},
        "case_id": row.case_id,
        "sequence": row.sequence,
        "original": {"key": row.original_key, "sha256": row.original_sha256, "type": report.input_type},
        "pdfa": {"key": row.pdfa_key, "sha256": row.pdfa_sha256, "bytes": report.output_bytes, **report.pdfa},
        "language": report.language,
        "tools": report.tools,
        "created_at": row.created_at,
        "pages": [{"number": p.number, "ocr_confidence": round(p.ocr_confidence, 2), "text": p.text}
                  for p in report.pages],
    }
    if report.signature:  # only then: unsigned documents keep their sidecar bytes (and keys) as before
        data["signatures"] = [report.signature]
    return json.dumps(data, ensure_ascii=False, indent=1, sort_keys=True).encode("utf-8")


def sidecar_pages(data: bytes) -> list[PageText]:
    return [PageText(int(p["number"]), p.get("text", "")) for p in json.loads(data).get("pages", [])]


def sidecar_signatures(data: bytes) -> list[SignatureRow]:
    return [SignatureRow.from_record(s) for s in json.loads(data).get("signatures", [])]


# -- link records: a document's place in a dossier other than the one its sidecar names ---------------
# Sidecars are immutable (their key carries their hash), so a later link cannot be written into one; each
# link is a small immutable object of its own, beside the objects of the place it gives the document:
# ``<case>/<sequence>/link-<hash>.json``. An index rebuilt from the store reads both (storage/rebuild.py).
LINK_SCHEMA = "digitize-link/1"
LINK_KINDS = ("shared", "moved")  # shared: in that dossier too; moved: an unmatched document filed there
LINK_MAX_BYTES = 4096
# With ``[store] link_secret`` set, each record carries ``"mac"``: HMAC-SHA256 of its other fields' canonical
# JSON under that key, so whoever can write the bucket but lacks the key cannot forge a place for a document
# (a share or a move into their case) that ``digitize reindex`` would restore; a rebuild given the key skips
# unsigned and badly signed records. Sidecars themselves are not signed (see storage/rebuild.py).
LINK_MAC = "v1="
MIN_LINK_SECRET = 32


LINK_CREDENTIAL = "digitize-store-link-secret"
LINK_HOW = ("use a random value of 32 or more characters (e.g. `openssl rand -base64 32`) in store.link_secret "
            "(DIGITIZE_STORE_LINK_SECRET), store.link_secret_file (mode 0600) or the systemd credential "
            f"{LINK_CREDENTIAL}")


def link_secret(settings) -> bytes | None:
    """The key of link records, or None when none is set (records neither signed nor checked): ``[store]
    link_secret``, ``link_secret_file`` or the credential, loaded and checked as the queue secret is."""
    from digitize.secrets import load_secret

    cfg = settings.store
    value = load_secret(cfg.link_secret, cfg.link_secret_file, LINK_CREDENTIAL,
                        "store.link_secret", LINK_HOW, MIN_LINK_SECRET)
    return value.encode("utf-8") if value else None


def _link_mac(key: bytes, fields: dict[str, Any]) -> str:
    import hashlib
    import hmac

    canon = json.dumps(["digitize.link.v1", fields], sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return LINK_MAC + hmac.new(key, canon.encode("ascii"), hashlib.sha256).hexdigest()


def _check_link_mac(key: bytes, raw: dict[str, Any]) -> None:
    import hmac

    mac = raw.pop("mac", None)
    if not mac:
        raise BadArgsError("an unsigned link record (written before store.link_secret was set, or forged)")
    try:
        expected = _link_mac(key, raw)
    except (TypeError, ValueError):
        raise BadArgsError("a link record that is not plain JSON") from None
    if not isinstance(mac, str) or not hmac.compare_digest(expected.encode(), mac.encode("utf-8", "replace")):
        raise BadArgsError("a link record whose signature does not match store.link_secret (forged or altered)")


@dataclass(frozen=True)
class LinkRecord:
    kind: str
    case_id: str
    sequence: int
    meta_key: str  # the document's sidecar: its identity in the store
    meta_sha256: str
    moved_from: tuple[str | None, int] | None = None  # moved: the place it left (case ID or None, sequence)
    signed: bool = field(default=False, compare=False)  # it carries a "mac" (checked only when a key was given)


def build_link(doc: DocumentRow, home: DocumentRow, kind: str, key: bytes | None = None) -> bytes:
    """The record that ``home`` (the document as its sidecar describes it) has the place ``doc.case_id``,
    ``doc.sequence``; a deterministic function of its inputs (and ``key``, which signs it), so writing it
    again is a no-op."""
    data: dict[str, Any] = {"schema": LINK_SCHEMA, "kind": kind, "case_id": doc.case_id, "sequence": doc.sequence,
                            "document": {"meta_key": home.meta_key, "meta_sha256": home.meta_sha256}}
    if kind == "moved":
        data["from"] = {"case_id": home.case_id, "sequence": home.sequence}
    if key is not None:
        data["mac"] = _link_mac(key, data)
    return json.dumps(data, ensure_ascii=False, sort_keys=True).encode("utf-8")


def link_key(case_id: str, sequence: int, data: bytes) -> str:
    from digitize.fsutil import sha256_bytes

    from .keys import document_prefix, object_key

    return object_key(document_prefix(case_id, sequence), "link", sha256_bytes(data), "json")


def parse_link(data: bytes, key: bytes | None = None) -> LinkRecord:
    """A link record read back from the store: untrusted, every field checked (BadArgsError says which);
    with ``key``, its signature first (unsigned or badly signed: BadArgsError)."""
    from digitize.identifiers import normalize_case_id

    from .keys import check_key, check_sequence, check_sha256

    if len(data) > LINK_MAX_BYTES:
        raise BadArgsError(f"a link record of {len(data)} bytes is too large")
    try:
        raw = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise BadArgsError("a link record is not UTF-8 JSON") from None
    if not isinstance(raw, dict) or raw.get("schema") != LINK_SCHEMA or raw.get("kind") not in LINK_KINDS:
        raise BadArgsError(f"not a {LINK_SCHEMA} record")
    signed = "mac" in raw
    if key is not None:
        _check_link_mac(key, raw)
    document, moved = raw.get("document"), raw.get("from")
    if not isinstance(document, dict) or not isinstance(raw.get("case_id"), str):
        raise BadArgsError("a link record needs case_id and document")
    moved_from = None
    if raw["kind"] == "moved":
        if not isinstance(moved, dict) or not isinstance(moved.get("case_id"), (str, type(None))):
            raise BadArgsError("a moved link record needs the place it came from")
        moved_from = (normalize_case_id(moved["case_id"]) if moved["case_id"] else None,
                      check_sequence(moved.get("sequence")))
    return LinkRecord(raw["kind"], normalize_case_id(raw["case_id"]), check_sequence(raw.get("sequence")),
                      check_key(str(document.get("meta_key", ""))), check_sha256(str(document.get("meta_sha256", ""))),
                      moved_from, signed)


def first_place(meta_key: str) -> tuple[str | None, int]:
    """The place a document was stored at (its sidecar's folder): (case ID or None, sequence)."""
    from .keys import UNMATCHED

    folder, sequence = meta_key.split("/")[:2]
    return (None if folder == UNMATCHED else folder), int(sequence)


def has_link(objects, row: DocumentRow, kind: str, secret: bytes | None = None) -> bool:
    """Whether a ``kind`` link record for ``row``'s document sits at its place ``row.case_id``/``row.sequence``
    (with ``secret``: one signed with it, so an unsigned old record is written again, signed)."""
    from .keys import document_prefix, is_link_key

    for key in objects.list_keys(document_prefix(row.case_id, row.sequence) + "/"):
        record = read_link(objects, key, secret) if is_link_key(key) else None
        if record is not None and record.kind == kind and record.meta_key == row.meta_key:
            return True
    return False


def read_link(objects, key: str, secret: bytes | None = None) -> LinkRecord | None:
    """The link record stored at ``key`` if it is one: at most LINK_MAX_BYTES, hashing to the digest its key
    carries, well-formed, and stored at the place it gives; else None."""
    from digitize.errors import StorageError
    from digitize.fsutil import sha256_bytes

    from .keys import document_prefix

    data = b""
    try:
        for block in objects.read_chunks(key):
            data += block
            if len(data) > LINK_MAX_BYTES:
                return None
        record = parse_link(data, secret)
    except (BadArgsError, StorageError):
        return None
    if not key.rsplit("-", 1)[-1].startswith(sha256_bytes(data)[:16]) or \
            key.rsplit("/", 1)[0] != document_prefix(record.case_id, record.sequence):
        return None
    return record
