"""Case records from the one-stop electronic system's export (CSV or JSON) into typed CaseRecords.

Exports differ between provinces, so headers are matched accent- and case-insensitively against
English and Vietnamese names (``case_id``, ``Mã hồ sơ``, ``ma_ho_so`` ...). Each bad row becomes a
:class:`RowError` with its row number and reason; good rows are still imported.
"""

from __future__ import annotations

import csv
import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

from digitize.errors import BadArgsError, FileAccessError, InputError
from digitize.identifiers import normalize_case_id, parse_file_code, parse_procedure_code
from digitize.terminal import plain
from digitize.text import export_encoding, search_key

from .models import CaseRecord

ALIASES: dict[str, tuple[str, ...]] = {
    "case_id": ("case id", "ma ho so", "so ho so", "ma hs", "file code"),
    "procedure_code": ("procedure code", "ma thu tuc", "ma tthc"),
    "procedure_name": ("procedure name", "ten thu tuc", "ten tthc", "thu tuc"),
    "agency": ("agency", "co quan", "co quan tiep nhan", "don vi", "don vi tiep nhan"),
    "applicant": ("applicant", "nguoi nop", "chu ho so", "ten nguoi nop", "to chuc ca nhan"),
    "received_date": ("received date", "received", "ngay tiep nhan", "ngay nhan"),
    "due_date": ("due date", "due", "ngay hen tra", "han xu ly", "ngay hen"),
    "status": ("status", "trang thai"),
}
ARCHIVE_FIELDS = ("OrganId", "FileCatalog", "FileNotation", "Title", "Maintenance", "Rights", "Language",
                  "StartDate", "EndDate", "DocTotal", "PageTotal", "KeywordIssue", "Format", "Description")
_DATE_FORMATS = ("%Y-%m-%d", "%d/%m/%Y", "%d-%m-%Y", "%Y/%m/%d", "%d.%m.%Y")
# Characters per field (CSV, JSON import and the API's PUT alike): a case field is copied into the search
# entry, every search hit and the metadata of every document filed into the case (review rev17desk M3).
TEXT_MAX = 1000
FIELD_MAX: dict[str, int] = {**{f: 64 for f in ("case_id", "procedure_code", "received_date", "due_date", "OrganId",
                                                "FileCatalog", "FileNotation", "StartDate", "EndDate", "DocTotal",
                                                "PageTotal", "Language", "Format")},
                             "Description": 4000}
JSON_MAX_BYTES = 200 << 20  # a JSON export is read whole: one that large is refused in one line


def _header_key(name: str) -> str:
    return " ".join(re.split(r"[\s_\-.:]+", search_key(name))).strip()


_FIELD_BY_HEADER = {_header_key(alias): f for f, aliases in ALIASES.items() for alias in (f, *aliases)}
_ARCHIVE_BY_HEADER = {_header_key(f): f for f in ARCHIVE_FIELDS}


def parse_date(value: str, what: str) -> str:
    """ISO or Vietnamese day-first dates -> ISO ``YYYY-MM-DD``; a datetime keeps only its date."""
    text = value.strip().split("T")[0].split(" ")[0]
    for fmt in _DATE_FORMATS:
        try:
            return datetime.strptime(text, fmt).date().isoformat()
        except ValueError:
            continue
    raise BadArgsError(f"{what} {value!r} is not a date (use YYYY-MM-DD or DD/MM/YYYY)")


def _field_text(field: str, value: Any) -> str:
    """A field's value as stored text: a scalar only, no NUL (PostgreSQL cannot store one: it was a
    "storage outage"), within its length limit, other controls made spaces or removed (terminal.plain)."""
    if value is None:
        return ""
    if isinstance(value, (dict, list, tuple, set)):
        raise BadArgsError(f"{field} must be a text, number or date, not a {type(value).__name__}")
    text = str(value)
    if "\x00" in text:
        raise BadArgsError(f"{field} contains a NUL character")
    limit = FIELD_MAX.get(field, TEXT_MAX)
    if len(text) > 4 * limit or len(text := plain(text)) > limit:  # a huge value is not cleaned first
        raise BadArgsError(f"{field} is longer than {limit} characters")
    return text


def parse_case_row(raw: dict[str, Any]) -> CaseRecord:
    """One export row -> CaseRecord; raises BadArgsError saying which field is wrong."""
    values: dict[str, str] = {}
    archive: dict[str, str] = {}
    headers: dict[str, str] = {}  # field -> the header it was taken from
    for header, value in raw.items():
        key = _header_key(str(header))
        field = _FIELD_BY_HEADER.get(key) or _ARCHIVE_BY_HEADER.get(key)
        if field is None:
            continue  # a column we do not keep
        text = _field_text(field, value)
        if not text:
            continue
        if key in _FIELD_BY_HEADER:
            if field == "case_id":
                text = normalize_case_id(text)
            if field in values and values[field] != text:  # two aliases of one field: never "the last one wins"
                raise BadArgsError(f"columns {headers[field]!r} and {plain(header)[:60]!r} disagree")
            values[field], headers[field] = text, plain(header)[:60]
        else:
            archive[field] = text
    if "case_id" not in values:
        raise BadArgsError("no case ID (column case_id or Mã hồ sơ)")
    if "procedure_code" in values:
        values["procedure_code"] = parse_procedure_code(values["procedure_code"]).value
    for field in ("received_date", "due_date"):
        if field in values:
            values[field] = parse_date(values[field], field.replace("_", " "))
    if {"OrganId", "FileCatalog", "FileNotation"} <= archive.keys():
        parse_file_code(archive["OrganId"], archive["FileCatalog"], archive["FileNotation"])
    return CaseRecord(archive=archive, **values)


def _csv_rows(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, "rb") as f:
        encoding = export_encoding(f.read(2))
    with open(path, encoding=encoding, newline="") as f:
        sample = f.read(4096)
        f.seek(0)
        dialect = csv.Sniffer().sniff(sample, delimiters=",;\t") if sample.strip() else csv.excel
        yield from csv.DictReader(f, dialect=dialect)


def _json_rows(path: Path) -> list[dict[str, Any]]:
    if path.stat().st_size > JSON_MAX_BYTES:
        raise InputError(f"{path} is larger than {JSON_MAX_BYTES >> 20} MB: split the export")
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{path} is not valid UTF-8 JSON: {e}") from None
    if isinstance(data, dict):
        data = data.get("cases", data.get("data"))
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise InputError(f"{path}: expected a list of case objects (or {{\"cases\": [...]}})")
    return data


def read_case_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(1-based row number, raw row) from a .csv or .json export."""
    suffix = path.suffix.lower()
    if suffix not in {".csv", ".json"}:
        raise BadArgsError(f"{path}: case exports must be .csv or .json")
    try:
        rows = _json_rows(path) if suffix == ".json" else _csv_rows(path)
        yield from enumerate(rows, start=1)
    except FileNotFoundError:
        raise FileAccessError(f"case export not found: {path}") from None
    except UnicodeDecodeError:
        raise InputError(f"{path} is not UTF-8 text: in Excel, save it as \"CSV UTF-8 (Comma delimited)\" "
                         "(or \"Unicode Text\")") from None
    except csv.Error as e:
        raise InputError(f"{path} is not a readable CSV file: {e}") from None
    except OSError as e:
        raise FileAccessError(f"cannot read {path}: {e.strerror}") from None
