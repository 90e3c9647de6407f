CREATE SEQUENCE IF NOT EXISTS dedupe.revision_seq;

-- Every matched signature, with the matcher's outcome and the final status dedupe gave it.
CREATE TABLE IF NOT EXISTS dedupe.signatures (
    signature_id   uuid PRIMARY KEY,
    petition_id    text NOT NULL,
    batch_id       uuid NOT NULL,
    county         text NOT NULL,
    line           bigint NOT NULL,
    circulator_id  text NOT NULL,
    voter_id       text NOT NULL,
    signed_on      date,
    received_seq   bigint NOT NULL,
    match_reason   text NOT NULL,
    score          double precision NOT NULL,
    status         text NOT NULL,
    reason         text NOT NULL,
    revision       bigint NOT NULL
);
CREATE INDEX IF NOT EXISTS signatures_voter ON dedupe.signatures (petition_id, voter_id)
    WHERE voter_id <> '';
