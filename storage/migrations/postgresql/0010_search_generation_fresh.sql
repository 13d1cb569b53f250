-- PostgreSQL part of migration 10 (review r2pg H1, M1).
-- H1: the generation row is data: a restore (pg_restore, PITR) or the promotion of a standby that missed the
-- last commits brings back an older (epoch, value), and counting on from there would repeat keys the portals
-- still hold pages for, built on other rows. Each move of the row (the bump's UPDATE, or one by hand) now also
-- draws a fresh epoch, so no later move can repeat a key; a restored state still carries the key of a state
-- that existed, under which cached pages are right. A trigger on the row itself, so 0009's bump stays as it is.
-- M1: ENABLE ALWAYS: the triggers fire in sessions with session_replication_role = replica too (logical
-- replication's apply workers, pg_restore --disable-triggers's session setting); only ALTER TABLE ... DISABLE
-- TRIGGER turns them off (README: bump the row by hand, or restart the portals, after such a change).
-- The tables are locked once, in one order, before any ALTER (bounded by the migration's lock_timeout).
-- (OR REPLACE, DROP ... IF EXISTS: a migration may run again after an interrupted upgrade.)
LOCK TABLE cases, documents, case_links, search_entries, search_generation IN SHARE ROW EXCLUSIVE MODE;

CREATE OR REPLACE FUNCTION search_generation_fresh_epoch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.epoch := md5(random()::text || clock_timestamp()::text);  -- (gen_random_uuid() would need PostgreSQL 13)
    RETURN NEW;
END $$;
DROP TRIGGER IF EXISTS search_generation_fresh_epoch ON search_generation;
CREATE TRIGGER search_generation_fresh_epoch BEFORE UPDATE ON search_generation
    FOR EACH ROW EXECUTE FUNCTION search_generation_fresh_epoch();
ALTER TABLE search_generation ENABLE ALWAYS TRIGGER search_generation_fresh_epoch;

DO $$
DECLARE t TEXT;
BEGIN
    FOREACH t IN ARRAY ARRAY['cases', 'documents', 'case_links', 'search_entries'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ALWAYS TRIGGER search_generation_rows', t);
        EXECUTE format('ALTER TABLE %I ENABLE ALWAYS TRIGGER search_generation_truncate', t);
    END LOOP;
END $$;
