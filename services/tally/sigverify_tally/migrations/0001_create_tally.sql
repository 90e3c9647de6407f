-- The latest verified status of every signature; counts are derived from this table, so
-- a redelivered or older event (lower revision) changes nothing.
CREATE TABLE IF NOT EXISTS tally.results (
    signature_id   uuid PRIMARY KEY,
    petition_id    text NOT NULL,
    batch_id       uuid NOT NULL,
    county         text NOT NULL,
    line           bigint NOT NULL,
    circulator_id  text NOT NULL,
    status         text NOT NULL,
    reason         text NOT NULL,
    voter_id       text NOT NULL,
    score          double precision NOT NULL,
    revision       bigint NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS results_petition ON tally.results (petition_id);
