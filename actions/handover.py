"""Human handover from the dialogue (issue 4 points 9-10, seed §4) and the way back.

Triggers that reach `action_handover`: an explicit request for a human (intent `request_human`: the keyword rules
in `leadbot.rasa_nlu` or DIET) and negative sentiment beyond `HANDOVER_SENTIMENT_THRESHOLD` (intent `complain`, forced
by `leadbot.rasa_nlu`). Two more triggers call `hand_over` directly: the third misunderstanding in a row
(`action_misunderstood` outside the form, `action_qualification_submit` inside it) and price/contract questions
beyond the approved sources (`action_answer_question`).

`leadbot.services.handover.start` sets owner=human and status=handover, writes the `handover` audit event, notifies
the team through the CRM outbox and tells the lead that a human takes over (as a system message, so we do not utter
our own). From then on the WhatsApp channel runs no Rasa turns for the lead; the ops API's hand-back fires
`EXTERNAL_resume`, and `action_resume` continues at the open question.
"""

from __future__ import annotations

import logging
from typing import Any

from rasa_sdk import Action, Tracker
from rasa_sdk.events import ActiveLoop, EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict
from sqlalchemy.orm import Session

from actions.qualification import (
    MAX_MISUNDERSTANDINGS,
    in_conversation,
    latest_intent,
    latest_text,
    misunderstandings,
)
from leadbot.db.models import Conversation
from leadbot.domain import understanding
from leadbot.services import consent, qualification
from leadbot.services import handover as handover_service

log = logging.getLogger(__name__)

# Shown only where no lead is behind the sender id (rasa shell, tests without a database); for real leads the
# handover service sends its own text, which also says when the team is back outside team hours.
HANDOVER_TEXT = "Alles klar, ich gebe dich an mein Team weiter 🙌 Jemand meldet sich gleich hier im Chat bei dir."
NOT_UNDERSTOOD = "Sorry, das hab ich nicht ganz verstanden 🙈"
NOT_UNDERSTOOD_CONSENT = "Passt es, wenn ich dir kurz 2 Fragen stelle? Ein kurzes Ja oder Später reicht."
NOT_UNDERSTOOD_OTHER = "Magst du es nochmal anders formulieren?"
RESUME_QUESTIONS = "Danke dir für die Geduld! Dann machen wir kurz weiter 🙂"
RESUME_CONSENT = "Danke dir für die Geduld! Nochmal kurz zu meiner Frage: Passt es, wenn ich dir 2 kurze Fragen stelle?"


def _reason_for(tracker: Tracker) -> str:
    intent = latest_intent(tracker)
    if intent == "complain":
        return "negative_sentiment"
    if intent == "request_human":
        return understanding.detect_handover_request(latest_text(tracker)) or "request_human"
    return intent or "unknown"


async def hand_over(dispatcher: CollectingDispatcher, tracker: Tracker, reason: str) -> list[EventType]:
    """Start the handover in our database and pause the dialogue where it is (the stage slot stays as it was)."""

    def work(session: Session, conversation: Conversation) -> int:
        return handover_service.start(session, conversation, reason, conversation.current_state).id

    handover_id = await in_conversation(tracker.sender_id, work)
    if handover_id is None:
        dispatcher.utter_message(text=HANDOVER_TEXT)
    log.info("handover %s started (reason %s)", handover_id, reason)
    # An active form ends here (the rules expect `active_loop: null` after action_handover in any case);
    # action_resume re-activates it and it asks the first open question again.
    return [
        ActiveLoop(None),
        SlotSet("misunderstandings", 0),
        SlotSet("handover_reason", None),
        SlotSet("requested_slot", None),
    ]


class ActionHandover(Action):
    def name(self) -> str:
        return "action_handover"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict) -> list[EventType]:
        return await hand_over(dispatcher, tracker, _reason_for(tracker))


class ActionMisunderstood(Action):
    """`nlu_fallback` outside the form: say so and re-ask; the third time in a row a human takes over."""

    def name(self) -> str:
        return "action_misunderstood"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict) -> list[EventType]:
        count = misunderstandings(tracker) + 1
        if count > MAX_MISUNDERSTANDINGS:
            return await hand_over(dispatcher, tracker, "misunderstandings")
        if tracker.get_slot("qualification_stage") == "consent_pending":
            dispatcher.utter_message(text=f"{NOT_UNDERSTOOD} {NOT_UNDERSTOOD_CONSENT}")
        else:
            dispatcher.utter_message(text=f"{NOT_UNDERSTOOD} {NOT_UNDERSTOOD_OTHER}")
        return [SlotSet("misunderstandings", count)]


class ActionResume(Action):
    """After the team handed back: continue at the open question, without asking it twice.

    Runs on `EXTERNAL_resume` (the ops API's hand-back) and, when that trigger did not reach Rasa, on the lead's next
    answer while the questions are paused. The stage comes from our database (the team may have moved the lead on
    while they talked). With stage `questions` the rule re-activates `qualification_form`, which asks the first
    unanswered question itself; a lead message that already answers it is taken as the answer.
    """

    def name(self) -> str:
        return "action_resume"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict) -> list[EventType]:
        restored = await in_conversation(tracker.sender_id, qualification.restore)
        stage = tracker.get_slot("qualification_stage")
        slots = {"ads_running": tracker.get_slot("ads_running"), "monthly_leads": tracker.get_slot("monthly_leads")}
        events: list[EventType] = [SlotSet("misunderstandings", 0), SlotSet("handover_reason", None)]
        if restored is not None:
            stage = restored.stage or stage
            slots.update(restored.slots)
            events += [SlotSet(name, value) for name, value in restored.slots.items()]
            events.append(SlotSet("qualification_stage", stage))
        if stage == "questions":
            answered = [] if latest_intent(tracker) == "EXTERNAL_resume" else _answer_from(tracker, slots)
            if answered:
                await in_conversation(
                    tracker.sender_id, lambda session, conversation: _record(session, conversation, answered)
                )
                events += answered
            else:
                dispatcher.utter_message(text=RESUME_QUESTIONS)
        elif stage == "consent_pending":
            dispatcher.utter_message(text=RESUME_CONSENT)
        # Otherwise nothing is open: the human had the last word, the bot stays quiet until the lead writes.
        return events


def _answer_from(tracker: Tracker, slots: dict[str, Any]) -> list[EventType]:
    """The lead's message as the answer to the first open question, if its parser understands it."""
    text = latest_text(tracker)
    if slots.get("ads_running") is None:
        ads = understanding.parse_ads_running(text)
        return [SlotSet("ads_running", ads)] if ads else []
    if slots.get("ads_running") == "yes" and slots.get("monthly_leads") is None:
        volume = understanding.parse_lead_volume(text)
        if volume is not None and volume.bucket != "unknown":
            return [SlotSet("monthly_leads", volume.bucket), SlotSet("monthly_leads_estimate", volume.monthly_estimate)]
    return []


def _record(session: Session, conversation: Conversation, answered: list[EventType]) -> None:
    values = {event["name"]: event["value"] for event in answered}
    if "ads_running" in values:
        qualification.record_ads_running(session, conversation, values["ads_running"])
    if "monthly_leads" in values:
        qualification.record_volume(session, conversation, values["monthly_leads"], values["monthly_leads_estimate"])


class ActionOptOut(Action):
    """Second line of defence: the channel normally handles opt-out words before Rasa sees them."""

    def name(self) -> str:
        return "action_opt_out"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict) -> list[EventType]:
        def work(session: Session, conversation: Conversation) -> bool:
            consent.revoke(session, conversation.contact, source="whatsapp_dialogue")
            return True

        if await in_conversation(tracker.sender_id, work) is None:
            dispatcher.utter_message(text=consent.OPT_OUT_CONFIRMATION)
        return [ActiveLoop(None), SlotSet("requested_slot", None), SlotSet("misunderstandings", 0)]

