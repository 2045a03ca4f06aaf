"""How the console reaches its tables on either profile: :class:`~.base.SqlRunner`, with
plain sqlite3 (embedded) and SQLAlchemy + asyncpg (PostgreSQL) implementations."""
