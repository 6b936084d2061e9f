"""Test set-up: a real PostgreSQL cluster per session; fixtures from tests/support."""

pytest_plugins = ["tests.support.postgres", "tests.support.pipeline"]
