-- Verified results per petition, county, batch, circulator, status and reason. Triggers on
-- tally.results keep the cells in the same transaction as the rows (an applied batch, a
-- revision, a delete), so that GetTally, WatchTally, the gauges and the statutory decisions
-- read a few hundred cells instead of counting a petition's results on every request. The
-- invariant `counts_agree` recounts the rows and compares.
CREATE TABLE IF NOT EXISTS tally.result_counts (
    petition_id    text NOT NULL,
    county         text NOT NULL,
    batch_id       uuid NOT NULL,
    circulator_id  text NOT NULL,
    status         text NOT NULL,
    reason         text NOT NULL,
    n              bigint NOT NULL,
    -- The last time a result in the cell was written (also by a revision that left the count
    -- as it was): a statutory decision waits until the petition's results are still.
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (petition_id, county, batch_id, circulator_id, status, reason)
);

-- One delta per cell and statement, the cells taken in key order (two transactions adding to
-- the same cells wait for each other rather than deadlock).
CREATE OR REPLACE FUNCTION tally.count_results_inserted() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO tally.result_counts AS c (petition_id, county, batch_id, circulator_id,
                                          status, reason, n)
    SELECT petition_id, county, batch_id, circulator_id, status, reason, count(*)
    FROM new_rows GROUP BY 1, 2, 3, 4, 5, 6 ORDER BY 1, 2, 3, 4, 5, 6
    ON CONFLICT (petition_id, county, batch_id, circulator_id, status, reason) DO UPDATE
        SET n = c.n + EXCLUDED.n, updated_at = now();
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION tally.count_results_updated() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO tally.result_counts AS c (petition_id, county, batch_id, circulator_id,
                                          status, reason, n)
    SELECT petition_id, county, batch_id, circulator_id, status, reason, sum(d)
    FROM (SELECT petition_id, county, batch_id, circulator_id, status, reason, 1 AS d
          FROM new_rows
          UNION ALL
          SELECT petition_id, county, batch_id, circulator_id, status, reason, -1
          FROM old_rows) x
    GROUP BY 1, 2, 3, 4, 5, 6 ORDER BY 1, 2, 3, 4, 5, 6
    ON CONFLICT (petition_id, county, batch_id, circulator_id, status, reason) DO UPDATE
        SET n = c.n + EXCLUDED.n, updated_at = now();
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION tally.count_results_deleted() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO tally.result_counts AS c (petition_id, county, batch_id, circulator_id,
                                          status, reason, n)
    SELECT petition_id, county, batch_id, circulator_id, status, reason, -count(*)
    FROM old_rows GROUP BY 1, 2, 3, 4, 5, 6 ORDER BY 1, 2, 3, 4, 5, 6
    ON CONFLICT (petition_id, county, batch_id, circulator_id, status, reason) DO UPDATE
        SET n = c.n + EXCLUDED.n, updated_at = now();
    RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS results_counted_inserted ON tally.results;
CREATE TRIGGER results_counted_inserted AFTER INSERT ON tally.results
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION tally.count_results_inserted();
DROP TRIGGER IF EXISTS results_counted_updated ON tally.results;
CREATE TRIGGER results_counted_updated AFTER UPDATE ON tally.results
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION tally.count_results_updated();
DROP TRIGGER IF EXISTS results_counted_deleted ON tally.results;
CREATE TRIGGER results_counted_deleted AFTER DELETE ON tally.results
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION tally.count_results_deleted();

-- The results already applied (the triggers above hold the table's write lock until this
-- migration commits).
DELETE FROM tally.result_counts;
INSERT INTO tally.result_counts (petition_id, county, batch_id, circulator_id, status, reason, n)
SELECT petition_id, county, batch_id, circulator_id, status, reason, count(*)
FROM tally.results GROUP BY 1, 2, 3, 4, 5, 6;
