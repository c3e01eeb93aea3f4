"""Booking: free slots from the team calendar, and booking, cancelling, moving and attendance of appointments.

Callers: the Rasa actions (`actions/booking.py`, in-chat flow), the ops API (`/integrations/calendar/*`) and the
scheduler (`run_calendar_sync`). Every function works in the caller's session; the caller commits, and MUST roll
back when a `BookingError` is raised (nothing half-done then stays in our tables).

Order of effects inside `book`/`reschedule`/`cancel`: our rows first (appointment, reminders via
`leadbot.services.tasks`, the CRM `activity` outbox row, the WhatsApp message), the calendar write last. A calendar
failure thus raises before anything is committed; the remaining window (calendar written, then our commit fails)
leaves at worst an orphan event whose UID ends in `@leadbot`.

Concurrency: on PostgreSQL a transaction-scoped advisory lock serialises bookings across processes from the
free/busy check to the commit, so two leads picking the same slot at once cannot both get it.

Slots: `BOOKING_DURATION_MINUTES` long, starting every `BOOKING_SLOT_STEP_MINUTES` inside `BOOKING_HOURS_START`–
`BOOKING_HOURS_END` on `BOOKING_WORKDAYS` in `BOOKING_TIMEZONE` (a zoneinfo zone), at least
`BOOKING_LEAD_TIME_MINUTES` ahead and at most `BOOKING_HORIZON_DAYS` ahead; shown to the lead in their zone.
"""

from __future__ import annotations

import logging
import re
import threading
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from leadbot.adapters.calendar.caldav_adapter import BusyInterval, CalDavCalendar, CalendarError, CalendarEvent
from leadbot.clock import now as clock_now
from leadbot.config import Settings, settings
from leadbot.db.models import Appointment, Conversation
from leadbot.services import crm_outbox, outbound

log = logging.getLogger(__name__)

ACTIVE_STATUSES = ("booked", "rescheduled")
WEEKDAYS_SHORT = ("Mo", "Di", "Mi", "Do", "Fr", "Sa", "So")
WEEKDAYS_LONG = ("montag", "dienstag", "mittwoch", "donnerstag", "freitag", "samstag", "sonntag")
_LOCK_KEY = 0x1EAD_B007  # pg advisory lock id for "a booking is being decided"


class BookingError(Exception):
    """`code`: slot_unavailable | already_booked | not_active | not_started | calendar_unavailable | invalid_time."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Slot:
    start: datetime
    end: datetime


@dataclass
class SyncResult:
    attended: int = 0
    no_show: int = 0
    cancelled: int = 0
    moved: int = 0
    errors: list[str] = field(default_factory=list)


# --- calendar ------------------------------------------------------------------------------------------------
_calendar: CalDavCalendar | None = None
_calendar_lock = threading.Lock()


def configured_calendar() -> CalDavCalendar:
    """The process's calendar from CALDAV_* settings (one client, reused)."""
    global _calendar
    with _calendar_lock:
        if _calendar is None:
            _calendar = CalDavCalendar.from_settings()
        return _calendar


def _cal(calendar: CalDavCalendar | None) -> CalDavCalendar:
    try:
        return calendar or configured_calendar()
    except CalendarError as exc:
        raise BookingError("calendar_unavailable", str(exc)) from exc


# --- formatting and parsing (German, for the lead) -----------------------------------------------------------
def contact_zone(conversation: Conversation, cfg: Settings | None = None) -> ZoneInfo:
    name = (conversation.contact.timezone if conversation.contact else None) or (cfg or settings()).booking_timezone
    try:
        return ZoneInfo(name)
    except (KeyError, ValueError):  # a bad value on the contact must not break booking
        return ZoneInfo((cfg or settings()).booking_timezone)


def format_slot(start: datetime, zone: ZoneInfo) -> str:
    """`Do, 26.11. um 10:00` (fits WhatsApp's 20-character button titles)."""
    local = start.astimezone(zone)
    return f"{WEEKDAYS_SHORT[local.weekday()]}, {local:%d.%m.} um {local:%H:%M}"


def confirmation_text(appointment: Appointment, zone: ZoneInfo) -> str:
    minutes = int((appointment.ends_at - appointment.starts_at).total_seconds() // 60)
    return (
        f"Perfekt, dein Termin steht: {format_slot(appointment.starts_at, zone)} Uhr ({minutes} Min.) 🙌\n"
        f"Hier ist dein Link: {appointment.meeting_link}\n"
        "Ich erinnere dich vorher noch kurz."
    )


def moved_text(appointment: Appointment, zone: ZoneInfo) -> str:
    return (
        f"Erledigt, dein Termin ist verschoben auf {format_slot(appointment.starts_at, zone)} Uhr 👍\n"
        f"Der Link bleibt: {appointment.meeting_link}"
    )


def cancelled_text(appointment: Appointment, zone: ZoneInfo) -> str:
    return (
        f"Alles klar, dein Termin am {format_slot(appointment.starts_at, zone)} Uhr ist abgesagt. "
        "Wenn du einen neuen möchtest, schreib mir einfach."
    )


_ORDINALS = (
    (0, re.compile(r"\b(erste[nrms]?|1\.|nr\.? ?1|nummer (1|eins)|fr(ü|ue)here[nrms]?|oberste[nrms]?)\b")),
    (1, re.compile(r"\b(zweite[nrms]?|2\.|nr\.? ?2|nummer (2|zwei)|sp(ä|ae)tere[nrms]?|letzte[nrms]?"
                   r"|untere[nrms]?)\b")),
)
_TIME = re.compile(r"\b(\d{1,2})(?:[:.](\d{2}))?\s*(?:uhr)\b|\bum\s+(\d{1,2})(?:[:.](\d{2}))?\b|\b(\d{1,2}):(\d{2})\b")
_DATE = re.compile(r"\b(\d{1,2})\.(\d{1,2})\.?")


def choose_option(message: str, options: list[datetime], zone: ZoneInfo, now: datetime | None = None) -> int | None:
    """Which offered slot a typed answer means ("der erste", "Donnerstag passt", "10 Uhr", "26.11."), or None.

    Every clue found narrows the options; exactly one left is the answer. A bare "1"/"2" counts as an ordinal.
    """
    textual = (message or "").strip().lower()
    if not textual or not options:
        return None
    local = [o.astimezone(zone) for o in options]
    titles = [format_slot(o, zone).lower() for o in options]
    if textual in titles:
        return titles.index(textual)
    candidates = set(range(len(options)))
    clues = 0
    if textual in ("1", "2") and int(textual) <= len(options):
        return int(textual) - 1
    without_dates = _DATE.sub(" ", textual)  # "26.11." must not read as the ordinal "1."
    for index, pattern in _ORDINALS:
        if pattern.search(without_dates) and index < len(options):
            candidates &= {index if index == 0 else len(options) - 1}
            clues += 1
    for day_index, name in enumerate(WEEKDAYS_LONG):
        if re.search(rf"\b{name}", textual):
            candidates &= {i for i, o in enumerate(local) if o.weekday() == day_index}
            clues += 1
    today = (now or clock_now()).astimezone(zone).date()
    for word, offset in (("übermorgen", 2), ("uebermorgen", 2), ("morgen", 1), ("heute", 0)):
        if re.search(rf"\b{word}\b", textual):
            candidates &= {i for i, o in enumerate(local) if o.date() == today + timedelta(days=offset)}
            clues += 1
            break
    for match in _DATE.finditer(textual):
        day, month = int(match.group(1)), int(match.group(2))
        candidates &= {i for i, o in enumerate(local) if (o.day, o.month) == (day, month)}
        clues += 1
    time_match = _TIME.search(without_dates)
    if time_match:
        groups = time_match.groups()
        hour = int(groups[0] or groups[2] or groups[4])
        minute = groups[1] or groups[3] or groups[5]
        candidates &= {
            i for i, o in enumerate(local) if o.hour == hour and (minute is None or o.minute == int(minute))
        }
        clues += 1
    if clues and len(candidates) == 1:
        return candidates.pop()
    return None


# --- slots ---------------------------------------------------------------------------------------------------
def _overlaps(start: datetime, end: datetime, busy: Iterable[BusyInterval]) -> bool:
    return any(interval.start < end and start < interval.end for interval in busy)


def candidate_starts(earliest: datetime, cfg: Settings) -> Iterator[datetime]:
    """Slot starts inside business hours, in wall-clock steps of the booking zone (DST-correct), from `earliest`."""
    zone = ZoneInfo(cfg.booking_timezone)
    duration = timedelta(minutes=cfg.booking_duration_minutes)
    step = timedelta(minutes=cfg.booking_slot_step_minutes)
    first_day = earliest.astimezone(zone).date()
    for offset in range(cfg.booking_horizon_days + 1):
        day = first_day + timedelta(days=offset)
        if day.weekday() not in cfg.booking_workdays:
            continue
        opening = datetime.combine(day, time(*cfg.booking_hours_start))
        closing = datetime.combine(day, time(*cfg.booking_hours_end))
        local = opening
        while local + duration <= closing:
            start = local.replace(tzinfo=zone).astimezone(timezone.utc)
            if start >= earliest:
                yield start
            local += step


def _db_busy(session: Session, exclude_id: int | None = None) -> list[BusyInterval]:
    """Our own active appointments: they block even before the calendar shows them (e.g. a slow server)."""
    query = select(Appointment).where(Appointment.status.in_(ACTIVE_STATUSES), Appointment.ends_at > clock_now())
    if exclude_id is not None:
        query = query.where(Appointment.id != exclude_id)
    return [BusyInterval(a.starts_at, a.ends_at) for a in session.execute(query).scalars()]


def free_slots(
    session: Session,
    *,
    calendar: CalDavCalendar | None = None,
    now: datetime | None = None,
    after: datetime | None = None,
    exclude: Appointment | None = None,
    cfg: Settings | None = None,
) -> Iterator[Slot]:
    """Free slots in order, checked against the calendar's busy times and our own appointments."""
    cfg = cfg or settings()
    current = now or clock_now()
    earliest = current + timedelta(minutes=cfg.booking_lead_time_minutes)
    if after is not None:
        earliest = max(earliest, after)
    horizon_end = current + timedelta(days=cfg.booking_horizon_days + 1)
    exclude_uids = (exclude.calendar_uid,) if exclude is not None and exclude.calendar_uid else ()
    try:
        busy = _cal(calendar).busy(earliest, horizon_end, cfg.booking_timezone, exclude_uids=exclude_uids)
    except CalendarError as exc:
        raise BookingError("calendar_unavailable", str(exc)) from exc
    busy += _db_busy(session, exclude.id if exclude is not None else None)
    duration = timedelta(minutes=cfg.booking_duration_minutes)
    for start in candidate_starts(earliest, cfg):
        if start >= horizon_end:
            return
        if not _overlaps(start, start + duration, busy):
            yield Slot(start, start + duration)


def propose_slots(
    session: Session,
    conversation: Conversation,
    count: int = 2,
    *,
    calendar: CalDavCalendar | None = None,
    now: datetime | None = None,
    after: datetime | None = None,
    exclude: Appointment | None = None,
) -> list[Slot]:
    """The next free slots to offer: the earliest, then one per later day, so the lead gets a real choice
    (falls back to the next free slots of the same day when the horizon has no other day)."""
    chosen: list[Slot] = []
    spare: list[Slot] = []
    days: set[date] = set()
    zone = ZoneInfo(settings().booking_timezone)
    for slot in free_slots(session, calendar=calendar, now=now, after=after, exclude=exclude):
        day = slot.start.astimezone(zone).date()
        if day in days:
            if len(spare) < count:
                spare.append(slot)
            continue
        days.add(day)
        chosen.append(slot)
        if len(chosen) == count:
            break
    chosen += spare[: count - len(chosen)]
    return sorted(chosen, key=lambda s: s.start)


def _serialise_bookings(session: Session) -> None:
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})


def _check_bookable(
    session: Session, start: datetime, calendar: CalDavCalendar, exclude: Appointment | None = None
) -> Slot:
    if start.tzinfo is None:
        raise BookingError("invalid_time", "slot_start needs a time zone")
    start = start.astimezone(timezone.utc)
    cfg = settings()
    if start not in set(candidate_starts(start, cfg)) or start < clock_now() + timedelta(
        minutes=cfg.booking_lead_time_minutes
    ):
        raise BookingError("slot_unavailable", "outside business hours or lead time")
    for slot in free_slots(session, calendar=calendar, after=start, exclude=exclude):
        if slot.start == start:
            return slot
        break
    raise BookingError("slot_unavailable", "the slot is taken")


def active_appointment(session: Session, conversation: Conversation) -> Appointment | None:
    """The conversation's upcoming booked (or moved) appointment."""
    return session.execute(
        select(Appointment)
        .where(
            Appointment.conversation_id == conversation.id,
            Appointment.status.in_(ACTIVE_STATUSES),
            Appointment.ends_at > clock_now(),
        )
        .order_by(Appointment.starts_at)
        .limit(1)
    ).scalar_one_or_none()


def _activity(session: Session, conversation: Conversation, kind: str, appointment: Appointment, text_: str) -> None:
    crm_outbox.enqueue(
        session,
        conversation.contact_id,
        "activity",
        {
            "type": kind,
            "text": text_,
            "occurred_at": clock_now().isoformat(),
            "appointment_id": appointment.id,
            "starts_at": appointment.starts_at.isoformat(),
            "ends_at": appointment.ends_at.isoformat(),
            "meeting_link": appointment.meeting_link,
            "status": appointment.status,
        },
    )


def _team_label(start: datetime) -> str:
    zone = ZoneInfo(settings().booking_timezone)
    return f"{format_slot(start, zone)} ({zone.key})"


# --- use cases -----------------------------------------------------------------------------------------------
def book(
    session: Session,
    conversation: Conversation,
    slot_start: datetime,
    *,
    calendar: CalDavCalendar | None = None,
    notify: bool = True,
) -> Appointment:
    """Book `slot_start` for the conversation: appointment, reminders, CRM activity, WhatsApp confirmation
    (`notify=False` when the caller says it itself, like the chat action), then the calendar event."""
    from leadbot.services import tasks

    cal = _cal(calendar)
    _serialise_bookings(session)
    if active_appointment(session, conversation) is not None:
        raise BookingError("already_booked", "the conversation has an upcoming appointment; reschedule it")
    slot = _check_bookable(session, slot_start, cal)
    cfg = settings()
    token = uuid.uuid4().hex
    appointment = Appointment(
        conversation_id=conversation.id,
        status="booked",
        starts_at=slot.start,
        ends_at=slot.end,
        meeting_link=cfg.booking_meeting_link_template.format(token=token[:16]),
        calendar_uid=f"{token}@leadbot",
        created_at=clock_now(),
        updated_at=clock_now(),
    )
    session.add(appointment)
    conversation.current_state = "booked"
    session.flush()
    tasks.on_booked(session, conversation, appointment)
    _activity(session, conversation, "appointment_booked", appointment,
              f"Termin gebucht über WhatsApp: {_team_label(slot.start)}, Link: {appointment.meeting_link}")
    zone = contact_zone(conversation)
    if notify:
        outbound.enqueue(session, conversation, text=confirmation_text(appointment, zone))
    contact = conversation.contact
    name = (contact.first_name or "").strip() or "Lead"
    try:
        cal.create_event(
            uid=appointment.calendar_uid,
            start=slot.start,
            end=slot.end,
            zone=cfg.booking_timezone,
            summary=f"Call mit {name} (WhatsApp-Lead)",
            description=(
                f"Meeting-Link: {appointment.meeting_link}\n"
                f"Lead: {name}, WhatsApp {contact.whatsapp_e164}\n"
                f"leadbot Termin #{appointment.id}. Teilnahme markieren: Kategorie 'attended' oder 'no_show'."
            ),
            location=appointment.meeting_link,
        )
    except CalendarError as exc:
        raise BookingError("calendar_unavailable", str(exc)) from exc
    log.info("appointment %s booked for conversation %s", appointment.id, conversation.id)
    return appointment


def _require_active(appointment: Appointment) -> None:
    if appointment.status not in ACTIVE_STATUSES:
        raise BookingError("not_active", f"appointment is {appointment.status}")


def cancel(
    session: Session,
    appointment: Appointment,
    by: str,
    *,
    calendar: CalDavCalendar | None = None,
    notify: bool = True,
    delete_event: bool = True,
) -> Appointment:
    """Cancel: appointment `cancelled`, reminders cancelled, CRM activity, message to the lead, event deleted.
    `by`: lead | team | api | calendar (the last when the team deleted the event, see the calendar sync)."""
    from leadbot.services import tasks

    _require_active(appointment)
    conversation = session.get(Conversation, appointment.conversation_id)
    appointment.status = "cancelled"
    appointment.updated_at = clock_now()
    if conversation.current_state == "booked":
        conversation.current_state = "booking_cancelled"
    session.flush()
    tasks.on_appointment_cancelled(session, appointment)
    _activity(session, conversation, "appointment_cancelled", appointment,
              f"Termin abgesagt ({by}): {_team_label(appointment.starts_at)}")
    if notify:
        outbound.enqueue(session, conversation, text=cancelled_text(appointment, contact_zone(conversation)))
    if delete_event and appointment.calendar_uid:
        try:
            _cal(calendar).delete_event(appointment.calendar_uid)
        except CalendarError as exc:
            raise BookingError("calendar_unavailable", str(exc)) from exc
    return appointment


def reschedule(
    session: Session,
    appointment: Appointment,
    new_start: datetime,
    *,
    calendar: CalDavCalendar | None = None,
    notify: bool = True,
    write_calendar: bool = True,
) -> Appointment:
    """Move the appointment in place (status `rescheduled`, same UID and link): reminders moved, CRM activity,
    message to the lead, event moved (re-created when someone deleted it meanwhile)."""
    from leadbot.services import tasks

    _require_active(appointment)
    cal = _cal(calendar)
    conversation = session.get(Conversation, appointment.conversation_id)
    if write_calendar:
        _serialise_bookings(session)
        slot = _check_bookable(session, new_start, cal, exclude=appointment)
    else:  # the team moved it in their calendar: that is the truth, whatever our business hours say
        slot = Slot(new_start, new_start + (appointment.ends_at - appointment.starts_at))
    old_start = appointment.starts_at
    appointment.starts_at, appointment.ends_at = slot.start, slot.end
    appointment.status = "rescheduled"
    appointment.updated_at = clock_now()
    session.flush()
    tasks.on_appointment_moved(session, appointment)
    _activity(session, conversation, "appointment_rescheduled", appointment,
              f"Termin verschoben: {_team_label(old_start)} → {_team_label(slot.start)}")
    if notify:
        outbound.enqueue(session, conversation, text=moved_text(appointment, contact_zone(conversation)))
    if write_calendar:
        cfg = settings()
        try:
            if not cal.move_event(appointment.calendar_uid, slot.start, slot.end, cfg.booking_timezone):
                contact = conversation.contact
                cal.create_event(
                    uid=appointment.calendar_uid, start=slot.start, end=slot.end, zone=cfg.booking_timezone,
                    summary=f"Call mit {(contact.first_name or '').strip() or 'Lead'} (WhatsApp-Lead)",
                    description=f"Meeting-Link: {appointment.meeting_link}\nleadbot Termin #{appointment.id}",
                    location=appointment.meeting_link,
                )
        except CalendarError as exc:
            raise BookingError("calendar_unavailable", str(exc)) from exc
    return appointment


def record_attendance(
    session: Session,
    appointment: Appointment,
    attended: bool,
    *,
    calendar: CalDavCalendar | None = None,
    write_calendar: bool = True,
) -> Appointment:
    """Attended or no-show (for the show-up rate); a correction of an earlier mark is allowed, a cancelled
    appointment cannot be attended. The mark is mirrored into the event (best effort: our row is the record)."""
    if appointment.status not in (*ACTIVE_STATUSES, "attended", "no_show"):
        raise BookingError("not_active", f"appointment is {appointment.status}")
    if appointment.starts_at > clock_now():
        raise BookingError("not_started", "attendance can be recorded once the appointment has started")
    status = "attended" if attended else "no_show"
    if appointment.status == status:
        return appointment
    appointment.status = status
    appointment.updated_at = clock_now()
    conversation = session.get(Conversation, appointment.conversation_id)
    session.flush()
    label = "erschienen" if attended else "nicht erschienen"
    _activity(session, conversation, f"appointment_{status}", appointment,
              f"Termin {_team_label(appointment.starts_at)}: {label}")
    if write_calendar and appointment.calendar_uid:
        try:
            _cal(calendar).set_attendance(appointment.calendar_uid, status)
        except (CalendarError, BookingError) as exc:
            log.warning("attendance of appointment %s not mirrored to the calendar: %s", appointment.id, exc)
    return appointment


def _event_by_uid(cal: CalDavCalendar, uid: str, window: dict[str, CalendarEvent], zone: str) -> CalendarEvent | None:
    return window[uid] if uid in window else cal.get_event(uid, zone)


def sync_attendance_from_calendar(
    session: Session,
    *,
    calendar: CalDavCalendar | None = None,
    now: datetime | None = None,
    lookback_days: int = 14,
) -> SyncResult:
    """Read back what the team did in their calendar, for appointments from `lookback_days` ago on:
    attendance marks (after the start), events deleted or cancelled (→ cancelled, lead told), events moved
    (→ rescheduled, reminders moved, lead told). Attended/no-show rows are final and not read again."""
    cfg = settings()
    cal = _cal(calendar)
    current = now or clock_now()
    result = SyncResult()
    appointments = list(
        session.execute(
            select(Appointment).where(
                Appointment.status.in_(ACTIVE_STATUSES),
                Appointment.starts_at >= current - timedelta(days=lookback_days),
                Appointment.calendar_uid.is_not(None),
            )
        ).scalars()
    )
    if not appointments:
        return result
    start = min(a.starts_at for a in appointments) - timedelta(days=1)
    end = max(a.ends_at for a in appointments) + timedelta(days=1)
    try:
        window = {e.uid: e for e in cal.events(start, end, cfg.booking_timezone)}
    except CalendarError as exc:
        result.errors.append(str(exc))
        return result
    for appointment in appointments:
        try:
            event = _event_by_uid(cal, appointment.calendar_uid, window, cfg.booking_timezone)
            if event is None or event.status == "CANCELLED":
                if appointment.ends_at > current:  # a past event the team cleaned up is not a cancellation
                    cancel(session, appointment, "calendar", calendar=cal, delete_event=False)
                    result.cancelled += 1
                continue
            if event.attendance and event.start <= current:
                record_attendance(session, appointment, event.attendance == "attended", write_calendar=False)
                setattr(result, event.attendance, getattr(result, event.attendance) + 1)
                continue
            if event.start != appointment.starts_at and event.start > current:
                reschedule(session, appointment, event.start, calendar=cal, write_calendar=False)
                result.moved += 1
        except (CalendarError, BookingError) as exc:
            result.errors.append(f"appointment {appointment.id}: {exc}")
    return result


def run_calendar_sync() -> SyncResult:
    """One calendar read-back with the configured database and calendar (scheduler interval job,
    every `CALENDAR_SYNC_SECONDS`)."""
    from leadbot.db.session import session_scope

    if not settings().caldav_url:
        return SyncResult()
    with session_scope() as session:
        return sync_attendance_from_calendar(session)
