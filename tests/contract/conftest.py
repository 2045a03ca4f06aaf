"""The contract's ``backend`` fixture: every case runs on SQLite, and on PostgreSQL + Redis +
RabbitMQ wherever they are reachable (the fixture and its helpers live with the distributed
tests, which use them too)."""

from tests.distributed.conftest import backend

__all__ = ["backend"]
