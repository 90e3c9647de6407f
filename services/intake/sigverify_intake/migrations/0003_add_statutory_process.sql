-- The statutory process (EC 9030; 2 CCR 20520 ff.): how a petition is verified, each
-- county's filing (closed, raw count, sample drawn with a recorded seed), and which stored
-- signatures were sent to matching.
ALTER TABLE intake.petitions ADD COLUMN IF NOT EXISTS method text NOT NULL
    DEFAULT 'full-count' CHECK (method IN ('full-count', 'random-sample'));
ALTER TABLE intake.petitions ADD COLUMN IF NOT EXISTS sample_minimum integer NOT NULL DEFAULT 500
    CHECK (sample_minimum > 0);
ALTER TABLE intake.petitions ADD COLUMN IF NOT EXISTS sample_percent numeric NOT NULL DEFAULT 3
    CHECK (sample_percent > 0 AND sample_percent <= 100);
ALTER TABLE intake.petitions ADD COLUMN IF NOT EXISTS fail_below_percent numeric NOT NULL
    DEFAULT 95;
ALTER TABLE intake.petitions ADD COLUMN IF NOT EXISTS qualify_above_percent numeric NOT NULL
    DEFAULT 110;
ALTER TABLE intake.petitions ADD COLUMN IF NOT EXISTS filing_closes_at timestamptz;
ALTER TABLE intake.petitions ADD COLUMN IF NOT EXISTS full_count_started_at timestamptz;

CREATE TABLE IF NOT EXISTS intake.counties (
    petition_id   text NOT NULL REFERENCES intake.petitions,
    county        text NOT NULL,
    closed_at     timestamptz NOT NULL DEFAULT now(),
    closed_by     text NOT NULL,
    raw_count     integer NOT NULL,
    -- Random sample only (0 and '' otherwise).
    sample_size   integer NOT NULL,
    seed          text NOT NULL,
    PRIMARY KEY (petition_id, county)
);

-- Sent to matching (always, for a full-count petition); sampled: drawn into the county's
-- random sample.
ALTER TABLE intake.signatures ADD COLUMN IF NOT EXISTS released boolean NOT NULL DEFAULT true;
ALTER TABLE intake.signatures ADD COLUMN IF NOT EXISTS sampled boolean NOT NULL DEFAULT false;
CREATE INDEX IF NOT EXISTS signatures_held ON intake.signatures (petition_id, received_seq)
    WHERE NOT released;
