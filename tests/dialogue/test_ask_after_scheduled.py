"""The form's question after a scheduled task: asked again after a nudge, never twice when the nudge sent nothing."""

from __future__ import annotations

import asyncio

import pytest
from rasa_sdk import Tracker
from rasa_sdk.executor import CollectingDispatcher

from actions.qualification import Q2, ActionAskMonthlyLeads


def _ask(events: list[dict]) -> list[str]:
    tracker = Tracker(
        sender_id="not-a-lead",  # no database conversation: only the wording is under test
        slots={},
        latest_message={"intent": {"name": "EXTERNAL_nudge_30m"}},
        events=events,
        paused=False,
        followup_action=None,
        active_loop={"name": "qualification_form"},
        latest_action_name="qualification_form",
    )
    dispatcher = CollectingDispatcher()
    asyncio.run(ActionAskMonthlyLeads().run(dispatcher, tracker, {}))
    return [message["text"] for message in dispatcher.messages]


BEFORE = [
    {"event": "action", "name": "qualification_form"},
    {"event": "bot", "text": Q2},
    {"event": "action", "name": "action_listen"},
    {"event": "user", "text": "EXTERNAL: EXTERNAL_nudge_30m"},
    {"event": "action_execution_rejected", "name": "qualification_form"},
    {"event": "action", "name": "action_send_scheduled_template"},
]


@pytest.mark.usefixtures("database_url")
def test_question_follows_a_nudge_that_was_sent():
    events = [*BEFORE, {"event": "bot", "data": {"custom": {"template": "lead_nudge_v1"}}},
              {"event": "action", "name": "qualification_form"}]
    [text] = _ask(events)
    assert Q2 in text


@pytest.mark.usefixtures("database_url")
def test_no_second_question_when_the_nudge_sent_nothing():
    assert _ask([*BEFORE, {"event": "action", "name": "qualification_form"}]) == []
