-- Migration 2: a document may belong to several dossiers (a citizen's ID copy filed with two cases).
-- Its objects stay where they were stored, under its home case (documents.case_id, documents.sequence);
-- each other dossier it belongs to is a row here with the document's place in that dossier. No bytes are
-- copied. A sequence is unique within a dossier across both tables (the dialect parts add that check).
CREATE TABLE case_links (
    link_id    $id,
    doc_id     $ref NOT NULL REFERENCES documents (doc_id),
    case_id    TEXT NOT NULL,
    sequence   INTEGER NOT NULL CHECK (sequence > 0),
    created_at TEXT NOT NULL,
    UNIQUE (case_id, sequence),
    UNIQUE (case_id, doc_id)
);
CREATE INDEX case_links_doc ON case_links (doc_id);
