-- Migration 6: the search entries' agencies (migration 5) are kept right by every writer, including one still
-- running older code through an upgrade, and by concurrent writers (review of 0005, findings M1 and M2). The
-- work is in the dialect parts; this shared part changes nothing (a statement, since a script must hold one).
SELECT 1;
