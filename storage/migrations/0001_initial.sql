-- Cases, documents and append-only events: the logical schema both index backends share.
-- $id, $ref and $float are filled in per dialect (storage/index.py); the dialect folders add the parts
-- that differ: append-only triggers and the full-text search tables.
-- Times are ISO-8601 UTC text in both backends so rows read back identically.
CREATE TABLE cases (
    case_id        TEXT PRIMARY KEY,
    procedure_code TEXT,
    procedure_name TEXT,
    agency         TEXT,
    applicant      TEXT,
    received_date  TEXT,
    due_date       TEXT,
    status         TEXT,
    archive        TEXT NOT NULL DEFAULT '{}',
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL
);

-- case_id has no foreign key on purpose: a document may name a case that is imported later.
CREATE TABLE documents (
    doc_id          $id,
    case_id         TEXT,
    sequence        INTEGER NOT NULL CHECK (sequence > 0),
    status          TEXT NOT NULL CHECK (status IN ('pending', 'stored')),
    source_name     TEXT NOT NULL DEFAULT '',
    source_pages    TEXT NOT NULL DEFAULT '',
    title           TEXT NOT NULL DEFAULT '',
    doc_type        TEXT NOT NULL DEFAULT '',
    procedure_code  TEXT,
    procedure_name  TEXT,
    agency          TEXT,
    scanned_by      TEXT,
    scan_station    TEXT,
    pages           INTEGER NOT NULL DEFAULT 0,
    languages       TEXT NOT NULL DEFAULT '',
    ocr_confidence  $float,
    original_sha256 TEXT NOT NULL,
    pdfa_sha256     TEXT NOT NULL,
    meta_sha256     TEXT NOT NULL,
    original_key    TEXT NOT NULL,
    pdfa_key        TEXT NOT NULL,
    meta_key        TEXT NOT NULL,
    archive         TEXT NOT NULL DEFAULT '{}',
    created_at      TEXT NOT NULL,
    stored_at       TEXT,
    UNIQUE (original_sha256, source_pages)
);
CREATE UNIQUE INDEX documents_case_sequence ON documents (coalesce(case_id, ''), sequence);
CREATE INDEX documents_case ON documents (case_id);

CREATE TABLE events (
    event_id   $id,
    time       TEXT NOT NULL,
    event_type TEXT NOT NULL CHECK (event_type IN
               ('ingested', 'converted', 'stored', 'verified', 'retrieved', 'fixity-checked', 'linked')),
    doc_id     $ref REFERENCES documents (doc_id),
    case_id    TEXT,
    actor      TEXT NOT NULL,
    tool       TEXT NOT NULL,
    outcome    TEXT NOT NULL CHECK (outcome IN ('success', 'failure')),
    checksum   TEXT,
    detail     TEXT NOT NULL DEFAULT ''
);
CREATE INDEX events_doc ON events (doc_id);
CREATE INDEX events_case ON events (case_id);
