"""The two profiles' runtimes: embedded (one SQLite file, one process) and distributed
(PostgreSQL, Redis, RabbitMQ)."""
