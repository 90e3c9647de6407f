-- Signatures stored per petition, county, batch and circulator, and how many of them are held
-- back from matching (not released). Triggers on intake.signatures keep the cells in the same
-- transaction as the rows they count (a COPY of a batch, a release, a delete), so that the
-- tally and its gauges read a few hundred cells instead of counting a petition's signatures
-- on every request. The tally's invariant `counts_agree` recounts the rows and compares.
CREATE TABLE IF NOT EXISTS intake.received_counts (
    petition_id    text NOT NULL,
    county         text NOT NULL,
    batch_id       uuid NOT NULL,
    circulator_id  text NOT NULL,
    received       bigint NOT NULL,
    held           bigint NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (petition_id, county, batch_id, circulator_id)
);

-- Each statement's changes are added as one delta per cell, the cells taken in key order (two
-- transactions adding to the same cells wait for each other rather than deadlock).
CREATE OR REPLACE FUNCTION intake.count_received_inserted() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO intake.received_counts AS c (petition_id, county, batch_id, circulator_id,
                                             received, held)
    SELECT petition_id, county, batch_id, circulator_id, count(*),
           count(*) FILTER (WHERE NOT released)
    FROM new_rows GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
    ON CONFLICT (petition_id, county, batch_id, circulator_id) DO UPDATE
        SET received = c.received + EXCLUDED.received, held = c.held + EXCLUDED.held,
            updated_at = now();
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION intake.count_received_updated() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO intake.received_counts AS c (petition_id, county, batch_id, circulator_id,
                                             received, held)
    SELECT petition_id, county, batch_id, circulator_id, sum(r), sum(h)
    FROM (SELECT petition_id, county, batch_id, circulator_id, 1 AS r,
                 (NOT released)::int AS h FROM new_rows
          UNION ALL
          SELECT petition_id, county, batch_id, circulator_id, -1, -(NOT released)::int
          FROM old_rows) d
    GROUP BY 1, 2, 3, 4 HAVING sum(r) <> 0 OR sum(h) <> 0 ORDER BY 1, 2, 3, 4
    ON CONFLICT (petition_id, county, batch_id, circulator_id) DO UPDATE
        SET received = c.received + EXCLUDED.received, held = c.held + EXCLUDED.held,
            updated_at = now();
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION intake.count_received_deleted() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO intake.received_counts AS c (petition_id, county, batch_id, circulator_id,
                                             received, held)
    SELECT petition_id, county, batch_id, circulator_id, -count(*),
           -count(*) FILTER (WHERE NOT released)
    FROM old_rows GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
    ON CONFLICT (petition_id, county, batch_id, circulator_id) DO UPDATE
        SET received = c.received + EXCLUDED.received, held = c.held + EXCLUDED.held,
            updated_at = now();
    RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS signatures_counted_inserted ON intake.signatures;
CREATE TRIGGER signatures_counted_inserted AFTER INSERT ON intake.signatures
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION intake.count_received_inserted();
DROP TRIGGER IF EXISTS signatures_counted_updated ON intake.signatures;
CREATE TRIGGER signatures_counted_updated AFTER UPDATE ON intake.signatures
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION intake.count_received_updated();
DROP TRIGGER IF EXISTS signatures_counted_deleted ON intake.signatures;
CREATE TRIGGER signatures_counted_deleted AFTER DELETE ON intake.signatures
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION intake.count_received_deleted();

-- The rows already stored (the triggers above hold the table's write lock until this
-- migration commits, so none is stored meanwhile).
DELETE FROM intake.received_counts;
INSERT INTO intake.received_counts (petition_id, county, batch_id, circulator_id, received, held)
SELECT petition_id, county, batch_id, circulator_id, count(*), count(*) FILTER (WHERE NOT released)
FROM intake.signatures GROUP BY 1, 2, 3, 4;
