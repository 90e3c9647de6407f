-- Tokens expire. NULL: never (admin tokens made so on purpose, and tokens made before this
-- column existed, which keep working as they were: revoke and re-create them to bound them).
ALTER TABLE access.tokens ADD COLUMN IF NOT EXISTS expires_at timestamptz;
