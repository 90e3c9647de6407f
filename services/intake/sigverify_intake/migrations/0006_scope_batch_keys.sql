-- A client batch key and a batch's content are the same batch only within one county of a
-- petition: Kern's "batch-001" is not Alameda's.
ALTER TABLE intake.batches DROP CONSTRAINT IF EXISTS batches_petition_id_content_sha256_key;
DROP INDEX IF EXISTS intake.batches_client_key;
CREATE UNIQUE INDEX IF NOT EXISTS batches_county_content
    ON intake.batches (petition_id, county, content_sha256);
CREATE UNIQUE INDEX IF NOT EXISTS batches_county_key
    ON intake.batches (petition_id, county, client_batch_key) WHERE client_batch_key IS NOT NULL;

-- Every rejected row, in file order (a receipt carries the first 1,000; `rejected` keeps
-- those too), and their count.
ALTER TABLE intake.batches ADD COLUMN IF NOT EXISTS rows_rejected integer;
UPDATE intake.batches SET rows_rejected = jsonb_array_length(rejected) WHERE rows_rejected IS NULL;
ALTER TABLE intake.batches ALTER COLUMN rows_rejected SET DEFAULT 0;
ALTER TABLE intake.batches ALTER COLUMN rows_rejected SET NOT NULL;

CREATE TABLE IF NOT EXISTS intake.rejections (
    batch_id  uuid NOT NULL REFERENCES intake.batches,
    ordinal   integer NOT NULL,
    record    bigint NOT NULL,
    line      bigint NOT NULL,
    field     text NOT NULL,
    reason    text NOT NULL,
    PRIMARY KEY (batch_id, ordinal)
);
INSERT INTO intake.rejections (batch_id, ordinal, record, line, field, reason)
SELECT b.batch_id, (e.n - 1)::integer, (e.v->>'record')::bigint, (e.v->>'line')::bigint,
       e.v->>'field', e.v->>'reason'
FROM intake.batches b CROSS JOIN LATERAL jsonb_array_elements(b.rejected) WITH ORDINALITY AS e(v, n)
ON CONFLICT DO NOTHING;
