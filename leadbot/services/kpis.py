"""KPIs (seed §11), computed from the database for a period [start, end).

Definitions (each conversation counts once; a period owns the event that defines the denominator):
- reply_rate: conversations whose first contact (the `lead_welcome_v1` template, handed to Twilio) was sent in the
  period and that got an inbound message after it / conversations whose first contact was sent in the period.
- qualification_rate: conversations decided as qualified in the period / conversations whose qualification was
  decided (qualified `true` or `false`) in the period. `pending` flows are not "answered" yet.
- booking_rate: of the conversations qualified in the period, those with at least one appointment ever booked /
  conversations qualified in the period.
- show_up_rate: appointments starting in the period that were attended / appointments starting in the period whose
  outcome is recorded (attended or no_show). Cancelled and not-yet-recorded appointments are left out.
- opt_out_rate: contacts that revoked consent in the period (audit `consent_revoked`) / active contacts in the period
  (contacts with at least one inbound or outbound message in the period, or that revoked in it).
- median_first_response_seconds: for conversations whose first inbound message arrived in the period, the time from
  that message to the first bot message after it handed to Twilio (`sent_at`); median over conversations.
- median_first_human_response_seconds: for handovers started in the period and answered by a human, the time from
  the start of the handover to the first human reply; median.
Rates are None when their denominator is 0. Counts are returned beside every rate.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from leadbot.db.models import Appointment, AuditEvent, Conversation, Handover, Message, QualificationAnswer

FIRST_CONTACT_TEMPLATE = "lead_welcome_v1"


@dataclass(frozen=True)
class Kpis:
    start: datetime
    end: datetime
    first_contacts: int
    replies: int
    reply_rate: float | None
    qualification_decided: int
    qualified: int
    qualification_rate: float | None
    booked: int
    booking_rate: float | None
    appointments_with_outcome: int
    attended: int
    show_up_rate: float | None
    active_contacts: int
    opt_outs: int
    opt_out_rate: float | None
    median_first_response_seconds: float | None
    median_first_human_response_seconds: float | None

    def as_dict(self) -> dict:
        data = asdict(self)
        data["start"], data["end"] = self.start.isoformat(), self.end.isoformat()
        return data


def _rate(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def compute(session: Session, start: datetime, end: datetime) -> Kpis:
    # Reply rate: first contacts handed to Twilio in the period, and whether an inbound followed.
    first_contact = (
        select(Message.conversation_id, func.min(Message.sent_at).label("sent_at"))
        .where(Message.template_name == FIRST_CONTACT_TEMPLATE, Message.sent_at.is_not(None))
        .group_by(Message.conversation_id)
        .subquery()
    )
    contacted = session.execute(
        select(first_contact.c.conversation_id, first_contact.c.sent_at).where(
            first_contact.c.sent_at >= start, first_contact.c.sent_at < end
        )
    ).all()
    replies = 0
    for conversation_id, sent_at in contacted:
        replied = session.execute(
            select(Message.id).where(
                Message.conversation_id == conversation_id,
                Message.direction == "inbound",
                Message.created_at >= sent_at,
            ).limit(1)
        ).first()
        replies += replied is not None

    # Qualification and booking: decided flows by the time of the decision.
    decided = session.execute(
        select(QualificationAnswer.conversation_id, QualificationAnswer.qualified).where(
            QualificationAnswer.qualified.in_(("true", "false")),
            QualificationAnswer.updated_at >= start,
            QualificationAnswer.updated_at < end,
        )
    ).all()
    qualified_ids = [conversation_id for conversation_id, verdict in decided if verdict == "true"]
    booked = 0
    if qualified_ids:
        booked = session.execute(
            select(func.count(func.distinct(Appointment.conversation_id))).where(
                Appointment.conversation_id.in_(qualified_ids)
            )
        ).scalar_one()

    # Show-up: appointments in the period with a recorded outcome.
    outcomes = session.execute(
        select(Appointment.status).where(
            Appointment.starts_at >= start,
            Appointment.starts_at < end,
            Appointment.status.in_(("attended", "no_show")),
        )
    ).scalars().all()
    attended = sum(status == "attended" for status in outcomes)

    # Opt-outs against active contacts.
    opted_out = set(
        session.execute(
            select(AuditEvent.contact_id).where(
                AuditEvent.event_type == "consent_revoked", AuditEvent.created_at >= start, AuditEvent.created_at < end
            )
        ).scalars()
    )
    active = set(
        session.execute(
            select(Conversation.contact_id)
            .join(Message, Message.conversation_id == Conversation.id)
            .where(Message.created_at >= start, Message.created_at < end)
        ).scalars()
    ) | opted_out

    # Bot's time to first response on the first inbound of a conversation.
    first_inbound = (
        select(Message.conversation_id, func.min(Message.created_at).label("at"))
        .where(Message.direction == "inbound")
        .group_by(Message.conversation_id)
        .subquery()
    )
    first_reply = session.execute(
        select(first_inbound.c.at, func.min(Message.sent_at))
        .join(
            Message,
            and_(
                Message.conversation_id == first_inbound.c.conversation_id,
                Message.direction == "outbound",
                Message.sender_role == "bot",
                Message.sent_at.is_not(None),
                Message.created_at >= first_inbound.c.at,
            ),
        )
        .where(first_inbound.c.at >= start, first_inbound.c.at < end)
        .group_by(first_inbound.c.conversation_id, first_inbound.c.at)
    ).all()
    response_seconds = [(sent - received).total_seconds() for received, sent in first_reply]

    human_seconds = [
        (answered - started).total_seconds()
        for started, answered in session.execute(
            select(Handover.started_at, Handover.first_human_response_at).where(
                Handover.started_at >= start,
                Handover.started_at < end,
                Handover.first_human_response_at.is_not(None),
            )
        ).all()
    ]

    return Kpis(
        start=start,
        end=end,
        first_contacts=len(contacted),
        replies=replies,
        reply_rate=_rate(replies, len(contacted)),
        qualification_decided=len(decided),
        qualified=len(qualified_ids),
        qualification_rate=_rate(len(qualified_ids), len(decided)),
        booked=booked,
        booking_rate=_rate(booked, len(qualified_ids)),
        appointments_with_outcome=len(outcomes),
        attended=attended,
        show_up_rate=_rate(attended, len(outcomes)),
        active_contacts=len(active),
        opt_outs=len(opted_out),
        opt_out_rate=_rate(len(opted_out), len(active)),
        median_first_response_seconds=_median(response_seconds),
        median_first_human_response_seconds=_median(human_seconds),
    )


def period_bounds(day: date, granularity: str, tz: str) -> tuple[datetime, datetime]:
    """Local-calendar day or ISO week (Monday start) containing `day`, as aware datetimes."""
    zone = ZoneInfo(tz)
    if granularity == "day":
        first = day
        last = day + timedelta(days=1)
    elif granularity == "week":
        first = day - timedelta(days=day.weekday())
        last = first + timedelta(days=7)
    else:
        raise ValueError("granularity must be 'day' or 'week'")
    return datetime.combine(first, time(0), tzinfo=zone), datetime.combine(last, time(0), tzinfo=zone)


def series(session: Session, first_day: date, last_day: date, granularity: str, tz: str) -> list[Kpis]:
    """KPIs per local day or per week from `first_day` to `last_day` inclusive."""
    periods: list[Kpis] = []
    cursor = first_day
    while cursor <= last_day:
        start, end = period_bounds(cursor, granularity, tz)
        periods.append(compute(session, start, end))
        cursor = end.date()
    return periods
