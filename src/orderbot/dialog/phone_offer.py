"""Offering the phone number the channel already knows, at the phone step.

On WhatsApp transports Chat2Desk's ``client.phone`` is the customer's own number (on Telegram it
is ``[tg] 807892``, on the web widget ``[chat] 1d0b2f``: no number at all). The channel adapter
puts a usable number in ``InboundMessage.route["phone"]``; at a step whose validator is
``phone`` the question then ends with "Use +996 555 123 456? Reply «да» or send another number",
and a clean yes is read as that number. Nothing is guessed: another answer is read as always.

Pure like the engine: :func:`answer_text` runs before :func:`~orderbot.dialog.engine.step`,
:func:`with_offer` on what it returned.
"""

from __future__ import annotations

import dataclasses

from orderbot.dialog.flow import Flow
from orderbot.dialog.models import DialogState, StepResult
from orderbot.dialog.validators.base import Valid
from orderbot.dialog.validators.choices import parse_yes_no

__all__ = ["answer_text", "at_phone_step", "with_offer"]

_OFFER = {
    "ru": "Использовать номер {phone}? Ответьте «да» или пришлите другой номер.",
    "en": "Use {phone}? Reply “yes” or send another number.",
}


def at_phone_step(flow: Flow, state: DialogState | None) -> bool:
    """Whether the dialog waits for a phone number."""
    return (
        state is not None
        and state.step in flow.steps
        and flow.steps[state.step].validator == "phone"
    )


def answer_text(flow: Flow, state: DialogState | None, text: str, phone: str | None) -> str:
    """The text to give the engine: the known ``phone`` for a clean yes at the phone step (the
    question offered it), else ``text`` as it came."""
    if phone and at_phone_step(flow, state):
        answer = parse_yes_no(text)
        if isinstance(answer, Valid) and answer.value is True:
            return phone
    return text


def with_offer(flow: Flow, result: StepResult, phone: str | None) -> StepResult:
    """``result`` with the offer of ``phone`` after its last reply when the dialog now waits
    for a phone number."""
    if not phone or not result.replies or not at_phone_step(flow, result.state):
        return result
    assert result.state is not None
    language = result.state.language if result.state.language in _OFFER else "en"
    last = result.replies[-1]
    offered = dataclasses.replace(
        last, text=f"{last.text}\n\n{_OFFER[language].format(phone=phone)}"
    )
    return dataclasses.replace(result, replies=(*result.replies[:-1], offered))
