"""CRM and calendar endpoints (outbox rows; booking against a real Radicale) and dead-letter list/replay."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from leadbot.clock import FrozenClock
from leadbot.config import settings
from leadbot.db.models import Appointment, CrmOutbox, DeadLetter, Message, TaskScheduled
from leadbot.services import booking, outbound
from tests.api.conftest import at_berlin, make_contact


def _outbox(session: Session) -> list[CrmOutbox]:
    session.expire_all()
    return list(session.execute(select(CrmOutbox).order_by(CrmOutbox.id)).scalars())


def test_crm_endpoints_enqueue_outbox_rows(client: TestClient, auth: dict, session: Session) -> None:
    contact, _ = make_contact(session)
    properties = {"contact_id": contact.id, "properties": {"email": "a@b.de"}}
    upsert = client.post("/integrations/crm/lead-upsert", headers=auth, json=properties)
    call = {"contact_id": contact.id, "type": "call", "text": "Telefoniert"}
    activity = client.post("/integrations/crm/activity", headers=auth, json=call)
    notice = client.post("/integrations/crm/handover", headers=auth, json={"contact_id": contact.id, "reason": "preis"})
    assert [r.status_code for r in (upsert, activity, notice)] == [202, 202, 202]
    rows = _outbox(session)
    assert [row.operation for row in rows] == ["lead_upsert", "activity", "handover"]
    assert all(row.status == "pending" and row.contact_id == contact.id for row in rows)
    assert rows[0].payload_json == {"email": "a@b.de"}
    assert rows[1].payload_json["type"] == "call" and rows[1].payload_json["text"] == "Telefoniert"
    assert rows[2].payload_json["reason"] == "preis" and rows[2].payload_json["escalation"] is False
    assert upsert.json() == {"outbox_id": rows[0].id, "operation": "lead_upsert", "status": "pending"}


def test_crm_endpoints_validate_404_and_idempotency(client: TestClient, auth: dict, session: Session) -> None:
    contact, _ = make_contact(session)
    assert client.post("/integrations/crm/activity", headers=auth, json={"contact_id": contact.id}).status_code == 422
    bad_name = {"contact_id": contact.id, "properties": {"not a name!": "x"}}
    assert client.post("/integrations/crm/lead-upsert", headers=auth, json=bad_name).status_code == 422
    unknown = client.post("/integrations/crm/handover", headers=auth, json={"contact_id": 999, "reason": "x"})
    assert unknown.status_code == 404
    headers = {**auth, "Idempotency-Key": "crm-1"}
    body = {"contact_id": contact.id, "text": "Notiz"}
    first = client.post("/integrations/crm/activity", headers=headers, json=body)
    again = client.post("/integrations/crm/activity", headers=headers, json=body)
    assert first.json() == again.json()
    assert len(_outbox(session)) == 1


def test_calendar_book_reschedule_attendance_cancel_over_http(
    client: TestClient, auth: dict, session: Session, frozen_clock: FrozenClock, team_calendar: None
) -> None:
    contact, _ = make_contact(session)
    slots = client.get("/integrations/calendar/slots", headers=auth, params={"contact_id": contact.id})
    assert slots.status_code == 200, slots.text
    first, second = slots.json()
    booked = client.post(
        "/integrations/calendar/book",
        headers={**auth, "Idempotency-Key": "book-1"},
        json={"contact_id": contact.id, "slot_start": first["start"]},
    )
    assert booked.status_code == 201, booked.text
    appointment_id = booked.json()["id"]
    replay = client.post(
        "/integrations/calendar/book",
        headers={**auth, "Idempotency-Key": "book-1"},
        json={"contact_id": contact.id, "slot_start": first["start"]},
    )
    assert replay.json() == booked.json()
    twice = client.post(
        "/integrations/calendar/book", headers=auth, json={"contact_id": contact.id, "slot_start": second["start"]}
    )
    assert twice.status_code == 409 and twice.json()["detail"]["code"] == "already_booked"

    moved = client.post(
        "/integrations/calendar/reschedule",
        headers=auth,
        json={"appointment_id": appointment_id, "new_start": second["start"]},
    )
    assert moved.status_code == 200, moved.text
    assert moved.json()["status"] == "rescheduled"
    early = client.post("/integrations/calendar/attendance", headers=auth, json={"appointment_id": appointment_id,
                                                                                  "attended": True})
    assert early.status_code == 409 and early.json()["detail"]["code"] == "not_started"

    session.expire_all()
    appointment = session.get(Appointment, appointment_id)
    reminders = session.execute(
        select(TaskScheduled).where(TaskScheduled.appointment_id == appointment_id, TaskScheduled.status == "pending")
    ).scalars().all()
    assert {task.task_type for task in reminders} >= {"reminder_55m", "reminder_5m"}
    frozen_clock.set(appointment.starts_at + timedelta(minutes=5))
    attended = client.post("/integrations/calendar/attendance", headers=auth,
                           json={"appointment_id": appointment_id, "attended": False})
    assert attended.status_code == 200 and attended.json()["status"] == "no_show"
    cancelled = client.post("/integrations/calendar/cancel", headers=auth, json={"appointment_id": appointment_id})
    assert cancelled.status_code == 409 and cancelled.json()["detail"]["code"] == "not_active"
    assert client.post("/integrations/calendar/cancel", headers=auth, json={"appointment_id": 9999}).status_code == 404


def test_calendar_down_is_503_and_writes_nothing(
    client: TestClient, auth: dict, session: Session, frozen_clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CALDAV_URL", "")
    settings.cache_clear()
    monkeypatch.setattr(booking, "_calendar", None)
    contact, _ = make_contact(session)
    start = at_berlin(frozen_clock.now() + timedelta(days=1), 14).isoformat()
    response = client.post("/integrations/calendar/book", headers=auth, json={"contact_id": contact.id,
                                                                               "slot_start": start})
    assert response.status_code == 503 and response.json()["detail"]["code"] == "calendar_unavailable"
    session.expire_all()
    assert session.execute(select(Appointment)).first() is None
    assert _outbox(session) == []


def test_dead_letters_list_and_replay(client: TestClient, auth: dict, session: Session) -> None:
    _, conversation = make_contact(session)
    result = outbound.enqueue(session, conversation, text="Ging nicht raus")
    message = session.get(Message, result.message_id)
    message.delivery_status, message.error_code, message.attempts = "failed", "63016", 5
    session.add(DeadLetter(kind="outbound_message", message_id=message.id, reason="63016", attempts=5))
    session.commit()

    [letter] = client.get("/dead-letters", headers=auth).json()
    assert letter["kind"] == "outbound_message" and letter["message_id"] == message.id
    replayed = client.post(f"/dead-letters/{letter['id']}/replay", headers=auth)
    assert replayed.status_code == 200 and replayed.json()["replayed_at"] is not None
    assert client.get("/dead-letters", headers=auth).json() == []
    assert len(client.get("/dead-letters", headers=auth, params={"include_replayed": "true"}).json()) == 1
    session.expire_all()
    assert session.get(Message, message.id).delivery_status == "queued"
    assert client.post("/dead-letters/424242/replay", headers=auth).status_code == 404
    assert client.get("/dead-letters", headers=auth, params={"kind": "bogus"}).status_code == 422
