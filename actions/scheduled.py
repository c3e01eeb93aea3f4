"""Scheduled messages: the action behind the scheduler's `EXTERNAL_<task_type>` intents (issue 5).

The scheduler fires a due task through Rasa's trigger_intent API with entity `task_id`; this action loads the
task and sends the seed template for it (`leadbot.services.tasks.message_for_fire`) as a `json_message`. The
WhatsApp channel turns that into `outbound.enqueue`, where the policy gate runs again at send time: consent,
24 h window (templates only outside it) and quiet hours; a reminder deferred past its appointment (`deadline`)
is dropped there with a `policy_blocked_send` audit event.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from rasa_sdk import Action, Tracker
from rasa_sdk.events import EventType, FollowupAction, SlotSet
from rasa_sdk.executor import CollectingDispatcher

from leadbot.db.session import session_scope
from leadbot.services import tasks

log = logging.getLogger(__name__)

EXTERNAL_PREFIX = "EXTERNAL_"


def _load_message(task_id: int, task_type: str | None) -> dict[str, Any] | None:
    with session_scope() as session:
        message = tasks.message_for_fire(session, task_id, task_type)
        return message.json_message() if message is not None else None


class ActionSendScheduledTemplate(Action):
    def name(self) -> str:
        return "action_send_scheduled_template"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[EventType]:
        raw_id = next(tracker.get_latest_entity_values("task_id"), None) or tracker.get_slot("task_id")
        intent = (tracker.latest_message.get("intent") or {}).get("name") or ""
        task_type = intent[len(EXTERNAL_PREFIX):] if intent.startswith(EXTERNAL_PREFIX) else None
        events: list[EventType] = [SlotSet("task_id", None)]
        if raw_id is None or not str(raw_id).isdigit():
            log.warning("scheduled intent %s without a valid task_id", intent)
        else:
            # The DB call blocks; keep the action server's event loop free for other conversations.
            message = await asyncio.to_thread(_load_message, int(raw_id), task_type)
            if message is None:
                log.info("task %s: nothing to send (cancelled, already sent, or no template)", raw_id)
            else:
                dispatcher.utter_message(json_message=message)
        active_loop = (tracker.active_loop or {}).get("name")
        if active_loop:
            # The form rejected the external intent; hand back so it asks its question again (resets the rejection).
            events.append(FollowupAction(active_loop))
        return events
