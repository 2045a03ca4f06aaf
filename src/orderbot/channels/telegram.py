"""Telegram, directly: Bot API ``Update`` objects in (webhook or long polling), Bot API calls out.

Parsing runs on the webhook hot path, so like the Chat2Desk adapter it is plain dict and type
checks. The client id is the chat id and the message id is the ``update_id`` (Telegram redelivers
an update until it gets a 2xx, for up to 24 hours; the inbound queue drops what it has seen).

Sending uses ``parse_mode=HTML`` with every text escaped (the bot's texts are plain text, and a
customer's name or file name with ``<`` or ``&`` must never break a message), turns buttons into
an inline keyboard, splits texts over 4,096 characters, answers the callback query a reply is
for, and paces itself within Telegram's limits: about one message a second per chat, 30 a
second overall. Every HTTP outcome becomes an :mod:`orderbot.errors` channel error; no httpx
exception, and never the bot token (it is part of every URL), leaves this module.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import html
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from orderbot.channels.base import Channel, invalid_field, json_type_name
from orderbot.channels.chat2desk import parse_retry_after
from orderbot.errors import (
    ChannelError,
    InvalidPayload,
    PermanentError,
    RateLimited,
    ServerError,
    Timeout,
)
from orderbot.loggers import mask_text
from orderbot.messages import Attachment, InboundMessage, OutboundMessage
from orderbot.ratelimit import LocalRateLimiter, RateLimiter

if TYPE_CHECKING:  # imported at the first Bot API call
    import httpx

__all__ = [
    "ALLOWED_UPDATES",
    "BOT_COMMANDS",
    "DEFAULT_API_URL",
    "MAX_CALLBACK_DATA",
    "MAX_TEXT",
    "SECRET_HEADER",
    "TelegramChannel",
    "callback_data",
    "inline_keyboard",
    "poll_updates",
    "split_text",
]

log = logging.getLogger("orderbot.telegram")

DEFAULT_API_URL = "https://api.telegram.org"
SECRET_HEADER = "x-telegram-bot-api-secret-token"  # noqa: S105 - a header name, not a secret
MAX_TEXT = 4096
MAX_CALLBACK_DATA = 64
ALLOWED_UPDATES = ("message", "callback_query")
# The menu behind the "/" button, per language (the default list is the Russian one).
BOT_COMMANDS: dict[str, tuple[tuple[str, str], ...]] = {
    "ru": (
        ("start", "Главное меню"),
        ("services", "Услуги и цены"),
        ("order", "Оформить заказ"),
        ("track", "Статус заказа"),
        ("help", "Помощь"),
        ("cancel", "Отменить"),
    ),
    "en": (
        ("start", "Main menu"),
        ("services", "Services and prices"),
        ("order", "Place an order"),
        ("track", "Track an order"),
        ("help", "Help"),
        ("cancel", "Cancel"),
    ),
}

# Per chat: Telegram asks for about one message a second; per bot: 30 a second.
DEFAULT_CHAT_INTERVAL = 1.0
DEFAULT_GLOBAL_RATE_PER_MINUTE = 30 * 60
_MAX_PACED_CHATS = 10_000
_MAX_TRACKED_REPLIES = 10_000
# Message kinds that carry a file, and the attachment kind each becomes. "animation" comes with a
# "document" copy of the same file; the first match wins so it is not counted twice.
_MEDIA = (
    ("animation", "video"),
    ("document", "document"),
    ("audio", "audio"),
    ("voice", "audio"),
    ("video", "video"),
    ("video_note", "video"),
    ("sticker", "sticker"),
)
_CALLBACK = re.compile(r"(\d{1,2})([:#])(.*)", re.DOTALL)
_SHORT_LABEL = 20
_EXCERPT_CHARS = 200


def _object(
    parent: Mapping[str, Any], key: str, path: str, *, required: bool
) -> dict[str, Any] | None:
    value = parent.get(key)
    if value is None:
        if required:
            raise invalid_field(f"{path}.{key}" if path else key, "missing")
        return None
    if type(value) is not dict:
        raise invalid_field(
            f"{path}.{key}" if path else key, f"must be an object, not {json_type_name(value)}"
        )
    return value


def _integer(parent: Mapping[str, Any], key: str, path: str) -> int:
    value = parent.get(key)
    # ``type(...) is`` on purpose: bool is an int subclass.
    if type(value) is int:
        return value
    where = f"{path}.{key}" if path else key
    if value is None:
        raise invalid_field(where, "missing")
    raise invalid_field(where, f"must be an integer, not {json_type_name(value)}")


def _string(
    parent: Mapping[str, Any], key: str, path: str, *, required: bool = False
) -> str | None:
    value = parent.get(key)
    if value is None:
        if required:
            raise invalid_field(f"{path}.{key}", "missing")
        return None
    if type(value) is not str:
        raise invalid_field(f"{path}.{key}", f"must be a string, not {json_type_name(value)}")
    return value


def _file(item: Mapping[str, Any], path: str, kind: str) -> Attachment:
    file_id = _string(item, "file_id", path, required=True)
    if not file_id:
        raise invalid_field(f"{path}.file_id", "must not be empty")
    name = _string(item, "file_name", path) or ""
    mime_type = _string(item, "mime_type", path) or ""
    size = item.get("file_size")
    if size is not None and (type(size) is not int or size < 0):
        raise invalid_field(f"{path}.file_size", f"must be a non-negative integer, not {size!r}")
    return Attachment(
        url=f"tg://file/{file_id}", name=name, mime_type=mime_type, size=size, kind=kind
    )


def _photo(sizes: object, path: str) -> Attachment:
    if type(sizes) is not list or not sizes:
        raise invalid_field(path, "must be a non-empty array of photo sizes")
    best: tuple[int, int, int] | None = None
    for index, size in enumerate(sizes):
        if type(size) is not dict:
            raise invalid_field(
                f"{path}[{index}]", f"must be an object, not {json_type_name(size)}"
            )
        width, height, file_size = size.get("width"), size.get("height"), size.get("file_size")
        area = width * height if type(width) is int and type(height) is int else 0
        weight = (area, file_size if type(file_size) is int else 0, index)
        if best is None or weight > best:
            best = weight
    assert best is not None
    chosen = f"{path}[{best[2]}]"
    return _file(sizes[best[2]], chosen, "photo")


def _attachments(message: Mapping[str, Any]) -> list[Attachment]:
    found: list[Attachment] = []
    for key, kind in _MEDIA:
        item = _object(message, key, "message", required=False)
        if item is not None:
            found.append(_file(item, f"message.{key}", kind))
            break
    if message.get("photo") is not None:
        found.append(_photo(message["photo"], "message.photo"))
    location = _object(message, "location", "message", required=False)
    if location is not None:
        lat, lon = location.get("latitude"), location.get("longitude")
        if type(lat) not in (int, float) or type(lon) not in (int, float):
            raise invalid_field("message.location", "latitude and longitude must be numbers")
        found.append(Attachment(url=f"geo:{lat},{lon}", kind="location"))
    return found


def callback_data(index: int, label: str) -> str:
    """The callback data of button ``index``: ``"<index>:<label>"`` when that fits in Telegram's
    64 bytes, else ``"<index>#<hash of the label>"`` (the parser then reads the label from the
    keyboard of the message the button belongs to, or falls back to the button's number)."""
    data = f"{index}:{label}"
    if len(data.encode()) <= MAX_CALLBACK_DATA:
        return data
    digest = hashlib.sha256(label.encode()).hexdigest()[:16]
    return f"{index}#{digest}"


def inline_keyboard(buttons: Sequence[str]) -> list[list[dict[str, str]]]:
    """Buttons as inline keyboard rows: short labels side by side (3 a row when that fills
    every row, else 2), long ones one a row."""
    keys = [
        {"text": label, "callback_data": callback_data(i, label)} for i, label in enumerate(buttons)
    ]
    if any(len(label) > _SHORT_LABEL for label in buttons):
        per_row = 1
    else:
        per_row = 3 if len(keys) % 3 == 0 else 2
    return [keys[i : i + per_row] for i in range(0, len(keys), per_row)]


def _button_text(data: str, message: Mapping[str, Any] | None) -> str:
    """What a pressed button means to the dialog: its label."""
    markup = message.get("reply_markup") if message is not None else None
    rows = markup.get("inline_keyboard") if type(markup) is dict else None
    if type(rows) is list:
        for row in rows:
            for button in row if type(row) is list else ():
                if (
                    type(button) is dict
                    and button.get("callback_data") == data
                    and type(button.get("text")) is str
                ):
                    return str(button["text"])
    match = _CALLBACK.fullmatch(data)
    if match is None:
        return data
    index, kind, rest = match.groups()
    if kind == ":":
        return rest
    # The keyboard is gone (Telegram leaves it out of old messages): the number stands for the
    # label, as on channels without buttons.
    return str(int(index) + 1)


def _units(text: str) -> int:
    """Length as Telegram counts it: UTF-16 code units."""
    return len(text.encode("utf-16-le")) // 2


def split_text(text: str, limit: int = MAX_TEXT) -> list[str]:
    """Cut ``text`` into parts of at most ``limit`` UTF-16 units, at line breaks where possible,
    else at spaces, else anywhere (never inside a surrogate pair)."""
    if _units(text) <= limit:
        return [text]
    parts: list[str] = []
    rest = text
    while _units(rest) > limit:
        # The longest prefix within the limit, in code points.
        cut = min(len(rest), limit)
        while _units(rest[:cut]) > limit:
            cut -= 1
        window = rest[:cut]
        at = window.rfind("\n")
        if at <= 0:
            at = window.rfind(" ")
        if at <= 0:
            parts.append(window)
            rest = rest[cut:]
            continue
        parts.append(window[:at])
        rest = rest[at + 1 :]
    if rest:
        parts.append(rest)
    return [part for part in parts if part] or [text[:limit]]


def _chat_id(client_id: str) -> int | str:
    # Chat ids are integers (negative for groups); "@channelname" stays a string.
    stripped = client_id.lstrip("-")
    return int(client_id) if stripped.isascii() and stripped.isdigit() else client_id


class _Pacer:
    """At most one message per ``interval`` seconds per chat: a send reserves its slot, then
    sleeps until it comes, so a burst to one chat is spread out and other chats are untouched."""

    def __init__(
        self,
        interval: float,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[object]],
    ) -> None:
        self._interval = interval
        self._clock = clock
        self._sleep = sleep
        self._next: dict[str, float] = {}

    async def wait(self, chat: str) -> float:
        if self._interval <= 0:
            return 0.0
        now = self._clock()
        start = max(now, self._next.get(chat, 0.0))
        if len(self._next) >= _MAX_PACED_CHATS:
            self._next = {k: v for k, v in self._next.items() if v > now}
        self._next[chat] = start + self._interval
        if start > now:
            await self._sleep(start - now)
        return start - now


class TelegramChannel(Channel):
    """The Telegram Bot API adapter. Owns its HTTP client unless one is injected.

    ``webhook_secret``: when set, webhooks must carry it in ``X-Telegram-Bot-Api-Secret-Token``.
    ``rate_limiter``: the bot-wide budget (default 30 messages a second, in this process);
    ``chat_interval``: seconds between two messages to one chat.
    """

    name = "telegram"

    def __init__(
        self,
        *,
        token: str,
        api_url: str = DEFAULT_API_URL,
        webhook_secret: str = "",
        client: httpx.AsyncClient | None = None,
        timeout: float = 10.0,
        rate_limiter: RateLimiter | None = None,
        chat_interval: float = DEFAULT_CHAT_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        self._base = f"{api_url.rstrip('/')}/bot{token}/"
        self._secret = webhook_secret.encode()
        self._timeout = timeout
        self._limiter = rate_limiter or LocalRateLimiter(DEFAULT_GLOBAL_RATE_PER_MINUTE)
        self._pacer = _Pacer(chat_interval, clock, sleep)
        self._owns_client = client is None
        self._client = client
        # Replies of one callback share its id: answer it once. Parts of a split text already
        # delivered are not sent again when a later part fails and the reply is retried.
        self._answered: OrderedDict[str, None] = OrderedDict()
        self._parts_sent: OrderedDict[str, int] = OrderedDict()

    async def __aenter__(self) -> TelegramChannel:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def _http(self) -> httpx.AsyncClient:
        # Made (and httpx imported) at the first Bot API call: a server that only parses
        # updates never makes one.
        if self._client is None:
            import httpx

            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self._timeout),
                limits=httpx.Limits(
                    max_connections=100, max_keepalive_connections=100, keepalive_expiry=30.0
                ),
            )
        return self._client

    async def aclose(self) -> None:
        """Close the HTTP client if this adapter created it; safe to call twice."""
        if self._owns_client and self._client is not None and not self._client.is_closed:
            await self._client.aclose()

    # inbound

    def authenticate(self, headers: Mapping[str, str]) -> bool:
        """With a webhook secret configured, the request must carry it (constant-time check)."""
        if not self._secret:
            return True
        given = headers.get(SECRET_HEADER, "")
        return hmac.compare_digest(given.encode("latin-1", "replace"), self._secret)

    def parse_webhook(self, payload: Any, *, received_at: float) -> InboundMessage | None:
        """Turn an ``Update`` into a message; None for updates the bot does not answer
        (edits, channel posts, membership changes, other bots, group chats)."""
        if type(payload) is not dict:
            raise invalid_field("$", f"must be a JSON object, not {json_type_name(payload)}")
        update_id = _integer(payload, "update_id", "")
        if update_id < 0:
            raise invalid_field("update_id", "must not be negative")
        message = _object(payload, "message", "", required=False)
        if message is not None:
            return self._parse_message(update_id, message, received_at)
        query = _object(payload, "callback_query", "", required=False)
        if query is not None:
            return self._parse_callback(update_id, query, received_at)
        return None

    def _parse_message(
        self, update_id: int, message: dict[str, Any], received_at: float
    ) -> InboundMessage | None:
        chat = _object(message, "chat", "message", required=True)
        assert chat is not None
        chat_id = _integer(chat, "id", "message.chat")
        if _string(chat, "type", "message.chat") not in (None, "private"):
            return None
        sender = _object(message, "from", "message", required=False)
        if sender is not None and sender.get("is_bot") is True:
            return None
        text = _string(message, "text", "message")
        if text is None:
            text = _string(message, "caption", "message")
        contact = _object(message, "contact", "message", required=False)
        if text is None and contact is not None:
            text = _string(contact, "phone_number", "message.contact")
        return InboundMessage(
            channel=self.name,
            client_id=str(chat_id),
            message_id=str(update_id),
            text=text or "",
            received_at=received_at,
            attachments=tuple(_attachments(message)),
        )

    def _parse_callback(
        self, update_id: int, query: dict[str, Any], received_at: float
    ) -> InboundMessage | None:
        query_id = _string(query, "id", "callback_query", required=True)
        if not query_id:
            raise invalid_field("callback_query.id", "must not be empty")
        sender = _object(query, "from", "callback_query", required=True)
        assert sender is not None
        user_id = _integer(sender, "id", "callback_query.from")
        message = _object(query, "message", "callback_query", required=False)
        chat_id = user_id
        if message is not None:
            chat = _object(message, "chat", "callback_query.message", required=True)
            assert chat is not None
            chat_id = _integer(chat, "id", "callback_query.message.chat")
            if _string(chat, "type", "callback_query.message.chat") not in (None, "private"):
                return None
        data = _string(query, "data", "callback_query")
        if data is None:  # a game button: nothing the dialog understands
            return None
        return InboundMessage(
            channel=self.name,
            client_id=str(chat_id),
            message_id=str(update_id),
            text=_button_text(data, message),
            received_at=received_at,
            route={"callback_query_id": query_id},
        )

    # outbound

    async def send(self, message: OutboundMessage) -> None:
        """``answerCallbackQuery`` (once per callback), then ``sendMessage`` for each part of the
        text, buttons on the last; raises RateLimited, ServerError, Timeout or PermanentError."""
        query_id = message.route.get("callback_query_id")
        if query_id and query_id not in self._answered:
            await self._answer_callback(query_id)
        text = message.text if message.text.strip() else ("…" if message.buttons else "")
        if not text:
            return
        parts = split_text(text)
        done = self._parts_sent.get(message.key, 0)
        chat_id = _chat_id(message.client_id)
        for index in range(done, len(parts)):
            params: dict[str, Any] = {
                "chat_id": chat_id,
                "text": html.escape(parts[index], quote=False),
                "parse_mode": "HTML",
            }
            if message.buttons and index == len(parts) - 1:
                params["reply_markup"] = {"inline_keyboard": inline_keyboard(message.buttons)}
            await self._pacer.wait(message.client_id)
            await self._limiter.acquire()
            await self.call("sendMessage", params)
            if index < len(parts) - 1:
                _remember(self._parts_sent, message.key, index + 1, _MAX_TRACKED_REPLIES)
        self._parts_sent.pop(message.key, None)

    async def _answer_callback(self, query_id: str) -> None:
        # Best effort: the button's spinner stops by itself after a while, and an old query
        # ("query is too old") can never be answered. Only a 429 is worth retrying the reply.
        try:
            await self.call("answerCallbackQuery", {"callback_query_id": query_id})
        except RateLimited:
            raise
        except ChannelError as exc:
            log.info("could not answer callback query: %s", exc)
        _remember(self._answered, query_id, None, _MAX_TRACKED_REPLIES)

    # the rest of the API the CLI uses

    async def set_webhook(
        self,
        url: str,
        *,
        secret_token: str = "",
        allowed_updates: Sequence[str] = ALLOWED_UPDATES,
    ) -> Any:
        """``setWebhook``: Telegram posts updates to ``url``, with ``secret_token`` in the
        secret header when given."""
        params: dict[str, Any] = {"url": url, "allowed_updates": list(allowed_updates)}
        if secret_token:
            params["secret_token"] = secret_token
        return await self.call("setWebhook", params)

    async def delete_webhook(self, *, drop_pending_updates: bool = False) -> Any:
        """``deleteWebhook`` (needed before long polling)."""
        return await self.call("deleteWebhook", {"drop_pending_updates": drop_pending_updates})

    async def set_my_commands(
        self, commands: Mapping[str, Sequence[tuple[str, str]]] = BOT_COMMANDS
    ) -> None:
        """``setMyCommands``: the first language is the default list, the others per language."""
        for position, (language, entries) in enumerate(commands.items()):
            params: dict[str, Any] = {
                "commands": [{"command": c, "description": d} for c, d in entries]
            }
            if position:
                params["language_code"] = language
            await self.call("setMyCommands", params)

    async def get_updates(
        self, offset: int | None = None, *, timeout: int = 25, limit: int = 100
    ) -> list[dict[str, Any]]:
        """``getUpdates`` (long polling): waits up to ``timeout`` seconds for updates."""
        params: dict[str, Any] = {
            "timeout": timeout,
            "limit": limit,
            "allowed_updates": list(ALLOWED_UPDATES),
        }
        if offset is not None:
            params["offset"] = offset
        result = await self.call("getUpdates", params, timeout=timeout + self._timeout)
        if not isinstance(result, list):
            raise ServerError("telegram getUpdates: the result is not a list")
        return [update for update in result if isinstance(update, dict)]

    async def get_file(self, file_id: str) -> dict[str, Any]:
        """``getFile``: ``file_path`` and ``file_size`` of a file the customer sent."""
        result = await self.call("getFile", {"file_id": file_id})
        return result if isinstance(result, dict) else {}

    async def call(
        self, method: str, params: Mapping[str, Any], *, timeout: float | None = None
    ) -> Any:
        """Call a Bot API method; return its ``result`` or raise a ChannelError."""
        what = f"telegram {method}"
        limit = self._timeout if timeout is None else timeout
        client = self._http()
        import httpx  # loaded by _http()

        try:
            response = await client.post(self._base + method, json=params, timeout=limit)
        except httpx.TimeoutException:
            # ``from None`` throughout: httpx errors carry the URL, and ours holds the bot token.
            raise Timeout(f"{what}: no answer within {limit:g}s") from None
        except httpx.TransportError as exc:
            raise ServerError(f"{what}: {type(exc).__name__}") from None
        except httpx.InvalidURL:
            raise PermanentError(f"{what}: invalid API URL") from None
        except httpx.HTTPError as exc:
            raise ServerError(f"{what}: {type(exc).__name__}") from None
        status = response.status_code
        try:
            data = response.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            if status == 429:
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
                raise RateLimited(
                    f"{what}: 429, retry after {retry_after:g}s", retry_after=retry_after
                )
            if status >= 500:
                raise ServerError(f"{what}: {status}")
            if 200 <= status < 300:
                # Accepted; sending again because the body is odd would duplicate the message.
                return None
            raise PermanentError(f"{what}: {status} {_excerpt(response.text)}")
        if data.get("ok") is True and 200 <= status < 300:
            return data.get("result")
        code = data.get("error_code")
        if type(code) is not int:
            code = status if status >= 400 else 400
        description = data.get("description")
        detail = _excerpt(description) if isinstance(description, str) else f"status {status}"
        if code == 429 or status == 429:
            retry_after = _retry_after(data.get("parameters"), response.headers.get("Retry-After"))
            raise RateLimited(f"{what}: 429, retry after {retry_after:g}s", retry_after=retry_after)
        if code >= 500 or status >= 500:
            raise ServerError(f"{what}: {code} {detail}")
        raise PermanentError(f"{what}: {code} {detail}")


def _retry_after(parameters: object, header: str | None) -> float:
    if isinstance(parameters, dict):
        value = parameters.get("retry_after")
        if isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value < 86_400:
            return float(value)
    return parse_retry_after(header)


def _remember(store: OrderedDict[str, Any], key: str, value: Any, limit: int) -> None:
    store[key] = value
    store.move_to_end(key)
    while len(store) > limit:
        store.popitem(last=False)


def _excerpt(body: str) -> str:
    return mask_text(" ".join(body.split()), keep=_EXCERPT_CHARS) if body else "(empty body)"


async def poll_updates(
    channel: TelegramChannel,
    put: Callable[[InboundMessage], Awaitable[bool]],
    stop: asyncio.Event,
    *,
    timeout: int = 25,
    error_delay: float = 5.0,
) -> int:
    """Long polling for development: fetch updates, put each into the inbound queue (``put``
    stores it durably), and only then move the offset past it, so an update is never lost;
    one seen twice is dropped by the queue (``put`` returns False). Returns how many new
    messages were stored, once ``stop`` is set. Updates that do not parse are logged and skipped."""
    offset: int | None = None
    queued = 0
    stopping = asyncio.ensure_future(stop.wait())
    try:
        while not stop.is_set():
            fetch = asyncio.ensure_future(channel.get_updates(offset, timeout=timeout))
            await asyncio.wait([fetch, stopping], return_when=asyncio.FIRST_COMPLETED)
            if not fetch.done():
                fetch.cancel()
                await asyncio.gather(fetch, return_exceptions=True)
                break
            try:
                updates = fetch.result()
            except PermanentError:
                raise  # a wrong token, or a webhook is still set (409): polling cannot work
            except ChannelError as exc:
                delay = exc.retry_after if isinstance(exc, RateLimited) else error_delay
                log.warning("getUpdates failed (%s); retrying in %.0fs", exc, delay)
                await asyncio.wait([stopping], timeout=delay)
                continue
            for update in updates:
                update_id = update.get("update_id")
                try:
                    message = channel.parse_webhook(update, received_at=time.time())
                except InvalidPayload as exc:
                    log.warning("skipping an update that does not parse: %s", exc.message)
                    message = None
                if message is not None and await put(message):
                    queued += 1
                if type(update_id) is int:
                    offset = max(offset or 0, update_id + 1)
    finally:
        stopping.cancel()
    return queued
