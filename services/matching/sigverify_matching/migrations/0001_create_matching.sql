-- Voter roll versions: a new load is staged under a new version and made active at the
-- end, so matching keeps using the previous one until then.
CREATE TABLE IF NOT EXISTS matching.roll_versions (
    version     bigserial PRIMARY KEY,
    state       text NOT NULL CHECK (state IN ('loading', 'active', 'retired')),
    rows        bigint NOT NULL DEFAULT 0,
    rejected    bigint NOT NULL DEFAULT 0,
    source      text NOT NULL DEFAULT '',
    started_at  timestamptz NOT NULL DEFAULT now(),
    loaded_at   timestamptz
);

CREATE TABLE IF NOT EXISTS matching.voters (
    version        bigint NOT NULL REFERENCES matching.roll_versions ON DELETE CASCADE,
    voter_id       text NOT NULL,
    first_name     text NOT NULL,
    middle_name    text NOT NULL,
    last_name      text NOT NULL,
    suffix         text NOT NULL,
    birth_date     date,
    street         text NOT NULL,
    unit           text NOT NULL,
    city           text NOT NULL,
    zip            text NOT NULL,
    county         text NOT NULL,
    status         text NOT NULL,
    registered_on  date,
    PRIMARY KEY (version, voter_id)
);

-- One decision per signature (the unique key that makes redelivery harmless).
CREATE TABLE IF NOT EXISTS matching.decisions (
    signature_id  uuid PRIMARY KEY,
    petition_id   text NOT NULL,
    decision      text NOT NULL,
    reason        text NOT NULL,
    voter_id      text NOT NULL,
    score         double precision NOT NULL,
    candidates    jsonb NOT NULL,
    roll_version  bigint NOT NULL,
    decided_at    timestamptz NOT NULL DEFAULT now()
);
