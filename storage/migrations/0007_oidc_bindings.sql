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
