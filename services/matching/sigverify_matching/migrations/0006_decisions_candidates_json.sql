-- A decision's candidates (its evidence: read back whole by explain and review, never queried
-- inside) are kept as json, not jsonb: PostgreSQL only checks json text, where it parses and
-- rebuilds jsonb (10.5 against 3.1 µs a decision of three candidates, measured on this
-- project's stored form).
ALTER TABLE matching.decisions ALTER COLUMN candidates TYPE json USING candidates::json;
