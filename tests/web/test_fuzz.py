"""Property-based fuzzing in the normal test run (issue 18), bounded to stay fast and
deterministic (``derandomize``: the same examples every run).

- Both webhook parsers, on arbitrary JSON shaped like their payloads: they return a message
  that can be stored, logged and answered, return None, or raise InvalidPayload (422); nothing
  else.
- schemathesis, in-process over ASGI against the app's own OpenAPI, every documented route with
  and without the admin token, valid and invalid inputs: no answer >= 500, no traceback.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis.generation.modes import GenerationMode

from orderbot.channels.chat2desk import Chat2DeskChannel
from orderbot.channels.telegram.client import TelegramChannel
from orderbot.config import load_settings
from orderbot.errors import InvalidPayload
from orderbot.messages import InboundMessage
from orderbot.runtime.embedded import EmbeddedRuntime
from orderbot.web.app import create_app

FUZZ = settings(
    max_examples=400,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)

_ID = re.compile(r"[A-Za-z0-9_.:@-]{1,64}")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
    | st.from_regex(r"\s*0*[0-9]{1,25}\s*", fullmatch=True)
    | st.sampled_from(["", " ", "0", "07001", "\x00", "a\nb", "http://x/\x00", "tg://file/a"])
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


# Ids as they come: numbers (some past 64 bits), digit strings with zeros and spaces, words.
ids = (
    st.integers(min_value=-5, max_value=2**64 + 5)
    | st.from_regex(r"\s*0*[0-9]{1,25}\s*", fullmatch=True)
    | st.text(max_size=70)
    | st.text(alphabet="abc019_.:@-\x00\n ", min_size=1, max_size=70)
)
int_ids = st.integers(min_value=-(2**64), max_value=2**64) | st.integers(-5, 10**12)


def shaped(
    fields: dict[str, st.SearchStrategy[Any]], required: tuple[str, ...] = ()
) -> st.SearchStrategy[dict[str, Any]]:
    """An object with any subset of ``fields`` (each valid-looking or, less often, arbitrary
    JSON); ``required`` ones are always there, as in most real payloads."""
    return st.fixed_dictionaries(
        {k: fields[k] for k in required},
        optional={k: v | json_values for k, v in fields.items() if k not in required},
    )


chat2desk_fields = {
    "client_id": ids,
    "message_id": ids,
    "text": st.text(max_size=60),
    "type": st.sampled_from(["from_client", "to_client", "system"]),
    "hook_type": st.sampled_from(["inbox", "outbox"]),
    "transport": st.sampled_from(["whatsapp", "telegram", "widget"]),
    "channel_id": ids,
    "photo": st.text(max_size=30),
    "pdf": st.text(max_size=30),
    "coordinates": st.text(max_size=20),
    "attachments": st.lists(
        shaped({"link": st.text(max_size=30), "name": st.text(max_size=20), "size": scalars})
        | json_values,
        max_size=3,
    ),
}
chat2desk_payloads = shaped(chat2desk_fields, ("client_id", "message_id", "text")) | shaped(
    chat2desk_fields
)
_chat = shaped({"id": int_ids, "type": st.sampled_from(["private", "group"])}, ("id",))
_file = shaped(
    {"file_id": st.text(max_size=20), "file_name": st.text(max_size=20), "file_size": scalars}
)
_message = shaped(
    {
        "chat": _chat,
        "from": shaped({"id": scalars, "is_bot": st.booleans()}),
        "text": st.text(max_size=60),
        "caption": st.text(max_size=20),
        "document": _file,
        "photo": st.lists(_file | shaped({"width": scalars, "height": scalars}), max_size=3),
        "contact": shaped({"phone_number": st.text(max_size=20)}),
        "location": shaped({"latitude": scalars, "longitude": scalars}),
    },
    ("chat",),
)
telegram_payloads = shaped(
    {
        "update_id": int_ids,
        "message": _message,
        "callback_query": shaped(
            {
                "id": ids,
                "from": shaped({"id": int_ids}, ("id",)),
                "message": _message,
                "data": st.text(max_size=20),
            },
            ("id", "from", "data"),
        ),
    },
    ("update_id",),
)


def assert_storable(message: InboundMessage) -> None:
    """What ingress acknowledges can be stored (PostgreSQL: no NUL, ids within the columns),
    logged on one line and answered."""
    for value in (message.client_id, message.message_id, *message.route.values()):
        assert _ID.fullmatch(value), value
    assert not _CONTROL.search(message.text)
    for attachment in message.attachments:
        assert not _CONTROL.search(attachment.url + attachment.name + attachment.mime_type)
    assert InboundMessage.from_json(message.to_json()) == message


chat2desk = Chat2DeskChannel(api_url="http://127.0.0.1:9/v1", token="t")
telegram = TelegramChannel(token="1:x", api_url="http://127.0.0.1:9")


@FUZZ
@given(payload=chat2desk_payloads | json_values)
def test_chat2desk_parser_accepts_or_refuses_with_422(payload: Any) -> None:
    try:
        message = chat2desk.parse_webhook(payload, received_at=1.0)
    except InvalidPayload as exc:
        refused: InvalidPayload | None = exc
    else:
        refused = None
        if message is not None:
            assert_storable(message)
    assert refused is None or (refused.status == 422 and refused.message)


@FUZZ
@given(payload=telegram_payloads | json_values)
def test_telegram_parser_accepts_or_refuses_with_422(payload: Any) -> None:
    try:
        message = telegram.parse_webhook(payload, received_at=1.0)
    except InvalidPayload as exc:
        refused: InvalidPayload | None = exc
    else:
        refused = None
        if message is not None:
            assert_storable(message)
    assert refused is None or (refused.status == 422 and refused.message)


ADMIN = {"Authorization": "Bearer fuzz-admin"}
STATS: list[Any] = []


@pytest.fixture
def app(db_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.chdir(db_path.parent)
    configured = load_settings(
        database_url=f"sqlite:///{db_path}",
        chat2desk_api_url="http://127.0.0.1:9/v1",
        chat2desk_api_token="test-token",
        admin_token="fuzz-admin",
        telegram_bot_token="1:fuzz",
        webhook_secret="fuzz-secret",
    )
    # schemathesis runs the app's lifespan itself (the runtime opens) on its own event loop.
    return create_app(EmbeddedRuntime(configured), run_background=False)


def _variants(path: str) -> list[dict[str, str]]:
    """Path parameters to pin: webhooks at the real channels and secret (else all 404)."""
    if path == "/webhook/{channel}/{secret}":
        return [{"channel": name, "secret": "fuzz-secret"} for name in ("chat2desk", "telegram")]
    return [{}]


@pytest.mark.timeout(120)
def test_every_documented_route_answers_below_500(app: Any) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    seen: set[tuple[str, int]] = set()
    for result in schema.get_all_operations():
        operation = result.ok()
        for pinned in _variants(operation.path):
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                strategy = operation.as_strategy(generation_mode=mode, path_parameters=pinned)

                @settings(
                    FUZZ, max_examples=40 if pinned or operation.path.startswith("/api") else 10
                )
                @given(case=strategy)
                def check(case: Any) -> None:
                    for headers in ({}, ADMIN):
                        response = case.call(headers=headers)
                        seen.add((case.operation.path, response.status_code))
                        assert response.status_code < 500, (
                            case.as_curl_command(),
                            response.status_code,
                            response.content[:500],
                        )
                        assert b"Traceback" not in response.content

                try:
                    check()
                except Unsatisfiable:
                    # No invalid input exists for a route without parameters or body (GET /live).
                    assert mode is GenerationMode.NEGATIVE
    # The webhooks were reached (stored and refused by the parser), the admin API answered.
    webhook = "/webhook/{channel}/{secret}"
    assert {(webhook, 200), (webhook, 422), ("/api/orders", 200), ("/api/orders", 401)} <= seen
