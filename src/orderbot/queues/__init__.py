"""Queue backends: inbound messages, the outbox of replies, and the dead-letter queue."""
