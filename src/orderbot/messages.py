"""The values that travel between ingress, worker and sender.

They are plain frozen dataclasses with a JSON form (``to_json``/``from_json``), so every queue
backend stores and moves the same bytes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from orderbot.outbound import client_key, message_key, reply_key

__all__ = ["Attachment", "InboundMessage", "OutboundMessage", "ReplyText", "replies_to"]


@dataclass(frozen=True, slots=True)
class Attachment:
    """A file or media the customer sent: where to fetch it, and what the channel says it is."""

    url: str
    name: str = ""
    mime_type: str = ""
    size: int | None = None
    kind: str = "file"  # file | photo | audio | location ...

    def to_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "name": self.name,
            "mime_type": self.mime_type,
            "size": self.size,
            "kind": self.kind,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Attachment:
        return cls(
            url=str(data.get("url", "")),
            name=str(data.get("name", "")),
            mime_type=str(data.get("mime_type", "")),
            size=data.get("size"),
            kind=str(data.get("kind", "file")),
        )


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """One customer message, whatever channel it came from.

    ``route`` keeps what the channel needs to answer the same way (for Chat2Desk: ``transport``
    and ``channel_id``); the dialog never looks at it. ``language`` is the language the
    customer's app is set to, when the channel tells (Telegram's ``language_code``), else "".
    """

    channel: str
    client_id: str
    message_id: str
    text: str
    received_at: float
    attachments: tuple[Attachment, ...] = ()
    route: dict[str, str] = field(default_factory=dict)
    language: str = ""

    @property
    def dedupe_key(self) -> str:
        return message_key(self.channel, self.message_id)

    @property
    def client_key(self) -> str:
        return client_key(self.channel, self.client_id)

    def to_json(self) -> bytes:
        data: dict[str, Any] = {
            "channel": self.channel,
            "client_id": self.client_id,
            "message_id": self.message_id,
            "text": self.text,
            "received_at": self.received_at,
            "attachments": [a.to_dict() for a in self.attachments],
            "route": self.route,
        }
        if self.language:  # only when known: queued messages keep their old shape otherwise
            data["language"] = self.language
        return orjson.dumps(data)

    @classmethod
    def from_json(cls, raw: bytes | str) -> InboundMessage:
        return cls.from_dict(orjson.loads(raw))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InboundMessage:
        return cls(
            channel=data["channel"],
            client_id=data["client_id"],
            message_id=data["message_id"],
            text=data["text"],
            received_at=data["received_at"],
            attachments=tuple(Attachment.from_dict(a) for a in data.get("attachments", ())),
            route=dict(data.get("route", {})),
            language=str(data.get("language") or ""),
        )


@dataclass(frozen=True, slots=True)
class OutboundMessage:
    """One reply to send. ``key`` is deterministic (inbound message id + reply index), so a step
    redone after a crash produces the same key and the outbox keeps only one copy.

    ``kind`` is ``"text"`` for a message; ``"transfer"`` asks the channel to hand the
    conversation to an operator (Chat2Desk; the target is in ``route``), retried like a reply.
    """

    key: str
    channel: str
    client_id: str
    text: str
    buttons: tuple[str, ...] = ()
    route: dict[str, str] = field(default_factory=dict)
    created_at: float = 0.0
    kind: str = "text"

    def to_json(self) -> bytes:
        data: dict[str, Any] = {
            "key": self.key,
            "channel": self.channel,
            "client_id": self.client_id,
            "text": self.text,
            "buttons": list(self.buttons),
            "route": self.route,
            "created_at": self.created_at,
        }
        if self.kind != "text":
            data["kind"] = self.kind
        return orjson.dumps(data)

    @classmethod
    def from_json(cls, raw: bytes | str) -> OutboundMessage:
        data = orjson.loads(raw)
        return cls(
            key=data["key"],
            channel=data["channel"],
            client_id=data["client_id"],
            text=data["text"],
            buttons=tuple(data.get("buttons", ())),
            route=dict(data.get("route", {})),
            created_at=data.get("created_at", 0.0),
            kind=data.get("kind", "text"),
        )


class ReplyText(Protocol):
    """What a reply says: the dialog's ``Reply`` (this module does not import the dialog)."""

    @property
    def text(self) -> str: ...
    @property
    def buttons(self) -> tuple[str, ...]: ...


def replies_to(
    message: InboundMessage, replies: Iterable[ReplyText], now: float
) -> tuple[OutboundMessage, ...]:
    """The outbox entries answering ``message``: the ``index``-th keyed
    :func:`~orderbot.outbound.reply_key` of the message's dedupe key, routed back to its client."""
    return tuple(
        OutboundMessage(
            key=reply_key(message.dedupe_key, index),
            channel=message.channel,
            client_id=message.client_id,
            text=reply.text,
            buttons=reply.buttons,
            route=message.route,
            created_at=now,
        )
        for index, reply in enumerate(replies)
    )
