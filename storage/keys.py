"""Object keys: immutable, readable, safe. Pure functions, no I/O.

A document lives under ``<case ID or _unmatched>/<sequence>/`` and each object name carries the first
16 hex digits of its own SHA-256, so a key never has to be reused for different bytes:
``000.00.31.H56-241015-0027/0003/pdfa-3f2a9c0d11e4b7a8.pdf``. Titles and file names never reach a key:
only the validated case ID, the sequence number, a fixed role word, the hash and a vetted extension.
"""

from __future__ import annotations

import re
from digitize.errors import BadArgsError
from digitize.identifiers import normalize_case_id

UNMATCHED = "_unmatched"
# a document's number in its dossier: one bound for everything that takes one (intake's sidecars and
# manifests, the index's next number, keys, link records, reindex), so whatever is stored can be rebuilt
# (review rev17cli M4: intake took up to 99 999, reindex skipped anything above 9 999)
SEQUENCE_MAX = 99_999
HASH_CHARS = 16
_SAFE_KEY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*(/[A-Za-z0-9_][A-Za-z0-9._-]*)*")
_EXTENSION = re.compile(r"\.([A-Za-z0-9]{1,5})$")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def check_key(key: str) -> str:
    """Refuse anything that could escape a folder or confuse a server: no ``..``, no odd characters."""
    if not _SAFE_KEY.fullmatch(key) or any(part in {".", ".."} for part in key.split("/")) or ".." in key:
        raise BadArgsError(f"unsafe object key {key!r}")
    return key


def check_sha256(digest: str) -> str:
    if not _SHA256.fullmatch(digest):
        raise BadArgsError(f"not a lower-case hex SHA-256: {digest!r}")
    return digest


def original_extension(source_name: str) -> str:
    """``Hồ sơ.PDF`` -> ``pdf``; anything odd -> ``bin``. Only the extension of a name is ever used."""
    m = _EXTENSION.search(source_name.strip())
    return m.group(1).lower() if m else "bin"


def check_sequence(value: object) -> int:
    """``value`` if it is a whole number from 1 to SEQUENCE_MAX (a bool is not), else BadArgsError."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= SEQUENCE_MAX:
        raise BadArgsError(f"sequence {str(value)[:40]!r} must be a whole number from 1 to {SEQUENCE_MAX}")
    return value


def document_prefix(case_id: str | None, sequence: int) -> str:
    check_sequence(sequence)
    folder = normalize_case_id(case_id) if case_id else UNMATCHED
    return check_key(f"{folder}/{sequence:04d}")


def object_key(prefix: str, role: str, sha256: str, extension: str) -> str:
    return check_key(f"{prefix}/{role}-{check_sha256(sha256)[:HASH_CHARS]}.{extension}")


_LINK_KEY = re.compile(r"(?:^|/)link-[0-9a-f]{16}\.json$")


def is_link_key(key: str) -> bool:
    """A link record (storage/sidecar.py): a document's place in another dossier, not a document's object."""
    return bool(_LINK_KEY.search(key))


def case_prefix(case_id: str) -> str:
    return normalize_case_id(case_id) + "/"


STAGING = "_staging/"  # originals waiting for a queue worker (pipelines/queued.py); not part of any dossier


_JOB = re.compile(r"[0-9a-f]{32}")


def staging_key(sha256: str, job: str = "") -> str:
    """Where queue mode parks an original until a worker has stored it as a document: per job
    (``_staging/<SHA-256>/<job>``), since the job that is done deletes it and another job of the same bytes (an
    upload into another case) still needs its own (one object per content was deleted under it: review
    rev16batch M6). Without ``job``: the one-per-content key of earlier versions, which their tasks name."""
    if not job:
        return check_key(f"{STAGING}{check_sha256(sha256)}")
    if not _JOB.fullmatch(job):
        raise BadArgsError(f"not a job ID: {job!r}")
    return check_key(f"{STAGING}{check_sha256(sha256)}/{job}")
