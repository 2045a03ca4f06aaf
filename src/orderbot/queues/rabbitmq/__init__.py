"""Distributed queues on RabbitMQ: the broker and topology, shard consumers and leases, inbound, outbox, dead letters."""
