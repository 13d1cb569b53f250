-- Accounts for the portal and the API (issue 11): local users (argon2 hashes), API tokens (stored as
-- SHA-256 of a 256-bit random secret, so a leaked index does not leak usable tokens) and the client
-- address of each event. Roles and agency scopes are enforced in storage/access.py; agencies are a JSON
-- list of agency codes (the first part of a case ID).
CREATE TABLE users (
    name          TEXT PRIMARY KEY,
    role          TEXT NOT NULL CHECK (role IN ('scanner', 'officer', 'archivist', 'admin')),
    agencies      TEXT NOT NULL DEFAULT '[]',
    password_hash TEXT,
    oidc_subject  TEXT UNIQUE,
    disabled      INTEGER NOT NULL DEFAULT 0,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL
);

CREATE TABLE api_tokens (
    token_id   $id,
    name       TEXT NOT NULL UNIQUE,
    role       TEXT NOT NULL CHECK (role IN ('scanner', 'officer', 'archivist', 'admin')),
    agencies   TEXT NOT NULL DEFAULT '[]',
    token_hash TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    revoked_at TEXT
);

ALTER TABLE events ADD COLUMN client TEXT;
