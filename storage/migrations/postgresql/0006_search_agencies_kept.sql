-- PostgreSQL part of migration 6. Under READ COMMITTED, a share of a document (a case_links row) and its
-- re-filing (documents.case_id) in two concurrent transactions each recomputed the document's entries from
-- a snapshot taken before the other committed: the second one's UPDATE waited for the first one's row locks,
-- then re-evaluated with its old snapshot, and the entries kept a stale agency (the new home agency's readers
-- lost the document). Each recompute now first locks the document's row (the lock a re-filing's UPDATE
-- takes), so the two take turns, and the statement after the wait takes a fresh snapshot that sees the other's
-- commit. (Old writers are no concern here: the BEFORE INSERT trigger of migration 5 fills every new entry.)
CREATE OR REPLACE FUNCTION search_document_scope() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        PERFORM 1 FROM documents WHERE doc_id = OLD.doc_id FOR NO KEY UPDATE;
        UPDATE search_entries SET agencies = search_entry_agencies(case_id, doc_id) WHERE doc_id = OLD.doc_id;
    END IF;
    IF TG_OP IN ('UPDATE', 'INSERT') THEN
        PERFORM 1 FROM documents WHERE doc_id = NEW.doc_id FOR NO KEY UPDATE;
        UPDATE search_entries SET agencies = search_entry_agencies(case_id, doc_id) WHERE doc_id = NEW.doc_id;
    END IF;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION search_entry_scope() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.doc_id IS NOT NULL THEN  -- as above: after any concurrent share or re-filing of the document
        PERFORM 1 FROM documents WHERE doc_id = NEW.doc_id FOR NO KEY UPDATE;
    END IF;
    NEW.agencies := search_entry_agencies(NEW.case_id, NEW.doc_id);
    RETURN NEW;
END $$;
