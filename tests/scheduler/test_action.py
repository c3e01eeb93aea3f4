"""`action_send_scheduled_template`: the seed template per task, at most once, form-safe."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

from rasa_sdk import Tracker
from rasa_sdk.events import FollowupAction, SlotSet
from rasa_sdk.executor import CollectingDispatcher
from sqlalchemy import select

from actions.scheduled import ActionSendScheduledTemplate
from leadbot.db.models import TaskScheduled
from leadbot.services import tasks
from tests.scheduler.helpers import book, lead_writes, make_lead


def _run(task_id, intent, active_loop=None):
    tracker = Tracker(
        sender_id="wa4915112345678",
        slots={"task_id": None},
        latest_message={"intent": {"name": intent}, "entities": [{"entity": "task_id", "value": str(task_id)}]},
        events=[],
        paused=False,
        followup_action=None,
        active_loop={"name": active_loop} if active_loop else {},
        latest_action_name="action_listen",
    )
    dispatcher = CollectingDispatcher()
    events = asyncio.run(ActionSendScheduledTemplate().run(dispatcher, tracker, {}))
    return [m["custom"] for m in dispatcher.messages], events


def test_reminder_22h_in_the_contacts_time_zone_with_deadline(session, frozen_clock, scheduler_env):
    conversation = make_lead(session, tz="America/Los_Angeles", status="qualified", at=frozen_clock.now())
    starts_at = datetime(2026, 11, 27, 17, 30, tzinfo=timezone.utc)  # 09:30 in Los Angeles
    book(session, conversation, starts_at)
    session.commit()
    task = session.execute(select(TaskScheduled).where(TaskScheduled.task_type == "reminder_22h")).scalar_one()

    messages, events = _run(task.id, "EXTERNAL_reminder_22h")
    assert messages == [{
        "template": "appointment_reminder_22h_v1",
        "variables": {"time": "09:30"},
        "deadline": starts_at.isoformat(),
        "purpose": "marketing",
    }]
    assert events == [SlotSet("task_id", None)]
    # A retried trigger for the same task sends nothing the second time.
    assert _run(task.id, "EXTERNAL_reminder_22h")[0] == []


def test_first_name_fallback_and_mismatched_or_cancelled_tasks(session, frozen_clock, scheduler_env):
    conversation = make_lead(session, first_name=None, status="qualified", at=frozen_clock.now())
    followup, _ = tasks.on_qualified(session, conversation)
    nudge = tasks.after_bot_turn(session, conversation, asked_question=True)
    session.commit()
    assert _run(followup.id, "EXTERNAL_nudge_30m")[0] == []  # the intent must match the task's type
    messages, _ = _run(followup.id, "EXTERNAL_followup_24h")
    assert messages[0]["template"] == "lead_followup_24h_v1"
    assert messages[0]["variables"] == {"first_name": "du"}
    tasks.after_lead_message(session, conversation)
    session.commit()
    assert _run(nudge.id, "EXTERNAL_nudge_30m")[0] == []


def test_hands_back_to_an_active_form(session, frozen_clock, scheduler_env):
    conversation = make_lead(session, at=frozen_clock.now())
    nudge = tasks.schedule(session, conversation, "nudge_30m", frozen_clock.now() + timedelta(minutes=30))
    session.commit()
    messages, events = _run(nudge.id, "EXTERNAL_nudge_30m", active_loop="qualification_form")
    assert [m["template"] for m in messages] == ["lead_nudge_v1"]
    assert events == [SlotSet("task_id", None), FollowupAction("qualification_form")]


def test_nudge_claimed_before_the_lead_answered_sends_nothing(session, frozen_clock, scheduler_env):
    """The scheduler claimed the nudge, then the lead answered before the action ran: no nudge goes out."""
    conversation = make_lead(session, at=frozen_clock.now())
    nudge = tasks.after_bot_turn(session, conversation, asked_question=True)
    session.commit()
    nudge.status = "running"  # claimed: the reply's cancellation no longer reaches it
    frozen_clock.advance(timedelta(minutes=31))
    lead_writes(session, conversation, frozen_clock.now(), "so 150 im Monat")
    assert tasks.after_lead_message(session, conversation) == 0
    session.commit()

    assert _run(nudge.id, "EXTERNAL_nudge_30m", active_loop="qualification_form")[0] == []
