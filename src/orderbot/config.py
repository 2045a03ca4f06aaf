"""Settings, read once at the edge (the CLI) from the environment and ``.env``, then passed down."""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from orderbot.errors import INSTALL_DISTRIBUTED, ConfigError
from orderbot.files.fetchers import DEFAULT_ATTACHMENT_HOSTS, LinkPolicy

__all__ = ["Settings", "load_settings", "require_distributed", "require_distributed_packages"]

DEFAULT_FLOW = "water"

# The URL settings, the schemes each takes and an example; an empty value switches the feature
# off for those in OPTIONAL_URLS. A URL without a scheme ("api.chat2desk.com/v1") stops the start
# with the variable named (its value is not repeated: it may hold a password).
URL_SCHEMES: dict[str, tuple[tuple[str, ...], str]] = {
    "chat2desk_api_url": (("http", "https"), "https://api.chat2desk.com/v1"),
    "telegram_api_url": (("http", "https"), "https://api.telegram.org"),
    "order_webhook_url": (("http", "https"), "https://shop.example/orders"),
    "redis_url": (("redis", "rediss", "unix"), "redis://127.0.0.1:6379/0"),
    "rabbitmq_url": (("amqp", "amqps"), "amqp://user:password@127.0.0.1:5672/"),
}
OPTIONAL_URLS = frozenset({"order_webhook_url", "redis_url", "rabbitmq_url"})


class Settings(BaseSettings):
    """Every setting orderbot reads. Environment variables use the field name in upper case."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    host: str = "127.0.0.1"
    port: int = Field(3000, ge=1, le=65535)
    # Slow or greedy clients (run and serve): deadlines, sizes and a cap on connections.
    http_header_timeout: float = Field(
        10.0, gt=0, description="seconds to send a request's headers, then the connection closes"
    )
    http_body_timeout: float = Field(
        30.0, gt=0, description="seconds to send a request's body after its headers, then 408"
    )
    http_keep_alive_timeout: int = Field(
        5, ge=1, description="seconds an idle keep-alive connection stays open"
    )
    http_max_connections: int = Field(
        2048, ge=1, description="open connections (or requests in flight) before 503s"
    )
    http_max_header_bytes: int = Field(
        64 * 1024, ge=1024, description="largest request line and headers, bytes (then 431)"
    )
    database_url: str = "sqlite:///orderbot.db"
    sqlite_synchronous: Literal["normal", "full"] = Field(
        "normal",
        description="normal: a 200 survives a process crash; "
        "full: also a power loss (an fsync per commit batch)",
    )

    chat2desk_api_url: str = "https://api.chat2desk.com/v1"
    chat2desk_api_token: str = ""
    chat2desk_timeout: float = Field(10.0, gt=0)
    webhook_secret: str = ""
    webhook_signature_header: str = ""
    webhook_timestamp_header: str = "X-Timestamp"
    webhook_timestamp_tolerance: float = Field(
        300.0, gt=0, description="seconds a signed webhook's timestamp may differ from our clock"
    )

    telegram_bot_token: str = ""
    telegram_webhook_secret: str = Field(
        "", pattern=r"^[A-Za-z0-9_-]{0,256}$", description="1-256 of A-Z a-z 0-9 _ -"
    )
    telegram_api_url: str = "https://api.telegram.org"
    telegram_timeout: float = Field(10.0, gt=0)

    worker_concurrency: int = Field(5, ge=1, le=1000)
    outbound_rate_limit: int = Field(300, ge=1, description="replies per minute, all clients")
    default_phone_region: str = "KG"
    default_language: Literal["ru", "en"] = "ru"
    detect_language: bool = Field(
        True, description="pick ru/en from the script of the customer's first message"
    )
    flow: str = DEFAULT_FLOW
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_format: Literal["console", "json"] = "console"

    # Distributed profile: all three set (and DATABASE_URL on PostgreSQL) switches it on.
    rabbitmq_url: str = ""
    redis_url: str = ""
    queue_prefix: str = Field("orderbot", pattern=r"^[A-Za-z0-9_.-]+$")
    queue_shards: int = Field(8, ge=1, le=256, description="inbound and outbox shard queues")
    database_pool_min: int = Field(5, ge=1)
    database_pool_max: int = Field(20, ge=1)

    # Operators: the admin API, new-order alerts, handoff to a person.
    admin_token: str = Field("", description="Bearer token of the admin API; empty disables it")
    admin_chat_ids: str = Field(
        "", pattern=r"^\s*(-?\d+\s*(,\s*-?\d+\s*)*)?$", description="Telegram chat ids, a,b,c"
    )
    operator_chat_id: str = Field(
        "",
        pattern=r"^\s*(-?\d+)?\s*$",
        description="Telegram supergroup with topics where operators talk to handed-off customers",
    )
    order_webhook_url: str = ""
    handoff_timeout: float = Field(2 * 3600, gt=0, description="seconds before the bot resumes")
    chat2desk_operator_id: int | None = Field(None, ge=1)
    chat2desk_group_id: int | None = Field(None, ge=1)
    # How bot replies are posted (POST /v1/messages; help.chat2desk.com.br "messages (POST)").
    # "autoreply" is Chat2Desk's type for automatic messages to a client (its example: menu
    # messages); operators' own messages are "to_client". Keeping the bot's replies apart lets
    # the outbox webhook tell an operator's message from the bot's, and open_dialog=false keeps
    # every bot conversation out of the operators' queue until a person is asked for.
    chat2desk_reply_type: Literal["autoreply", "to_client"] = Field(
        "autoreply", description="message type of bot replies: autoreply or to_client"
    )
    whatsapp_window_transports: str = Field(
        "wa_dialog,wa_cm,wa_infobip",
        description="Chat2Desk transports on WhatsApp's business API (24-hour window), a,b,c",
    )
    chat2desk_open_dialog: bool = Field(
        False, description="open the dialog in the operators' desk with each bot reply"
    )

    # The web console (/console): where the shop is, and how long a sign-in lasts.
    shop_timezone: str = Field(
        "Asia/Bishkek", description="IANA time zone the console shows times in (stored in UTC)"
    )
    console_idle_timeout: float = Field(
        2 * 3600, gt=0, description="seconds without a request before a console sign-in ends"
    )
    console_session_lifetime: float = Field(
        12 * 3600, gt=0, description="seconds after which a console sign-in ends regardless"
    )
    daily_summary_at: str = Field(
        "",
        pattern=r"^\s*(([01]?\d|2[0-3]):[0-5]\d)?\s*$",
        description="HH:MM (shop's time) of the daily summary to ADMIN_CHAT_IDS; empty: off",
    )
    alert_interval: float = Field(
        900.0,
        gt=0,
        description="seconds: at most one operations alert per kind and channel in this time",
    )
    console_secure_cookie: bool = Field(
        False, description="always mark the session cookie Secure (it is whenever served on https)"
    )

    max_inbound_deliveries: int = Field(5, ge=1, description="then the message is dead-lettered")
    # Distributed profile: sending retries and the circuit breaker (defaults as DESIGN.md).
    send_retry_slow_delay: int = Field(
        300,
        ge=1,
        description="seconds between slow retries, after waits of 1, 2, 4, 8, 16, 32, 60, 120 s",
    )
    circuit_failure_threshold: int = Field(5, ge=1, description="failures in a row to open")
    circuit_cooldown: float = Field(30.0, gt=0, description="seconds open before a trial call")
    shutdown_timeout: float = Field(10.0, ge=0)
    dialog_idle_timeout: float = Field(24 * 3600, gt=0)
    reminder_after: float = Field(
        1800,
        ge=0,
        description="seconds idle at a step before the one reminder of an unfinished order;"
        " 0 = off",
    )
    upload_dir: Path = Field(Path("uploads"), description="where model files are stored")
    max_upload_mb: int = Field(50, ge=1, le=2048, description="largest model file accepted, MB")
    upload_retention: float = Field(
        48 * 3600,
        gt=0,
        description="seconds before a file no order uses (cancelled dialog) is deleted",
    )
    attachment_hosts: str = Field(
        ",".join(DEFAULT_ATTACHMENT_HOSTS),
        description="hosts Chat2Desk attachment links may point to: host, *.domain, host:port",
    )
    attachment_trusted_networks: str = Field(
        "",
        description="non-public networks (CIDR, comma-separated) links may still resolve to",
    )
    download_timeout: float = Field(300.0, gt=0, description="seconds for one whole download")
    download_min_rate: int = Field(
        8 * 1024, ge=0, description="bytes/s a download must average after its first 10 s"
    )
    download_concurrency: int = Field(
        2, ge=1, le=64, description="attachments downloaded and checked at once, per process"
    )

    @field_validator("attachment_trusted_networks")
    @classmethod
    def _networks(cls, value: str) -> str:
        LinkPolicy.parse("", value)  # ValueError names the malformed network
        return value

    @property
    def link_policy(self) -> LinkPolicy:
        """``ATTACHMENT_HOSTS`` and ``ATTACHMENT_TRUSTED_NETWORKS`` as a link policy."""
        return LinkPolicy.parse(self.attachment_hosts, self.attachment_trusted_networks)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator(
        "log_format",
        "default_language",
        "sqlite_synchronous",
        "chat2desk_reply_type",
        mode="before",
    )
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("chat2desk_operator_id", "chat2desk_group_id", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("default_phone_region", mode="before")
    @classmethod
    def _region(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.strip().upper()
            if len(value) != 2 or not value.isalpha():
                raise ValueError("must be a two-letter country code such as KG")
        return value

    @field_validator("shop_timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("must be an IANA time zone such as Asia/Bishkek") from None
        return value

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        if not value.startswith(("sqlite", "postgresql", "postgres")):
            raise ValueError("must start with sqlite:/// or postgresql://")
        return value

    @field_validator(*URL_SCHEMES)
    @classmethod
    def _url(cls, value: str, info: ValidationInfo) -> str:
        name = info.field_name or ""
        if not value and name in OPTIONAL_URLS:
            return value
        schemes, example = URL_SCHEMES[name]
        parts = urlsplit(value)
        if parts.scheme not in schemes or not (parts.netloc or parts.scheme == "unix"):
            raise ValueError(
                f"must be a URL starting with {' or '.join(s + '://' for s in schemes)}, "
                f"such as {example}"
            )
        if any(c.isspace() for c in value):
            raise ValueError(f"must be a URL without spaces, such as {example}")
        return value

    @model_validator(mode="after")
    def _telegram_chats_need_the_bot(self) -> Settings:
        for name, value in (
            ("ADMIN_CHAT_IDS", self.admin_chat_ids),
            ("OPERATOR_CHAT_ID", self.operator_chat_id),
        ):
            if value.strip() and not self.telegram_bot_token:
                raise ValueError(
                    f"{name} is set, but TELEGRAM_BOT_TOKEN is empty: the bot writes to the "
                    f"Telegram chats in {name} with its token; set TELEGRAM_BOT_TOKEN or "
                    f"clear {name}"
                )
        return self

    @property
    def is_distributed(self) -> bool:
        """RabbitMQ, Redis and PostgreSQL are all configured (``orderbot serve/worker/sender``)."""
        return bool(self.rabbitmq_url and self.redis_url) and not self.is_sqlite

    @property
    def window_transports(self) -> tuple[str, ...]:
        """``WHATSAPP_WINDOW_TRANSPORTS`` as a list."""
        return tuple(p.strip() for p in self.whatsapp_window_transports.split(",") if p.strip())

    @property
    def admin_chats(self) -> tuple[str, ...]:
        """``ADMIN_CHAT_IDS`` as a list of Telegram chat ids."""
        return tuple(part.strip() for part in self.admin_chat_ids.split(",") if part.strip())

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def sqlite_path(self) -> Path:
        """The file behind a ``sqlite:///path`` URL (any driver suffix is ignored)."""
        _, _, rest = self.database_url.partition(":///")
        if not rest:
            raise ConfigError(f"DATABASE_URL: cannot find a file path in {self.database_url!r}")
        return Path(rest)


def load_settings(**overrides: object) -> Settings:
    """Build settings, turning validation errors into one line that names the variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            name = ".".join(str(p) for p in err["loc"]).upper()
            # pydantic prefixes the text of a ValueError raised by a validator.
            message = err["msg"].removeprefix("Value error, ")
            problems.append(f"{name}: {message}" if name else message)
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None


def require_distributed(settings: Settings) -> None:
    """Raise ConfigError naming what is missing for the distributed profile."""
    missing = [
        name
        for name, value in (
            ("RABBITMQ_URL", settings.rabbitmq_url),
            ("REDIS_URL", settings.redis_url),
        )
        if not value
    ]
    if settings.is_sqlite:
        missing.append("DATABASE_URL (postgresql://...)")
    if missing:
        raise ConfigError(
            "the distributed profile (serve, worker, sender) needs " + ", ".join(missing)
        )


def require_distributed_packages() -> None:
    """Raise ConfigError when the distributed profile's packages (the ``distributed`` extra)
    are not installed."""
    import importlib.util

    missing = [
        name for name in ("aio_pika", "redis", "asyncpg") if importlib.util.find_spec(name) is None
    ]
    if missing:
        raise ConfigError(
            "the distributed profile needs its extra packages (missing: "
            + ", ".join(missing)
            + f"): {INSTALL_DISTRIBUTED}"
        )
