-- SQLite part of migration 5: search_fts gains a third column, ``agencies``: per search entry, one token per
-- agency whose reader may see it, i.e. the first part of its home case ID (the case record's own, or its
-- document's) and of every dossier the document is shared into (case_links). A token is 'g' and the agency
-- code's UTF-8 bytes in hex (one plain word: the tokenizer would split a code at its dots); storage/search.py
-- agency_token builds the same for a query. Unmatched documents have none, so no officer's query matches them.
-- The access gate still judges every row shown: this is the pre-filter, a superset of what it accepts.

-- The one definition of an entry's tokens, read by the fill below, by new entries and by the triggers.
CREATE VIEW search_scope (entry_id, agencies) AS
SELECT e.entry_id, trim(
    CASE WHEN instr(coalesce(e.case_id, d.case_id), '-') > 1
         THEN 'g' || hex(substr(coalesce(e.case_id, d.case_id), 1, instr(coalesce(e.case_id, d.case_id), '-') - 1))
         ELSE '' END
    || ' ' || coalesce((SELECT group_concat('g' || hex(substr(l.case_id, 1, instr(l.case_id, '-') - 1)), ' ')
                        FROM case_links l WHERE l.doc_id = e.doc_id AND instr(l.case_id, '-') > 1), ''))
FROM search_entries e LEFT JOIN documents d ON d.doc_id = e.doc_id;

-- FTS5 cannot add a column: build the new table from the old one's stored tokens, then take its name.
CREATE VIRTUAL TABLE search_fts_scoped USING fts5 (exact, folded, agencies, tokenize = 'unicode61 remove_diacritics 0');
INSERT INTO search_fts_scoped (rowid, exact, folded, agencies)
SELECT f.rowid, f.exact, f.folded, coalesce(s.agencies, '') FROM search_fts f LEFT JOIN search_scope s ON s.entry_id = f.rowid;
DROP TABLE search_fts;
ALTER TABLE search_fts_scoped RENAME TO search_fts;
-- relevance (ORDER BY rank) weighs the words only: the agency tokens every officer's candidate matches add nothing
INSERT INTO search_fts (search_fts, rank) VALUES ('rank', 'bm25(1.0, 1.0, 0.0)');

-- Every write that changes who may see an entry re-reads its tokens: a document filed into (or moved to)
-- another case, shared into a dossier or taken out of one, an entry moved. New entries read them on insert
-- (index_sqlite.py). Triggers rather than Python calls, so no write path (rebuild, re-filing) can skip them.
CREATE TRIGGER search_scope_refile AFTER UPDATE OF case_id ON documents
WHEN OLD.case_id IS NOT NEW.case_id
BEGIN
    UPDATE search_fts SET agencies = (SELECT agencies FROM search_scope WHERE entry_id = search_fts.rowid)
    WHERE rowid IN (SELECT entry_id FROM search_entries WHERE doc_id = NEW.doc_id);
END;
CREATE TRIGGER search_scope_share AFTER INSERT ON case_links
BEGIN
    UPDATE search_fts SET agencies = (SELECT agencies FROM search_scope WHERE entry_id = search_fts.rowid)
    WHERE rowid IN (SELECT entry_id FROM search_entries WHERE doc_id = NEW.doc_id);
END;
CREATE TRIGGER search_scope_unshare AFTER DELETE ON case_links
BEGIN
    UPDATE search_fts SET agencies = (SELECT agencies FROM search_scope WHERE entry_id = search_fts.rowid)
    WHERE rowid IN (SELECT entry_id FROM search_entries WHERE doc_id = OLD.doc_id);
END;
CREATE TRIGGER search_scope_relink AFTER UPDATE OF doc_id, case_id ON case_links
BEGIN
    UPDATE search_fts SET agencies = (SELECT agencies FROM search_scope WHERE entry_id = search_fts.rowid)
    WHERE rowid IN (SELECT entry_id FROM search_entries WHERE doc_id IN (OLD.doc_id, NEW.doc_id));
END;
CREATE TRIGGER search_scope_entry_moved AFTER UPDATE OF case_id, doc_id ON search_entries
BEGIN
    UPDATE search_fts SET agencies = (SELECT agencies FROM search_scope WHERE entry_id = NEW.entry_id)
    WHERE rowid = NEW.entry_id;
END;
