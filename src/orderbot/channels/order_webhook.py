"""The order webhook as a channel: :class:`OrderWebhookChannel` POSTs a new-order alert's JSON
body (built by :mod:`orderbot.orders.alerts`) to ``ORDER_WEBHOOK_URL``. HTTP outcomes become our
channel errors (429 waits, 5xx and timeouts retry, other 4xx are final). Only outbound.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from orderbot import __version__
from orderbot.channels.base import Channel
from orderbot.channels.chat2desk import parse_retry_after
from orderbot.errors import PermanentError, RateLimited, ServerError, Timeout
from orderbot.messages import InboundMessage, OutboundMessage

if TYPE_CHECKING:  # imported at the first alert sent: most processes never send one
    import httpx

__all__ = ["ORDER_WEBHOOK", "OrderWebhookChannel"]

ORDER_WEBHOOK = "order_webhook"


class OrderWebhookChannel(Channel):
    """Posts new-order alerts to ``url`` (``ORDER_WEBHOOK_URL``): the alert's text is the JSON
    body. Only outbound; there is no webhook to parse."""

    name = ORDER_WEBHOOK

    def __init__(
        self, url: str, *, client: httpx.AsyncClient | None = None, timeout: float = 10.0
    ) -> None:
        self._url = url
        self._timeout = timeout
        self._owns_client = client is None
        self._client = client

    def _http(self) -> httpx.AsyncClient:
        # Made (and httpx imported) at the first alert: the server and workers never send.
        if self._client is None:
            import httpx

            self._client = httpx.AsyncClient(timeout=httpx.Timeout(self._timeout))
        return self._client

    def parse_webhook(self, payload: Any, *, received_at: float) -> InboundMessage | None:
        return None

    async def send(self, message: OutboundMessage) -> None:
        what = "order webhook POST"
        client = self._http()
        import httpx

        try:
            response = await client.post(
                self._url,
                content=message.text.encode(),
                headers={
                    "Content-Type": "application/json",
                    "User-Agent": f"orderbot/{__version__}",
                    "Idempotency-Key": message.key,
                },
            )
        except httpx.TimeoutException:
            raise Timeout(f"{what}: no answer within {self._timeout:g}s") from None
        except httpx.InvalidURL:
            raise PermanentError(f"{what}: invalid URL") from None
        except httpx.HTTPError as exc:
            raise ServerError(f"{what}: {type(exc).__name__}") from None
        status = response.status_code
        if status == 429:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            raise RateLimited(f"{what}: 429, retry after {retry_after:g}s", retry_after=retry_after)
        if status >= 500 or status == 408:
            raise ServerError(f"{what}: {status}")
        if not 200 <= status < 300:
            raise PermanentError(f"{what}: {status}")

    async def aclose(self) -> None:
        if self._owns_client and self._client is not None and not self._client.is_closed:
            await self._client.aclose()
