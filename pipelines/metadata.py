"""Who a scanned document belongs to: metadata resolved from clues in one documented order.

Order (the first clue that gives a field wins, field by field):

0. the separator sheet in front of a split part (``DIGITIZE-SEP:<case-id>``): it names that part only
1. a sidecar ``NAME.json`` (or ``NAME.pdf.json``) beside the file
2. the batch manifest row for the file
3. the folder convention ``<root>/<case-id>/<seq>-<title>.pdf``
4. a case ID in the file name
5. a QR code or barcode on the first pages (the receipt "Giấy tiếp nhận hồ sơ và hẹn trả kết quả")
6. a case ID in the OCR text of the first pages (``Mã hồ sơ: 000.00.31.H56-241015-0027``)
7. nothing: the document is stored *unmatched*, listed by ``digitize cases unmatched`` and linked later

Procedure code/name and agency come from the case record when the case is known to the index,
otherwise from the sidecar or manifest. Everything here except :func:`sidecar_clue` is pure.
"""

from __future__ import annotations

import json
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any, Iterable, Mapping, Sequence

from digitize.errors import BadArgsError, InputError, NotRegularFileError
from digitize.fsutil import open_regular
from digitize.identifiers import find_case_ids, normalize_case_id, parse_file_code, parse_procedure_code
from digitize.terminal import plain
from digitize.text import search_key
from storage.cases_import import ARCHIVE_FIELDS as CASE_ARCHIVE_FIELDS
from storage.keys import SEQUENCE_MAX

# Field names of storage.archive.DocumentMeta that a clue may carry (``archive`` is handled apart).
META_FIELDS = ("case_id", "sequence", "title", "doc_type", "procedure_code", "procedure_name", "agency",
               "scanned_by", "scan_station")
# Manifest/sidecar spelling -> Decree 30/2020 App. VI archive field name.
ARCHIVE_FIELDS = {"organ_id": "OrganId", "file_catalog": "FileCatalog", "file_notation": "FileNotation",
                  "title": "Title", "maintenance": "Maintenance", "rights": "Rights"}
CASE_RECORD_FIELDS = ("procedure_code", "procedure_name", "agency")
# Sidecar fields a shared inbox (watch) does not take: anyone who can write the share could name any officer
# as the digitizer. Dropped, as failed.NEVER_CARRIED drops them from a desk retry; batch (an archivist's own
# folder) and the manifest keep them, and an upload names its sender.
SHARED_INBOX_DROPS = ("scanned_by",)
OCR_PAGES = 3  # a case ID printed on the receipt or cover page; deeper pages cite other cases
_SEQ_TITLE = re.compile(r"(\d{1,4})\s*[-_. ]\s*(.+)")
# OCR often loses the small dots of the agency code ("000 00 31 H56-241016-0003"); after the label we can
# trust that a case ID follows and put them back. Matched on the accent-folded, case-folded line.
_CASE_LABEL = re.compile(r"ma\s*(?:so\s*)?ho\s*so\s*[:.]?\s*(.*)")
_DOTLESS_CASE_ID = re.compile(r"([a-z0-9]{1,4}(?:[\s.,]+[a-z0-9]{1,4}){1,4})\s*-\s*(\d{6})\s*-\s*(\d{4})")


class SidecarError(InputError):
    """The scan may be fine; the ``NAME.json`` the operator put beside it is not."""


@dataclass(frozen=True)
class Clue:
    """Metadata offered by one source; ``values`` uses DocumentMeta field names plus ``archive``."""

    source: str  # "separator", "sidecar", "manifest", "folder", "filename", "qr", "ocr"
    values: Mapping[str, Any]


@dataclass
class Resolution:
    values: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)  # field -> clue source that gave it

    @property
    def case_id(self) -> str | None:
        return self.values.get("case_id")

    @property
    def case_source(self) -> str | None:
        return self.sources.get("case_id")


# --- clues from mappings (sidecar JSON, manifest rows) -------------------------------------------



def _validated(name: str, value: Any) -> Any:
    """Normalise one field; BadArgsError says what is wrong with it."""
    if name == "case_id":
        return normalize_case_id(value)
    if name == "procedure_code":
        return parse_procedure_code(value).value
    if name == "sequence":
        try:
            number = int(str(value).strip())
        except ValueError:  # also a number of thousands of digits (Python's int parsing limit)
            raise BadArgsError(f"sequence {str(value)[:40]!r} must be a whole number") from None
        if not 1 <= number <= SEQUENCE_MAX:  # the index's integer (PostgreSQL int4) is far larger
            raise BadArgsError(f"sequence {str(number)[:40]} must be from 1 to {SEQUENCE_MAX}")
        return number
    text = plain(value)  # free text shown in the portal, the CLI and sidecars: no control or bidi characters
    if name in META_FIELDS and len(text) > ARCHIVE_VALUE_MAX:  # into the index row, search entries, listings
        raise BadArgsError(f"{name} is longer than {ARCHIVE_VALUE_MAX} characters")
    return text


def _scalar(raw: Any) -> bool:
    """A field's value as JSON may give it: text or a number, never a list, an object or a
    boolean (stored as their Python repr, "['x']" or "True", they would pass as a title)."""
    return isinstance(raw, (str, int, float)) and not isinstance(raw, bool)


def clue_from_mapping(source: str, data: Mapping[str, Any]) -> tuple[Clue, list[str]]:
    """Read a flat mapping (sidecar or manifest row) into a clue, with every problem found.

    Empty values are simply absent; unknown keys are problems, so typos do not pass silently.
    """
    values: dict[str, Any] = {}
    archive: dict[str, str] = {}
    problems: list[str] = []
    for raw_key, raw in data.items():
        key = str(raw_key).strip().lower()
        if raw is None or str(raw).strip() == "" or key in ("path", "archive"):
            continue
        if key not in META_FIELDS and key not in ARCHIVE_FIELDS:
            problems.append(f"unknown field {raw_key!r}")
            continue
        if not _scalar(raw):
            problems.append(f"{key} must be text or a number")
            continue
        try:
            value = _validated(key, raw)
        except BadArgsError as e:
            problems.append(str(e))
            continue
        if value == "":  # nothing left once control characters are removed
            continue
        if key in META_FIELDS:
            values[key] = value
        if key in ARCHIVE_FIELDS:
            archive[ARCHIVE_FIELDS[key]] = str(value)
    nested_keys = [k for k in data if str(k).strip().lower() == "archive"]  # "Archive" too, as every key
    if len(nested_keys) > 1:
        problems.append("archive is given more than once (keys that differ only in case)")
    nested = data[nested_keys[0]] if nested_keys else None
    if nested is not None and nested != "":
        archive.update(_nested_archive(nested, problems))
    problems.extend(f"archive field {k} is longer than {ARCHIVE_VALUE_MAX} characters"
                    for k, v in archive.items() if len(v) > ARCHIVE_VALUE_MAX)
    problems.extend(_file_code_problems(archive))
    if archive:
        values["archive"] = archive
    return Clue(source, values), problems


ARCHIVE_NAMES = frozenset(CASE_ARCHIVE_FIELDS)  # what a sidecar's nested ``archive`` object may hold
ARCHIVE_VALUE_MAX = 2000  # characters of one archive field (a Description is the longest)


def _nested_archive(nested: Any, problems: list[str]) -> dict[str, str]:
    """A sidecar's ``archive`` object: only the Decree 30 fields a case export carries (or their
    snake_case spelling), each a short text; anything else is a problem, so nothing unchecked is stored."""
    if not isinstance(nested, Mapping):
        problems.append("archive must be an object of archive fields")
        return {}
    archive: dict[str, str] = {}
    for raw_key, raw in nested.items():
        key = ARCHIVE_FIELDS.get(str(raw_key).strip().lower(), str(raw_key).strip())
        if key not in ARCHIVE_NAMES:
            problems.append(f"unknown archive field {str(raw_key)[:60]!r}")
        elif raw is not None and not _scalar(raw):
            problems.append(f"archive field {key} must be text")
        elif raw is not None and str(raw).strip():
            archive[key] = str(_validated("archive", raw))
    return archive


def _file_code_problems(archive: Mapping[str, str]) -> list[str]:
    parts = [archive.get(k) for k in ("OrganId", "FileCatalog", "FileNotation")]
    if not any(parts):
        return []
    try:
        parse_file_code(*(p or "" for p in parts))
    except BadArgsError as e:
        return [str(e)]
    return []


SIDECAR_MAX_BYTES = 1_000_000  # a few fields of JSON; anything bigger is not a sidecar an operator wrote


def sidecar_path(path: Path) -> Path | None:
    """``scan.json`` or ``scan.pdf.json`` beside ``scan.pdf``, if one exists (a symlink too, so that
    :func:`sidecar_clue` can refuse it by name: it is never followed)."""
    for candidate in (path.with_suffix(".json"), path.with_name(path.name + ".json")):
        try:
            if candidate != path and not stat.S_ISDIR(os.lstat(candidate).st_mode):
                return candidate
        except OSError:  # none; or ENAMETOOLONG: a scan name near NAME_MAX has no room for ".json"
            continue
    return None


def _read_sidecar(found: Path, root: Path | None) -> bytes:
    """The sidecar's bytes, read as a regular file with no symlink anywhere below ``root``."""
    try:
        fd = open_regular(found, root)
    except NotRegularFileError:
        raise SidecarError(f"sidecar {found.name}: a symbolic link or special file, not read "
                           "(links are never followed); put the JSON file itself beside the scan") from None
    except (OSError, ValueError) as e:
        raise SidecarError(f"sidecar {found.name} cannot be read: {getattr(e, 'strerror', None) or e}") from None
    with os.fdopen(fd, "rb") as f:
        data = f.read(SIDECAR_MAX_BYTES + 1)
    if len(data) > SIDECAR_MAX_BYTES:
        raise SidecarError(f"sidecar {found.name} is larger than {SIDECAR_MAX_BYTES // 1_000_000} MB: not a sidecar")
    return data


def sidecar_clue(path: Path, root: Path | None = None, shared: bool = False) -> Clue | None:
    """The sidecar's clue; a broken sidecar is an input error (the operator meant something).

    ``root`` is the inbox or batch folder: no folder from it down to the sidecar may be a symlink;
    ``shared``: a shared inbox's sidecar, whose SHARED_INBOX_DROPS are ignored."""
    found = sidecar_path(path)
    if found is None:
        return None
    raw = _read_sidecar(found, root)
    try:
        data = json.loads(raw.decode("utf-8-sig"))
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError, and a number of thousands of digits
        raise SidecarError(f"sidecar {found.name} is not valid UTF-8 JSON: {str(e)[:200]}") from None
    except RecursionError:  # found by fuzz/run.py: [[[[...]]]] nested beyond Python's stack
        raise SidecarError(f"sidecar {found.name}: JSON nested too deeply") from None
    if not isinstance(data, dict):
        raise SidecarError(f"sidecar {found.name} must hold a JSON object")
    clue, problems = clue_from_mapping("sidecar", data)
    if problems:
        raise SidecarError(f"sidecar {found.name}: " + "; ".join(problems))
    if shared:
        clue = Clue(clue.source, {k: v for k, v in clue.values.items() if k not in SHARED_INBOX_DROPS})
    return clue


# --- clues from names, codes and text (pure) ------------------------------------------------------

def folder_clue(relative: PurePath) -> Clue | None:
    """``<case-id>/<seq>-<title>.pdf`` relative to the watched or batch root."""
    if len(relative.parts) < 2:
        return None
    case_id = _case_id_or_none(relative.parts[-2])
    if case_id is None:
        return None
    values: dict[str, Any] = {"case_id": case_id}
    m = _SEQ_TITLE.fullmatch(relative.stem)
    if m:
        values["sequence"] = int(m.group(1))
        values["title"] = m.group(2).replace("_", " ").strip()
    return Clue("folder", values)


def _case_id_or_none(text: str) -> str | None:
    try:
        return normalize_case_id(text)
    except BadArgsError:
        return None


def _first_case_id(source: str, texts: Iterable[str]) -> Clue | None:
    for text in texts:
        found = find_case_ids(text)
        if found:
            return Clue(source, {"case_id": found[0]})
    return None


def filename_clue(relative: PurePath) -> Clue | None:
    return _first_case_id("filename", [relative.stem])


def code_clue(codes: Sequence[str]) -> Clue | None:
    """A receipt QR may hold the bare case ID or a URL/JSON that contains it."""
    return _first_case_id("qr", codes)


def labelled_case_ids(text: str) -> list[str]:
    """Case IDs after a ``Mã hồ sơ:`` label, tolerating dots OCR read as spaces or commas."""
    found = []
    for line in text.splitlines():
        label = _CASE_LABEL.search(search_key(line))
        dotless = _DOTLESS_CASE_ID.match(label.group(1)) if label else None
        if dotless:
            agency = re.sub(r"[\s.,]+", ".", dotless.group(1))
            value = _case_id_or_none(f"{agency}-{dotless.group(2)}-{dotless.group(3)}")
            if value:
                found.append(value)
    return found


def ocr_clue(page_texts: Sequence[str]) -> Clue | None:
    """The first case ID in the first pages' text; a labelled one is repaired if OCR dropped its dots."""
    for text in page_texts[:OCR_PAGES]:
        found = find_case_ids(text) or labelled_case_ids(text)
        if found:
            return Clue("ocr", {"case_id": found[0]})
    return None


def separator_clue(case_id: str | None) -> Clue | None:
    """A sheet with a malformed ID still separates; its ID is then ignored rather than trusted."""
    value = _case_id_or_none(case_id) if case_id else None
    return Clue("separator", {"case_id": value}) if value else None


# --- merging ---------------------------------------------------------------------------------------

def resolve(clues: Iterable[Clue | None]) -> Resolution:
    """Merge clues given in priority order: per field the first wins; archive dicts merge per key."""
    result = Resolution()
    for clue in clues:
        if clue is None:
            continue
        for name, value in clue.values.items():
            if name == "archive":
                merged = result.values.setdefault("archive", {})
                for key, item in value.items():
                    merged.setdefault(key, item)
            elif name not in result.values:
                result.values[name] = value
                result.sources[name] = clue.source
    return result


def apply_case_record(resolution: Resolution, record: Any | None) -> Resolution:
    """Procedure and agency from the index's case record override what files say about them."""
    if record is None:
        return resolution
    get = record.get if isinstance(record, Mapping) else lambda name: getattr(record, name, None)
    values, sources = dict(resolution.values), dict(resolution.sources)
    for name in CASE_RECORD_FIELDS:
        value = get(name) or (get("agency_name") or get("receiving_agency") if name == "agency" else None)
        if value:
            values[name], sources[name] = value, "case-record"
    return Resolution(values, sources)


def meta_kwargs(resolution: Resolution, source_name: str, source_pages: str, default_title: str) -> dict[str, Any]:
    """Keyword arguments for storage.archive.DocumentMeta."""
    values = dict(resolution.values)
    values.setdefault("title", default_title)
    values["title"] = plain(values["title"])  # the file name's stem or its folder-convention title included
    values["archive"] = dict(values.get("archive", {}))
    values.update(source_name=plain(source_name), source_pages=source_pages)
    return values
