-- Migration 5: search candidates filtered by the reader's agencies in the full-text query itself, so an
-- officer's first candidates are the first ones it may see (not the first of every agency's). The work is
-- in the dialect parts (sqlite/: an FTS5 column of agency tokens; postgresql/: an array column), kept right
-- by triggers; this shared part changes nothing (a statement, since a script must hold one).
SELECT 1;
