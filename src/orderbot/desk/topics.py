"""Which topic of the operators' Telegram chat holds which customer: ``OperatorTopics`` and its
two homes, the embedded database (``operator_topics``) and Redis (distributed: every worker
and sender reaches it).

The sender writes an entry when it creates a customer's topic (``createForumTopic``); the
front desk reads it both ways: a customer's topic, to post their messages there during a
handoff; a topic's customer, to pass an operator's message on and to hand back on ``/back``.
"""

from __future__ import annotations

import sqlite3
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING

import orjson

from orderbot.storage.sqlite import SqliteDatabase

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from orderbot.storage.redis import RedisKeys

__all__ = ["OperatorTopics", "RedisOperatorTopics", "SqliteOperatorTopics", "Topic"]


@dataclass(frozen=True, slots=True)
class Topic:
    """A customer's topic: ``thread_id`` in the operators' chat, and how to reach them."""

    client_key: str
    thread_id: int
    route: dict[str, str]

    @property
    def channel(self) -> str:
        return self.client_key.partition(":")[0]

    @property
    def client_id(self) -> str:
        return self.client_key.partition(":")[2]


class OperatorTopics(ABC):
    """The map between customers and the forum topics of the operators' chat."""

    @abstractmethod
    async def of_client(self, client_key: str) -> Topic | None:
        """The customer's topic, if one was created."""

    @abstractmethod
    async def of_thread(self, thread_id: int) -> Topic | None:
        """The customer whose topic ``thread_id`` is."""

    @abstractmethod
    async def remember(self, topic: Topic) -> None:
        """Record a topic just created (a second one for the same customer replaces it)."""


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


class RedisOperatorTopics(OperatorTopics):
    """The map in Redis: ``<prefix>:topic:<client key>`` (thread and route, JSON) and
    ``<prefix>:topic-thread:<thread id>`` (the client key); kept without expiry, like the
    topics themselves."""

    def __init__(self, redis: Redis, keys: RedisKeys) -> None:
        self._redis = redis
        self._keys = keys

    async def of_client(self, client_key: str) -> Topic | None:
        raw = await self._redis.get(self._keys.topic(client_key))
        if raw is None:
            return None
        found = orjson.loads(raw)
        route = {str(k): str(v) for k, v in found.get("route", {}).items()}
        return Topic(client_key, int(found["thread_id"]), route)

    async def of_thread(self, thread_id: int) -> Topic | None:
        client_key = await self._redis.get(self._keys.topic_thread(thread_id))
        if client_key is None:
            return None
        key = client_key.decode() if isinstance(client_key, bytes) else str(client_key)
        return await self.of_client(key)

    async def remember(self, topic: Topic) -> None:
        value = orjson.dumps({"thread_id": topic.thread_id, "route": topic.route})
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(self._keys.topic(topic.client_key), value)
            pipe.set(self._keys.topic_thread(topic.thread_id), topic.client_key)
            await pipe.execute()
