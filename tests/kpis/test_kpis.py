"""KPI definitions on fixed data: every numerator and denominator checked by hand."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest

from leadbot.db.models import (
    Appointment,
    AuditEvent,
    Contact,
    Conversation,
    Handover,
    Message,
    QualificationAnswer,
)
from leadbot.services.kpis import compute, period_bounds, series

UTC = timezone.utc
DAY = datetime(2026, 11, 23, 0, 0, tzinfo=UTC)  # a Monday
START, END = DAY, DAY + timedelta(days=7)


def at(hours: float) -> datetime:
    return DAY + timedelta(hours=hours)


def lead(session, number: int) -> Conversation:
    contact = Contact(whatsapp_e164=f"+49151000000{number:02d}", consent_status="granted", created_at=at(0),
                      updated_at=at(0))
    session.add(contact)
    session.flush()
    conversation = Conversation(contact_id=contact.id, created_at=at(0), updated_at=at(0))
    session.add(conversation)
    session.flush()
    return conversation


def message(session, conversation, direction, created, *, sent=None, template=None, role="bot"):
    session.add(Message(conversation_id=conversation.id, direction=direction, content="x", template_name=template,
                        message_type="template" if template else "text", delivery_status="sent",
                        sender_role=role, created_at=created, sent_at=sent))


def answer(session, conversation, qualified, decided_at):
    session.add(QualificationAnswer(conversation_id=conversation.id, qualified=qualified, updated_at=decided_at))


@pytest.fixture
def week(session):
    a, b, c, d = (lead(session, n) for n in range(4))
    # a: welcomed, replied after 30 s, qualified, booked, attended. b: welcomed, replied, disqualified.
    # c: welcomed, never replied. d: welcome not yet handed to Twilio (does not count as a first contact).
    for conversation in (a, b, c):
        message(session, conversation, "outbound", at(1), sent=at(1), template="lead_welcome_v1")
    message(session, d, "outbound", at(1), template="lead_welcome_v1")
    message(session, a, "inbound", at(2))
    message(session, a, "outbound", at(2), sent=at(2) + timedelta(seconds=30))
    message(session, b, "inbound", at(3))
    message(session, b, "outbound", at(3), sent=at(3) + timedelta(seconds=90))
    message(session, b, "outbound", at(3), sent=at(3) + timedelta(seconds=10), role="human")  # not the bot
    answer(session, a, "true", at(4))
    answer(session, b, "false", at(4))
    answer(session, c, "pending", at(4))  # not decided: not in the qualification denominator
    session.add(Appointment(conversation_id=a.id, status="attended", starts_at=at(30), ends_at=at(30.5)))
    session.add(Appointment(conversation_id=b.id, status="cancelled", starts_at=at(31), ends_at=at(31.5)))
    session.add(AuditEvent(contact_id=c.contact_id, event_type="consent_revoked", created_at=at(5)))
    session.add(Handover(conversation_id=b.id, reason="keyword", started_at=at(3), first_human_response_at=at(3.25)))
    session.commit()
    return a, b, c, d


def test_week_kpis_match_the_documented_definitions(session, week):
    kpis = compute(session, START, END)
    assert (kpis.first_contacts, kpis.replies, kpis.reply_rate) == (3, 2, pytest.approx(2 / 3))
    assert (kpis.qualification_decided, kpis.qualified, kpis.qualification_rate) == (2, 1, 0.5)
    assert (kpis.booked, kpis.booking_rate) == (1, 1.0)
    assert (kpis.appointments_with_outcome, kpis.attended, kpis.show_up_rate) == (1, 1, 1.0)
    assert (kpis.active_contacts, kpis.opt_outs, kpis.opt_out_rate) == (4, 1, 0.25)
    assert kpis.median_first_response_seconds == 60  # median of 30 s and 90 s; the human's reply is not the bot's
    assert kpis.median_first_human_response_seconds == 900


def test_empty_period_has_no_rates(session, week):
    kpis = compute(session, END, END + timedelta(days=7))
    assert kpis.reply_rate is None and kpis.qualification_rate is None and kpis.median_first_response_seconds is None


def test_daily_series_puts_each_event_on_its_local_day(session, week):
    days = series(session, date(2026, 11, 23), date(2026, 11, 24), "day", "Europe/Berlin")
    assert [d.first_contacts for d in days] == [3, 0]
    assert [d.attended for d in days] == [0, 1]  # the appointment at 06:00 UTC on the 24th


def test_week_bounds_start_on_monday_local_time():
    start, end = period_bounds(date(2026, 11, 26), "week", "Europe/Berlin")
    assert start.isoformat() == "2026-11-23T00:00:00+01:00" and end - start == timedelta(days=7)
