"""Alembic migrations (run with ``orderbot db upgrade``; ``orderbot run`` applies them itself)."""
