"""Telegram Bot API ``Update`` objects in: parsing one (from a webhook or from long polling) into
an :class:`~orderbot.messages.InboundMessage`, and long polling itself for development.

Parsing runs on the webhook hot path, so like the Chat2Desk adapter it is plain dict and type
checks, and every malformed field is an ``InvalidPayload`` naming its path. The client id is the
chat id and the message id is the ``update_id`` (Telegram redelivers an update until it gets a
2xx, for up to 24 hours; the inbound queue drops what it has seen).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from orderbot.channels.base import (
    check_id,
    check_integer_id,
    check_url,
    clean_text,
    invalid_field,
    json_type_name,
)
from orderbot.channels.telegram.rendering import button_text
from orderbot.errors import ChannelError, InvalidPayload, PermanentError, RateLimited
from orderbot.messages import EVENT_OPERATOR_REPLY, Attachment, InboundMessage

if TYPE_CHECKING:
    from orderbot.channels.telegram.client import TelegramChannel

__all__ = ["operator_reply", "parse_update", "poll_updates"]

log = logging.getLogger("orderbot.telegram")

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
    where = f"{path}.{key}" if path else key
    # ``type(...) is`` on purpose: bool is an int subclass. Telegram's ids fit 52 bits; one past
    # 64 bits could not be sent back or stored.
    if type(value) is int:
        return check_integer_id(where, value)
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
    name = clean_text(_string(item, "file_name", path) or "")
    mime_type = clean_text(_string(item, "mime_type", path) or "")
    size = item.get("file_size")
    if size is not None and (type(size) is not int or size < 0):
        raise invalid_field(f"{path}.file_size", f"must be a non-negative integer, not {size!r}")
    return Attachment(
        url=check_url(f"{path}.file_id", f"tg://file/{file_id}"),
        name=name,
        mime_type=mime_type,
        size=size,
        kind=kind,
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


def parse_update(payload: Any, *, channel: str, received_at: float) -> InboundMessage | None:
    """Turn an ``Update`` into a message of ``channel``; None for updates the bot does not answer
    (edits, channel posts, membership changes, other bots, group chats)."""
    if type(payload) is not dict:
        raise invalid_field("$", f"must be a JSON object, not {json_type_name(payload)}")
    update_id = _integer(payload, "update_id", "")
    if update_id < 0:
        raise invalid_field("update_id", "must not be negative")
    message = _object(payload, "message", "", required=False)
    if message is not None:
        return _parse_message(channel, update_id, message, received_at)
    query = _object(payload, "callback_query", "", required=False)
    if query is not None:
        return _parse_callback(channel, update_id, query, received_at)
    return None


def operator_reply(
    payload: dict[str, Any], operator_chat: str, channel: str, received_at: float
) -> InboundMessage | None:
    """An operator's message (or button press) in a topic of the operators' chat (a supergroup
    with topics), as an :data:`EVENT_OPERATOR_REPLY` event of that chat: ``message_thread_id``
    names the topic (Bot API ``Message``), the text, caption or pressed button's label what
    they did, ``operator`` who (their first name). None when the update is not from that
    chat; an event without ``thread_id`` for what is not for a customer (the General topic,
    service messages such as ``forum_topic_created``, other bots), acknowledged and dropped."""
    update_id = payload.get("update_id")
    query = payload.get("callback_query")
    message = query.get("message") if type(query) is dict else payload.get("message")
    if type(message) is not dict or type(update_id) is not int:
        return None
    chat = message.get("chat")
    if type(chat) is not dict or str(chat.get("id")) != operator_chat:
        return None
    sender = query.get("from") if type(query) is dict else message.get("from")
    route = {"event": EVENT_OPERATOR_REPLY}
    if type(query) is dict:
        data = query.get("data")
        text = button_text(data, message) if type(data) is str else None
        query_id = query.get("id")
        if type(query_id) is str and query_id:
            route["callback_query_id"] = query_id
    else:
        text = _string(message, "text", "message")
        if text is None:
            text = _string(message, "caption", "message")
        if _carries_media(message) and type(message.get("message_id")) is int:
            # a photo, a document...: passed on as it is (copyMessage) to a Telegram customer
            route["copy_of"] = str(message["message_id"])
    thread = message.get("message_thread_id")
    if (
        type(thread) is int
        and message.get("is_topic_message") is True
        and type(sender) is dict
        and sender.get("is_bot") is not True
        and (text or "copy_of" in route)
    ):
        route["thread_id"] = str(thread)
        name = sender.get("first_name")
        if type(name) is str and name:
            route["operator"] = name[:64]
    return InboundMessage(
        channel=channel,
        client_id=operator_chat,
        message_id=str(update_id),
        text=text or "",
        received_at=received_at,
        route=route,
    )


def _parse_message(
    channel: str, update_id: int, message: dict[str, Any], received_at: float
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
    attachments = tuple(_attachments(message))
    route: dict[str, str] = {}
    if _carries_media(message) and type(message.get("message_id")) is int:
        # the Bot API message id in the customer's chat: during a handoff the file itself is
        # copied into their topic of the operators' chat (copyMessage)
        route["copy_of"] = str(message["message_id"])
    return InboundMessage(
        channel=channel,
        client_id=str(chat_id),
        message_id=str(update_id),
        text=clean_text(text or ""),
        received_at=received_at,
        attachments=attachments,
        route=route,
        language=_language_code(sender),
    )


def _carries_media(message: Mapping[str, Any]) -> bool:
    """A photo, a document, audio, video or a sticker: what ``copyMessage`` passes on as it is."""
    return any(message.get(key) is not None for key, _ in _MEDIA) or "photo" in message


def _parse_callback(
    channel: str, update_id: int, query: dict[str, Any], received_at: float
) -> InboundMessage | None:
    query_id = check_id(
        "callback_query.id", _string(query, "id", "callback_query", required=True) or ""
    )
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
        channel=channel,
        client_id=str(chat_id),
        message_id=str(update_id),
        text=clean_text(button_text(data, message)),
        received_at=received_at,
        route={"callback_query_id": query_id},
        language=_language_code(sender),
    )


def _language_code(sender: dict[str, Any] | None) -> str:
    """The user's app language (``User.language_code``, an IETF tag such as "en" or "ru"),
    if Telegram sent it: https://core.telegram.org/bots/api#user"""
    code = sender.get("language_code") if sender is not None else None
    return code if isinstance(code, str) and len(code) <= 35 else ""


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
