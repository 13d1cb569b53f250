-- PostgreSQL part of migration 2: a dossier's sequence numbers are unique across documents and case_links.
-- A transaction-scoped advisory lock per dossier serialises the check with concurrent writers to the same
-- dossier; the error is a unique_violation, so writers retry with the next number as for documents alone.
CREATE FUNCTION dossier_sequence_free() RETURNS trigger LANGUAGE plpgsql AS
$$ BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('digitize dossier ' || coalesce(NEW.case_id, '')));
    IF TG_TABLE_NAME = 'documents' THEN
        IF EXISTS (SELECT 1 FROM case_links WHERE case_id = coalesce(NEW.case_id, '') AND sequence = NEW.sequence) THEN
            RAISE EXCEPTION 'dossier % sequence % already used by a shared document', NEW.case_id, NEW.sequence
                USING ERRCODE = 'unique_violation';
        END IF;
    ELSIF EXISTS (SELECT 1 FROM documents WHERE coalesce(case_id, '') = NEW.case_id AND sequence = NEW.sequence) THEN
        RAISE EXCEPTION 'dossier % sequence % already used by a document', NEW.case_id, NEW.sequence
            USING ERRCODE = 'unique_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER documents_sequence_free BEFORE INSERT OR UPDATE OF case_id, sequence ON documents
FOR EACH ROW EXECUTE FUNCTION dossier_sequence_free();
CREATE TRIGGER case_links_sequence_free BEFORE INSERT ON case_links
FOR EACH ROW EXECUTE FUNCTION dossier_sequence_free();
