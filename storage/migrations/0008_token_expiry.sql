-- API tokens expire (review web15 L7: they never did). A token's expiry is a row of its own table, like the
-- single sign-on bindings of 0007: a token made before this migration has no row and keeps no expiry (shown
-- as such by `digitize tokens list`), one made after has a row whose expires_at is NULL only when it was
-- made to never expire (`--expires-days 0`). ISO 8601 UTC like every other time of the index.
-- (IF NOT EXISTS: a migration may run again after an interrupted upgrade; no ALTER TABLE.)
CREATE TABLE IF NOT EXISTS api_token_expiry (
    name       TEXT PRIMARY KEY REFERENCES api_tokens (name),
    expires_at TEXT
);
