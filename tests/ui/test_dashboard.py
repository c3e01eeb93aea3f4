"""The ops dashboard in headless Chromium against seeded data: the numbers shown are `kpis.compute`'s."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import httpx
import pytest
from sqlalchemy import select

from leadbot.api.routes.dashboard import funnel
from leadbot.db.models import (
    Appointment,
    AuditEvent,
    Contact,
    Conversation,
    DeadLetter,
    Handover,
    Message,
    QualificationAnswer,
)
from leadbot.services import kpis
from tests.ui.conftest import API_KEY, enter_api_key, screenshot

UTC = timezone.utc


def t(day: int, hour: float) -> datetime:
    """A moment in November 2026 (UTC); the frozen clock stands at Wednesday the 25th, 09:00 UTC."""
    return datetime(2026, 11, day, tzinfo=UTC) + timedelta(hours=hour)


def lead(session, number: int, name: str, opted_in: datetime) -> Conversation:
    contact = Contact(whatsapp_e164=f"+4915100000{number:03d}", first_name=name, consent_status="granted",
                      consent_timestamp=opted_in, created_at=opted_in, updated_at=opted_in)
    session.add(contact)
    session.flush()
    session.add(AuditEvent(contact_id=contact.id, event_type="consent_granted", created_at=opted_in))
    conversation = Conversation(contact_id=contact.id, created_at=opted_in, updated_at=opted_in)
    session.add(conversation)
    session.flush()
    return conversation


def welcome(session, conversation, sent: datetime) -> None:
    session.add(Message(conversation_id=conversation.id, direction="outbound", content="Hey, danke für deine Anfrage",
                        template_name=kpis.FIRST_CONTACT_TEMPLATE, message_type="template",
                        delivery_status="delivered", created_at=sent, sent_at=sent))


def reply(session, conversation, received: datetime, bot_seconds: float) -> None:
    session.add(Message(conversation_id=conversation.id, direction="inbound", content="Ja", created_at=received,
                        delivery_status="delivered"))
    session.add(Message(conversation_id=conversation.id, direction="outbound", content="Schaltest du Ads?",
                        created_at=received, sent_at=received + timedelta(seconds=bot_seconds),
                        delivery_status="delivered"))


def decide(session, conversation, verdict: str, at: datetime) -> None:
    session.add(QualificationAnswer(conversation_id=conversation.id, qualified=verdict, updated_at=at,
                                    ads_running="yes", monthly_leads_bucket="100-300" if verdict == "true" else "<100"))


def appointment(session, conversation, starts: datetime, status: str) -> None:
    session.add(Appointment(conversation_id=conversation.id, status=status, starts_at=starts,
                            ends_at=starts + timedelta(minutes=30), created_at=starts - timedelta(days=1),
                            updated_at=starts))


@pytest.fixture
def seeded(session, frozen_clock):
    # Today (Wed 25th): Anna qualified and booked, Ben disqualified and waiting for the team, Clara silent.
    anna = lead(session, 1, "Anna", t(25, 7))
    welcome(session, anna, t(25, 7.1))
    reply(session, anna, t(25, 7.2), 20)
    decide(session, anna, "true", t(25, 7.3))
    appointment(session, anna, t(26, 10), "booked")
    ben = lead(session, 2, "Ben", t(25, 7.5))
    welcome(session, ben, t(25, 7.6))
    reply(session, ben, t(25, 7.7), 40)
    decide(session, ben, "false", t(25, 7.8))
    ben.owner, ben.status = "human", "handover"
    session.add(Handover(conversation_id=ben.id, reason="keyword", started_at=t(25, 7.75)))
    clara = lead(session, 3, "Clara", t(25, 8))
    welcome(session, clara, t(25, 8.1))
    failed = Message(conversation_id=clara.id, direction="outbound", content="Kurzer Reminder",
                     template_name="lead_nudge_v1", message_type="template", delivery_status="failed",
                     error_code="63016", created_at=t(25, 8.5), attempts=5)
    session.add(failed)
    session.flush()
    session.add(DeadLetter(kind="outbound_message", message_id=failed.id, reason="Twilio 63016 after 5 attempts",
                           error_code="63016", attempts=5, created_at=t(25, 8.6)))
    # Earlier this week: Dora attended, Emil was a no-show this morning.
    dora = lead(session, 4, "Dora", t(23, 10))
    welcome(session, dora, t(23, 10.1))
    reply(session, dora, t(23, 11), 60)
    decide(session, dora, "true", t(23, 11.1))
    appointment(session, dora, t(24, 14), "attended")
    emil = lead(session, 5, "Emil", t(24, 9))
    welcome(session, emil, t(24, 9.1))
    reply(session, emil, t(24, 9.5), 30)
    decide(session, emil, "true", t(24, 9.6))
    appointment(session, emil, t(25, 8), "no_show")
    # Last week: Fritz attended, then opted out on Tuesday.
    fritz = lead(session, 6, "Fritz", t(18, 9))
    welcome(session, fritz, t(18, 9.1))
    reply(session, fritz, t(18, 10), 45)
    decide(session, fritz, "true", t(18, 10.1))
    appointment(session, fritz, t(20, 9), "attended")
    session.add(AuditEvent(contact_id=fritz.contact_id, event_type="consent_revoked", created_at=t(24, 12)))
    session.add(Message(conversation_id=fritz.id, direction="inbound", content="STOP", created_at=t(24, 12),
                        delivery_status="delivered"))
    session.commit()
    return {"ben": ben, "dead_letter_message": failed}


def shown_percent(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.1f}".replace(".", ",") + " %"


def shown_duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 90:
        return f"{round(seconds)} s"
    if seconds < 5400:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f}".replace(".", ",") + " h"


RATES = {
    "reply_rate": ("replies", "first_contacts"),
    "qualification_rate": ("qualified", "qualification_decided"),
    "booking_rate": ("booked", "qualified"),
    "show_up_rate": ("attended", "appointments_with_outcome"),
    "opt_out_rate": ("opt_outs", "active_contacts"),
}
DURATIONS = ("median_first_response_seconds", "median_first_human_response_seconds")


def test_dashboard_shows_the_kpis_funnel_and_queues(page, ops_api, session, seeded):
    page.goto(f"{ops_api}/dashboard")
    enter_api_key(page)
    page.wait_for_selector("body[data-loaded=true]", timeout=15000)

    for period, granularity in (("today", "day"), ("week", "week")):
        expected = kpis.compute(session, *kpis.period_bounds(datetime(2026, 11, 25).date(), granularity,
                                                              "Europe/Berlin"))
        for key, (numerator, denominator) in RATES.items():
            tile = page.locator(f"#tiles-{period} [data-kpi={key}]")
            assert tile.locator(".value").inner_text() == shown_percent(getattr(expected, key)), (period, key)
            detail = tile.locator(".detail")
            assert int(detail.get_attribute("data-numerator")) == getattr(expected, numerator), (period, key)
            assert int(detail.get_attribute("data-denominator")) == getattr(expected, denominator), (period, key)
        for key in DURATIONS:
            tile = page.locator(f"#tiles-{period} [data-kpi={key}]")
            assert tile.locator(".value").inner_text() == shown_duration(getattr(expected, key)), (period, key)

    # Hand-checked against the seed: today 3 first contacts, 2 replies; one of two decided is qualified.
    today = page.locator("#tiles-today")
    assert today.locator("[data-kpi=reply_rate] .value").inner_text() == "66,7 %"
    assert today.locator("[data-kpi=qualification_rate] .value").inner_text() == "50,0 %"
    assert today.locator("[data-kpi=show_up_rate] .value").inner_text() == "0,0 %"  # Emil's no-show
    assert page.locator("#tiles-week [data-kpi=median_first_response_seconds] .value").inner_text() == "35 s"

    # Funnel of the 14-day cohort: Anna..Fritz opted in; Clara never replied; Ben was disqualified;
    # Dora and Fritz attended.
    start, _ = kpis.period_bounds(datetime(2026, 11, 12).date(), "day", "Europe/Berlin")
    _, end = kpis.period_bounds(datetime(2026, 11, 25).date(), "day", "Europe/Berlin")
    cohort = funnel(session, start, end)
    shown = {stage: int(page.locator(f"#funnel [data-stage={stage}] .funnel-count").inner_text())
             for stage in ("opted_in", "replied", "qualified", "booked", "attended")}
    assert shown == {"opted_in": cohort.opted_in, "replied": cohort.replied, "qualified": cohort.qualified,
                     "booked": cohort.booked, "attended": cohort.attended}
    assert shown == {"opted_in": 6, "replied": 5, "qualified": 4, "booked": 4, "attended": 2}

    assert page.locator("#trends .chart").count() == 6
    assert page.locator("#trends .chart").first.locator("rect").count() == 28  # 14 days x 2 series
    assert page.locator("#handovers tbody tr").count() == 1
    assert "Ben" in page.locator("#handovers tbody").inner_text()
    assert page.locator("#dead-letters tbody tr").count() == 1
    screenshot(page, "dashboard.png")

    # Hand-back and replay go through the ops API; the queues empty.
    page.click("#handovers button.hand-back")
    page.wait_for_selector("#handovers td.empty", timeout=15000)
    page.click("#dead-letters button.replay")
    page.wait_for_selector("#dead-letters td.empty", timeout=15000)
    session.expire_all()
    ben = session.get(Conversation, seeded["ben"].id)
    assert ben.owner == "bot"
    assert session.execute(select(Handover.ended_at)).scalar_one() is not None
    assert session.execute(select(DeadLetter.replayed_at)).scalar_one() is not None
    assert session.get(Message, seeded["dead_letter_message"].id).delivery_status == "queued"


def test_dashboard_json_needs_the_api_key(ops_api, seeded):
    assert httpx.get(f"{ops_api}/dashboard").status_code == 200  # the page itself holds no data
    assert httpx.get(f"{ops_api}/dashboard/api/kpis").status_code == 401
    assert httpx.get(f"{ops_api}/dashboard/api/kpis", headers={"Authorization": "Bearer nope"}).status_code == 403
    ok = httpx.get(f"{ops_api}/dashboard/api/trends?days=3", headers={"Authorization": f"Bearer {API_KEY}"})
    assert [day["day"] for day in ok.json()["days"]] == ["2026-11-23", "2026-11-24", "2026-11-25"]


def test_a_wrong_key_is_asked_again(page, ops_api, seeded):
    page.goto(f"{ops_api}/dashboard")
    enter_api_key(page, "wrong")
    page.wait_for_selector("#api-key-message:has-text('abgelehnt')", timeout=10000)
    enter_api_key(page)
    page.wait_for_selector("body[data-loaded=true]", timeout=15000)
