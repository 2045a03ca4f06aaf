"""A fake Telegram Bot API server: records every call, answers like the real one, fails on demand.

* in the test's event loop: ``async with FakeTelegram() as fake: ... fake.url ... fake.calls``
* in a background thread (sync code such as CLI tests): ``with ThreadedFakeTelegram() as fake:``

Methods, at ``POST /bot<token>/<method>`` (JSON or form body): ``sendMessage``,
``answerCallbackQuery``, ``getUpdates`` (long polling from a queue fed with :meth:`feed`),
``setWebhook``, ``deleteWebhook``, ``getWebhookInfo``, ``setMyCommands``, ``getFile``, ``getMe``,
``copyMessage`` (with ``message_thread_id``: into a topic; :meth:`FakeTelegram.copies`),
``createForumTopic`` (Bot API: in a supergroup with topics, ``forums``; returns a ``ForumTopic``
with ``message_thread_id``, ``name``, ``icon_color``); ``sendMessage`` takes
``message_thread_id`` ("unique identifier for the target message thread (topic) of the forum;
for forum supergroups only") and answers 400 "message thread not found" for an unknown one.
It checks what the real API checks where our code could get it wrong: HTML that would not parse,
texts over 4,096 characters, callback data over 64 bytes, getUpdates while a webhook is set
(409). ``calls`` holds ``(method, params)`` of every request, failed ones included.

Builders for updates as Telegram sends them: :func:`text_update`, :func:`document_update`,
:func:`photo_update`, :func:`topic_update` (an operator's message in a forum topic), and
:meth:`FakeTelegram.press` (a button of the last keyboard sent).
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.chat2desk import _bind, _config, _QuietServer, _start

__all__ = [
    "OPERATOR",
    "TOKEN",
    "FakeTelegram",
    "ThreadedFakeTelegram",
    "document_update",
    "photo_update",
    "text_update",
    "topic_update",
]

TOKEN = "123456:TEST-token"
_ENTITY = re.compile(r"&(lt|gt|amp|quot|#\d+|#x[0-9a-fA-F]+);")
_TAG = re.compile(
    r"</?(b|strong|i|em|u|ins|s|strike|del|code|pre|a|tg-spoiler|span|blockquote)\b[^>]*>"
)


@dataclass
class _Failure:
    method: str
    status: int
    description: str
    retry_after: int | None = None


def _user(chat_id: int) -> dict[str, Any]:
    return {"id": chat_id, "is_bot": False, "first_name": "Aigul", "language_code": "ru"}


def _chat(chat_id: int) -> dict[str, Any]:
    # Bot API Chat: a private chat's id is the user's (positive); a supergroup's is -100...
    # (https://core.telegram.org/bots/api#chat: type, title, is_forum "if the supergroup chat
    # is a forum (has topics enabled)"). Our groups are the operators' forum supergroup.
    if chat_id < 0:
        return {"id": chat_id, "title": "Operators", "type": "supergroup", "is_forum": True}
    return {"id": chat_id, "first_name": "Aigul", "type": "private"}


OPERATOR = {"id": 777, "is_bot": False, "first_name": "Anna", "language_code": "ru"}
"""The operator who writes and presses buttons in the operators' chat."""


def text_update(update_id: int, chat_id: int, text: str, **message: Any) -> dict[str, Any]:
    """An ``Update`` with a text message from a private chat (a command is text too)."""
    body: dict[str, Any] = {
        "message_id": update_id * 10,
        "from": _user(chat_id),
        "chat": _chat(chat_id),
        "date": int(time.time()),
        "text": text,
    }
    if text.startswith("/"):
        body["entities"] = [{"offset": 0, "length": len(text.split()[0]), "type": "bot_command"}]
    body.update(message)
    return {"update_id": update_id, "message": body}


def topic_update(
    update_id: int, chat_id: int, thread_id: int, text: str, *, from_id: int = 777
) -> dict[str, Any]:
    """An operator's message in a topic of a forum supergroup (Bot API ``Message``:
    ``message_thread_id``, ``is_topic_message``; the chat has ``is_forum``)."""
    body: dict[str, Any] = {
        "message_id": update_id * 10,
        "message_thread_id": thread_id,
        "is_topic_message": True,
        "from": {"id": from_id, "is_bot": False, "first_name": "Anna"},
        "chat": {"id": chat_id, "title": "Operators", "type": "supergroup", "is_forum": True},
        "date": int(time.time()),
        "text": text,
    }
    if text.startswith("/"):
        body["entities"] = [{"offset": 0, "length": len(text.split()[0]), "type": "bot_command"}]
    return {"update_id": update_id, "message": body}


def document_update(
    update_id: int,
    chat_id: int,
    *,
    file_id: str = "BQACAgIAAxkBAAIBZ2Z",
    file_name: str = "part.stl",
    mime_type: str = "model/stl",
    file_size: int = 684,
    caption: str | None = None,
) -> dict[str, Any]:
    """An ``Update`` with a document (and an optional caption)."""
    document = {
        "file_id": file_id,
        "file_unique_id": "AgAD" + file_id[-4:],
        "file_name": file_name,
        "mime_type": mime_type,
        "file_size": file_size,
    }
    update = text_update(update_id, chat_id, "", document=document)
    del update["message"]["text"]
    if caption is not None:
        update["message"]["caption"] = caption
    return update


def photo_update(update_id: int, chat_id: int, *, caption: str | None = None) -> dict[str, Any]:
    """An ``Update`` with a photo in three sizes, the largest last (as Telegram sends it)."""
    sizes = [
        {
            "file_id": f"photo-{w}",
            "file_unique_id": f"u{w}",
            "width": w,
            "height": w * 3 // 4,
            "file_size": w * 100,
        }
        for w in (90, 320, 1280)
    ]
    update = text_update(update_id, chat_id, "", photo=sizes)
    del update["message"]["text"]
    if caption is not None:
        update["message"]["caption"] = caption
    return update


class FakeTelegram:
    """The fake, served from the current event loop."""

    def __init__(self, *, token: str = TOKEN, host: str = "127.0.0.1") -> None:
        self.token = token
        self.host = host
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.webhook: dict[str, Any] | None = None
        self.commands: dict[str, list[dict[str, str]]] = {}
        self.blocked: set[int] = set()
        self.called = asyncio.Event()
        self._updates: list[dict[str, Any]] = []
        self._new_update = asyncio.Event()
        self._failures: deque[_Failure] = deque()
        self._next_message_id = 1
        self.topics: dict[int, dict[str, Any]] = {}  # message_thread_id -> ForumTopic
        self._port = 0
        self._server: _QuietServer | None = None
        self._task: asyncio.Task[None] | None = None

    # what the tests look at

    @property
    def url(self) -> str:
        """What ``TELEGRAM_API_URL`` should be."""
        return f"http://{self.host}:{self._port}"

    def params(self, method: str) -> list[dict[str, Any]]:
        """Params of every call of ``method``, in order."""
        return [params for name, params in self.calls if name == method]

    def sent(self, chat_id: int | None = None) -> list[dict[str, Any]]:
        """``sendMessage`` params accepted (not failed), optionally for one chat."""
        return [
            params
            for params in self._accepted
            if chat_id is None or int(params["chat_id"]) == chat_id
        ]

    def texts(self, chat_id: int | None = None) -> list[str]:
        """Texts of accepted messages as the customer sees them (HTML entities decoded)."""
        return [html.unescape(params["text"]) for params in self.sent(chat_id)]

    async def wait_for(self, condition: Callable[[], bool], timeout: float = 10.0) -> None:
        """Wait until ``condition()`` holds after some call; fail the test after ``timeout``."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not condition():
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise AssertionError(f"condition not met within {timeout}s; calls: {self.calls!r}")
            self.called.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.called.wait(), min(remaining, 0.2))

    # controls

    def feed(self, *updates: dict[str, Any]) -> None:
        """Queue updates for ``getUpdates``."""
        self._updates.extend(updates)
        self._new_update.set()

    def rate_limit_next(
        self, n: int = 1, retry_after: int = 1, method: str = "sendMessage"
    ) -> None:
        """Answer the next ``n`` calls of ``method`` with 429 and ``parameters.retry_after``."""
        for _ in range(n):
            self._failures.append(
                _Failure(method, 429, f"Too Many Requests: retry after {retry_after}", retry_after)
            )

    def fail_next(
        self, n: int = 1, status: int = 500, method: str = "sendMessage", description: str = ""
    ) -> None:
        """Answer the next ``n`` calls of ``method`` with ``status`` (``"ok": false``)."""
        text = description or {500: "Internal Server Error", 502: "Bad Gateway"}.get(
            status, "Bad Request"
        )
        for _ in range(n):
            self._failures.append(_Failure(method, status, text))

    def press(
        self, update_id: int, chat_id: int, label: str, *, thread_id: int | None = None
    ) -> dict[str, Any]:
        """A ``callback_query`` update: ``label`` pressed on the last keyboard sent to
        ``chat_id`` (in topic ``thread_id``, if given); the update carries that message with its
        keyboard, as Telegram's does. In a private chat the customer presses it; in a group
        (negative id), :data:`OPERATOR` (Bot API CallbackQuery: ``from`` is the user who
        pressed, ``message`` the message with the button)."""
        for params in reversed(self._accepted):
            markup = params.get("reply_markup")
            if int(params["chat_id"]) != chat_id or not markup:
                continue
            if thread_id is not None and params["_message"].get("message_thread_id") != thread_id:
                continue
            for row in markup["inline_keyboard"]:
                for button in row:
                    if button["text"] == label:
                        return {
                            "update_id": update_id,
                            "callback_query": {
                                "id": f"cq-{update_id}",
                                "from": OPERATOR if chat_id < 0 else _user(chat_id),
                                "message": params["_message"],
                                "chat_instance": "-4242",
                                "data": button["callback_data"],
                            },
                        }
        raise AssertionError(f"no button {label!r} was sent to {chat_id}")

    # serving

    async def start(self) -> None:
        sock = _bind(self.host, 0)
        self._port = sock.getsockname()[1]
        self._server = _QuietServer(
            _config(
                Starlette(
                    routes=[Route("/bot{token}/{method}", self._handle, methods=["GET", "POST"])]
                )
            )
        )
        self._task = await _start(self._server, sock)

    async def stop(self) -> None:
        if self._server is None or self._task is None:
            return
        self._new_update.set()
        self._server.should_exit = True
        await self._task
        self._server = self._task = None

    async def __aenter__(self) -> FakeTelegram:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # the API

    @property
    def _accepted(self) -> list[dict[str, Any]]:
        return [
            params for name, params in self.calls if name == "sendMessage" and "_message" in params
        ]

    async def _handle(self, request: Request) -> Response:
        method = request.path_params["method"]
        if request.headers.get("content-type", "").startswith("application/json"):
            params = await request.json()
        else:
            params = dict(await request.form()) | dict(request.query_params)
        if not isinstance(params, dict):
            return _error(400, "Bad Request: parameters must be an object")
        self.calls.append((method, params))
        self.called.set()
        if request.path_params["token"] != self.token:
            return _error(401, "Unauthorized")
        if self._failures and self._failures[0].method == method:
            failure = self._failures.popleft()
            return _error(failure.status, failure.description, failure.retry_after)
        handler = getattr(self, f"_api_{method}", None)
        if handler is None:
            return _error(404, "Not Found: method not found")
        result = await handler(params)
        if isinstance(result, Response):
            return result
        return JSONResponse({"ok": True, "result": result})

    async def _api_sendMessage(self, params: dict[str, Any]) -> Any:
        chat_id = params.get("chat_id")
        text = params.get("text")
        if chat_id is None or not isinstance(text, str) or not text.strip():
            return _error(400, "Bad Request: message text is empty")
        if int(chat_id) in self.blocked:
            return _error(403, "Forbidden: bot was blocked by the user")
        if params.get("parse_mode") == "HTML":
            problem = _html_problem(text)
            if problem:
                return _error(400, f"Bad Request: can't parse entities: {problem}")
            shown = html.unescape(_TAG.sub("", text))
        else:
            shown = text
        if len(shown.encode("utf-16-le")) // 2 > 4096:
            return _error(400, "Bad Request: message is too long")
        thread = params.get("message_thread_id")
        if thread is not None and int(thread) not in self.topics:
            return _error(400, "Bad Request: message thread not found")
        markup = params.get("reply_markup")
        if markup is not None:
            for row in markup.get("inline_keyboard", []):
                for button in row:
                    data = button.get("callback_data", "")
                    if not button.get("text") or not 1 <= len(data.encode()) <= 64:
                        return _error(400, "Bad Request: BUTTON_DATA_INVALID")
        message = {
            "message_id": self._next_message_id,
            "from": {"id": 123456, "is_bot": True, "first_name": "Shop", "username": "shop_bot"},
            "chat": _chat(int(chat_id)),
            "date": int(time.time()),
            "text": shown,
        }
        if markup is not None:
            message["reply_markup"] = markup
        if thread is not None:
            message["message_thread_id"] = int(thread)
            message["is_topic_message"] = True
        self._next_message_id += 1
        params["_message"] = message
        return message

    async def _api_copyMessage(self, params: dict[str, Any]) -> Any:
        # Bot API copyMessage (https://core.telegram.org/bots/api#copymessage): chat_id,
        # from_chat_id, message_id (required), message_thread_id ("Unique identifier for the
        # target message thread (topic) of the forum; for forum supergroups only"), caption...;
        # "Returns the MessageId of the sent message on success". An unknown thread is refused
        # as sendMessage refuses it.
        if params.get("chat_id") is None or params.get("from_chat_id") is None:
            return _error(400, "Bad Request: chat not found")
        if not isinstance(params.get("message_id"), int):
            return _error(400, "Bad Request: message to copy not found")
        if int(params["chat_id"]) in self.blocked:
            return _error(403, "Forbidden: bot was blocked by the user")
        thread = params.get("message_thread_id")
        if thread is not None and int(thread) not in self.topics:
            return _error(400, "Bad Request: message thread not found")
        self._next_message_id += 1
        params["_copied"] = True
        return {"message_id": self._next_message_id}

    def copies(self, thread_id: int | None = None) -> list[dict[str, Any]]:
        """``copyMessage`` params accepted, optionally only those into topic ``thread_id``."""
        return [
            {k: v for k, v in params.items() if k != "_copied"}
            for params in self.params("copyMessage")
            if params.get("_copied")
            and (thread_id is None or params.get("message_thread_id") == thread_id)
        ]

    async def _api_createForumTopic(self, params: dict[str, Any]) -> Any:
        # Bot API createForumTopic: chat_id, name (1-128 characters); returns a ForumTopic.
        name = params.get("name")
        if params.get("chat_id") is None or not isinstance(name, str) or not 1 <= len(name) <= 128:
            return _error(400, "Bad Request: TOPIC_NAME_INVALID")
        thread = 1000 + len(self.topics) * 7
        topic = {"message_thread_id": thread, "name": name, "icon_color": 7322096}
        self.topics[thread] = {**topic, "chat_id": int(params["chat_id"])}
        return topic

    def in_topic(self, thread_id: int) -> list[str]:
        """Texts accepted in a topic, in order."""
        return [
            p["_message"]["text"]
            for p in self._accepted
            if p["_message"].get("message_thread_id") == thread_id
        ]

    async def _api_answerCallbackQuery(self, params: dict[str, Any]) -> Any:
        if not params.get("callback_query_id"):
            return _error(
                400,
                "Bad Request: query is too old and response timeout expired or query ID is invalid",
            )
        return True

    async def _api_getUpdates(self, params: dict[str, Any]) -> Any:
        if self.webhook is not None:
            return _error(
                409,
                "Conflict: can't use getUpdates method while webhook is active; "
                "use deleteWebhook to delete the webhook first",
            )
        offset = int(params.get("offset") or 0)
        if offset:
            # Like Telegram: an offset confirms every update before it.
            self._updates = [u for u in self._updates if u["update_id"] >= offset]
        timeout = float(params.get("timeout") or 0)
        limit = int(params.get("limit") or 100)
        if not self._updates and timeout > 0:
            self._new_update.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._new_update.wait(), timeout)
        return self._updates[:limit]

    async def _api_setWebhook(self, params: dict[str, Any]) -> Any:
        secret = params.get("secret_token")
        if secret is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", str(secret)):
            return _error(400, "Bad Request: secret token contains unallowed characters")
        if not str(params.get("url", "")).startswith("https://") and params.get("url"):
            return _error(
                400, "Bad Request: bad webhook: An HTTPS URL must be provided for webhook"
            )
        self.webhook = dict(params) if params.get("url") else None
        return True

    async def _api_deleteWebhook(self, params: dict[str, Any]) -> Any:
        self.webhook = None
        if params.get("drop_pending_updates"):
            self._updates.clear()
        return True

    async def _api_getWebhookInfo(self, params: dict[str, Any]) -> Any:
        return {
            "url": (self.webhook or {}).get("url", ""),
            "pending_update_count": len(self._updates),
        }

    async def _api_setMyCommands(self, params: dict[str, Any]) -> Any:
        commands = params.get("commands")
        if not isinstance(commands, list) or not commands:
            return _error(400, "Bad Request: commands must be a non-empty array")
        for command in commands:
            if not re.fullmatch(r"[a-z0-9_]{1,32}", command.get("command", "")):
                return _error(400, "Bad Request: BOT_COMMAND_INVALID")
        self.commands[params.get("language_code", "")] = commands
        return True

    async def _api_getFile(self, params: dict[str, Any]) -> Any:
        file_id = str(params.get("file_id", ""))
        if not file_id:
            return _error(400, "Bad Request: invalid file_id")
        return {
            "file_id": file_id,
            "file_unique_id": "u" + file_id[-4:],
            "file_size": 684,
            "file_path": f"documents/{file_id}.stl",
        }

    async def _api_getMe(self, params: dict[str, Any]) -> Any:
        return {"id": 123456, "is_bot": True, "first_name": "Shop", "username": "shop_bot"}


def _html_problem(text: str) -> str:
    """What Telegram would refuse in an HTML-mode text that has no tags of ours: a bare ``<``
    or an ``&`` that does not start an entity."""
    stripped = _TAG.sub("", text)
    if "<" in stripped:
        return f"Unsupported start tag at byte offset {stripped.index('<')}"
    for match in re.finditer("&", stripped):
        if not _ENTITY.match(stripped, match.start()):
            return f"Can't find end of the entity starting at byte offset {match.start()}"
    return ""


def _error(status: int, description: str, retry_after: int | None = None) -> Response:
    body: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
    if retry_after is not None:
        body["parameters"] = {"retry_after": retry_after}
    return JSONResponse(body, status_code=status)


class ThreadedFakeTelegram:
    """The fake on its own event loop in a daemon thread, for sync tests (the CLI's own
    ``asyncio.run`` cannot run inside a test's loop). Read ``fake`` only between commands."""

    def __init__(self, *, token: str = TOKEN) -> None:
        self.fake = FakeTelegram(token=token)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._stopped: asyncio.Event | None = None

    @property
    def url(self) -> str:
        return self.fake.url

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the server's loop (for controls such as ``feed``)."""
        assert self._loop is not None

        async def run() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout=5)

    def _serve(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stopped = asyncio.Event()
            await self.fake.start()
            self._started.set()
            await self._stopped.wait()
            await self.fake.stop()

        asyncio.run(main())

    def __enter__(self) -> ThreadedFakeTelegram:
        self._thread = threading.Thread(target=self._serve, name="fake-telegram", daemon=True)
        self._thread.start()
        if not self._started.wait(timeout=10):
            raise RuntimeError("fake telegram did not start")
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._loop is not None and self._stopped is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._stopped.set)
            self._thread.join(timeout=10)
