"""SQL migrations of the schemas every service shares (applied by each at start)."""
