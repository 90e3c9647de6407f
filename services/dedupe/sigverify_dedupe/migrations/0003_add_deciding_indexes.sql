-- What re-resolving a voter's group reads (consumer.DECIDING_ROWS) instead of the whole group:
-- the earliest MATCHED signatures of each source, in the order keep-first picks the one that
-- counts (signed_on, NULLs last, then received_seq), and the signature that counts now.
CREATE INDEX IF NOT EXISTS signatures_earliest ON dedupe.signatures
    (petition_id, voter_id, online, signed_on, received_seq)
    WHERE voter_id <> '' AND match_reason = 'MATCHED';
CREATE INDEX IF NOT EXISTS signatures_counted ON dedupe.signatures (petition_id, voter_id)
    WHERE voter_id <> '' AND status = 'VALID';
