-- PostgreSQL part of migration 5: search_entries.agencies, per entry the codes of the agencies whose readers
-- may see it: the first part of its home case ID (the case record's own, or its document's) and of every
-- dossier the document is shared into (case_links); empty for unmatched documents, so no officer's query
-- matches them. An officer's candidate query adds ``agencies && its codes``; the access gate still judges
-- every row shown: this is the pre-filter, a superset of what it accepts.

-- The one definition of an entry's agencies, read by the fill below and by the triggers.
CREATE FUNCTION search_entry_agencies(entry_case TEXT, entry_doc BIGINT) RETURNS TEXT[] LANGUAGE sql STABLE AS $$
    SELECT coalesce(array_agg(DISTINCT split_part(c, '-', 1)), '{}') FROM (
        SELECT coalesce(entry_case, (SELECT case_id FROM documents WHERE doc_id = entry_doc)) AS c
        UNION SELECT case_id FROM case_links WHERE doc_id = entry_doc) s
    WHERE position('-' in c) > 1
$$;

ALTER TABLE search_entries ADD COLUMN agencies TEXT[] NOT NULL DEFAULT '{}';
UPDATE search_entries SET agencies = search_entry_agencies(case_id, doc_id);
CREATE INDEX search_entries_agencies ON search_entries USING gin (agencies);

-- Every write that changes who may see an entry re-reads its agencies: a new or moved entry, a document
-- filed into (or moved to) another case, shared into a dossier or taken out of one. Triggers rather than
-- Python calls, so no write path (rebuild, re-filing) can skip them.
CREATE FUNCTION search_entry_scope() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.agencies := search_entry_agencies(NEW.case_id, NEW.doc_id);
    RETURN NEW;
END $$;
CREATE TRIGGER search_scope_entry BEFORE INSERT OR UPDATE OF case_id, doc_id ON search_entries
FOR EACH ROW EXECUTE FUNCTION search_entry_scope();

CREATE FUNCTION search_document_scope() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        UPDATE search_entries SET agencies = search_entry_agencies(case_id, doc_id) WHERE doc_id = OLD.doc_id;
    END IF;
    IF TG_OP IN ('UPDATE', 'INSERT') THEN
        UPDATE search_entries SET agencies = search_entry_agencies(case_id, doc_id) WHERE doc_id = NEW.doc_id;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER search_scope_refile AFTER UPDATE OF case_id ON documents
FOR EACH ROW WHEN (OLD.case_id IS DISTINCT FROM NEW.case_id) EXECUTE FUNCTION search_document_scope();
CREATE TRIGGER search_scope_share AFTER INSERT OR DELETE OR UPDATE OF doc_id, case_id ON case_links
FOR EACH ROW EXECUTE FUNCTION search_document_scope();
