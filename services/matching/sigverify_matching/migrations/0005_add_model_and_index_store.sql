-- A roll version's columnar index, built once and saved, so that every matcher replica
-- loads it instead of building it (the bytes are numpy arrays: stored uncompressed).
CREATE TABLE IF NOT EXISTS matching.roll_index (
    version  bigint NOT NULL,
    part     integer NOT NULL,
    data     bytea NOT NULL,
    PRIMARY KEY (version, part)
);
ALTER TABLE matching.roll_index ALTER COLUMN data SET STORAGE EXTERNAL;

CREATE TABLE IF NOT EXISTS matching.roll_index_meta (
    version        bigint PRIMARY KEY,
    parts          integer NOT NULL,
    bytes          bigint NOT NULL,
    format         integer NOT NULL,
    voters         bigint NOT NULL,
    build_seconds  double precision NOT NULL,
    built_by       text NOT NULL,
    built_at       timestamptz NOT NULL DEFAULT now()
);

-- The Fellegi-Sunter models: m learned by EM, u from random pairs, per roll version. The
-- newest model of the active version decides; each decision records its model.
CREATE TABLE IF NOT EXISTS matching.models (
    model_id      bigserial PRIMARY KEY,
    roll_version  bigint NOT NULL,
    model         jsonb NOT NULL,
    signatures    bigint NOT NULL,
    trained_by    text NOT NULL,
    trained_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS models_of_version ON matching.models (roll_version, model_id DESC);

ALTER TABLE matching.decisions ADD COLUMN IF NOT EXISTS model_id bigint NOT NULL DEFAULT 0;
