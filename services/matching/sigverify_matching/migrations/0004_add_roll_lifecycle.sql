-- The roll version lifecycle (sigverify_matching.versions):
--   loading -> building -> active -> ready (the previous version, rows kept) -> retired
--   loading -> discarded (refused or failed: rows deleted, the record kept)
--   building -> ready (the matchers did not all build its index in time; activate later)
ALTER TABLE matching.roll_versions DROP CONSTRAINT IF EXISTS roll_versions_state_check;
ALTER TABLE matching.roll_versions ADD CONSTRAINT roll_versions_state_check
    CHECK (state IN ('loading', 'building', 'ready', 'active', 'retired', 'discarded'));
ALTER TABLE matching.roll_versions ADD COLUMN IF NOT EXISTS loaded_by text NOT NULL DEFAULT '';
ALTER TABLE matching.roll_versions ADD COLUMN IF NOT EXISTS note text NOT NULL DEFAULT '';
ALTER TABLE matching.roll_versions ADD COLUMN IF NOT EXISTS activated_at timestamptz;
ALTER TABLE matching.roll_versions ADD COLUMN IF NOT EXISTS deactivated_at timestamptz;
UPDATE matching.roll_versions SET activated_at = loaded_at
    WHERE state = 'active' AND activated_at IS NULL;
CREATE UNIQUE INDEX IF NOT EXISTS roll_versions_one_active ON matching.roll_versions ((true))
    WHERE state = 'active';

-- Every activation, with the instant it took effect and the one it ended: each decision's
-- roll version was active when the decision was recorded (decided_at inside a window).
CREATE TABLE IF NOT EXISTS matching.roll_activations (
    id              bigserial PRIMARY KEY,
    version         bigint NOT NULL,
    previous        bigint,
    actor           text NOT NULL,
    reason          text NOT NULL,
    activated_at    timestamptz NOT NULL,
    deactivated_at  timestamptz
);
INSERT INTO matching.roll_activations (version, actor, reason, activated_at)
SELECT version, 'migration', 'active before activations were recorded',
       coalesce(loaded_at, started_at)
FROM matching.roll_versions WHERE state = 'active'
  AND NOT EXISTS (SELECT 1 FROM matching.roll_activations);

-- Each matcher replica's heartbeat: the version it decides with and the versions whose
-- candidate index it holds. A load activates a version only once every live replica holds it.
CREATE TABLE IF NOT EXISTS matching.replicas (
    replica_id       text PRIMARY KEY,
    serving_version  bigint,
    built_versions   bigint[] NOT NULL DEFAULT '{}',
    started_at       timestamptz NOT NULL DEFAULT now(),
    heartbeat_at     timestamptz NOT NULL DEFAULT now()
);

-- A decision's time is when it was written (after its transaction checked that its roll
-- version is active), not when its transaction began.
ALTER TABLE matching.decisions ALTER COLUMN decided_at SET DEFAULT clock_timestamp();
