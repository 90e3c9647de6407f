-- A roll is COPYed straight into matching.voters under its new (still 'loading') version:
-- the per-row foreign-key check on the version cost more than the COPY itself. load_roll
-- removes a failed load's rows and a retired version's rows explicitly.
ALTER TABLE matching.voters DROP CONSTRAINT IF EXISTS voters_version_fkey;
