"""The map between customers and the operators' chat topics in Redis (distributed: every
worker and sender reaches it): :class:`RedisOperatorTopics`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson

from orderbot.desk.base import OperatorTopics, Topic

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from orderbot.storage.redis import RedisKeys

__all__ = ["RedisOperatorTopics"]


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
