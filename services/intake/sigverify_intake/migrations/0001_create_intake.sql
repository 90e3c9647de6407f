CREATE TABLE IF NOT EXISTS intake.petitions (
    petition_id          text PRIMARY KEY,
    title                text NOT NULL,
    required_signatures  bigint NOT NULL CHECK (required_signatures > 0),
    deadline             date NOT NULL,
    created_at           timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS intake.batches (
    batch_id             uuid PRIMARY KEY,
    petition_id          text NOT NULL REFERENCES intake.petitions,
    county               text NOT NULL,
    client_batch_key     text,
    content_sha256       text NOT NULL,
    filename             text NOT NULL DEFAULT '',
    rows_received        integer NOT NULL,
    signatures_accepted  integer NOT NULL,
    incomplete           integer NOT NULL,
    rejected             jsonb NOT NULL,
    received_at          timestamptz NOT NULL DEFAULT now(),
    -- Resubmitting the same content, or the same client key, is the same batch.
    UNIQUE (petition_id, content_sha256)
);
CREATE UNIQUE INDEX IF NOT EXISTS batches_client_key
    ON intake.batches (petition_id, client_batch_key) WHERE client_batch_key IS NOT NULL;

CREATE TABLE IF NOT EXISTS intake.signatures (
    signature_id   uuid PRIMARY KEY,
    received_seq   bigserial UNIQUE,
    batch_id       uuid NOT NULL REFERENCES intake.batches,
    petition_id    text NOT NULL,
    county         text NOT NULL,
    line           bigint NOT NULL,
    circulator_id  text NOT NULL,
    source         text NOT NULL,
    first_name     text NOT NULL,
    middle_name    text NOT NULL,
    last_name      text NOT NULL,
    street         text NOT NULL,
    unit           text NOT NULL,
    city           text NOT NULL,
    zip            text NOT NULL,
    signed_on      date,
    birth_date     date,
    incomplete     boolean NOT NULL,
    UNIQUE (batch_id, line)
);
CREATE INDEX IF NOT EXISTS signatures_petition ON intake.signatures (petition_id, county);
