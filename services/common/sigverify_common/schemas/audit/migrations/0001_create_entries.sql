-- The audit log: append-only and hash-chained (see sigverify_common/audit.py).
CREATE TABLE IF NOT EXISTS audit.entries (
    id        bigserial PRIMARY KEY,
    at        timestamptz NOT NULL,
    -- A token id, or 'system:<service>', or 'anonymous' for a call without a token.
    actor     text NOT NULL,
    action    text NOT NULL,
    subject   text NOT NULL DEFAULT '',
    detail    jsonb NOT NULL DEFAULT '{}',
    -- Unique: two entries can never follow the same one, so the chain cannot fork.
    prev_hash text NOT NULL UNIQUE,
    hash      text NOT NULL UNIQUE
);

CREATE OR REPLACE FUNCTION audit.refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit.entries is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

DROP TRIGGER IF EXISTS entries_append_only ON audit.entries;
CREATE TRIGGER entries_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON audit.entries
    FOR EACH STATEMENT EXECUTE FUNCTION audit.refuse_change();

-- Nobody but the owner gets to change entries. Where services connect as a role that does
-- not own the table (as they should in production), they hold INSERT and SELECT only; the
-- trigger refuses changes even to the owner and superusers.
REVOKE UPDATE, DELETE, TRUNCATE ON audit.entries FROM PUBLIC;
