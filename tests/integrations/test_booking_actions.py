"""The in-chat booking flow: the real Rasa actions (rasa-sdk) on our database and a real Radicale calendar.

Rasa itself is not running here: each turn builds the tracker Rasa would send to the action server (sender id,
latest message with intent/entities/text, slots) and checks what the action says and which events it returns.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import pytest
from rasa_sdk import Tracker
from rasa_sdk.events import FollowupAction, SlotSet
from rasa_sdk.executor import CollectingDispatcher
from sqlalchemy import select
from sqlalchemy.orm import Session

from actions.booking import ActionBookSlot, ActionCancelAppointment, ActionOfferSlots
from leadbot.adapters.calendar.caldav_adapter import CalDavCalendar
from leadbot.clock import FrozenClock
from leadbot.config import settings
from leadbot.db.models import Appointment
from leadbot.phone import sender_id_for
from leadbot.services import booking
from tests.integrations.conftest import CALDAV_PASSWORD, CALDAV_USER
from tests.integrations.test_booking import berlin, make_conversation

PHONE = "+4915112345678"


@pytest.fixture
def configured_calendar(calendar: CalDavCalendar, radicale_url: str) -> Iterator[CalDavCalendar]:
    """The action server's calendar comes from CALDAV_* settings, as in production."""
    names = {"CALDAV_URL": radicale_url, "CALDAV_USERNAME": CALDAV_USER, "CALDAV_PASSWORD": CALDAV_PASSWORD,
             "CALDAV_CALENDAR": calendar.calendar_ref}
    previous = {name: os.environ.get(name) for name in names}
    os.environ.update(names)
    settings.cache_clear()
    booking._calendar = None
    yield calendar
    for name, value in previous.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    settings.cache_clear()
    booking._calendar = None


def turn(action: Any, text: str, intent: str, slots: dict[str, Any], entities: list[dict[str, Any]] | None = None
         ) -> tuple[list[dict[str, Any]], list[Any]]:
    tracker = Tracker(
        sender_id_for(PHONE), dict(slots), {"text": text, "intent": {"name": intent}, "entities": entities or []},
        [], False, None, {}, "action_listen",
    )
    dispatcher = CollectingDispatcher()
    events = asyncio.run(action.run(dispatcher, tracker, {}))
    for event in events:
        if isinstance(event, dict) and event.get("event") == "slot":
            slots[event["name"]] = event["value"]
    return dispatcher.messages, events


def test_offer_pick_by_button_move_by_typing_and_cancel(
    db: Session, configured_calendar: CalDavCalendar, frozen_clock: FrozenClock
) -> None:
    make_conversation(db, PHONE)
    slots: dict[str, Any] = {}

    [offer], _ = turn(ActionOfferSlots(), "Ich möchte einen Termin", "request_slots", slots)
    assert offer["text"].startswith("Super! Hier sind 2 Terminvorschläge")
    titles = [b["title"] for b in offer["buttons"]]
    assert titles == ["Mi, 25.11. um 12:00", "Do, 26.11. um 09:00", "Andere Termine"]
    assert slots["booking_offered"] is True and len(slots["booking_options"]) == 2
    assert all(len(title) <= 20 for title in titles)  # WhatsApp's quick-reply limit

    # "Andere Termine" continues after the last slot shown.
    [more], _ = turn(ActionOfferSlots(), "Andere Termine", "request_more_slots", slots)
    assert [b["title"] for b in more["buttons"]][:2] == ["Do, 26.11. um 09:30", "Fr, 27.11. um 09:00"]

    # Tapping a button: Rasa parses the payload into intent and entity.
    payload = more["buttons"][1]["payload"]
    assert payload.startswith("/book_slot{")
    start = slots["booking_options"][1]
    [confirmation], _ = turn(ActionBookSlot(), payload, "book_slot", slots,
                             [{"entity": "slot_start", "value": start}])
    assert confirmation["text"].startswith("Perfekt, dein Termin steht: Fr, 27.11. um 09:00 Uhr (30 Min.)")
    assert slots == {"booking_options": None, "booking_offered": False}
    db.expire_all()
    [appointment] = db.execute(select(Appointment)).scalars()
    assert appointment.starts_at == berlin(27, 9, 0)
    assert configured_calendar.get_event(appointment.calendar_uid) is not None

    # Asking for slots again reminds the lead of the appointment instead of booking a second one.
    [reminder], _ = turn(ActionOfferSlots(), "Wann hast du Zeit?", "request_slots", slots)
    assert "Du hast schon einen Termin: Fr, 27.11. um 09:00 Uhr" in reminder["text"]

    # "Können wir verschieben?" then a typed choice moves the same appointment.
    [offer], _ = turn(ActionOfferSlots(), "Können wir verschieben?", "reschedule_appointment", slots)
    assert offer["text"].startswith("Kein Problem! Wann passt es dir besser?")
    [ask], _ = turn(ActionBookSlot(), "ja", "affirm", slots)  # which one? the buttons again
    assert ask["text"].startswith("Welcher Termin passt dir?") and len(ask["buttons"]) == 3
    [moved], _ = turn(ActionBookSlot(), "der zweite", "book_slot", slots)
    assert moved["text"].startswith("Erledigt, dein Termin ist verschoben auf Do, 26.11. um 09:00 Uhr")
    db.expire_all()
    [appointment] = db.execute(select(Appointment)).scalars()
    assert (appointment.status, appointment.starts_at) == ("rescheduled", berlin(26, 9, 0))
    assert configured_calendar.get_event(appointment.calendar_uid).start == berlin(26, 9, 0)

    [cancelled], _ = turn(ActionCancelAppointment(), "Ich muss absagen", "cancel_appointment", slots)
    assert "dein Termin am Do, 26.11. um 09:00 Uhr ist abgesagt" in cancelled["text"]
    assert cancelled["buttons"] == [{"title": "Neuen Termin finden", "payload": "/request_slots"}]
    db.expire_all()
    assert db.execute(select(Appointment.status)).scalar_one() == "cancelled"
    assert configured_calendar.get_event(appointment.calendar_uid) is None


def test_a_slot_taken_between_offer_and_tap_gets_new_proposals(
    db: Session, configured_calendar: CalDavCalendar, frozen_clock: FrozenClock
) -> None:
    make_conversation(db, PHONE)
    slots: dict[str, Any] = {}
    turn(ActionOfferSlots(), "Schick mir Termine", "request_slots", slots)
    first = slots["booking_options"][0]
    other = make_conversation(db, "+4915112345679", "Max")
    booking.book(db, other, datetime.fromisoformat(first), calendar=configured_calendar, notify=False)
    db.commit()

    [sorry], events = turn(ActionBookSlot(), "der erste", "book_slot", slots)
    assert sorry["text"].startswith("Der Termin ist leider gerade vergeben")
    assert FollowupAction("action_offer_slots") in events and SlotSet("booking_options", None) in events
    db.expire_all()
    assert len(db.execute(select(Appointment)).all()) == 1


def test_non_lead_senders_are_told_politely(configured_calendar: CalDavCalendar, frozen_clock: FrozenClock,
                                            engine: Any) -> None:
    tracker = Tracker("default", {}, {"text": "Termin", "intent": {"name": "request_slots"}, "entities": []}, [],
                      False, None, {}, "action_listen")
    dispatcher = CollectingDispatcher()
    assert asyncio.run(ActionOfferSlots().run(dispatcher, tracker, {})) == []
    assert dispatcher.messages[0]["text"] == "Termine kann ich nur direkt über WhatsApp vereinbaren."


def test_slot_starts_in_payloads_are_aware_utc(frozen_clock: FrozenClock) -> None:
    from actions.booking import _parse

    assert _parse("2026-11-26T09:00:00+00:00").tzinfo == timezone.utc
    assert _parse("2026-11-26T09:00:00") is None and _parse("kaputt") is None
