-- The counties expected to file; empty: whichever counties send batches.
ALTER TABLE intake.petitions ADD COLUMN IF NOT EXISTS counties text[] NOT NULL DEFAULT '{}';
