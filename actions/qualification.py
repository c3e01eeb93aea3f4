"""The qualification dialogue (issue 4, seed §4): welcome, consent to two questions, Q1 ads, Q2 lead volume, outcome.

Division of labour: Rasa NLU + rules decide *which* step runs (data/rules/qualification.yml); the German parsers in
`leadbot.domain.understanding` decide *what an answer means* inside the form, so "jo, Meta und Google" and
"so um die 150 die Woche" work without training data for every phrasing. Persistence goes through
`leadbot.services.qualification` (answers, status/current_state, CRM lead upsert).

Inside `qualification_form` every lead message is first offered to the parser of the open question. Only when it
does not parse and NLU saw a question/greeting (or always for a human request, a complaint, an opt-out or a
scheduler intent) the form rejects it, and the interruption rules answer before the form asks again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

from rasa_sdk import Action, FormValidationAction, Tracker
from rasa_sdk.events import EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict
from sqlalchemy.orm import Session

from leadbot.clock import now
from leadbot.config import settings
from leadbot.db.models import Conversation
from leadbot.db.session import session_scope
from leadbot.domain import understanding
from leadbot.domain.text import fold
from leadbot.services import qualification, tasks

log = logging.getLogger(__name__)
T = TypeVar("T")

FORM = "qualification_form"
# Never an answer: these always leave the form to their rules (or the scheduler's rules for EXTERNAL_*).
HARD_INTERRUPTIONS = frozenset({"request_human", "complain", "opt_out"})
# An answer when the parser understands it ("Danke, ja laufen auf Meta"), otherwise answered by their rule.
SOFT_INTERRUPTIONS = frozenset({"ask_question", "bot_challenge", "greet", "thank", "goodbye"})
# More than two misunderstandings in a row hand over (seed §4).
MAX_MISUNDERSTANDINGS = 2
HANDOVER_MISUNDERSTANDINGS = "misunderstandings"
# Optional link for leads without ads (seed §4 "optional Ressourcenlink"); empty: no link.
RESOURCE_URL_ENV = "DISQUALIFY_RESOURCE_URL"
_LEAD_NOUN = re.compile(r"lead|anfrage|kontakt")

# --- What the bot says (German, du-form, tone of the seed's templates) ------------------------------------------------
WELCOME_TEXT = (
    "Hey{name}, danke für deine Nachricht 🙌\n"
    "Ich hätte kurz 2 Fragen, damit ich einschätzen kann, ob wir dir schnell helfen können. Passt das?"
)
CONSENT_THANKS = "Super, danke dir! 🙌"
CONSENT_DECLINED = "Alles klar, kein Problem 🙂 Falls du später doch Fragen hast, schreib mir einfach hier."
CONSENT_LATER = "Klar, kein Stress! Meld dich einfach, wenn's besser passt – ich bin hier 🙂"
Q1 = "Schaltest du aktuell Ads?"
Q1_HINT = (
    "Sorry, das hab ich nicht ganz verstanden 🙈 Schaltest du aktuell Ads, z. B. auf Meta oder Google? "
    "Ein kurzes Ja oder Nein reicht."
)
Q2 = "Wie viele Leads generierst du ca. pro Monat?"
Q2_HINT = (
    "Sorry, das hab ich nicht ganz verstanden 🙈 Wie viele Leads sind es ungefähr pro Monat? "
    "Eine grobe Zahl reicht, z. B. 50, 150 oder 500."
)
Q2_UNKNOWN_ONCE_MORE = (
    "Kein Problem! Grob geschätzt reicht mir völlig: eher unter 100, 100 bis 300 oder über 300 Leads im Monat?"
)
BACK_TO_QUESTION = "Zurück zu meiner Frage: "
LATER_IN_FORM = "Kein Stress 🙂 Antworte einfach, wenn's dir passt. Ich erinnere dich später nochmal kurz daran."
DISQUALIFIED_NO_ADS = (
    "Danke dir für die ehrliche Antwort 🙏 Unser Angebot lohnt sich vor allem, wenn schon Ads laufen – "
    "aktuell passt es deshalb noch nicht."
)
RESOURCE_LINK = "Falls du dich schon mal einlesen willst: {url}"
DISQUALIFIED_NO_ADS_END = "Wenn ihr mit Ads startet, meld dich gern wieder 🙂"
DISQUALIFIED_LOW_VOLUME = (
    "Danke dir! 🙏 Bei unter 100 Leads im Monat lohnt sich das Setup für dich gerade noch nicht wirklich. "
    "Meld dich gern später wieder, wenn es mehr Anfragen werden – dann schauen wir gemeinsam drauf 🙂"
)
QUALIFIED = (
    "Mega, danke dir! 🙌 Das klingt so, als könnten wir dir gut helfen. Im nächsten Schritt machen wir einen kurzen "
    "Call, in dem ich dir live zeige, wie das bei dir aussehen würde."
)
# What follows QUALIFIED and VOLUME_UNKNOWN: the booking feature's two slot proposals (rule -> action_offer_slots).
VOLUME_UNKNOWN = (
    "Alles klar, kein Problem 🙂 Das klären wir am besten kurz im Call – da schauen wir gemeinsam, wie viele "
    "Anfragen ihr habt und ob es passt."
)


# --- Helpers shared by the dialogue actions --------------------------------------------------------------------------
def latest_intent(tracker: Tracker) -> str:
    return ((tracker.latest_message or {}).get("intent") or {}).get("name") or ""


def latest_text(tracker: Tracker) -> str:
    return (tracker.latest_message or {}).get("text") or ""


def misunderstandings(tracker: Tracker) -> int:
    return int(tracker.get_slot("misunderstandings") or 0)


def _in_conversation(sender_id: str, work: Callable[[Session, Conversation], T]) -> T | None:
    with session_scope() as session:
        conversation = qualification.conversation_for_sender(session, sender_id)
        if conversation is None:
            return None
        return work(session, conversation)


async def in_conversation(sender_id: str, work: Callable[[Session, Conversation], T]) -> T | None:
    """Run `work` in one transaction on the sender's conversation (None for non-lead senders such as `rasa shell`).

    The database calls block; a worker thread keeps the action server's event loop free for other conversations.
    """
    return await asyncio.to_thread(_in_conversation, sender_id, work)


def first_name_of(conversation: Conversation) -> str | None:
    name = (conversation.contact.first_name or "").strip()
    return name or None


# --- Welcome and consent ------------------------------------------------------------------------------------------
def _welcome_events() -> list[EventType]:
    return [SlotSet("qualification_stage", "consent_pending"), SlotSet("misunderstandings", 0)]


async def send_welcome_text(dispatcher: CollectingDispatcher, tracker: Tracker) -> list[EventType]:
    """The welcome as a session message, for a lead who wrote first (the 24 h window is open, no template needed)."""

    def work(session: Session, conversation: Conversation) -> str | None:
        qualification.set_state(session, conversation, qualification.CONSENT_PENDING)
        return first_name_of(conversation)

    name = await in_conversation(tracker.sender_id, work)
    dispatcher.utter_message(text=WELCOME_TEXT.format(name=f" {name}" if name else ""))
    return _welcome_events()


class ActionWelcome(Action):
    """`EXTERNAL_welcome` (the scheduler, 5 min after the opt-in): send template `lead_welcome_v1` once."""

    def name(self) -> str:
        return "action_welcome"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict) -> list[EventType]:
        if tracker.get_slot("qualification_stage") is not None:
            # The lead wrote first and the dialogue already started: a late welcome would repeat the question.
            log.info("welcome skipped: conversation already at %s", tracker.get_slot("qualification_stage"))
            return []
        if latest_intent(tracker) != "EXTERNAL_welcome":
            return await send_welcome_text(dispatcher, tracker)
        raw_task_id = next(tracker.get_latest_entity_values("task_id"), None)

        def work(session: Session, conversation: Conversation) -> dict[str, Any] | None:
            if raw_task_id is not None and str(raw_task_id).isdigit():
                # At most once per task: a retried trigger must not send the template twice.
                message = tasks.message_for_fire(session, int(raw_task_id), "welcome")
                if message is None:
                    return None
                json_message = message.json_message()
            else:
                json_message = {
                    "template": "lead_welcome_v1",
                    "variables": {"first_name": first_name_of(conversation) or tasks.FIRST_NAME_FALLBACK},
                    "deadline": None,
                    "purpose": "marketing",
                }
            qualification.set_state(session, conversation, qualification.CONSENT_PENDING)
            return json_message

        json_message = await in_conversation(tracker.sender_id, work)
        if json_message is None and not tracker.sender_id.startswith("wa"):
            # Not a lead (rasa shell, tests without a database): still show the template.
            json_message = {
                "template": "lead_welcome_v1",
                "variables": {"first_name": tasks.FIRST_NAME_FALLBACK},
                "deadline": None,
                "purpose": "marketing",
            }
        if json_message is None:
            log.info("welcome task already sent or cancelled; nothing to do")
            return []
        dispatcher.utter_message(json_message=json_message)
        return _welcome_events()


class ActionConsentGiven(Action):
    def name(self) -> str:
        return "action_consent_given"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict) -> list[EventType]:
        dispatcher.utter_message(text=CONSENT_THANKS)
        events: list[EventType] = [SlotSet("qualification_stage", "questions"), SlotSet("misunderstandings", 0)]
        ads = understanding.parse_ads_running(latest_text(tracker)) if latest_intent(tracker) == "inform_ads" else None
        if ads is not None:
            # "Ja, wir schalten Meta Ads" to "Passt das?" already answers Q1: the form starts at Q2 (or ends at no).
            await in_conversation(
                tracker.sender_id,
                lambda session, conversation: qualification.record_ads_running(session, conversation, ads),
            )
            events.append(SlotSet("ads_running", ads))
        return events


class ActionConsentDeclined(Action):
    """"Nein" or "später" to the two questions: respected, no questions; the state tells the scheduler which."""

    def name(self) -> str:
        return "action_consent_declined"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict) -> list[EventType]:
        later = latest_intent(tracker) == "later"
        state = qualification.CONSENT_LATER if later else qualification.CONSENT_DECLINED

        def work(session: Session, conversation: Conversation) -> None:
            qualification.set_state(session, conversation, state)
            if later:
                # "Später" gets one follow-up (the 24 h template offers the call); a "no" gets none.
                delay = timedelta(seconds=settings().followup_24h_delay_seconds)
                tasks.schedule(
                    session, conversation, "followup_24h", now() + delay, dedupe_key=f"followup_24h:c{conversation.id}"
                )

        await in_conversation(tracker.sender_id, work)
        dispatcher.utter_message(text=CONSENT_LATER if later else CONSENT_DECLINED)
        return [SlotSet("qualification_stage", "declined"), SlotSet("misunderstandings", 0)]


# --- The form: extraction and validation ---------------------------------------------------------------------------
def _answer_attempt(tracker: Tracker, slot: str, parses: Callable[[str], bool]) -> dict[str, Any]:
    """The raw text as a candidate for the open question, or {} to let the form reject the message."""
    if tracker.get_slot("requested_slot") != slot:
        return {}
    intent, text = latest_intent(tracker), latest_text(tracker)
    if intent.startswith("EXTERNAL_") or intent in HARD_INTERRUPTIONS or not text:
        return {}
    if intent in SOFT_INTERRUPTIONS and not parses(text):
        return {}
    return {slot: text}


def _misunderstood(tracker: Tracker, slot: str) -> dict[str, Any]:
    count = misunderstandings(tracker) + 1
    if count > MAX_MISUNDERSTANDINGS:
        # Ends the form (required_slots() becomes empty); action_qualification_submit hands over.
        return {slot: None, "misunderstandings": 0, "handover_reason": HANDOVER_MISUNDERSTANDINGS}
    return {slot: None, "misunderstandings": count}


def _mentions_leads(text: str) -> bool:
    return bool(_LEAD_NOUN.search(fold(text)))


class ValidateQualificationForm(FormValidationAction):
    def name(self) -> str:
        return "validate_qualification_form"

    async def required_slots(
        self, domain_slots: list[str], dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[str]:
        if tracker.get_slot("handover_reason"):
            return []
        if tracker.get_slot("ads_running") == "no":
            return ["ads_running"]  # no ads: Q2 is moot, the form ends and the lead is disqualified
        return domain_slots

    async def extract_ads_running(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> dict[str, Any]:
        return _answer_attempt(tracker, "ads_running", lambda text: understanding.parse_ads_running(text) is not None)

    async def extract_monthly_leads(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> dict[str, Any]:
        return _answer_attempt(
            tracker, "monthly_leads", lambda text: understanding.parse_lead_volume(text) is not None
        )

    async def validate_ads_running(
        self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> dict[str, Any]:
        if value in ("yes", "no"):  # already parsed (restored after a new session)
            return {"ads_running": value}
        text = str(value or "")
        answer = understanding.parse_ads_running(text)
        if answer is None:
            if latest_intent(tracker) == "later":
                return {"ads_running": None}  # not a misunderstanding; action_ask_ads_running says "kein Stress"
            return _misunderstood(tracker, "ads_running")
        result: dict[str, Any] = {"ads_running": answer, "misunderstandings": 0}
        volume = understanding.parse_lead_volume(text) if answer == "yes" and _mentions_leads(text) else None
        if volume is not None and volume.bucket != "unknown":
            # "Ja, über Meta, so 150 Leads im Monat" answers Q2 as well: don't ask what we were already told.
            result.update(monthly_leads=volume.bucket, monthly_leads_estimate=volume.monthly_estimate)

        def work(session: Session, conversation: Conversation) -> None:
            qualification.record_ads_running(session, conversation, answer)
            if "monthly_leads" in result:
                qualification.record_volume(session, conversation, volume.bucket, volume.monthly_estimate)

        await in_conversation(tracker.sender_id, work)
        return result

    async def validate_monthly_leads(
        self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> dict[str, Any]:
        if value in ("<100", "100-300", "300+", "unknown"):  # already a bucket (restored or pre-filled by Q1)
            return {"monthly_leads": value}
        volume = understanding.parse_lead_volume(str(value or ""))
        if volume is None:
            if latest_intent(tracker) == "later":
                return {"monthly_leads": None}
            return _misunderstood(tracker, "monthly_leads")
        if volume.bucket == "unknown" and not tracker.get_slot("volume_unknown_asked"):
            # "keine Ahnung": ask once more with the buckets as a help (action_ask_monthly_leads), then accept it.
            return {"monthly_leads": None, "volume_unknown_asked": True, "misunderstandings": 0}
        await in_conversation(
            tracker.sender_id,
            lambda session, conversation: qualification.record_volume(
                session, conversation, volume.bucket, volume.monthly_estimate
            ),
        )
        return {
            "monthly_leads": volume.bucket,
            "monthly_leads_estimate": volume.monthly_estimate,
            "misunderstandings": 0,
        }


# --- The form's questions -------------------------------------------------------------------------------------------
# Actions after which the form's question is the natural next message (no "Zurück zu meiner Frage").
_LEADS_INTO_QUESTION = frozenset({"action_listen", "action_consent_given", "action_resume", "action_session_start"})


def _action_before_form(tracker: Tracker) -> str | None:
    """The action that ran before the form asks: Rasa runs the ask action on a tracker whose last action is the form
    itself, so the one before it tells whether the lead's message was just validated (`action_listen`) or an
    interruption (a question, a greeting) was answered first."""
    executed = [event.get("name") for event in tracker.events if event.get("event") == "action"]
    return executed[-2] if len(executed) >= 2 else None


def _scheduled_message_sent_nothing(tracker: Tracker) -> bool:
    """The form was handed back after a scheduled task that sent nothing (the lead answered in the meantime): the
    lead has the question already, so asking again would send it twice."""
    if _action_before_form(tracker) != "action_send_scheduled_template":
        return False
    for event in reversed(tracker.events):
        if event.get("event") == "bot":
            return False
        if event.get("event") == "action" and event.get("name") == "action_send_scheduled_template":
            return True
    return False


def _question_text(tracker: Tracker, question: str, hint: str) -> str:
    before = _action_before_form(tracker)
    if before == "action_listen" and misunderstandings(tracker) > 0:
        return hint
    if before not in _LEADS_INTO_QUESTION:
        return BACK_TO_QUESTION + question
    return question


def _said_later(tracker: Tracker) -> bool:
    return latest_intent(tracker) == "later" and _action_before_form(tracker) == "action_listen"


async def _enter_question(tracker: Tracker, state: str) -> tuple[bool, bool]:
    """Record the open question; a "später" to it gets one reminder later instead of the 30-minute nudge.
    Returns (silent, later): say nothing (a scheduled message was just sent), or answer "später"."""
    silent = _scheduled_message_sent_nothing(tracker)
    later = _said_later(tracker) and not silent

    def work(session: Session, conversation: Conversation) -> None:
        qualification.set_state(session, conversation, state)
        if later:
            tasks.after_later_in_questions(session, conversation)

    await in_conversation(tracker.sender_id, work)
    return silent, later


class ActionAskAdsRunning(Action):
    def name(self) -> str:
        return "action_ask_ads_running"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict) -> list[EventType]:
        silent, later = await _enter_question(tracker, qualification.Q1_ADS_RUNNING)
        if silent:
            return []
        if later:
            dispatcher.utter_message(text=LATER_IN_FORM)
        else:
            dispatcher.utter_message(text=_question_text(tracker, Q1, Q1_HINT))
        return []


class ActionAskMonthlyLeads(Action):
    def name(self) -> str:
        return "action_ask_monthly_leads"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict) -> list[EventType]:
        silent, later = await _enter_question(tracker, qualification.Q2_MONTHLY_LEADS)
        just_answered = _action_before_form(tracker) == "action_listen"
        if silent:
            return []
        if later:
            dispatcher.utter_message(text=LATER_IN_FORM)
        elif just_answered and tracker.get_slot("volume_unknown_asked") and misunderstandings(tracker) == 0:
            dispatcher.utter_message(text=Q2_UNKNOWN_ONCE_MORE)
        else:
            dispatcher.utter_message(text=_question_text(tracker, Q2, Q2_HINT))
        return []


# --- The outcome -------------------------------------------------------------------------------------------------
class ActionQualificationSubmit(Action):
    """The form ended: hand over (too many misunderstandings) or apply the seed's decision tree."""

    def name(self) -> str:
        return "action_qualification_submit"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict) -> list[EventType]:
        reason = tracker.get_slot("handover_reason")
        if reason:
            # Imported here: actions.handover imports this module's helpers (an import cycle at module level).
            from actions.handover import hand_over

            # The stage stays "questions", so the hand-back resumes the form at the open question.
            return [*await hand_over(dispatcher, tracker, reason), SlotSet("qualification_stage", "questions")]
        ads_running = tracker.get_slot("ads_running")
        bucket = tracker.get_slot("monthly_leads")
        estimate = tracker.get_slot("monthly_leads_estimate")
        estimate_int = int(estimate) if estimate is not None else None

        def work(session: Session, conversation: Conversation) -> qualification.Outcome:
            outcome = qualification.finish(session, conversation, ads_running, bucket, estimate_int)
            if outcome.qualified != "false":
                # The booking starts right away; if the lead does not pick a slot, the 24 h/48 h follow-ups do.
                tasks.on_qualified(session, conversation)
            return outcome

        outcome = await in_conversation(tracker.sender_id, work) or qualification.decide(ads_running, bucket)
        if outcome.reason == "no_ads":
            dispatcher.utter_message(text=DISQUALIFIED_NO_ADS)
            url = os.environ.get(RESOURCE_URL_ENV, "").strip()
            if url:
                dispatcher.utter_message(text=RESOURCE_LINK.format(url=url))
            dispatcher.utter_message(text=DISQUALIFIED_NO_ADS_END)
            stage = "disqualified"
        elif outcome.reason == "low_volume":
            dispatcher.utter_message(text=DISQUALIFIED_LOW_VOLUME)
            stage = "disqualified"
        elif outcome.qualified == "true":
            dispatcher.utter_message(text=QUALIFIED)
            stage = "qualified"
        else:
            dispatcher.utter_message(text=VOLUME_UNKNOWN)
            stage = "pending"
        return [SlotSet("qualification_stage", stage), SlotSet("misunderstandings", 0)]


GREETING = "Hi 👋"
GREETING_CONSENT = "Hi 👋 Passt es, wenn ich dir kurz 2 Fragen stelle?"
GREETING_AFTER_DECLINE = "Hi 👋 Schön, von dir zu hören! Magst du jetzt kurz meine 2 Fragen beantworten?"
GREETING_OTHER = "Hi 👋 Wie kann ich dir helfen?"


class ActionGreet(Action):
    """A greeting: the welcome for a lead who writes first, otherwise hello plus the open question."""

    def name(self) -> str:
        return "action_greet"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict) -> list[EventType]:
        stage = tracker.get_slot("qualification_stage")
        if tracker.active_loop.get("name"):
            dispatcher.utter_message(text=GREETING)  # the form asks its question right after
            return []
        if stage is None:
            return await send_welcome_text(dispatcher, tracker)
        if stage == "consent_pending":
            dispatcher.utter_message(text=GREETING_CONSENT)
            return []
        if stage == "declined":
            await in_conversation(
                tracker.sender_id,
                lambda session, conversation: qualification.set_state(
                    session, conversation, qualification.CONSENT_PENDING
                ),
            )
            dispatcher.utter_message(text=GREETING_AFTER_DECLINE)
            return [SlotSet("qualification_stage", "consent_pending")]
        dispatcher.utter_message(text=GREETING_OTHER)
        return []
