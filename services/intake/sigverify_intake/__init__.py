"""Intake: county clerks' batches in, validated rows stored, events out through the outbox."""
