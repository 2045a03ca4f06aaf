"""Prometheus metrics. One registry per process (the default), exposed at ``GET /metrics``."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "CIRCUIT_STATE",
    "DIALOG_STEP_SECONDS",
    "ORDERS_CREATED",
    "QUEUE_DEPTH",
    "RATE_LIMIT_WAITS",
    "REPLIES",
    "WEBHOOKS",
]

WEBHOOKS = Counter(
    "orderbot_webhooks_total", "Webhook requests by channel and result", ["channel", "result"]
)
QUEUE_DEPTH = Gauge("orderbot_queue_depth", "Messages waiting per queue", ["queue"])
DIALOG_STEP_SECONDS = Histogram(
    "orderbot_dialog_step_seconds",
    "Time to handle one inbound message (load state, step, commit)",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)
REPLIES = Counter(
    "orderbot_replies_total",
    "Replies by channel and result (sent|retried|dead)",
    ["channel", "result"],
)
ORDERS_CREATED = Counter("orderbot_orders_created_total", "Orders stored", ["channel"])
RATE_LIMIT_WAITS = Counter(
    "orderbot_rate_limit_waits_total", "Sends that waited for the rate limit"
)
CIRCUIT_STATE = Gauge(
    "orderbot_circuit_open", "1 while the channel's circuit breaker is open", ["channel"]
)
