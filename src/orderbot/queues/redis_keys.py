"""The Redis keys of one distributed deployment (:class:`RedisKeys`, every name under
``QUEUE_PREFIX``) and how long the marks among them are kept (:data:`KEEP_SECONDS`). Used by the
RabbitMQ queues, the Redis step store and the PostgreSQL desk; re-exported by
:mod:`orderbot.queues.broker`.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["KEEP_SECONDS", "RedisKeys"]

KEEP_SECONDS = 7 * 24 * 3600


@dataclass(frozen=True, slots=True)
class RedisKeys:
    """Names of the Redis keys of one deployment (``prefix`` keeps test runs apart)."""

    prefix: str

    def deliveries(self, dedupe_key: str) -> str:
        return f"{self.prefix}:deliveries:{dedupe_key}"

    def processed(self, dedupe_key: str) -> str:
        return f"{self.prefix}:processed:{dedupe_key}"

    def state(self, client_key: str) -> str:
        return f"{self.prefix}:state:{client_key}"

    def sent(self, reply_key: str) -> str:
        return f"{self.prefix}:sent:{reply_key}"

    def sending(self, reply_key: str) -> str:
        return f"{self.prefix}:sending:{reply_key}"

    def parked(self, reply_key: str) -> str:
        return f"{self.prefix}:parked:{reply_key}"

    @property
    def parked_index(self) -> str:
        """Sorted set of ``<client>\t<reply key>`` by the time each parked reply is due."""
        return f"{self.prefix}:parked"

    def hold(self, client_key: str) -> str:
        return f"{self.prefix}:hold:{client_key}"

    def rate_limit(self, name: str) -> str:
        return f"{self.prefix}:ratelimit:{name}"

    def topic(self, client_key: str) -> str:
        """The customer's topic in the operators' Telegram chat (thread id and route, JSON)."""
        return f"{self.prefix}:topic:{client_key}"

    def topic_thread(self, thread_id: int) -> str:
        """The customer (client key) whose topic ``thread_id`` is."""
        return f"{self.prefix}:topic-thread:{thread_id}"

    def handoff(self, client_key: str) -> str:
        """Set while the client is with an operator: the cheap check of every message (the
        ``handoffs`` row in PostgreSQL decides; see ``orderbot.desk.postgres``)."""
        return f"{self.prefix}:handoff:{client_key}"

    def pending_notifications(self) -> str:
        """Status changes whose notification may not be published yet: a sorted set of
        ``<order id>:<time>`` by time (``orderbot.desk.postgres``)."""
        return f"{self.prefix}:notify-pending"
