-- The tally reads a petition's sampled signatures on every GetTally/WatchTally: index them
-- so that a full-count petition (none sampled) costs nothing.
CREATE INDEX IF NOT EXISTS signatures_sampled ON intake.signatures (petition_id, county)
    WHERE sampled;
