"""Booking against a real Radicale CalDAV server: proposals, book, cancel, reschedule, attendance, calendar sync.

The clock is frozen at Wednesday 2026-11-25 10:00 Berlin; business hours 09:00-18:00 Mon-Fri, 30-minute slots,
two hours lead time (the defaults).
"""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from leadbot.adapters.calendar.caldav_adapter import CalDavCalendar
from leadbot.adapters.crm.outbox_worker import run_once
from leadbot.clock import FrozenClock
from leadbot.config import settings
from leadbot.db.models import Appointment, Conversation, CrmOutbox, Message, TaskScheduled
from leadbot.services import booking, contacts
from leadbot.services.booking import BookingError
from tests.fakes.hubspot_fake import HubSpotFake

BERLIN = ZoneInfo("Europe/Berlin")


def berlin(day: int, hour: int, minute: int = 0, month: int = 11) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=BERLIN).astimezone(timezone.utc)


def make_conversation(db: Session, phone: str = "+4915112345678", name: str = "Lena") -> Conversation:
    contact = contacts.get_or_create_contact(db, phone, name)
    contact.consent_status = "granted"
    conversation = contacts.current_conversation(db, contact)
    conversation.status = "qualified"
    conversation.service_window_expires_at = datetime(2026, 11, 26, 9, 0, tzinfo=timezone.utc)
    db.commit()
    return conversation


def team_event(calendar: CalDavCalendar, uid: str, lines: str) -> None:
    """An event the team created in their own calendar client (raw iCalendar, not our adapter)."""
    calendar.calendar().save_event(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Team//Client//DE\r\nBEGIN:VEVENT\r\n"
        f"UID:{uid}\r\nDTSTAMP:20261101T000000Z\r\n{lines}END:VEVENT\r\nEND:VCALENDAR\r\n"
    )


def team_edit(calendar: CalDavCalendar, uid: str, replace_from: str, replace_to: str) -> None:
    """The team edits an event in their client: the raw iCalendar text changes on the server."""
    resource = calendar.calendar().event_by_uid(uid)
    data = resource.data
    assert replace_from in data
    resource.data = data.replace(replace_from, replace_to)
    resource.save()


def pending_reminders(db: Session, appointment: Appointment) -> dict[str, datetime]:
    db.expire_all()
    tasks = db.execute(
        select(TaskScheduled).where(TaskScheduled.appointment_id == appointment.id, TaskScheduled.status == "pending")
    ).scalars()
    return {t.task_type: t.run_at for t in tasks}


def test_two_proposals_respect_busy_events_business_hours_and_lead_time(
    db: Session, calendar: CalDavCalendar, frozen_clock: FrozenClock
) -> None:
    conversation = make_conversation(db)
    # Wednesday 12:00-14:00 busy (12:00 is the first slot after the 2 h lead time), Thursday blocked all day,
    # a daily recurring 09:00-10:00 stand-up, and a "free" event that must not block Friday 10:00.
    team_event(calendar, "w@team", "DTSTART;TZID=Europe/Berlin:20261125T120000\r\n"
                                   "DTEND;TZID=Europe/Berlin:20261125T140000\r\nSUMMARY:Workshop\r\n")
    team_event(calendar, "t@team", "DTSTART;VALUE=DATE:20261126\r\nDTEND;VALUE=DATE:20261127\r\nSUMMARY:Messe\r\n")
    team_event(calendar, "s@team", "DTSTART;TZID=Europe/Berlin:20261101T090000\r\n"
                                   "DTEND;TZID=Europe/Berlin:20261101T100000\r\nRRULE:FREQ=DAILY\r\nSUMMARY:Standup\r\n")
    team_event(calendar, "f@team", "DTSTART;TZID=Europe/Berlin:20261127T100000\r\n"
                                   "DTEND;TZID=Europe/Berlin:20261127T110000\r\nTRANSP:TRANSPARENT\r\nSUMMARY:Fokus\r\n")

    first, second = booking.propose_slots(db, conversation, calendar=calendar)

    assert first.start == berlin(25, 14, 0) and first.end == berlin(25, 14, 30)
    assert second.start == berlin(27, 10, 0)  # next day with a free slot, after the stand-up
    zone = booking.contact_zone(conversation)
    titles = [booking.format_slot(s.start, zone) for s in (first, second)]
    assert titles == ["Mi, 25.11. um 14:00", "Fr, 27.11. um 10:00"]

    # Late in the day: the rest of Wednesday is inside the lead time or after closing.
    frozen_clock.set(berlin(25, 16, 45))
    first, second = booking.propose_slots(db, conversation, calendar=calendar)
    assert (first.start, second.start) == (berlin(27, 10, 0), berlin(30, 10, 0))


def test_slots_follow_the_wall_clock_across_a_dst_change() -> None:
    cfg = replace(settings(), booking_timezone="Europe/Berlin", booking_horizon_days=4)
    starts = list(booking.candidate_starts(datetime(2027, 3, 26, 7, 0, tzinfo=timezone.utc), cfg))
    # Friday before and Monday after the switch to summer time both open at 09:00 local.
    assert starts[0] == datetime(2027, 3, 26, 8, 0, tzinfo=timezone.utc)
    assert datetime(2027, 3, 29, 7, 0, tzinfo=timezone.utc) in starts
    assert datetime(2027, 3, 29, 8, 0, tzinfo=timezone.utc) - timedelta(hours=1) in starts


def test_book_creates_event_appointment_confirmation_reminders_and_crm_note(
    db: Session, make_session: sessionmaker, calendar: CalDavCalendar, hubspot: HubSpotFake, hubspot_port,
    frozen_clock: FrozenClock,
) -> None:
    conversation = make_conversation(db)
    friday = booking.Slot(berlin(27, 9, 0), berlin(27, 9, 30))
    appointment = booking.book(db, conversation, friday.start, calendar=calendar)
    db.commit()

    event = calendar.get_event(appointment.calendar_uid)
    assert (event.start, event.end) == (berlin(27, 9, 0), berlin(27, 9, 30))
    raw = calendar.calendar().event_by_uid(appointment.calendar_uid).data
    assert "DTSTART;TZID=Europe/Berlin:20261127T090000" in raw and "BEGIN:VTIMEZONE" in raw
    assert appointment.meeting_link in raw.replace("\r\n ", "")
    assert (appointment.status, appointment.starts_at) == ("booked", berlin(27, 9, 0))

    [confirmation] = db.execute(select(Message).where(Message.direction == "outbound")).scalars()
    assert confirmation.delivery_status == "queued"
    assert "Fr, 27.11. um 09:00" in confirmation.content and appointment.meeting_link in confirmation.content

    assert pending_reminders(db, appointment) == {
        "reminder_22h": berlin(27, 9, 0) - timedelta(hours=22),
        "reminder_55m": berlin(27, 9, 0) - timedelta(minutes=55),
        "reminder_5m": berlin(27, 9, 0) - timedelta(minutes=5),
    }

    # The slot is gone for the next lead, and the CRM gets the booking as a note on the contact.
    other = make_conversation(db, "+4915112345679", "Max")
    assert friday.start not in [s.start for s in booking.propose_slots(db, other, calendar=calendar, count=6)]
    run_once(make_session, hubspot_port)
    [crm_contact] = hubspot.contacts()
    [note] = hubspot.engagements("notes", crm_contact["id"])
    assert note["properties"]["hs_note_body"].startswith("Termin gebucht über WhatsApp: Fr, 27.11. um 09:00")


def test_a_slot_taken_meanwhile_is_refused_and_nothing_is_stored(
    db: Session, calendar: CalDavCalendar, frozen_clock: FrozenClock
) -> None:
    conversation = make_conversation(db)
    first, _ = booking.propose_slots(db, conversation, calendar=calendar)
    team_event(calendar, "late@team", "DTSTART:20261125T110000Z\r\nDTEND:20261125T113000Z\r\nSUMMARY:Intern\r\n")

    with pytest.raises(BookingError) as caught:
        booking.book(db, conversation, first.start, calendar=calendar)
    assert caught.value.code == "slot_unavailable"
    db.rollback()
    assert db.execute(select(Appointment)).first() is None
    with pytest.raises(BookingError, match="business hours"):
        booking.book(db, conversation, berlin(28, 10, 0), calendar=calendar)  # a Saturday


def test_two_leads_picking_the_same_slot_at_once_get_it_once(
    make_session: sessionmaker, db: Session, calendar: CalDavCalendar, frozen_clock: FrozenClock
) -> None:
    first_id = make_conversation(db).id
    second_id = make_conversation(db, "+4915112345679", "Max").id
    slot = booking.propose_slots(db, db.get(Conversation, first_id), calendar=calendar)[0]
    outcome: dict[str, str] = {}

    def second_lead() -> None:
        with make_session() as other:
            try:
                booking.book(other, other.get(Conversation, second_id), slot.start, calendar=calendar)
                other.commit()
                outcome["second"] = "booked"
            except BookingError as exc:
                other.rollback()
                outcome["second"] = exc.code

    with make_session() as mine:
        booking.book(mine, mine.get(Conversation, first_id), slot.start, calendar=calendar)
        racer = threading.Thread(target=second_lead)
        racer.start()  # blocks on the booking lock (or runs after the commit); either way it sees the booking
        mine.commit()
    racer.join(timeout=60)
    assert outcome == {"second": "slot_unavailable"}
    assert len(calendar.events(slot.start - timedelta(hours=1), slot.end + timedelta(hours=1))) == 1


def test_cancel_removes_event_reminders_and_tells_crm_and_lead(
    db: Session, calendar: CalDavCalendar, frozen_clock: FrozenClock
) -> None:
    conversation = make_conversation(db)
    _, tomorrow = booking.propose_slots(db, conversation, calendar=calendar)
    appointment = booking.book(db, conversation, tomorrow.start, calendar=calendar, notify=False)
    db.commit()

    booking.cancel(db, appointment, "api", calendar=calendar)
    db.commit()

    assert appointment.status == "cancelled"
    assert calendar.get_event(appointment.calendar_uid) is None
    assert pending_reminders(db, appointment) == {}
    [message] = db.execute(select(Message)).scalars()
    assert "ist abgesagt" in message.content
    activities = [r.payload_json["type"] for r in db.execute(select(CrmOutbox).order_by(CrmOutbox.id)).scalars()]
    assert activities == ["appointment_booked", "appointment_cancelled"]
    assert booking.propose_slots(db, conversation, calendar=calendar)[1].start == tomorrow.start  # free again
    with pytest.raises(BookingError, match="cancelled"):
        booking.cancel(db, appointment, "api", calendar=calendar)


def test_reschedule_moves_event_and_reminders(db: Session, calendar: CalDavCalendar, frozen_clock: FrozenClock) -> None:
    conversation = make_conversation(db)
    appointment = booking.book(db, conversation, berlin(27, 9, 0), calendar=calendar, notify=False)
    db.commit()
    uid = appointment.calendar_uid
    # Overlapping its own old time is fine: the appointment does not block itself.
    booking.reschedule(db, appointment, berlin(27, 9, 30), calendar=calendar)
    booking.reschedule(db, appointment, berlin(30, 15, 0), calendar=calendar)
    db.commit()

    assert (appointment.status, appointment.calendar_uid) == ("rescheduled", uid)
    event = calendar.get_event(uid)
    assert (event.start, event.end) == (berlin(30, 15, 0), berlin(30, 15, 30))
    assert pending_reminders(db, appointment) == {
        "reminder_22h": berlin(30, 15, 0) - timedelta(hours=22),
        "reminder_55m": berlin(30, 15, 0) - timedelta(minutes=55),
        "reminder_5m": berlin(30, 15, 0) - timedelta(minutes=5),
    }
    assert "Mo, 30.11. um 15:00" in db.execute(select(Message).order_by(Message.id.desc())).scalars().first().content
    with pytest.raises(BookingError):
        booking.reschedule(db, appointment, berlin(30, 19, 0), calendar=calendar)  # after closing


def test_attendance_through_the_api_and_from_the_calendar(
    db: Session, calendar: CalDavCalendar, frozen_clock: FrozenClock
) -> None:
    first = booking.book(db, make_conversation(db), berlin(27, 9, 0), calendar=calendar, notify=False)
    second = booking.book(db, make_conversation(db, "+4915112345679", "Max"), berlin(27, 11, 0), calendar=calendar,
                          notify=False)
    db.commit()
    with pytest.raises(BookingError, match="started"):
        booking.record_attendance(db, first, True, calendar=calendar)

    frozen_clock.set(berlin(27, 12, 0))
    booking.record_attendance(db, first, True, calendar=calendar)  # what the ops API does
    # The team marks the other one in their calendar client.
    team_edit(calendar, second.calendar_uid, "STATUS:CONFIRMED", "STATUS:CONFIRMED\r\nCATEGORIES:Nicht erschienen")
    result = booking.sync_attendance_from_calendar(db, calendar=calendar)
    db.commit()

    assert (first.status, second.status) == ("attended", "no_show")
    assert (result.attended, result.no_show, result.errors) == (0, 1, [])
    assert calendar.get_event(first.calendar_uid).attendance == "attended"  # mirrored for the team
    types = [r.payload_json["type"] for r in db.execute(select(CrmOutbox).order_by(CrmOutbox.id)).scalars()]
    assert types[-2:] == ["appointment_attended", "appointment_no_show"]


def test_calendar_sync_picks_up_events_the_team_deleted_or_moved(
    db: Session, calendar: CalDavCalendar, frozen_clock: FrozenClock
) -> None:
    deleted = booking.book(db, make_conversation(db), berlin(27, 9, 0), calendar=calendar, notify=False)
    moved = booking.book(db, make_conversation(db, "+4915112345679", "Max"), berlin(27, 11, 0), calendar=calendar,
                         notify=False)
    db.commit()
    calendar.calendar().event_by_uid(deleted.calendar_uid).delete()
    team_edit(calendar, moved.calendar_uid, "DTSTART;TZID=Europe/Berlin:20261127T110000",
              "DTSTART;TZID=Europe/Berlin:20261201T160000")
    team_edit(calendar, moved.calendar_uid, "DTEND;TZID=Europe/Berlin:20261127T113000",
              "DTEND;TZID=Europe/Berlin:20261201T163000")

    result = booking.sync_attendance_from_calendar(db, calendar=calendar)
    db.commit()

    assert (result.cancelled, result.moved, result.errors) == (1, 1, [])
    assert deleted.status == "cancelled" and pending_reminders(db, deleted) == {}
    assert (moved.status, moved.starts_at) == ("rescheduled", berlin(1, 16, 0, month=12))
    assert pending_reminders(db, moved)["reminder_5m"] == berlin(1, 15, 55, month=12)
    texts = [m.content for m in db.execute(select(Message).order_by(Message.id)).scalars()]
    assert any("ist abgesagt" in t for t in texts) and any("verschoben auf Di, 01.12. um 16:00" in t for t in texts)
    # A second pass changes nothing.
    assert booking.sync_attendance_from_calendar(db, calendar=calendar) == booking.SyncResult()


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("der erste", 0), ("Den zweiten bitte", 1), ("Donnerstag passt", 0), ("freitag wäre gut", 1),
        ("10 Uhr passt", 0), ("um 14:30", 1), ("27.11. passt", 1), ("morgen", 0), ("2", 1),
        ("Do, 26.11. um 10:00", 0), ("lieber den späteren", 1), ("ja", None), ("Montag", None),
        ("der erste am 27.11.", None),
    ],
)
def test_typed_choices_map_to_the_offered_slot(message: str, expected: int | None) -> None:
    options = [berlin(26, 10, 0), berlin(27, 14, 30)]
    assert booking.choose_option(message, options, BERLIN, now=berlin(25, 10, 0)) == expected
