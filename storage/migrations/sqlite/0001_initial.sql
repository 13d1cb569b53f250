-- SQLite part of migration 1 (after ../0001_initial.sql): append-only triggers, FTS5 search.
CREATE TRIGGER events_append_only_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
CREATE TRIGGER events_append_only_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;

-- One entry per OCR page (page >= 1), per document's metadata (page 0) and per case record (doc_id NULL).
CREATE TABLE search_entries (
    entry_id INTEGER PRIMARY KEY,
    case_id  TEXT,
    doc_id   INTEGER REFERENCES documents (doc_id),
    page     INTEGER,
    text     TEXT NOT NULL
);
CREATE INDEX search_entries_doc ON search_entries (doc_id);
CREATE INDEX search_entries_case ON search_entries (case_id);
-- Tokens come pre-split and pre-folded from storage/search.py; rowid = search_entries.entry_id.
CREATE VIRTUAL TABLE search_fts USING fts5 (exact, folded, tokenize = 'unicode61 remove_diacritics 0');
