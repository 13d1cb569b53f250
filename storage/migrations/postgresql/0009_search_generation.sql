-- PostgreSQL part of migration 9: one row whose value moves with every committed write that may change a
-- search's answer (storage/index_pg.py PostgresIndex.search_generation), so that search pages are cached on
-- PostgreSQL too (storage/access.py SearchCache). Triggers move it, not Python calls, so no writer can skip it
-- (this code, an older one still running during an upgrade, psql, a rebuild): every transaction that writes a
-- table a search reads moves it once, at its COMMIT, so the new value and the new rows become visible together;
-- a reader that reads the value first and then searches (each statement its own READ COMMITTED snapshot)
-- never finds rows older than that value. ``epoch`` is random per database: a database dropped and made
-- again never repeats an (epoch, value) pair. Access events, accounts and signatures do not move it.
-- (IF NOT EXISTS, ON CONFLICT, OR REPLACE, DROP ... IF EXISTS: a migration may run again after an interrupted upgrade.)
-- Migration 10 makes every move draw a fresh epoch too (restores, failovers) and the triggers fire ALWAYS.
-- The four tables are locked once, in one order, in the mode CREATE TRIGGER takes (searches go on, writes wait),
-- each within the migration's lock_timeout (storage/index_pg.py): a long write ahead makes it give up and try
-- again, not hold some tables while it queues for the next one, blocking the portals' writes meanwhile.
LOCK TABLE cases, documents, case_links, search_entries IN SHARE ROW EXCLUSIVE MODE;
CREATE TABLE IF NOT EXISTS search_generation (
    one   BOOLEAN PRIMARY KEY DEFAULT true CHECK (one),
    epoch TEXT NOT NULL,
    value BIGINT NOT NULL
);
INSERT INTO search_generation (epoch, value) VALUES (md5(random()::text || clock_timestamp()::text), 0)
ON CONFLICT DO NOTHING;  -- (gen_random_uuid() would need PostgreSQL 13)

-- Once per transaction (a transaction-local setting remembers it), from a constraint trigger deferred to the
-- COMMIT: the row's lock is the last one the transaction takes, so concurrent writers only take turns on it
-- while each commits (bounded by lock_timeout), and no lock cycle can form through it.
CREATE OR REPLACE FUNCTION search_generation_bump() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('digitize.search_generation_moved', true) IS DISTINCT FROM 'yes' THEN
        UPDATE search_generation SET value = value + 1;
        PERFORM set_config('digitize.search_generation_moved', 'yes', true);
    END IF;
    RETURN NULL;
END $$;

-- On each table a search reads: its rows' writes (deferred), and TRUNCATE, which fires no row trigger (moved at
-- once: the lock is then held to the COMMIT; a rare, whole-table write).
DO $$
DECLARE t TEXT;
BEGIN
    FOREACH t IN ARRAY ARRAY['cases', 'documents', 'case_links', 'search_entries'] LOOP
        EXECUTE format('DROP TRIGGER IF EXISTS search_generation_rows ON %I', t);
        EXECUTE format('CREATE CONSTRAINT TRIGGER search_generation_rows AFTER INSERT OR UPDATE OR DELETE ON %I '
                       || 'DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION search_generation_bump()', t);
        EXECUTE format('DROP TRIGGER IF EXISTS search_generation_truncate ON %I', t);
        EXECUTE format('CREATE TRIGGER search_generation_truncate AFTER TRUNCATE ON %I '
                       || 'FOR EACH STATEMENT EXECUTE FUNCTION search_generation_bump()', t);
    END LOOP;
END $$;
