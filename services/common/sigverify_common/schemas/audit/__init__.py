"""The ``audit`` schema: the append-only, hash-chained audit log."""
