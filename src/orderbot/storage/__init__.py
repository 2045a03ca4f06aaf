"""Storage shared by the backends: the SQLite connection, SQL engines and Alembic, the schema
and migrations, Redis keys and batching, the message log."""
