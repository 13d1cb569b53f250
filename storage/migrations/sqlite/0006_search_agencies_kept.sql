-- SQLite part of migration 6. A writer running code older than migration 5 (a watcher or batch worker
-- started before the upgrade, or a downgrade) inserted its full-text row without the agencies column, which
-- stayed NULL: that entry was never an officer's candidate again. An FTS5 table takes no trigger and no
-- constraint, so the row is now made by a trigger on search_entries, with its agencies, when the entry is;
-- the writer then fills in its tokens (index_sqlite.py). An older writer's own insert of that row fails
-- ("constraint failed": the rowid is taken), so its whole write rolls back and is retried after its
-- restart (the scan stays in the inbox), instead of leaving a document its officers cannot find.
CREATE TRIGGER IF NOT EXISTS search_scope_entry_added AFTER INSERT ON search_entries
BEGIN
    INSERT INTO search_fts (rowid, exact, folded, agencies)
    VALUES (NEW.entry_id, '', '', coalesce((SELECT agencies FROM search_scope WHERE entry_id = NEW.entry_id), ''));
END;

-- Entries written by such a writer since migration 5 (one pass over the table, once).
UPDATE search_fts SET agencies = coalesce((SELECT agencies FROM search_scope WHERE entry_id = search_fts.rowid), '')
WHERE agencies IS NULL;
