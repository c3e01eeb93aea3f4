"""Session start that restores the dialogue from our database (issue 4 point 10).

A new Rasa session (after `session_expiration_time`, see domain/common.yml) starts without an active form, so the
lead's answer to an open question would be lost. Our database is the source of truth: `conversations.current_state`
names the open question, `qualification_answers` the answers so far. This action carries the slots over (as Rasa's
default does), then overwrites them with what the database says and re-activates the form on the open question.

Handover ownership is not mirrored into Rasa's pause: while `owner == "human"` the WhatsApp channel runs no turns at
all, and a paused Rasa conversation would also swallow the `EXTERNAL_resume` of the hand-back. During a handover the
form stays inactive; `action_resume` re-activates it when the team hands back.
"""

from __future__ import annotations

from rasa_sdk import Action, Tracker
from rasa_sdk.events import ActionExecuted, ActiveLoop, EventType, SessionStarted, SlotSet
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict

from actions.qualification import FORM, in_conversation
from leadbot.services import qualification

# Turn-scoped slots that must not survive into a new session.
_NOT_CARRIED = frozenset({"requested_slot", "task_id", "session_started_metadata"})


class ActionSessionStart(Action):
    def name(self) -> str:
        return "action_session_start"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict) -> list[EventType]:
        events: list[EventType] = [SessionStarted()]
        carry_over = (domain.get("session_config") or {}).get("carry_over_slots_to_new_session", True)
        if carry_over:
            events += [
                SlotSet(name, value)
                for name, value in tracker.current_slot_values().items()
                if value is not None and name not in _NOT_CARRIED
            ]
        restored = await in_conversation(tracker.sender_id, qualification.restore)
        if restored is not None:
            events += [SlotSet(name, value) for name, value in restored.slots.items()]
            if restored.stage is not None:
                events.append(SlotSet("qualification_stage", restored.stage))
            if restored.open_slot is not None and restored.owner == "bot":
                # The lead's next message answers this question, as it would have in the old session.
                events += [ActiveLoop(FORM), SlotSet("requested_slot", restored.open_slot)]
        events.append(ActionExecuted("action_listen"))
        return events
