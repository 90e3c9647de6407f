"""Tally: final status per signature and the counts clerks, campaigns and ops watch."""
