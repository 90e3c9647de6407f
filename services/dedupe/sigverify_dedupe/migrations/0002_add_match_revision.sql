-- A reviewer's resolution arrives as a SignatureMatched with a higher match revision.
ALTER TABLE dedupe.signatures ADD COLUMN IF NOT EXISTS match_revision bigint NOT NULL DEFAULT 0;
-- Online signatures take part in duplicate detection even where they cannot count.
ALTER TABLE dedupe.signatures ADD COLUMN IF NOT EXISTS online boolean NOT NULL DEFAULT false;
