-- A reviewer's resolution replaces the matcher's decision; the revision orders them.
ALTER TABLE matching.decisions ADD COLUMN IF NOT EXISTS match_revision bigint NOT NULL DEFAULT 0;

-- The review queue: one item per signature the matcher sent to REVIEW.
CREATE TABLE IF NOT EXISTS matching.reviews (
    signature_id  uuid PRIMARY KEY REFERENCES matching.decisions,
    petition_id   text NOT NULL,
    state         text NOT NULL CHECK (state IN ('pending', 'claimed', 'resolved')),
    claimed_by    text,
    claimed_at    timestamptz,
    resolved_by   text,
    resolved_at   timestamptz,
    voter_id      text,
    reason        text,
    note          text NOT NULL DEFAULT '',
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS reviews_open ON matching.reviews (petition_id, state)
    WHERE state <> 'resolved';

-- Decisions sent to review before this table existed.
INSERT INTO matching.reviews (signature_id, petition_id, state)
SELECT signature_id, petition_id, 'pending' FROM matching.decisions WHERE decision = 'REVIEW'
ON CONFLICT DO NOTHING;
