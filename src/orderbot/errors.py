"""The one exception root of orderbot, and the tree under it.

    OrderbotError
    ├── ConfigError              a setting is missing or malformed (named in the message)
    ├── FlowError                a flow file does not load or does not validate
    ├── PayloadError             a webhook body we cannot accept (carries the HTTP status)
    │   ├── MalformedPayload     400: not JSON, or not an object
    │   ├── InvalidPayload       422: a field is missing or has the wrong type
    │   ├── PayloadTooLarge      413
    │   └── UnsupportedMediaType 415
    ├── StorageError             the database or a queue failed
    │   ├── BackendUnavailable   a backing service cannot be reached right now (503)
    │   └── DataRejected         the database refuses this data: the same on every try
    └── ChannelError             sending through a messenger API failed
        ├── RateLimited          429: retry after `retry_after` seconds
        ├── Timeout              no answer in time
        ├── ServerError          5xx or a connection failure: worth retrying
        ├── CircuitOpen          we stopped calling the API for a while
        └── PermanentError       4xx other than 429: retrying will not help

Channel clients translate httpx errors into these at the boundary, so the sender decides
on retries by type and never sees transport exceptions.
"""

from __future__ import annotations

__all__ = [
    "INSTALL_DISTRIBUTED",
    "BackendUnavailable",
    "ChannelError",
    "CircuitOpen",
    "ConfigError",
    "DataRejected",
    "FlowError",
    "InvalidPayload",
    "MalformedPayload",
    "OrderbotError",
    "PayloadError",
    "PayloadTooLarge",
    "PermanentError",
    "RateLimited",
    "ServerError",
    "StorageError",
    "Timeout",
    "UnsupportedMediaType",
]


class OrderbotError(Exception):
    """Root of every error orderbot raises on purpose."""


class ConfigError(OrderbotError):
    """A setting is missing or malformed; the message names the variable."""


INSTALL_DISTRIBUTED = (
    "pip install 'orderbot[distributed]' (from a checkout: pip install -e '.[distributed]')"
)
"""How to install the distributed profile's packages, for the errors that say they are missing."""


class FlowError(OrderbotError):
    """A flow file cannot be loaded or is inconsistent."""


class PayloadError(OrderbotError):
    """A webhook request we reject; ``status`` is the HTTP status to answer with."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, details: list[dict[str, str]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []

    def to_json(self) -> dict[str, object]:
        body: dict[str, object] = {"success": False, "error": self.code, "message": self.message}
        if self.details:
            body["details"] = self.details
        return body


class MalformedPayload(PayloadError):
    status = 400
    code = "malformed_json"


class InvalidPayload(PayloadError):
    status = 422
    code = "invalid_payload"


class PayloadTooLarge(PayloadError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(PayloadError):
    status = 415
    code = "unsupported_media_type"


class StorageError(OrderbotError):
    """The database or a queue failed."""


class BackendUnavailable(StorageError):
    """A backing service is unreachable right now; callers answer 503 and retry later."""

    def __init__(self, message: str, *, retry_after: float = 5.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class DataRejected(StorageError):
    """The database refused the values themselves (too long, out of range, not encodable):
    trying the same write again fails the same way, unlike :class:`BackendUnavailable`. The
    worker counts such a step as a failed delivery, so its message ends in the dead-letter
    queue after ``MAX_INBOUND_DELIVERIES`` instead of holding up its client."""


class ChannelError(OrderbotError):
    """Sending through a messenger API failed."""

    retryable = True


class RateLimited(ChannelError):
    """The API answered 429; wait ``retry_after`` seconds before the next call."""

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Timeout(ChannelError):
    """The API did not answer in time."""


class ServerError(ChannelError):
    """The API failed (5xx) or could not be reached."""


class CircuitOpen(ChannelError):
    """Calls are suspended after repeated failures; retry after ``retry_after`` seconds."""

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentError(ChannelError):
    """The API refused the request (4xx other than 429); retrying the same request will not help."""

    retryable = False
