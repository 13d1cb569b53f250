-- PostgreSQL part of migration 1 (after ../0001_initial.sql): append-only trigger, tsvector search.
CREATE FUNCTION events_append_only() RETURNS trigger LANGUAGE plpgsql AS
$$ BEGIN RAISE EXCEPTION 'events are append-only'; END $$;
CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON events
FOR EACH ROW EXECUTE FUNCTION events_append_only();

-- One entry per OCR page (page >= 1), per document's metadata (page 0) and per case record (doc_id NULL).
-- Tokens come pre-split, case-folded and (for ``folded``) accent-folded from storage/search.py, then go into
-- 'simple' tsvectors (no stemming, no stop words), so đ -> d and both backends match the same words.
CREATE TABLE search_entries (
    entry_id BIGSERIAL PRIMARY KEY,
    case_id  TEXT,
    doc_id   BIGINT REFERENCES documents (doc_id),
    page     INTEGER,
    text     TEXT NOT NULL,
    exact    TSVECTOR NOT NULL,
    folded   TSVECTOR NOT NULL
);
CREATE INDEX search_entries_doc ON search_entries (doc_id);
CREATE INDEX search_entries_case ON search_entries (case_id);
CREATE INDEX search_entries_folded ON search_entries USING gin (folded);
CREATE INDEX search_entries_exact ON search_entries USING gin (exact);
