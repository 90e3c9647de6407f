-- Per petition, as states differ: how a voter's repeated signatures are treated, and
-- whether online signatures can count (California: no).
ALTER TABLE intake.petitions ADD COLUMN IF NOT EXISTS duplicate_policy text NOT NULL
    DEFAULT 'keep-first' CHECK (duplicate_policy IN ('keep-first', 'invalidate-all'));
ALTER TABLE intake.petitions ADD COLUMN IF NOT EXISTS accept_online boolean NOT NULL DEFAULT false;
