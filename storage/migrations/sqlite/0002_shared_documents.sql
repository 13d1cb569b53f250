-- SQLite part of migration 2: a dossier's sequence numbers are unique across documents and case_links.
-- Writers take the write lock up front (BEGIN IMMEDIATE), so these checks cannot race.
CREATE TRIGGER case_links_sequence_free BEFORE INSERT ON case_links
WHEN EXISTS (SELECT 1 FROM documents WHERE coalesce(case_id, '') = NEW.case_id AND sequence = NEW.sequence)
BEGIN SELECT RAISE(ABORT, 'UNIQUE: dossier sequence already used by a document'); END;
CREATE TRIGGER documents_sequence_free_insert BEFORE INSERT ON documents
WHEN EXISTS (SELECT 1 FROM case_links WHERE case_id = coalesce(NEW.case_id, '') AND sequence = NEW.sequence)
BEGIN SELECT RAISE(ABORT, 'UNIQUE: dossier sequence already used by a shared document'); END;
CREATE TRIGGER documents_sequence_free_update BEFORE UPDATE OF case_id, sequence ON documents
WHEN EXISTS (SELECT 1 FROM case_links WHERE case_id = coalesce(NEW.case_id, '') AND sequence = NEW.sequence)
BEGIN SELECT RAISE(ABORT, 'UNIQUE: dossier sequence already used by a shared document'); END;
