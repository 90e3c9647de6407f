"""The ``access`` schema: bearer tokens (hashes only)."""
