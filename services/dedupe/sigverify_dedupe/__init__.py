"""Dedupe: one counted signature per voter per petition; publishes final statuses."""
