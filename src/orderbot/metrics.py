"""Prometheus metrics. One registry per process (the default), exposed at ``GET /metrics``."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "CIRCUIT_STATE",
    "DIALOG_STEP_SECONDS",
    "HOUSEKEEPING_FAILURES",
    "INBOUND_DEAD_LETTERS",
    "ORDERS_CREATED",
    "QUEUE_DEPTH",
    "RATE_LIMIT_WAITS",
    "REPLIES",
    "STEP_FAILURES",
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
STEP_FAILURES = Counter(
    "orderbot_step_failures_total",
    "Dialog steps that failed in a way waiting does not cure (data the database refuses, a"
    " bug), by channel; each counts toward MAX_INBOUND_DELIVERIES",
    ["channel"],
)
INBOUND_DEAD_LETTERS = Counter(
    "orderbot_inbound_dead_letters_total",
    "Inbound messages moved to the dead-letter queue after MAX_INBOUND_DELIVERIES, by channel",
    ["channel"],
)
HOUSEKEEPING_FAILURES = Counter(
    "orderbot_housekeeping_failures_total",
    "Runs of a housekeeping job that failed (the other jobs still run), by job",
    ["job"],
)
