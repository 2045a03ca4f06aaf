"""Returning customers and unanswered questions through the worker on both profiles: the last
confirmed order of the same channel and client is offered again, "как обычно" goes straight
to its summary, and a question the flow cannot answer reaches the Telegram admins while the
dialog goes on (issue 16)."""

from __future__ import annotations

from pathlib import Path

import pytest

from orderbot.dialog.engine import step
from orderbot.dialog.loader import load_flow
from orderbot.dialog.models import DialogOptions, DialogState
from tests.support.desk_bots import PROFILES, open_bot

FLOW = load_flow("water")
OPTIONS = DialogOptions()
KNOWN = {
    "address": "Манаса 40, кв 12",
    "phone": "+996770112233",
    "quantity": 2,
    "items": [{"id": "x"}],  # not a detail a message gives: never offered again
}


@pytest.fixture(params=PROFILES)
def profile(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_the_last_order_is_offered_after_the_greeting() -> None:
    result = step(FLOW, None, "Здравствуйте", 1.0, options=OPTIONS, known=KNOWN)
    greeting, offer, prompt = result.replies
    assert "Здравствуйте!" in greeting.text
    assert "Повторить прошлый заказ: 2 бут. на Манаса 40, кв 12" in offer.text
    assert "адрес доставки" in prompt.text
    assert result.state is not None
    assert result.state.data == {}
    assert result.state.known == {k: v for k, v in KNOWN.items() if k != "items"}
    # The known details are stored with the dialog, so later steps need no lookup.
    assert DialogState.from_json(result.state.to_json()) == result.state


def test_no_offer_for_a_new_customer() -> None:
    result = step(FLOW, None, "Здравствуйте", 1.0, options=OPTIONS, known={})
    assert len(result.replies) == 2
    assert result.state is not None and result.state.known == {}


@pytest.mark.parametrize("text", ["как обычно", "Повтори", "same again", "баягыдай"])
def test_as_usual_goes_straight_to_the_summary(text: str) -> None:
    result = step(FLOW, None, text, 1.0, options=OPTIONS, known=KNOWN)
    assert result.state is not None
    assert result.state.step == "WAITING_CONFIRMATION"
    assert result.state.data == {
        "address": "Манаса 40, кв 12",
        "phone": "+996770112233",
        "quantity": 2,
    }
    assert "2\n" in result.replies[-1].text  # the quantity, in the language of the text
    assert result.effects == ()  # the summary comes first; "да" places the order


def test_as_usual_without_a_past_order_is_not_an_answer() -> None:
    result = step(FLOW, None, "как обычно", 1.0, options=OPTIONS, known=None)
    assert result.state is not None
    assert result.state.step == "WAITING_ADDRESS"
    assert result.state.data == {}


def test_same_number_and_same_place_fill_their_fields() -> None:
    state = step(FLOW, None, "Привет", 1.0, options=OPTIONS, known=KNOWN).state
    state = step(FLOW, state, "туда же", 2.0, options=OPTIONS).state
    assert state is not None and state.data == {"address": "Манаса 40, кв 12"}
    state = step(FLOW, state, "номер прежний", 3.0, options=OPTIONS).state
    assert state is not None and state.step == "WAITING_QUANTITY"
    assert state.data["phone"] == "+996770112233"
    other = step(FLOW, None, "Привет", 1.0, options=OPTIONS, known=KNOWN).state
    other = step(FLOW, other, "Чуй 5, same number", 2.0, options=OPTIONS).state
    assert other is not None and other.step == "WAITING_QUANTITY"
    assert other.data == {"address": "Чуй 5", "phone": "+996770112233"}


async def test_a_returning_customer_is_offered_the_last_order(profile: str, tmp_path: Path) -> None:
    async with open_bot(profile, tmp_path) as bot:
        alice, bob = bot.client("alice"), bot.client("bob")
        await bot.say(alice, "Привет", "ул. Киевская 120, кв. 5", "0555 111 222", "2", "да")
        (offer,) = await bot.say(alice, "Здравствуйте")
        assert "Повторить прошлый заказ: 2 бут. на ул. Киевская 120, кв. 5" in offer["text"]
        (summary,) = await bot.say(alice, "как обычно")
        assert "Адрес: ул. Киевская 120, кв. 5" in summary["text"]
        assert "Телефон: +996555111222" in summary["text"]
        await bot.say(alice, "да")
        assert len(await bot.order_ids(alice)) == 2
        # Another client of the same shop is not offered Alice's order.
        (greeting,) = await bot.say(bob, "Здравствуйте")
        assert "Повторить" not in greeting["text"]
        # Nor is the same client id on another channel.
        (other,) = await bot.say(alice, "Здравствуйте", channel="telegram")
        assert "Повторить" not in other["text"]


async def test_an_unanswered_question_reaches_the_admins_and_the_dialog_goes_on(
    profile: str, tmp_path: Path
) -> None:
    async with open_bot(profile, tmp_path, admin_chats=("500",)) as bot:
        carol = bot.client("carol")
        await bot.say(carol, "Привет", channel="telegram")
        sent = await bot.say(carol, "а можно с собакой встретить курьера?", channel="telegram")
        to_customer = [e for e in sent if e["client_id"] == carol]
        to_admin = [e for e in sent if e["client_id"] == "500"]
        (reply,) = to_customer
        assert "оператору" in reply["text"]
        assert "адрес доставки" in reply["text"]
        (alert,) = to_admin
        assert "а можно с собакой встретить курьера?" in alert["text"]
        assert "WAITING_ADDRESS" in alert["text"]
        # Not a handoff: the bot still answers the next message.
        (next_reply,) = await bot.say(carol, "ул. Токтогула 7", channel="telegram")
        assert "номер телефона" in next_reply["text"]
