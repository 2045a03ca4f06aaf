"""Downloading attachments: a :class:`FileFetcher` per kind of link, :class:`HttpFileFetcher`
for ``http(s)://`` (Chat2Desk) and :class:`TelegramFileFetcher` for ``tg://file/<file_id>`` (Bot
API ``getFile``, limited to :data:`TELEGRAM_DOWNLOAD_LIMIT`). Used by
:class:`~orderbot.files.receiver.FileReceiver`.

A link is a customer's input, so fetching it is guarded (:class:`LinkPolicy`): only ``http`` or
``https`` on the default port, only hosts the channel serves files from (``ATTACHMENT_HOSTS``),
only addresses that are public once resolved; the connection goes to the very address that was
checked (no second lookup an attacker's DNS could answer differently), and every redirect hop is
checked the same way. Each fetcher serves the channels it is named for: a ``tg://`` link that
arrives through Chat2Desk is never fetched with the Telegram bot token.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import zlib
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urljoin, urlsplit

from orderbot.errors import OrderbotError
from orderbot.messages import Attachment

if TYPE_CHECKING:  # imported at the first download: most processes never download
    import httpx

__all__ = [
    "DEFAULT_ATTACHMENT_HOSTS",
    "TELEGRAM_DOWNLOAD_LIMIT",
    "FetchError",
    "FileFetcher",
    "HttpFileFetcher",
    "LinkPolicy",
    "TelegramFileFetcher",
]

TELEGRAM_DOWNLOAD_LIMIT = 20 * 1024 * 1024
"""The Bot API's ``getFile`` does not hand bots files larger than this."""

DEFAULT_ATTACHMENT_HOSTS = ("storage.chat2desk.com", "*.chat2desk.com", "*.chat2desk.com.mx")
"""Where Chat2Desk serves the files customers send: its storage domain
(``chat24_static_files_domain`` of its widget, ``https://storage.chat2desk.com/``; the Mexican
installation uses ``storage.chat2desk.com.mx``). ``ATTACHMENT_HOSTS`` replaces the list."""

CHUNK = 64 * 1024
"""Largest piece a fetcher yields (decoded bytes): what one download holds in memory at once."""

_DEFAULT_PORTS = {"http": 80, "https": 443}
_MAX_REDIRECTS = 3
_DECODERS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}

Resolver = Callable[[str, int], Awaitable[list[str]]]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class FetchError(OrderbotError):
    """An attachment could not be downloaded (the customer is asked to send it again)."""


async def _resolve(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


@dataclass(frozen=True, slots=True)
class LinkPolicy:
    """Which links may be fetched, and at which address.

    ``hosts``: ``name`` (that host, default port), ``*.domain`` (its subdomains), ``name:port``
    (that host on that port too). ``trusted_networks``: addresses outside the public internet
    that may still be connected to (a file proxy in the LAN; tests). Everything else that
    resolves to loopback, private, link-local, shared, multicast, reserved or unspecified
    addresses is refused.
    """

    hosts: tuple[str, ...] = DEFAULT_ATTACHMENT_HOSTS
    trusted_networks: tuple[Network, ...] = ()
    resolver: Resolver = _resolve

    @classmethod
    def parse(cls, hosts: str, trusted_networks: str = "") -> LinkPolicy:
        """From ``ATTACHMENT_HOSTS`` and ``ATTACHMENT_TRUSTED_NETWORKS`` (comma-separated);
        raises ``ValueError`` for a malformed network."""
        names = tuple(p.strip().lower() for p in hosts.split(",") if p.strip())
        networks = tuple(
            ipaddress.ip_network(p.strip(), strict=False)
            for p in trusted_networks.split(",")
            if p.strip()
        )
        return cls(hosts=names, trusted_networks=networks)

    def allows_host(self, host: str, port: int, default_port: int) -> bool:
        """Whether ``host:port`` is on the list (a listed ``host:port`` allows that port)."""
        host = host.lower().rstrip(".")
        for pattern in self.hosts:
            name, listed_port = _split_port(pattern)
            if port != (default_port if listed_port is None else listed_port):
                continue
            if name.startswith("*."):
                if host.endswith(name[1:]):
                    return True
            elif host == name:
                return True
        return False

    def allows_address(self, address: str) -> bool:
        """Whether connecting to ``address`` (an IP) is allowed."""
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if any(ip in network for network in self.trusted_networks):
            return True
        return ip.is_global and not (
            ip.is_multicast or ip.is_reserved or ip.is_unspecified or ip.is_loopback
        )

    async def address_for(self, url: str) -> tuple[str, int, str]:
        """``(host, port, address)`` to connect to for ``url``; raises :class:`FetchError`
        when the link may not be fetched."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise FetchError(f"not a valid link: {exc}") from exc
        scheme = parts.scheme.lower()
        host = (parts.hostname or "").lower()
        if scheme not in _DEFAULT_PORTS or not host:
            raise FetchError(f"not an http(s) link: {scheme or '-'}")
        if parts.username is not None or parts.password is not None:
            raise FetchError("a link with credentials")
        default_port = _DEFAULT_PORTS[scheme]
        port = default_port if port is None else port
        if not self.allows_host(host, port, default_port):
            raise FetchError(f"host not in ATTACHMENT_HOSTS: {host}:{port}")
        try:
            addresses = await self.resolver(host, port)
        except OSError as exc:
            raise FetchError(f"cannot resolve {host}: {exc}") from exc
        # Every address must pass: a name that also resolves inward is refused as a whole.
        if not addresses or not all(self.allows_address(a) for a in addresses):
            raise FetchError(f"{host} resolves to an address that is not public")
        return host, port, addresses[0]


def _split_port(pattern: str) -> tuple[str, int | None]:
    """``"host:8080"`` -> ``("host", 8080)``, ``"host"`` -> ``("host", None)``; an IPv6
    address is written in brackets (``"[2001:db8::1]:8080"``)."""
    name, colon, port = pattern.rpartition(":")
    if colon and port.isdigit() and (name.endswith("]") or ":" not in name):
        return name.strip("[]"), int(port)
    return pattern.strip("[]"), None


async def _decoded(response: httpx.Response) -> AsyncIterator[bytes]:
    """The body in pieces of at most :data:`CHUNK` decoded bytes, however well it compresses:
    a gzip bomb is inflated a piece at a time, and the caller stops at its size limit."""
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        # As it arrives (a chunk size here would wait for 64 KB of a trickle), cut to CHUNK.
        async for data in response.aiter_bytes():  # nothing to decode
            for start in range(0, len(data), CHUNK):
                yield data[start : start + CHUNK]
        return
    if encoding not in _DECODERS:
        raise FetchError(f"content encoding {encoding[:20]!r}")
    decoder = zlib.decompressobj(_DECODERS[encoding])
    try:
        async for raw in response.aiter_raw():
            data = raw
            while data:
                piece = decoder.decompress(data, CHUNK)
                data = decoder.unconsumed_tail
                if piece:
                    yield piece
        rest = decoder.flush(CHUNK)
        if rest:
            yield rest
    except zlib.error as exc:
        raise FetchError(f"broken {encoding} body") from exc


class FileFetcher(ABC):
    """Downloads one kind of attachment. ``download_limit`` is what the channel itself lets a
    bot download (``None``: no limit of its own), and ``limit_reason`` the refusal for it;
    ``channels`` the channels whose attachments it fetches."""

    download_limit: int | None = None
    limit_reason: str = "too_large"
    channels: frozenset[str] = frozenset()

    @abstractmethod
    def handles(self, attachment: Attachment) -> bool:
        """Whether this fetcher can download ``attachment`` (by its URL)."""

    @abstractmethod
    def chunks(self, attachment: Attachment) -> AsyncGenerator[bytes, None]:
        """The file's bytes, in chunks of at most :data:`CHUNK` bytes; raises
        :class:`FetchError` when it cannot be had."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook, nothing to close by default
        """Close what the fetcher opened. Idempotent."""


class HttpFileFetcher(FileFetcher):
    """Attachments given as ``http(s)://`` links, such as Chat2Desk's, fetched under
    ``policy`` (by default: Chat2Desk's storage hosts, public addresses only).

    ``read_timeout`` bounds the wait for each piece; the overall deadline and the minimum rate
    of a download are the receiver's (:class:`~orderbot.files.receiver.FileReceiver`).
    """

    channels = frozenset({"chat2desk"})

    def __init__(
        self,
        client: httpx.AsyncClient | None = None,
        *,
        policy: LinkPolicy | None = None,
        read_timeout: float = 20.0,
    ) -> None:
        self._own_client = client is None
        self._client = client
        self._read_timeout = read_timeout
        self.policy = policy if policy is not None else LinkPolicy()

    def _http(self) -> httpx.AsyncClient:
        # Made (and httpx imported) at the first download: most processes never download.
        if self._client is None:
            import httpx

            # No redirects (each hop is checked here), no proxies from the environment (the
            # connection must go to the address that was checked), and no kept-alive
            # connections (pooled by address, one could carry a request for another name).
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self._read_timeout, connect=10.0),
                follow_redirects=False,
                trust_env=False,
                limits=httpx.Limits(max_keepalive_connections=0),
            )
        return self._client

    def handles(self, attachment: Attachment) -> bool:
        return attachment.url.lower().startswith(("http://", "https://"))

    async def chunks(self, attachment: Attachment) -> AsyncGenerator[bytes, None]:
        url = attachment.url
        for _ in range(_MAX_REDIRECTS + 1):
            host, port, address = await self.policy.address_for(url)
            location = None
            async for piece in self._get(url, host=host, port=port, address=address):
                if isinstance(piece, _Redirect):
                    location = piece.location
                    break
                yield piece
            if location is None:
                return
            url = urljoin(url, location)
        raise FetchError("too many redirects")

    async def _get(
        self, url: str, *, host: str, port: int, address: str | None
    ) -> AsyncGenerator[bytes | _Redirect, None]:
        """GET ``url``; with ``address``, connect to that IP (Host header and TLS name stay
        ``host``)."""
        client = self._http()
        import httpx

        target = httpx.URL(url)
        headers = {"Accept-Encoding": "gzip, deflate"}
        extensions: dict[str, str] = {}
        if address is not None:
            default = _DEFAULT_PORTS.get(target.scheme)
            headers["Host"] = host if port == default else f"{host}:{port}"
            if target.scheme == "https":
                extensions["sni_hostname"] = host
            target = target.copy_with(host=address)
        try:
            async with client.stream(
                "GET", target, headers=headers, extensions=extensions
            ) as response:
                if response.is_redirect and "location" in response.headers:
                    yield _Redirect(response.headers["location"])
                    return
                if response.status_code != 200:
                    raise FetchError(f"HTTP {response.status_code}")
                async for piece in _decoded(response):
                    yield piece
        except httpx.HTTPError as exc:
            raise FetchError(f"{type(exc).__name__}: {exc}") from exc

    async def aclose(self) -> None:
        if self._own_client and self._client is not None:
            await self._client.aclose()


@dataclass(frozen=True, slots=True)
class _Redirect:
    location: str


class TelegramFileFetcher(HttpFileFetcher):
    """``tg://file/<file_id>`` attachments: Bot API ``getFile``, then the file's download URL
    (``<api_url>/file/bot<token>/<file_path>``), for Telegram's own attachments only.

    The Bot API hands bots files up to 20 MB only; bigger ones are refused as
    ``telegram_limit`` (from the size Telegram reported, before any download) so the customer
    is told why. Both requests go to the configured ``TELEGRAM_API_URL`` (a URL the operator
    chose, never one a customer sent).
    """

    download_limit = TELEGRAM_DOWNLOAD_LIMIT
    limit_reason = "telegram_limit"
    channels = frozenset({"telegram"})

    def __init__(
        self,
        token: str,
        *,
        api_url: str = "https://api.telegram.org",
        client: httpx.AsyncClient | None = None,
        read_timeout: float = 20.0,
    ) -> None:
        super().__init__(client, read_timeout=read_timeout)
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
        if not isinstance(body, dict):
            raise FetchError("getFile: not a JSON object")
        result = body.get("result")
        file_path = result.get("file_path") if isinstance(result, dict) else None
        if not body.get("ok") or not isinstance(file_path, str) or ".." in file_path:
            raise FetchError(f"getFile: {str(body.get('description', 'no file_path'))[:200]}")
        url = f"{self._api_url}/file/bot{self._token}/{file_path}"
        async for piece in self._get(url, host="", port=0, address=None):
            if isinstance(piece, _Redirect):
                raise FetchError("getFile: the download URL redirects")
            yield piece
