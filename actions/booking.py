"""The in-chat booking flow (issue 6 point 4): two slot proposals as buttons, pick, book; cancel and reschedule.

- `action_offer_slots`: runs at the end of the qualified path, after a "yes" to the 24 h/48 h follow-up, on
  "Können wir verschieben?" and on the "Andere Termine" button. Sends two free slots (from the team calendar's
  free/busy, `leadbot.services.booking.propose_slots`) as quick-reply buttons; each payload carries the slot's
  start (`/book_slot{"slot_start": "<ISO>"}`) so a tap books exactly what was shown.
- `action_book_slot`: the button payload, or a typed choice ("der erste", "Donnerstag passt", "10 Uhr") matched
  against the offered options (`booking.choose_option`); books, or moves the lead's existing appointment. The
  confirmation is uttered here (the channel enqueues it), so the service is called with `notify=False`.
- `action_cancel_appointment`: "Ich muss absagen".
When the calendar is unreachable or has no free slot in the horizon, the team takes over (`hand_over`), so a
lead who wants a call never ends in a dead end.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from rasa_sdk import Action, Tracker
from rasa_sdk.events import EventType, FollowupAction, SlotSet
from rasa_sdk.executor import CollectingDispatcher
from sqlalchemy.orm import Session

from actions.handover import hand_over
from actions.qualification import in_conversation, latest_intent, latest_text
from leadbot.clock import now
from leadbot.config import settings
from leadbot.db.models import Conversation
from leadbot.services import booking
from leadbot.services.booking import BookingError

log = logging.getLogger(__name__)

MORE_BUTTON = {"title": "Andere Termine", "payload": "/request_more_slots"}
NOT_A_LEAD_TEXT = "Termine kann ich nur direkt über WhatsApp vereinbaren."


@dataclass
class Outcome:
    kind: str  # offer | has_appointment | none_free | unavailable | booked | moved | cancelled | no_appointment
    text: str = ""
    buttons: list[dict[str, str]] = field(default_factory=list)
    options: list[str] = field(default_factory=list)


def slot_buttons(starts: list[datetime], conversation: Conversation) -> list[dict[str, str]]:
    zone = booking.contact_zone(conversation)
    return [
        {"title": booking.format_slot(start, zone), "payload": f'/book_slot{{"slot_start": "{start.isoformat()}"}}'}
        for start in starts
    ]


def _parse(value: Any) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def _options(tracker: Tracker) -> list[datetime]:
    return [parsed for parsed in (_parse(v) for v in tracker.get_slot("booking_options") or []) if parsed]


async def _reply(dispatcher: CollectingDispatcher, tracker: Tracker, outcome: Outcome | None) -> list[EventType]:
    if outcome is None:
        dispatcher.utter_message(text=NOT_A_LEAD_TEXT)
        return []
    if outcome.kind in ("none_free", "unavailable"):
        log.warning("booking not possible for this lead (%s); handing over to the team", outcome.kind)
        return [SlotSet("booking_offered", False), *await hand_over(dispatcher, tracker, f"booking_{outcome.kind}")]
    dispatcher.utter_message(text=outcome.text, buttons=outcome.buttons or None)
    if outcome.kind == "offer":
        return [SlotSet("booking_options", outcome.options), SlotSet("booking_offered", True)]
    return [SlotSet("booking_options", None), SlotSet("booking_offered", False)]


class ActionOfferSlots(Action):
    def name(self) -> str:
        return "action_offer_slots"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]) -> list[EventType]:
        intent = latest_intent(tracker)
        offered = _options(tracker)
        # "Andere Termine": continue after the last slot shown instead of offering the same two again.
        after = max(offered) + timedelta(minutes=1) if intent == "request_more_slots" and offered else None
        moving = intent == "reschedule_appointment"

        def work(session: Session, conversation: Conversation) -> Outcome:
            active = booking.active_appointment(session, conversation)
            zone = booking.contact_zone(conversation)
            if active is not None and not moving and intent != "request_more_slots":
                return Outcome(
                    "has_appointment",
                    f"Du hast schon einen Termin: {booking.format_slot(active.starts_at, zone)} Uhr. "
                    "Möchtest du ihn verschieben oder absagen?",
                    [
                        {"title": "Verschieben", "payload": "/reschedule_appointment"},
                        {"title": "Absagen", "payload": "/cancel_appointment"},
                    ],
                )
            try:
                slots = booking.propose_slots(session, conversation, after=after, exclude=active)
            except BookingError as exc:
                log.warning("no slots: %s", exc)
                return Outcome("unavailable")
            if not slots:
                return Outcome("none_free")
            minutes = settings().booking_duration_minutes
            if after is not None:
                text = "Klar, hier sind zwei weitere Termine:"
            elif moving and active is not None:
                text = "Kein Problem! Wann passt es dir besser? Hier sind 2 neue Vorschläge:"
            else:
                text = f"Super! Hier sind 2 Terminvorschläge für einen kurzen Call ({minutes} Min.). Welcher passt dir?"
            starts = [slot.start for slot in slots]
            return Outcome("offer", text, [*slot_buttons(starts, conversation), MORE_BUTTON],
                           [start.isoformat() for start in starts])

        return await _reply(dispatcher, tracker, await in_conversation(tracker.sender_id, work))


class ActionBookSlot(Action):
    def name(self) -> str:
        return "action_book_slot"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]) -> list[EventType]:
        options = _options(tracker)
        chosen = _parse(next(tracker.get_latest_entity_values("slot_start"), None) or "")
        text = latest_text(tracker)

        def work(session: Session, conversation: Conversation) -> Outcome:
            zone = booking.contact_zone(conversation)
            start = chosen
            if start is None:
                index = booking.choose_option(text, options, zone, now())
                start = options[index] if index is not None else None
            if start is None:
                if not options:
                    return Outcome("reoffer")
                return Outcome("offer", "Welcher Termin passt dir? Tipp einfach auf einen der Buttons 🙂",
                               [*slot_buttons(options, conversation), MORE_BUTTON], [o.isoformat() for o in options])
            active = booking.active_appointment(session, conversation)
            if active is not None:
                moved = booking.reschedule(session, active, start, notify=False)
                return Outcome("moved", booking.moved_text(moved, zone))
            appointment = booking.book(session, conversation, start, notify=False)
            return Outcome("booked", booking.confirmation_text(appointment, zone))

        try:
            outcome = await in_conversation(tracker.sender_id, work)
        except BookingError as exc:  # the transaction was rolled back: nothing was booked
            if exc.code == "calendar_unavailable":
                return await _reply(dispatcher, tracker, Outcome("unavailable"))
            log.info("chosen slot not bookable: %s", exc.code)
            dispatcher.utter_message(text="Der Termin ist leider gerade vergeben. Ich schau nach neuen Vorschlägen …")
            return [SlotSet("booking_options", None), FollowupAction("action_offer_slots")]
        if outcome is not None and outcome.kind == "reoffer":
            return [FollowupAction("action_offer_slots")]
        return await _reply(dispatcher, tracker, outcome)


class ActionCancelAppointment(Action):
    def name(self) -> str:
        return "action_cancel_appointment"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]) -> list[EventType]:
        new_one = [{"title": "Neuen Termin finden", "payload": "/request_slots"}]

        def work(session: Session, conversation: Conversation) -> Outcome:
            active = booking.active_appointment(session, conversation)
            if active is None:
                return Outcome("no_appointment", "Ich finde gerade keinen offenen Termin von dir. "
                                                 "Möchtest du einen vereinbaren?", new_one)
            label = booking.format_slot(active.starts_at, booking.contact_zone(conversation))
            booking.cancel(session, active, "lead", notify=False)
            text = (
                f"Schade, aber kein Problem – dein Termin am {label} Uhr ist abgesagt. "
                "Wenn du doch noch einen Termin möchtest, tipp einfach auf den Button."
            )
            return Outcome("cancelled", text, new_one)

        try:
            outcome = await in_conversation(tracker.sender_id, work)
        except BookingError as exc:
            if exc.code != "calendar_unavailable":
                raise
            return await _reply(dispatcher, tracker, Outcome("unavailable"))
        return await _reply(dispatcher, tracker, outcome)
