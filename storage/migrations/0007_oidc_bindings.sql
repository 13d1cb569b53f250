-- Single sign-on accounts are bound by an administrator to the provider's subject AND its issuer (review
-- web15 H1: binding a new account to whoever first logged in with its name as preferred_username let a
-- provider user take it over). A subject is unique only within its issuer, so a binding is the pair; one
-- per account. users.oidc_subject (migration 3), which those first logins filled, is no longer read: such
-- an account does not log in until an administrator binds it (`digitize users bind-oidc NAME SUBJECT`).
-- (IF NOT EXISTS: a migration may run again after an interrupted upgrade.)
CREATE TABLE IF NOT EXISTS oidc_bindings (
    name     TEXT PRIMARY KEY REFERENCES users (name),
    issuer   TEXT NOT NULL,
    subject  TEXT NOT NULL,
    bound_at TEXT NOT NULL,
    UNIQUE (issuer, subject)
);

-- Changes to accounts (users added, bound, disabled; tokens created, revoked), by the portal's /admin or the
-- CLI: who, from where, what, to whom (review web15 L3: "every access recorded"). Their own table: the events
-- table's event_type CHECK lists the document events only, and changing it would rebuild that table.
CREATE TABLE IF NOT EXISTS account_events (
    event_id $id,
    time     TEXT NOT NULL,
    actor    TEXT NOT NULL,
    client   TEXT,
    action   TEXT NOT NULL,
    target   TEXT NOT NULL,
    detail   TEXT  -- what was bound or unbound: the subject and its issuer (review web15b L4)
);
