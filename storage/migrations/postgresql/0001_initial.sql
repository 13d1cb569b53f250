-- Cases, documents, append-only events and the full-text search entries (PostgreSQL).
-- Same logical schema as the SQLite one; times are ISO-8601 UTC text so both read back identically.
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
    doc_id          BIGSERIAL PRIMARY KEY,
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
    ocr_confidence  DOUBLE PRECISION,
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
    event_id   BIGSERIAL PRIMARY KEY,
    time       TEXT NOT NULL,
    event_type TEXT NOT NULL CHECK (event_type IN
               ('ingested', 'converted', 'stored', 'verified', 'retrieved', 'fixity-checked', 'linked')),
    doc_id     BIGINT REFERENCES documents (doc_id),
    case_id    TEXT,
    actor      TEXT NOT NULL,
    tool       TEXT NOT NULL,
    outcome    TEXT NOT NULL CHECK (outcome IN ('success', 'failure')),
    checksum   TEXT,
    detail     TEXT NOT NULL DEFAULT ''
);
CREATE INDEX events_doc ON events (doc_id);
CREATE INDEX events_case ON events (case_id);
CREATE FUNCTION events_append_only() RETURNS trigger LANGUAGE plpgsql AS
$$ BEGIN RAISE EXCEPTION 'events are append-only'; END $$;
CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON events
FOR EACH ROW EXECUTE FUNCTION events_append_only();

-- One entry per OCR page (page >= 1), per document's metadata (page 0) and per case record (doc_id NULL).
-- Tokens come pre-split and pre-folded from storage/search.py: exact words as an array, folded ones as
-- a tsvector ('simple': no stemming, no stop words), so đ -> d and the tokens match SQLite's exactly.
CREATE TABLE search_entries (
    entry_id BIGSERIAL PRIMARY KEY,
    case_id  TEXT,
    doc_id   BIGINT REFERENCES documents (doc_id),
    page     INTEGER,
    text     TEXT NOT NULL,
    exact    TEXT[] NOT NULL,
    folded   TSVECTOR NOT NULL
);
CREATE INDEX search_entries_doc ON search_entries (doc_id);
CREATE INDEX search_entries_case ON search_entries (case_id);
CREATE INDEX search_entries_folded ON search_entries USING gin (folded);
CREATE INDEX search_entries_exact ON search_entries USING gin (exact);
