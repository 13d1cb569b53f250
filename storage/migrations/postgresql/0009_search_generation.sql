-- PostgreSQL part of migration 9: one row whose value moves with every committed write that may change a
-- search's answer (storage/index_pg.py PostgresIndex.search_generation). The writer's transaction updates it
-- as its last statement before COMMIT (storage/index.py Index.transaction), so the new value and the new rows
-- become visible together: a reader that reads the value first and then searches (each statement its own
-- READ COMMITTED snapshot) never finds rows older than that value, from any process on any host. ``epoch``
-- is random per database: a database dropped and made again never repeats a (epoch, value) pair.
-- (IF NOT EXISTS, ON CONFLICT: a migration may run again after an interrupted upgrade.)
CREATE TABLE IF NOT EXISTS search_generation (
    one   BOOLEAN PRIMARY KEY DEFAULT true CHECK (one),
    epoch TEXT NOT NULL,
    value BIGINT NOT NULL
);
INSERT INTO search_generation (epoch, value) VALUES (gen_random_uuid()::text, 0) ON CONFLICT DO NOTHING;
