"""Fixtures for a real PostgreSQL server (filled in by the core work)."""
