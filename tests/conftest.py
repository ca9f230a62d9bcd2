"""Fixtures every test tier may use: the legacy monolith's PostgreSQL (``tests/legacy_db.py``)."""

pytest_plugins = ["tests.legacy_db"]
