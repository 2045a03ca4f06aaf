"""Downloading attachments: a :class:`FileFetcher` per kind of link, :class:`HttpFileFetcher`
for ``http(s)://`` (Chat2Desk) and :class:`TelegramFileFetcher` for ``tg://file/<file_id>`` (Bot
API ``getFile``, limited to :data:`TELEGRAM_DOWNLOAD_LIMIT`). Used by
:class:`~orderbot.files.receiver.FileReceiver`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING

from orderbot.errors import OrderbotError
from orderbot.files.formats import CHUNK
from orderbot.messages import Attachment

if TYPE_CHECKING:  # imported at the first download: most processes never download
    import httpx

__all__ = [
    "TELEGRAM_DOWNLOAD_LIMIT",
    "FetchError",
    "FileFetcher",
    "HttpFileFetcher",
    "TelegramFileFetcher",
]

TELEGRAM_DOWNLOAD_LIMIT = 20 * 1024 * 1024
"""The Bot API's ``getFile`` does not hand bots files larger than this."""


class FetchError(OrderbotError):
    """An attachment could not be downloaded (the customer is asked to send it again)."""


class FileFetcher(ABC):
    """Downloads one kind of attachment. ``download_limit`` is what the channel itself lets a
    bot download (``None``: no limit of its own), and ``limit_reason`` the refusal for it."""

    download_limit: int | None = None
    limit_reason: str = "too_large"

    @abstractmethod
    def handles(self, attachment: Attachment) -> bool:
        """Whether this fetcher can download ``attachment`` (by its URL)."""

    @abstractmethod
    def chunks(self, attachment: Attachment) -> AsyncGenerator[bytes, None]:
        """The file's bytes, in chunks; raises :class:`FetchError` when it cannot be had."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook, nothing to close by default
        """Close what the fetcher opened. Idempotent."""


class HttpFileFetcher(FileFetcher):
    """Attachments given as ``http(s)://`` links, such as Chat2Desk's."""

    def __init__(self, client: httpx.AsyncClient | None = None, *, timeout: float = 60.0) -> None:
        self._own_client = client is None
        self._client = client
        self._timeout = timeout

    def _http(self) -> httpx.AsyncClient:
        # Made (and httpx imported) at the first download: most processes never download.
        if self._client is None:
            import httpx

            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self._timeout, connect=10.0), follow_redirects=True
            )
        return self._client

    def handles(self, attachment: Attachment) -> bool:
        return attachment.url.startswith(("http://", "https://"))

    async def chunks(self, attachment: Attachment) -> AsyncGenerator[bytes, None]:
        client = self._http()
        import httpx

        try:
            async with client.stream("GET", attachment.url) as response:
                if response.status_code != 200:
                    raise FetchError(f"HTTP {response.status_code}")
                async for chunk in response.aiter_bytes(CHUNK):
                    yield chunk
        except httpx.HTTPError as exc:
            raise FetchError(f"{type(exc).__name__}: {exc}") from exc

    async def aclose(self) -> None:
        if self._own_client and self._client is not None:
            await self._client.aclose()


class TelegramFileFetcher(HttpFileFetcher):
    """``tg://file/<file_id>`` attachments: Bot API ``getFile``, then the file's download URL.

    The Bot API hands bots files up to 20 MB only; bigger ones are refused as
    ``telegram_limit`` (from the size Telegram reported, before any download) so the customer
    is told why.
    """

    download_limit = TELEGRAM_DOWNLOAD_LIMIT
    limit_reason = "telegram_limit"

    def __init__(
        self,
        token: str,
        *,
        api_url: str = "https://api.telegram.org",
        client: httpx.AsyncClient | None = None,
        timeout: float = 60.0,
    ) -> None:
        super().__init__(client, timeout=timeout)
        self._token = token
        self._api_url = api_url.rstrip("/")

    def handles(self, attachment: Attachment) -> bool:
        return attachment.url.startswith("tg://file/")

    async def chunks(self, attachment: Attachment) -> AsyncGenerator[bytes, None]:
        file_id = attachment.url.removeprefix("tg://file/")
        client = self._http()
        import httpx

        try:
            response = await client.get(
                f"{self._api_url}/bot{self._token}/getFile", params={"file_id": file_id}
            )
            body = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise FetchError(f"getFile: {type(exc).__name__}") from exc
        file_path = body.get("result", {}).get("file_path") if isinstance(body, dict) else None
        if not body.get("ok") or not isinstance(file_path, str):
            raise FetchError(f"getFile: {str(body.get('description', 'no file_path'))[:200]}")
        url = f"{self._api_url}/file/bot{self._token}/{file_path}"
        async for chunk in super().chunks(Attachment(url=url, name=attachment.name)):
            yield chunk
