"""Distributed queues on RabbitMQ: the broker and topology, shard consumers and leases, the
inbound queue, the outbox, the dead-letter queue."""
