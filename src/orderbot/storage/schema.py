"""The database schema: SQLAlchemy 2 tables, the single source for Alembic migrations and for
the SQL the embedded backend precompiles.

Shared by both profiles: ``orders`` (with ``order_items``, ``order_files``,
``order_status_history`` and ``order_notes``), ``handoffs``,
``message_logs``, ``dialog_outcomes``, and the console's ``operators``, ``console_sessions``
and ``login_failures``.
Embedded profile only (queues and dialog state in the same SQLite file): ``inbound_queue``,
``outbox``, ``dead_letters``, ``dialog_states``, ``operator_topics`` (the distributed profile
keeps that map in Redis).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
)

__all__ = [
    "EMBEDDED_TABLES",
    "console_sessions",
    "dead_letters",
    "dialog_outcomes",
    "dialog_states",
    "handoffs",
    "inbound_queue",
    "login_failures",
    "message_logs",
    "metadata",
    "operator_topics",
    "operators",
    "order_files",
    "order_items",
    "order_notes",
    "order_status_history",
    "orders",
    "outbox",
]

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    }
)

# SQLite wants INTEGER PRIMARY KEY for a rowid alias; PostgreSQL gets BIGINT identity.
_Id = BigInteger().with_variant(Integer(), "sqlite")

orders = Table(
    "orders",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("idempotency_key", String(200), nullable=False, unique=True),
    Column("client_id", String(100), nullable=False),
    Column("channel", String(32), nullable=False),
    Column("source", String(64), nullable=False, server_default=""),
    Column("phone", String(32)),
    Column("address", Text),
    Column("quantity", Integer),
    Column("status", String(32), nullable=False, server_default="new"),
    Column("language", String(8), nullable=False, server_default="ru"),
    Column("data", Text, nullable=False, server_default="{}"),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    # Orders from a catalog flow: the sum of order_items.amount (exact, never a float).
    Column("total", Numeric(12, 2)),
    Column("currency", String(3)),
    # What the channel needs to reach the customer again (JSON: transport, channel_id).
    Column("route", Text, nullable=False, server_default="{}"),
    Index(None, "status", "created_at"),
    Index(None, "channel", "client_id"),
    Index(None, "created_at"),
    # The console's board filtered by status, newest (highest id) first without a sort.
    Index("ix_orders_status_id", "status", "id"),
)

order_items = Table(
    "order_items",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("order_id", BigInteger, ForeignKey("orders.id", ondelete="CASCADE"), nullable=False),
    Column("position", Integer, nullable=False),
    Column("item_id", String(100), nullable=False),  # the catalog item's id
    Column("name", Text, nullable=False),  # as the customer saw it, in their language
    Column("quantity", Integer, nullable=False),
    Column("unit", String(32), nullable=False, server_default=""),
    Column("unit_price", Numeric(12, 2), nullable=False),
    Column("amount", Numeric(12, 2), nullable=False),
    UniqueConstraint("order_id", "position"),
    Index(None, "item_id"),
)

order_files = Table(
    "order_files",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("order_id", BigInteger, ForeignKey("orders.id", ondelete="CASCADE"), nullable=False),
    Column("position", Integer, nullable=False),
    Column("name", Text, nullable=False),  # what the customer called it
    Column("checksum", String(64), nullable=False),  # SHA-256, also the stored file's name
    Column("size", BigInteger, nullable=False),
    Column("format", String(8), nullable=False),  # stl | obj | 3mf
    Column("path", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    UniqueConstraint("order_id", "position"),
    Index(None, "checksum"),
)

order_status_history = Table(
    "order_status_history",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("order_id", BigInteger, ForeignKey("orders.id", ondelete="CASCADE"), nullable=False),
    Column("from_status", String(32)),
    Column("to_status", String(32), nullable=False),
    Column("note", Text, nullable=False, server_default=""),
    Column("actor", String(100), nullable=False, server_default=""),  # cli, api, ...
    # The note was told to the customer (in the notification), not kept internal.
    Column("note_public", Boolean, nullable=False, server_default=false()),
    Column("created_at", Float, nullable=False),
    Index(None, "order_id", "id"),
)

# Conversations an operator has taken over: the bot is silent for the client while a row exists.
handoffs = Table(
    "handoffs",
    metadata,
    Column("client_key", String(150), primary_key=True),  # channel:client_id
    Column("channel", String(32), nullable=False),
    Column("client_id", String(100), nullable=False),
    Column("reason", Text, nullable=False, server_default=""),
    Column("since", Float, nullable=False),
    Column("until", Float, nullable=False),  # the bot takes the conversation back by itself
    Index(None, "until"),
)

operator_topics = Table(
    "operator_topics",
    metadata,
    Column("client_key", String(150), primary_key=True),  # channel:client_id
    Column("thread_id", BigInteger, nullable=False, unique=True),  # the forum topic
    Column("route", Text, nullable=False, server_default="{}"),  # how to reach the customer
    Column("created_at", Float, nullable=False),
)

message_logs = Table(
    "message_logs",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("direction", String(3), nullable=False),  # in | out
    Column("channel", String(32), nullable=False),
    Column("client_id", String(100), nullable=False),
    Column("message_key", String(200), nullable=False),
    Column("text", Text, nullable=False, server_default=""),
    Column("dialog_state", String(64)),
    Column("success", Boolean, nullable=False, server_default="1"),
    Column("error", Text),
    Column("created_at", Float, nullable=False),
    Index(None, "channel", "client_id", "created_at"),
    Index(None, "created_at"),
)

dialog_outcomes = Table(
    "dialog_outcomes",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("channel", String(32), nullable=False),
    Column("client_id", String(100), nullable=False),
    Column("outcome", String(16), nullable=False),  # completed | cancelled | abandoned
    Column("last_step", String(64), nullable=False),
    Column("message_count", Integer, nullable=False),
    Column("duration_seconds", Float, nullable=False),
    Column("started_at", Float, nullable=False),
    Column("ended_at", Float, nullable=False),
    Column("order_id", BigInteger),
    Index(None, "outcome", "ended_at"),
    Index(None, "last_step"),
    # The console's numbers for a period: counts per outcome and step, and the median time
    # to order, read from these alone (in index order: no sorting of the period's rows).
    Index("ix_dialog_outcomes_steps", "outcome", "last_step", "ended_at"),
    Index("ix_dialog_outcomes_durations", "outcome", "duration_seconds", "ended_at"),
)

# -- the web console (orderbot.web.console) ---------------------------------------------------

operators = Table(
    "operators",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("role", String(16), nullable=False),  # admin | operator
    Column("password_hash", Text, nullable=False),  # argon2id, with its parameters
    Column("disabled", Boolean, nullable=False, server_default=false()),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)

# A signed-in browser: the cookie holds a random token, the table its SHA-256 (a stolen
# database copy opens no session). Deleted at logout, when the account is disabled or its
# password changes, and after the idle or absolute timeout.
console_sessions = Table(
    "console_sessions",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column(
        "operator_id", BigInteger, ForeignKey("operators.id", ondelete="CASCADE"), nullable=False
    ),
    Column("csrf_token", String(64), nullable=False),
    Column("address", String(64), nullable=False, server_default=""),
    Column("created_at", Float, nullable=False),
    Column("seen_at", Float, nullable=False),
    Index(None, "operator_id"),
)

# Failed console logins, counted per account and per address (shared by every server process).
login_failures = Table(
    "login_failures",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("scope", String(200), nullable=False),  # account:<name> | address:<ip>
    Column("created_at", Float, nullable=False),
    Index(None, "scope", "created_at"),
)

# Internal notes operators keep on an order (never sent to the customer).
order_notes = Table(
    "order_notes",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("order_id", BigInteger, ForeignKey("orders.id", ondelete="CASCADE"), nullable=False),
    Column("author", String(64), nullable=False),
    Column("text", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    Index(None, "order_id", "id"),
)

inbound_queue = Table(
    "inbound_queue",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    # channel:message_id; kept after processing (7 days) so redeliveries are recognised
    Column("dedupe_key", String(200), nullable=False, unique=True),
    Column("channel", String(32), nullable=False),
    Column("client_key", String(150), nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("done", Boolean, nullable=False, server_default="0"),
    Column("deliveries", Integer, nullable=False, server_default="0"),
    Column("created_at", Float, nullable=False),
    Index("ix_inbound_queue_pending", "done", "id"),
    # ids must never be reused: the worker hands out rows by increasing id
    sqlite_autoincrement=True,
)

outbox = Table(
    "outbox",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("key", String(200), nullable=False, unique=True),
    Column("channel", String(32), nullable=False),
    Column("client_id", String(100), nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("status", String(8), nullable=False, server_default="pending"),  # pending | sent | dead
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("not_before", Float, nullable=False, server_default="0"),
    Column("last_error", Text, nullable=False, server_default=""),
    Column("created_at", Float, nullable=False),
    Column("sent_at", Float),
    Index("ix_outbox_pending", "status", "id"),
    sqlite_autoincrement=True,
)

dead_letters = Table(
    "dead_letters",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("kind", String(8), nullable=False),  # outbox | inbound
    Column("key", String(200), nullable=False),
    Column("channel", String(32), nullable=False),
    Column("client_id", String(100), nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("last_error", Text, nullable=False),
    Column("created_at", Float, nullable=False),
)

dialog_states = Table(
    "dialog_states",
    metadata,
    Column("client_key", String(150), primary_key=True),
    Column("state", LargeBinary, nullable=False),
    Column("updated_at", Float, nullable=False),
)

EMBEDDED_TABLES = ("inbound_queue", "outbox", "dead_letters", "dialog_states")
