-- Bearer tokens. Only the SHA-256 of a token is stored: the token itself is shown once.
CREATE TABLE IF NOT EXISTS access.tokens (
    token_id     text PRIMARY KEY,
    role         text NOT NULL CHECK (role IN ('clerk', 'reviewer', 'ops', 'admin')),
    -- The clerk's county (canonical spelling); NULL for every other role.
    county       text,
    token_sha256 text NOT NULL UNIQUE CHECK (token_sha256 ~ '^[0-9a-f]{64}$'),
    label        text NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now(),
    -- Token id of the admin who created it, or 'system:<component>'.
    created_by   text NOT NULL,
    revoked_at   timestamptz,
    revoked_by   text,
    CHECK ((role = 'clerk') = (county IS NOT NULL))
);
