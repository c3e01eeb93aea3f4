"""The seed's full timeline for one lead on a simulated clock, through the HTTP trigger to a (fake) Rasa.

opt-in → welcome at +5 min → nudge 30 min after the unanswered question → qualified → 24 h and 48 h follow-ups
→ booking → reminders 22 h / 55 min / 5 min before the appointment.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from leadbot.db.models import Conversation, Message, TaskScheduled
from leadbot.services import tasks
from leadbot.services.leads import OptInData, opt_in
from scheduler.firing import Firer
from scheduler.rasa_client import HttpRasaClient
from tests.scheduler.helpers import TOKEN, action_side, book, lead_writes, run_until


def test_full_seed_timeline_for_one_lead(engine, frozen_clock, fake_rasa, scheduler_env):
    fired_at: list[tuple[str, object]] = []
    send = action_side(engine)

    def rasa_runs_action(trigger):
        fired_at.append((trigger.intent, frozen_clock.now()))
        send(trigger)

    fake_rasa.on_trigger = rasa_runs_action
    firer = Firer(engine, HttpRasaClient(fake_rasa.url, TOKEN), "worker-1")
    t0 = frozen_clock.now()  # Wednesday 10:00 Berlin

    with Session(engine, future=True, expire_on_commit=False) as session:
        result = opt_in(session, OptInData("+49 151 12345678", "landingpage", "v1", t0, first_name="Lena"))
        session.commit()
    assert result.welcome_run_at == t0 + timedelta(minutes=5)

    run_until(frozen_clock, firer, engine, t0 + timedelta(minutes=4, seconds=59))
    assert fake_rasa.calls == []
    run_until(frozen_clock, firer, engine, t0 + timedelta(minutes=5))
    assert fired_at == [("EXTERNAL_welcome", t0 + timedelta(minutes=5))]

    # The welcome asked "Passt das?" and the lead does not answer: a nudge after 30 min.
    with Session(engine, future=True, expire_on_commit=False) as session:
        conversation = session.get(Conversation, result.conversation_id)
        tasks.after_bot_turn(session, conversation, asked_question=True)
        session.commit()
    run_until(frozen_clock, firer, engine, t0 + timedelta(minutes=40))
    assert fired_at[-1] == ("EXTERNAL_nudge_30m", t0 + timedelta(minutes=35))

    # The lead answers at +1 h, qualifies, and is asked for a slot; answering that cancels the next nudge.
    with Session(engine, future=True, expire_on_commit=False) as session:
        conversation = session.get(Conversation, result.conversation_id)
        frozen_clock.set(t0 + timedelta(hours=1))
        lead_writes(session, conversation, frozen_clock.now())
        conversation.status = "qualified"
        tasks.on_qualified(session, conversation)
        tasks.after_bot_turn(session, conversation, asked_question=True)
        frozen_clock.set(t0 + timedelta(hours=1, minutes=2))
        lead_writes(session, conversation, frozen_clock.now())
        session.commit()

    run_until(frozen_clock, firer, engine, t0 + timedelta(hours=49))
    assert [intent for intent, _ in fired_at] == [
        "EXTERNAL_welcome", "EXTERNAL_nudge_30m", "EXTERNAL_followup_24h", "EXTERNAL_followup_48h"
    ]
    assert fired_at[2][1] == t0 + timedelta(hours=25)
    assert fired_at[3][1] == t0 + timedelta(hours=49)

    # A "yes" to the 48 h follow-up leads to a booking on Saturday 14:30 Berlin (13:30 UTC).
    starts_at = (t0 + timedelta(days=3)).replace(hour=13, minute=30)
    with Session(engine, future=True, expire_on_commit=False) as session:
        conversation = session.get(Conversation, result.conversation_id)
        lead_writes(session, conversation, frozen_clock.now())
        appointment = book(session, conversation, starts_at)
        session.commit()
        appointment_id = appointment.id

    run_until(frozen_clock, firer, engine, starts_at + timedelta(hours=1))
    assert fired_at[4:] == [
        ("EXTERNAL_reminder_22h", starts_at - timedelta(hours=22)),
        ("EXTERNAL_reminder_55m", starts_at - timedelta(minutes=55)),
        ("EXTERNAL_reminder_5m", starts_at - timedelta(minutes=5)),
    ]

    # Every trigger: the contract's sender id, output channel and entity.
    with Session(engine, future=True) as session:
        done = {t.id: t for t in session.execute(select(TaskScheduled)).scalars()}
        assert all(call.sender_id == "wa4915112345678" for call in fake_rasa.calls)
        assert all(call.output_channel == "whatsapp" for call in fake_rasa.calls)
        assert all(done[int(call.entities["task_id"])].task_type == call.intent.removeprefix("EXTERNAL_")
                   for call in fake_rasa.calls)
        assert sorted(t.status for t in done.values()) == ["cancelled"] + ["done"] * 7
        cancelled = next(t for t in done.values() if t.status == "cancelled")
        assert (cancelled.task_type, cancelled.payload_json["cancel_reason"]) == ("nudge_30m", "lead_replied")

        query = select(Message).where(Message.direction == "outbound").order_by(Message.id)
        messages = session.execute(query).scalars().all()
        assert [m.template_name for m in messages] == [
            "lead_welcome_v1", "lead_nudge_v1", "lead_followup_24h_v1", "lead_followup_48h_v1",
            "appointment_reminder_22h_v1", "appointment_reminder_55m_v1", "appointment_reminder_5m_v1",
        ]
        assert all(m.delivery_status == "queued" and m.is_marketing for m in messages)
        assert messages[0].content.startswith("Hey Lena, danke")
        assert "morgen um 14:30 Uhr" in messages[4].content
        assert "https://meet.example/x" in messages[5].content
        reminders = [t for t in done.values() if t.task_type.startswith("reminder")]
        assert {t.appointment_id for t in reminders} == {appointment_id}
