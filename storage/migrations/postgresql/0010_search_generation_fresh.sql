-- PostgreSQL part of migration 10 (review r2pg H1, M1).
-- H1: the generation row is data: a restore (pg_restore, PITR) or the promotion of a standby that missed the
-- last commits brings back an older (epoch, value), and counting on from there would repeat keys the portals
-- still hold pages for, built on other rows. Each move now also draws a fresh epoch, so no later move can repeat
-- a key; a restored state still carries the key of a state that existed, under which cached pages are right.
-- M1: ENABLE ALWAYS: the triggers fire in sessions with session_replication_role = replica too (logical
-- replication's apply workers, pg_restore --disable-triggers's session setting); only ALTER TABLE ... DISABLE
-- TRIGGER turns them off (README: restart the portals after such a change).
-- The tables are locked once, in one order, before any ALTER (bounded by the migration's lock_timeout).
LOCK TABLE cases, documents, case_links, search_entries IN SHARE ROW EXCLUSIVE MODE;

CREATE OR REPLACE FUNCTION search_generation_bump() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('digitize.search_generation_moved', true) IS DISTINCT FROM 'yes' THEN
        UPDATE search_generation SET value = value + 1, epoch = md5(random()::text || clock_timestamp()::text);
        PERFORM set_config('digitize.search_generation_moved', 'yes', true);
    END IF;
    RETURN NULL;
END $$;

DO $$
DECLARE t TEXT;
BEGIN
    FOREACH t IN ARRAY ARRAY['cases', 'documents', 'case_links', 'search_entries'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ALWAYS TRIGGER search_generation_rows', t);
        EXECUTE format('ALTER TABLE %I ENABLE ALWAYS TRIGGER search_generation_truncate', t);
    END LOOP;
END $$;
