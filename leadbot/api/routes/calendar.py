"""Calendar integration endpoints (seed §6): book, cancel, reschedule, attendance, and free slots.

Thin over `leadbot.services.booking`, which writes our rows first and the CalDAV calendar last; a `BookingError`
rolls the whole request back (the unit of work), so a failed calendar write leaves nothing half-done here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from leadbot.api.deps import Idempotency, db_session, idempotency, require_api_key
from leadbot.api.routes.common import DbId, StrictModel, get_contact_or_404
from leadbot.db.models import Appointment, Conversation
from leadbot.services import booking, contacts

router = APIRouter(prefix="/integrations/calendar", tags=["calendar"], dependencies=[Depends(require_api_key)])

# BookingError codes → HTTP: the request was fine but the calendar/appointment state forbids it (409), the input is
# unusable (422), or the calendar server is down (503, retry later).
_STATUS = {
    "slot_unavailable": 409,
    "already_booked": 409,
    "not_active": 409,
    "not_started": 409,
    "invalid_time": 422,
    "calendar_unavailable": 503,
}
_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"description": "Unknown contact or appointment"},
    409: {"description": "Slot taken, already booked, appointment not active or not started (`code` says which)"},
    503: {"description": "The calendar server is unreachable; nothing was changed"},
}


class Book(StrictModel):
    contact_id: DbId
    slot_start: AwareDatetime = Field(description="A free slot's start (see GET /integrations/calendar/slots)")
    notify: bool = Field(default=True, description="Confirm the booking to the lead on WhatsApp")


class Cancel(StrictModel):
    appointment_id: DbId
    notify: bool = True


class Reschedule(StrictModel):
    appointment_id: DbId
    new_start: AwareDatetime
    notify: bool = True


class Attendance(StrictModel):
    appointment_id: DbId
    attended: bool = Field(description="true: attended; false: no-show")


class AppointmentView(BaseModel):
    id: int
    conversation_id: int
    contact_id: int
    status: str
    starts_at: datetime
    ends_at: datetime
    meeting_link: str | None


class SlotView(BaseModel):
    start: datetime
    end: datetime


def _view(session: Session, appointment: Appointment) -> AppointmentView:
    conversation = session.get(Conversation, appointment.conversation_id)
    return AppointmentView(
        id=appointment.id,
        conversation_id=appointment.conversation_id,
        contact_id=conversation.contact_id,
        status=appointment.status,
        starts_at=appointment.starts_at,
        ends_at=appointment.ends_at,
        meeting_link=appointment.meeting_link,
    )


def _appointment_or_404(session: Session, appointment_id: int) -> Appointment:
    appointment = session.execute(
        select(Appointment).where(Appointment.id == appointment_id).with_for_update()
    ).scalar_one_or_none()
    if appointment is None:
        raise HTTPException(404, "unknown appointment")
    return appointment


def _booking_failed(exc: booking.BookingError) -> HTTPException:
    return HTTPException(_STATUS.get(exc.code, 409), {"code": exc.code, "message": str(exc)})


@router.get("/slots", response_model=list[SlotView], responses=_RESPONSES)
def slots(
    contact_id: Annotated[int, Query(gt=0, le=2**31 - 1)],
    count: Annotated[int, Query(ge=1, le=10)] = 2,
    session: Session = Depends(db_session),
) -> list[SlotView]:
    """The next free slots to offer this contact (the earliest, then one per later day)."""
    contact = get_contact_or_404(session, contact_id)
    conversation = contacts.current_conversation(session, contact)
    try:
        found = booking.propose_slots(session, conversation, count)
    except booking.BookingError as exc:
        raise _booking_failed(exc) from exc
    session.rollback()  # read-only: drop a conversation that current_conversation may have opened
    return [SlotView(start=slot.start, end=slot.end) for slot in found]


@router.post("/book", status_code=201, response_model=AppointmentView, responses=_RESPONSES)
def book(body: Book, session: Session = Depends(db_session), idem: Idempotency = Depends(idempotency)) -> JSONResponse:
    """Book a slot: calendar event with meeting link, appointment, reminders, CRM activity, WhatsApp confirmation."""
    request_body = body.model_dump(mode="json")
    if (replayed := idem.replay(request_body)) is not None:
        return replayed
    contact = get_contact_or_404(session, body.contact_id)
    conversation = contacts.current_conversation(session, contact, lock=True)
    try:
        appointment = booking.book(session, conversation, body.slot_start, notify=body.notify)
    except booking.BookingError as exc:
        raise _booking_failed(exc) from exc
    response = _view(session, appointment).model_dump(mode="json")
    idem.store(request_body, 201, response)
    session.commit()
    return JSONResponse(response, status_code=201)


@router.post("/cancel", response_model=AppointmentView, responses=_RESPONSES)
def cancel(body: Cancel, session: Session = Depends(db_session)) -> AppointmentView:
    """Cancel: event deleted, reminders cancelled, CRM activity, message to the lead."""
    appointment = _appointment_or_404(session, body.appointment_id)
    try:
        booking.cancel(session, appointment, "api", notify=body.notify)
    except booking.BookingError as exc:
        raise _booking_failed(exc) from exc
    view = _view(session, appointment)
    session.commit()
    return view


@router.post("/reschedule", response_model=AppointmentView, responses=_RESPONSES)
def reschedule(body: Reschedule, session: Session = Depends(db_session)) -> AppointmentView:
    """Move the appointment to another free slot: event, reminders, CRM activity, message to the lead."""
    appointment = _appointment_or_404(session, body.appointment_id)
    try:
        booking.reschedule(session, appointment, body.new_start, notify=body.notify)
    except booking.BookingError as exc:
        raise _booking_failed(exc) from exc
    view = _view(session, appointment)
    session.commit()
    return view


@router.post("/attendance", response_model=AppointmentView, responses=_RESPONSES)
def attendance(body: Attendance, session: Session = Depends(db_session)) -> AppointmentView:
    """Record attended / no-show (for the show-up rate); mirrored into the calendar event."""
    appointment = _appointment_or_404(session, body.appointment_id)
    try:
        booking.record_attendance(session, appointment, body.attended)
    except booking.BookingError as exc:
        raise _booking_failed(exc) from exc
    view = _view(session, appointment)
    session.commit()
    return view
