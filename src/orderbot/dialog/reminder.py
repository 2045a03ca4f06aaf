"""The one reminder of an unfinished order (issue 16, item 7).

A dialog left at a step for ``REMINDER_AFTER`` seconds gets one message: the flow's
``reminder`` text followed by the step's question, in the dialog's language, so an answer
resumes the dialog where it stopped. The new state marks it sent (``reminded``): it is never
repeated in that dialog, and an order placed afterwards is recorded as ``recovered``. Pure: the
housekeeping of each profile finds idle dialogs, calls :func:`remind` and commits what it
returns (the outbox entry under :func:`orderbot.outbound.reminder_key`, and the new state).
"""

from __future__ import annotations

import dataclasses

from orderbot.dialog.engine import question
from orderbot.dialog.flow import Flow
from orderbot.dialog.models import DialogOptions, DialogState, Reply
from orderbot.dialog.notes import note

__all__ = ["remind"]


def remind(
    flow: Flow,
    state: DialogState | None,
    now: float,
    *,
    options: DialogOptions,
    after: float,
) -> tuple[DialogState, Reply] | None:
    """The reminder for ``state`` and the state that records it, or None when none is due: no
    dialog, reminders off (``after`` 0), not idle for ``after`` seconds yet, already reminded,
    an operator took the conversation (``handed_off``; after the handback too), idle past the
    dialog timeout (it starts over instead), or at no step that asks anything (a cancel or an
    order ended it)."""
    if (
        state is None
        or after <= 0
        or state.reminded
        or state.handed_off
        or now - state.updated_at < after
    ):
        return None
    asked = question(flow, state, now, options=options)
    if asked is None:
        return None
    text = note(flow, "reminder", state.language) + "\n\n" + asked.text
    return dataclasses.replace(state, reminded=True), Reply(text, asked.buttons)
