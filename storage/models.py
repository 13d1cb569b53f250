"""Typed records the index stores and returns; shared by both index backends and the archive service."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

EVENT_TYPES = ("ingested", "converted", "stored", "verified", "retrieved", "fixity-checked", "linked")


@dataclass(kw_only=True)
class Description:
    """Descriptive fields of a document, declared once: the caller's DocumentMeta and the index's
    DocumentRow both carry them (keyword-only, so subclasses may add required positional fields)."""

    title: str = ""
    doc_type: str = ""
    procedure_code: str | None = None
    procedure_name: str | None = None
    agency: str | None = None
    scanned_by: str | None = None
    scan_station: str | None = None
    source_name: str = ""  # original file name as received
    source_pages: str = ""  # "" = whole file, or "1-4" when a stack was split
    archive: dict[str, str] = field(default_factory=dict)  # OrganId, FileCatalog, FileNotation, Title, ...


def description_of(record: Description) -> dict[str, Any]:
    """The descriptive fields of any record, as keyword arguments (``archive`` copied)."""
    values = {f.name: getattr(record, f.name) for f in fields(Description)}
    values["archive"] = dict(values["archive"])
    return values


@dataclass
class DocumentMeta(Description):
    """What the caller knows about a document it stores (the pipelines fill this in)."""

    case_id: str | None = None  # None -> stored as unmatched, linkable later
    sequence: int | None = None  # position in the dossier; None -> next free


@dataclass
class StoredDocument:
    doc_id: int
    case_id: str | None
    sequence: int
    original_sha256: str
    pdfa_sha256: str
    original_key: str
    pdfa_key: str
    meta_key: str
    pages: int
    already_stored: bool  # this document was already in this dossier (stored, or shared with it earlier)


@dataclass
class CaseRecord:
    """One case (hồ sơ) as exported by the one-stop electronic system."""

    case_id: str
    procedure_code: str | None = None
    procedure_name: str | None = None
    agency: str | None = None
    applicant: str | None = None
    received_date: str | None = None  # ISO date
    due_date: str | None = None
    status: str | None = None
    archive: dict[str, str] = field(default_factory=dict)  # Decree 30/2020 App. VI fields


@dataclass
class DocumentRow(Description):
    """A document of a dossier; ``status`` is "pending" from before the first object write until commit."""

    case_id: str | None
    sequence: int
    original_sha256: str
    pdfa_sha256: str
    meta_sha256: str
    original_key: str
    pdfa_key: str
    meta_key: str
    status: str = "pending"
    pages: int = 0
    languages: str = ""
    ocr_confidence: float | None = None
    created_at: str = ""
    stored_at: str | None = None
    doc_id: int | None = None

    def keys(self) -> tuple[str, str, str]:
        return (self.original_key, self.pdfa_key, self.meta_key)


@dataclass
class SignatureRow:
    """A PAdES signature of a stored PDF/A, as recorded when it was stored (migration 0004)."""

    field: str
    signer: str
    cert_sha256: str
    signing_time: str  # ISO 8601, +07:00
    level: str  # "B-B", "B-T", "B-LT"
    timestamp: str | None = None  # the timestamp authority's time (B-T, B-LT)
    doc_id: int | None = None

    @classmethod
    def from_record(cls, record: dict[str, Any], doc_id: int | None = None) -> "SignatureRow":
        return cls(field=record["field"], signer=record["signer"], cert_sha256=record["cert_sha256"],
                   signing_time=record["signing_time"], level=record["level"], timestamp=record.get("timestamp"),
                   doc_id=doc_id)


@dataclass(frozen=True)
class PageText:
    page: int  # 1-based; 0 is the document's own metadata entry
    text: str


@dataclass
class Event:
    """PREMIS-like event: what happened to which object, when, by whom, with which tool, and the outcome."""

    event_type: str
    outcome: str  # "success" or "failure"
    actor: str
    tool: str
    doc_id: int | None = None
    case_id: str | None = None
    checksum: str | None = None
    detail: str = ""
    time: str = ""
    client: str | None = None  # the network address a portal/API request came from (migration 0003)


@dataclass
class SearchHit:
    case_id: str | None
    doc_id: int | None  # None: the hit is in the case record itself
    sequence: int | None
    title: str
    page: int | None  # None for case records, 0 for document metadata
    snippet: str
    exact: bool  # the query matched with its accents as typed


@dataclass
class RowError:
    row: int  # 1-based data row (CSV header excluded)
    message: str


@dataclass
class ImportResult:
    created: int = 0
    updated: int = 0
    errors: list[RowError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors
