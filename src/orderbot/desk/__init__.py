"""What the front desk and operators read and change: ``front`` (answered before the dialog),
``requests`` (what a message asks for), ``texts`` (what the customer is told), ``base`` (the
interfaces), ``sqlite`` (embedded), and on the distributed profile (PostgreSQL, Redis flags, the
RabbitMQ outbox) ``postgres`` (the front desk's reads) and ``postgres_admin`` (operators)."""
