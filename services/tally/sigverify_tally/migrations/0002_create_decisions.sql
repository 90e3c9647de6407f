-- The statutory process's decisions, once made never changed: the raw count's failure, the
-- decision on the random sample's projection (with every county's figures as they were),
-- and the full count's result. Intake reads the random sample's FULL_COUNT decision to
-- send the remaining signatures to matching, and the full count's to stop (AB 2219).
CREATE TABLE IF NOT EXISTS tally.decisions (
    petition_id  text NOT NULL,
    stage        text NOT NULL CHECK (stage IN ('raw-count', 'random-sample', 'full-count')),
    outcome      text NOT NULL CHECK (outcome IN ('FAILS', 'FULL_COUNT', 'QUALIFIES')),
    detail       jsonb NOT NULL,
    decided_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (petition_id, stage)
);
