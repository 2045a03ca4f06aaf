"""What the front desk and operators read and change: ``base`` (the interfaces), ``sqlite``
(embedded), ``postgres`` (distributed: PostgreSQL, Redis flags, RabbitMQ outbox)."""
