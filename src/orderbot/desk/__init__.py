"""What the front desk and operators read and change: ``base`` (the interfaces), ``sqlite``
(embedded), and on the distributed profile (PostgreSQL, Redis flags, the RabbitMQ outbox)
``postgres`` (the front desk's reads) and ``postgres_admin`` (operators), with
``postgres_orders``, ``postgres_notifications`` and ``postgres_handbacks`` holding its parts."""
