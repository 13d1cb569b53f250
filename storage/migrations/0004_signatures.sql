-- PAdES signatures of the stored PDF/A copies (digitize/signing.py): who signed, with which certificate,
-- when, and the timestamp authority's time (B-T/B-LT). One row per signature field; a document may have
-- none (stored before signing was configured). Needs only 0001's documents table.
CREATE TABLE signatures (
    signature_id   $id,
    doc_id         $ref NOT NULL REFERENCES documents (doc_id),
    field          TEXT NOT NULL,
    signer         TEXT NOT NULL,
    cert_sha256    TEXT NOT NULL,
    signing_time   TEXT NOT NULL,
    timestamp_time TEXT,
    level          TEXT NOT NULL,
    recorded_at    TEXT NOT NULL,
    UNIQUE (doc_id, field)
);
CREATE INDEX signatures_doc ON signatures (doc_id);
