"""The JSON sidecar object stored beside each document: descriptive metadata, hashes and page text.

It holds everything the index knows about the document, so an index can be rebuilt (or an interrupted
store completed) from the object store alone. Its bytes are a pure function of the inputs, so a
resumed store produces the same object and key.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

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
