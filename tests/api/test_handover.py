"""Handover: start, SLA with the clock advanced (inside and outside team hours, one lead message at most), hand-back."""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from leadbot import metrics
from leadbot.clock import FrozenClock
from leadbot.db.models import AuditEvent, CrmOutbox, Handover, Message, TaskScheduled
from leadbot.services import handover, tasks
from tests.api.conftest import RASA_TOKEN, RasaStandIn, at_berlin, make_contact


def _system_messages(session: Session) -> list[Message]:
    session.expire_all()
    query = select(Message).where(Message.sender_role == "system").order_by(Message.id)
    return list(session.execute(query).scalars())


def _pending_sla_tasks(session: Session) -> list[TaskScheduled]:
    query = select(TaskScheduled).where(TaskScheduled.task_type == "handover_sla", TaskScheduled.status == "pending")
    return list(session.execute(query.order_by(TaskScheduled.run_at)).scalars())


def _fire_due_sla_tasks(session: Session, frozen_clock: FrozenClock) -> list[handover.SlaOutcome]:
    """What the scheduler does for due `handover_sla` tasks: run `check_sla_task` in its own transaction."""
    outcomes = []
    for task in _pending_sla_tasks(session):
        if task.run_at <= frozen_clock.now():
            task.status = "done"
            outcomes.append(handover.check_sla_task(session, task))
    session.commit()
    return outcomes


def _escalations(session: Session) -> list[CrmOutbox]:
    rows = session.execute(select(CrmOutbox).where(CrmOutbox.operation == "handover").order_by(CrmOutbox.id)).scalars()
    return [row for row in rows if row.payload_json["escalation"]]


def test_start_notifies_team_tells_lead_pauses_tasks_and_schedules_the_check(
    api_env: None, session: Session, frozen_clock: FrozenClock
) -> None:
    contact, conversation = make_contact(session)
    nudge = tasks.schedule(session, conversation, "nudge_30m", frozen_clock.now() + timedelta(minutes=30))
    before = metrics.HANDOVERS.labels(reason="keyword")._value.get()
    started = handover.start(session, conversation, "keyword", resume_state="q2_leads")
    again = handover.start(session, conversation, "keyword")
    session.commit()

    assert again.id == started.id
    assert conversation.owner == "human" and conversation.status == "handover"
    assert started.resume_state == "q2_leads"
    assert metrics.HANDOVERS.labels(reason="keyword")._value.get() == before + 1
    [crm] = session.execute(select(CrmOutbox)).scalars()
    assert crm.operation == "handover" and crm.payload_json["escalation"] is False
    audit = session.execute(select(AuditEvent).where(AuditEvent.event_type == "handover")).scalar_one()
    assert audit.details_json["action"] == "started"
    [told] = _system_messages(session)
    assert told.delivery_status == "queued" and "meldet sich gleich" in told.content
    assert nudge.status == "cancelled"  # paused by tasks.on_handover_started
    [check] = _pending_sla_tasks(session)
    assert check.run_at == frozen_clock.now() + timedelta(minutes=15)
    assert check.payload_json == {"handover_id": started.id}


def test_sla_inside_team_hours_escalates_once_and_tells_the_lead_once(
    api_env: None, session: Session, frozen_clock: FrozenClock
) -> None:
    _, conversation = make_contact(session)  # Wednesday 10:00 Berlin
    handover.start(session, conversation, "sentiment")
    session.commit()
    escalations_before = metrics.HANDOVER_ESCALATIONS._value.get()

    frozen_clock.advance(timedelta(minutes=14))
    assert _fire_due_sla_tasks(session, frozen_clock) == []
    frozen_clock.advance(timedelta(minutes=1))
    [outcome] = _fire_due_sla_tasks(session, frozen_clock)
    assert outcome.escalated and outcome.lead_notified

    row = session.execute(select(Handover)).scalar_one()
    assert row.escalated_at == frozen_clock.now() and row.lead_notified_at == frozen_clock.now()
    assert metrics.HANDOVER_ESCALATIONS._value.get() == escalations_before + 1
    assert len(_escalations(session)) == 1
    started_msg, sla_msg = _system_messages(session)
    assert sla_msg.content == (
        "Sorry, dass es gerade etwas dauert! Ich hab im Team nochmal nachgehakt – "
        "jemand meldet sich spätestens um 10:30 Uhr bei dir."
    )
    # Replayed checks (a second task, a retry) neither alert nor message again.
    frozen_clock.advance(timedelta(hours=2))
    assert handover.check_sla(session, row).lead_notified is False
    session.commit()
    assert len(_system_messages(session)) == 2
    assert len(_escalations(session)) == 1


def test_a_human_answer_in_time_cancels_the_escalation(
    client: TestClient, auth: dict, session: Session, frozen_clock: FrozenClock
) -> None:
    contact, conversation = make_contact(session)
    handover.start(session, conversation, "keyword")
    session.commit()
    frozen_clock.advance(timedelta(minutes=10))
    reply = {"contact_id": contact.id, "type": "session_text", "text": "Bin da!", "sent_by": "human"}
    assert client.post("/messages/send", headers=auth, json=reply).status_code == 202
    frozen_clock.advance(timedelta(minutes=5))
    [outcome] = _fire_due_sla_tasks(session, frozen_clock)
    assert outcome.reason == "answered_or_ended"
    assert _escalations(session) == []
    assert len(_system_messages(session)) == 1  # only "ich gebe dich an mein Team weiter"


def test_handover_outside_team_hours_says_when_the_team_is_back_and_escalates_next_morning(
    api_env: None, session: Session, frozen_clock: FrozenClock
) -> None:
    frozen_clock.set(at_berlin(frozen_clock.now(), 19, 30))  # Wednesday evening
    _, conversation = make_contact(session)
    handover.start(session, conversation, "keyword")
    session.commit()
    [started_msg] = _system_messages(session)
    assert "wir sind morgen um 09:00 Uhr wieder da" in started_msg.content

    frozen_clock.advance(timedelta(minutes=15))
    [outcome] = _fire_due_sla_tasks(session, frozen_clock)
    assert outcome.reason == "not_due" and not outcome.lead_notified  # the first message already said when
    [check] = _pending_sla_tasks(session)
    assert check.run_at == at_berlin(frozen_clock.now() + timedelta(days=1), 9, 15)

    frozen_clock.set(check.run_at)
    [outcome] = _fire_due_sla_tasks(session, frozen_clock)
    assert outcome.escalated and not outcome.lead_notified
    assert len(_escalations(session)) == 1
    assert len(_system_messages(session)) == 1


def test_sla_running_into_closing_time_tells_the_lead_once_when_the_team_is_back(
    api_env: None, session: Session, frozen_clock: FrozenClock
) -> None:
    friday = frozen_clock.now() + timedelta(days=2)
    frozen_clock.set(at_berlin(friday, 17, 50))
    _, conversation = make_contact(session)
    handover.start(session, conversation, "keyword")
    session.commit()

    # 18:05: the team went home at 18:00 without answering; the lead hears when it is back, no escalation yet.
    frozen_clock.set(at_berlin(friday, 18, 5))
    [outcome] = _fire_due_sla_tasks(session, frozen_clock)
    assert outcome.lead_notified and not outcome.escalated
    away = _system_messages(session)[-1]
    assert away.content == (
        "Danke für deine Geduld! Unser Team ist gerade nicht erreichbar – "
        "wir sind am Montag, 30.11., um 09:00 Uhr wieder da und melden uns dann direkt bei dir."
    )
    assert away.delivery_status == "queued" and away.send_at == frozen_clock.now()
    [check] = _pending_sla_tasks(session)
    assert check.run_at == at_berlin(friday + timedelta(days=3), 9, 5)  # 10 min on Friday + 5 min on Monday

    frozen_clock.set(check.run_at)
    [outcome] = _fire_due_sla_tasks(session, frozen_clock)
    assert outcome.escalated and not outcome.lead_notified
    assert len(_system_messages(session)) == 2  # "weitergegeben" + exactly one SLA message
    assert len(_escalations(session)) == 1
    frozen_clock.advance(timedelta(hours=3))
    assert _fire_due_sla_tasks(session, frozen_clock) == []


def test_hand_back_resumes_the_bot_through_rasa(
    client: TestClient, auth: dict, session: Session, frozen_clock: FrozenClock, rasa: RasaStandIn
) -> None:
    contact, conversation = make_contact(session)
    followup = tasks.schedule(session, conversation, "followup_24h", frozen_clock.now() + timedelta(hours=24))
    handover.start(session, conversation, "keyword", resume_state="q2_leads")
    session.commit()
    assert client.get("/handovers", headers=auth, params={"open": "true"}).json()[0]["conversation_id"] == (
        conversation.id
    )

    frozen_clock.advance(timedelta(minutes=20))
    response = client.post(f"/conversations/{conversation.id}/hand-back", headers=auth)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "conversation_id": conversation.id,
        "owner": "bot",
        "status": "open",
        "handover_id": 1,
        "resume_triggered": True,
    }
    session.expire_all()
    row = session.execute(select(Handover)).scalar_one()
    assert row.ended_at == frozen_clock.now()
    assert session.get(TaskScheduled, followup.id).status == "pending"  # revived by tasks.on_handed_back
    ended = session.execute(select(AuditEvent).where(AuditEvent.event_type == "handover")).scalars().all()
    assert [event.details_json["action"] for event in ended] == ["started", "ended"]
    assert rasa.calls == [
        {
            "path": f"/conversations/wa{contact.whatsapp_e164[1:]}/trigger_intent",
            "query": {"output_channel": "whatsapp", "token": RASA_TOKEN},
            "json": {"name": "EXTERNAL_resume", "entities": {}},
        }
    ]
    assert client.get("/handovers", headers=auth).json() == []
    assert len(client.get("/handovers", headers=auth, params={"open": "false"}).json()) == 1
    # Handing back twice is a conflict; unknown conversations are 404.
    assert client.post(f"/conversations/{conversation.id}/hand-back", headers=auth).status_code == 409
    assert client.post("/conversations/999/hand-back", headers=auth).status_code == 404


def test_hand_back_when_rasa_is_down_still_hands_back(
    client: TestClient, auth: dict, session: Session, rasa: RasaStandIn
) -> None:
    _, conversation = make_contact(session)
    take = client.post(f"/conversations/{conversation.id}/handover", headers=auth, json={"reason": "team"})
    assert take.status_code == 200 and take.json()["reason"] == "team"
    rasa.status = 503
    response = client.post(f"/conversations/{conversation.id}/hand-back", headers=auth)
    assert response.status_code == 200
    assert response.json()["resume_triggered"] is False
    session.expire_all()
    assert session.get(type(conversation), conversation.id).owner == "bot"
