"""The map between customers and the operators' chat topics in the embedded database
(``operator_topics``): :class:`SqliteOperatorTopics`."""

from __future__ import annotations

import sqlite3
import time

import orjson

from orderbot.desk.base import OperatorTopics, Topic
from orderbot.storage.sqlite import SqliteDatabase

__all__ = ["SqliteOperatorTopics"]


class SqliteOperatorTopics(OperatorTopics):
    """The map in the embedded database's ``operator_topics`` table."""

    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    async def of_client(self, client_key: str) -> Topic | None:
        return await self._db.run(
            lambda conn: _row(
                conn.execute(
                    "SELECT client_key, thread_id, route FROM operator_topics WHERE client_key = ?",
                    (client_key,),
                ).fetchone()
            )
        )

    async def of_thread(self, thread_id: int) -> Topic | None:
        return await self._db.run(
            lambda conn: _row(
                conn.execute(
                    "SELECT client_key, thread_id, route FROM operator_topics WHERE thread_id = ?",
                    (thread_id,),
                ).fetchone()
            )
        )

    async def remember(self, topic: Topic) -> None:
        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO operator_topics (client_key, thread_id, route, created_at)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (client_key) DO UPDATE SET"
                " thread_id = excluded.thread_id, route = excluded.route",
                (topic.client_key, topic.thread_id, orjson.dumps(topic.route), time.time()),
            )

        await self._db.run(write)


def _row(row: tuple[str, int, str | bytes] | None) -> Topic | None:
    if row is None:
        return None
    route = orjson.loads(row[2] or b"{}")
    return Topic(row[0], int(row[1]), {str(k): str(v) for k, v in route.items()})
