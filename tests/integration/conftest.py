"""The integration tests share the session's stack from ``tests/conftest.py``."""
