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

The operators' chat (``operator_chat``, a supergroup with topics): a message of kind ``topic``
goes to the topic of the customer named in its route (``for``), created on first use with
``createForumTopic`` and remembered in :class:`~orderbot.desk.base.OperatorTopics`; what an
operator writes in a topic comes in as an :data:`~orderbot.messages.EVENT_OPERATOR_REPLY` event
of that chat, with the topic's ``message_thread_id``.

This module is the adapter and its Bot API client. Reading updates (and long polling) is in
:mod:`orderbot.channels.telegram.updates`; keyboards, callback data and text splitting are in
:mod:`orderbot.channels.telegram.rendering`.
"""

from __future__ import annotations

import asyncio
import hmac
import html
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from orderbot.channels.base import Channel
from orderbot.channels.chat2desk import parse_retry_after
from orderbot.channels.telegram.rendering import (
    inline_keyboard,
    split_text,
)
from orderbot.channels.telegram.updates import operator_reply, parse_update
from orderbot.desk.base import OperatorTopics, Topic
from orderbot.errors import (
    ChannelError,
    PermanentError,
    RateLimited,
    ServerError,
    Timeout,
)
from orderbot.loggers import mask_text
from orderbot.messages import InboundMessage, OutboundMessage
from orderbot.ratelimit import LocalRateLimiter, RateLimiter

if TYPE_CHECKING:  # imported at the first Bot API call
    import httpx

__all__ = ["ALLOWED_UPDATES", "BOT_COMMANDS", "DEFAULT_API_URL", "SECRET_HEADER", "TelegramChannel"]

log = logging.getLogger("orderbot.telegram")

DEFAULT_API_URL = "https://api.telegram.org"
SECRET_HEADER = "x-telegram-bot-api-secret-token"  # noqa: S105 - a header name, not a secret
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
_EXCERPT_CHARS = 200


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
        operator_chat: str = "",
        topics: OperatorTopics | None = None,
    ) -> None:
        self.operator_chat = operator_chat
        self.topics = topics  # set by the runtime once its database or Redis is there
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
        (edits, channel posts, membership changes, other bots, group chats other than the
        operators' chat)."""
        if self.operator_chat and type(payload) is dict:
            reply = operator_reply(payload, self.operator_chat, self.name, received_at)
            if reply is not None:
                return reply
        return parse_update(payload, channel=self.name, received_at=received_at)

    # outbound

    async def send(self, message: OutboundMessage) -> None:
        """``answerCallbackQuery`` (once per callback), then ``sendMessage`` for each part of the
        text, buttons on the last; raises RateLimited, ServerError, Timeout or PermanentError."""
        query_id = message.route.get("callback_query_id")
        if query_id and query_id not in self._answered:
            await self._answer_callback(query_id)
        if message.kind == "copy":
            # A photo or document as it is, caption included: an operator's from the operators'
            # chat to a customer, or a customer's into their topic there (``route["for"]``).
            params: dict[str, Any] = {
                "chat_id": _chat_id(message.client_id),
                "from_chat_id": _chat_id(message.route["from_chat_id"]),
                "message_id": int(message.route["message_id"]),
            }
            if message.route.get("for"):
                params["message_thread_id"] = await self._topic(message)
            await self._pacer.wait(message.client_id)
            await self._limiter.acquire()
            await self.call("copyMessage", params)
            return
        text = message.text if message.text.strip() else ("…" if message.buttons else "")
        if not text:
            return
        thread = await self._topic(message) if message.kind == "topic" else None
        parts = split_text(text)
        done = self._parts_sent.get(message.key, 0)
        chat_id = _chat_id(message.client_id)
        for index in range(done, len(parts)):
            params = {
                "chat_id": chat_id,
                "text": html.escape(parts[index], quote=False),
                "parse_mode": "HTML",
            }
            if thread is not None:
                params["message_thread_id"] = thread
            if message.buttons and index == len(parts) - 1:
                params["reply_markup"] = {"inline_keyboard": inline_keyboard(message.buttons)}
            await self._pacer.wait(message.client_id)
            await self._limiter.acquire()
            await self.call("sendMessage", params)
            if index < len(parts) - 1:
                _remember(self._parts_sent, message.key, index + 1, _MAX_TRACKED_REPLIES)
        self._parts_sent.pop(message.key, None)

    async def _topic(self, message: OutboundMessage) -> int:
        """The thread of the customer named by ``message.route["for"]`` in the operators' chat,
        created (``createForumTopic``, named by ``route["title"]``) when there is none yet.
        ``route`` keys ``to.<name>`` are the customer's own route, kept with the topic."""
        if self.topics is None:
            raise PermanentError("telegram: no operator topics store configured")
        client_key = message.route.get("for", "")
        if not client_key:
            raise PermanentError("telegram: a topic message without its customer")
        found = await self.topics.of_client(client_key)
        if found is not None:
            return found.thread_id
        title = (message.route.get("title") or client_key)[:128]  # Bot API: 1-128 characters
        created = await self.call(
            "createForumTopic", {"chat_id": _chat_id(message.client_id), "name": title}
        )
        if not isinstance(created, dict) or type(created.get("message_thread_id")) is not int:
            raise ServerError("telegram createForumTopic: no message_thread_id in the answer")
        route = {k[3:]: v for k, v in message.route.items() if k.startswith("to.")}
        topic = Topic(client_key, created["message_thread_id"], route)
        await self.topics.remember(topic)
        return topic.thread_id

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
