"""Fixtures for the pipeline tests (PDF factory, local HTTP server)."""
