-- Single sign-on accounts are bound by an administrator to the provider's subject AND its issuer (review
-- web15 H1: binding a new account to whoever first logged in with its name as preferred_username let a
-- provider user take it over). A subject is unique only within its issuer, so the issuer is kept with it;
-- a binding made at a first login before this migration has none and no longer logs in until an
-- administrator binds the account again (`digitize users bind-oidc NAME SUBJECT`).
ALTER TABLE users ADD COLUMN oidc_issuer TEXT;
