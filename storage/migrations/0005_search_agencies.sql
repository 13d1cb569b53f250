-- Migration 5: search candidates filtered by the reader's agencies in the full-text query itself, so an
-- officer's first candidates are the first ones it may see (not the first of every agency's). The work is
-- the SQLite part's (sqlite/0005_search_agencies.sql: an FTS5 column of agency tokens); PostgreSQL keeps
-- its query and this shared part changes nothing (a statement, since a script must hold one).
SELECT 1;
