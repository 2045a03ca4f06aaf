"""What the front desk and operators read and change: ``base`` (the interfaces), ``sqlite``
(embedded), ``postgres`` and ``postgres_admin`` (distributed: PostgreSQL, Redis flags, the
RabbitMQ outbox)."""
