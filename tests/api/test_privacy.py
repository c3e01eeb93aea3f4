"""DSGVO: export shape, delete everywhere (both databases searched afterwards), refusal while a turn runs, revoke."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from leadbot.clock import now
from leadbot.config import settings
from leadbot.db.models import (
    Appointment,
    AuditEvent,
    Contact,
    Conversation,
    CrmOutbox,
    DeadLetter,
    KnowledgeGap,
    Message,
    QualificationAnswer,
    TaskScheduled,
)
from leadbot.services import audit, booking, crm_outbox, handover, outbound, tasks
from tests.api.conftest import make_contact, rasa_events

PHONE = "+4915198765432"
SENDER_ID = "wa4915198765432"
NAME = "Gwendolyn"
TEXTS = (
    "Wir schalten Ads auf Meta und Google",
    "Ungefaehr 250 Leads im Monat",
    "Was kostet das bei euch genau",
    "Kann mich bitte ein Berater anrufen",
)


def _full_history(session: Session, tracker: Engine) -> Contact:
    """A contact with every kind of row we store, and Rasa tracker events of their conversation."""
    contact, conversation = make_contact(session, e164=PHONE, first_name=NAME)
    current = now()
    for index, text in enumerate(TEXTS):
        session.add(
            Message(
                conversation_id=conversation.id,
                direction="inbound",
                provider_message_id=f"SMhistory{index}",
                content=text,
                delivery_status="delivered",
                sender_role="human",
                payload_json={"profile_name": NAME},
                created_at=current,
                processed_at=current,
            )
        )
    reply = outbound.enqueue(session, conversation, text=f"Danke {NAME}, notiert: {TEXTS[1]}")
    session.add(
        QualificationAnswer(
            conversation_id=conversation.id,
            ads_running="yes",
            monthly_leads_bucket="100-300",
            qualified="true",
            reason="Ungefaehr 250 Leads",
            monthly_leads_estimate=250,
        )
    )
    appointment = Appointment(
        conversation_id=conversation.id,
        starts_at=current + timedelta(days=2),
        ends_at=current + timedelta(days=2, minutes=30),
        meeting_link=f"https://meet.example/{NAME}",
        calendar_uid=f"uid-{SENDER_ID}",
    )
    session.add(appointment)
    session.flush()
    tasks.on_booked(session, conversation, appointment)
    tasks.schedule(session, conversation, "followup_24h", current + timedelta(hours=24), payload={"name": NAME})
    session.add(KnowledgeGap(conversation_id=conversation.id, question=TEXTS[2], best_source="preise.md", score=0.2))
    audit.record(session, contact.id, "consent_granted", source="landingpage", first_name=NAME)
    crm_outbox.enqueue(session, contact.id, "lead_upsert", {"whatsapp_e164": PHONE, "first_name": NAME})
    session.flush()
    session.add(DeadLetter(kind="outbound_message", message_id=reply.message_id, reason=f"21408 for {PHONE}"))
    handover.start(session, conversation, "keyword")
    session.commit()

    events = [
        {"event": "user", "timestamp": time.time(), "text": text, "parse_data": {"intent": {"name": "inform"}}}
        for text in TEXTS
    ] + [{"event": "slot", "name": "first_name", "value": NAME, "timestamp": time.time()}]
    with tracker.begin() as connection:
        for event in events:
            connection.execute(
                rasa_events.insert().values(
                    sender_id=SENDER_ID,
                    type_name=event["event"],
                    timestamp=event["timestamp"],
                    intent_name="inform" if event["event"] == "user" else None,
                    data=json.dumps(event),
                )
            )
        # Another lead's tracker must survive.
        connection.execute(
            rasa_events.insert().values(sender_id="wa4915100000009", type_name="user", data='{"text": "bleibt"}')
        )
    return contact


def _search_everywhere(engine: Engine, needles: tuple[str, ...]) -> list[str]:
    """Every text-like column of every table in the public schema, searched for each needle."""
    hits = []
    with engine.connect() as connection:
        columns = connection.execute(
            sa.text(
                "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'public' "
                "AND data_type IN ('text', 'character varying', 'character', 'json', 'jsonb')"
            )
        ).all()
        assert columns
        for table, column in columns:
            for needle in needles:
                found = connection.execute(
                    sa.text(f'SELECT count(*) FROM "{table}" WHERE "{column}"::text ILIKE :needle'),
                    {"needle": f"%{needle}%"},
                ).scalar_one()
                if found:
                    hits.append(f"{table}.{column}: {needle}")
    return hits


def test_delete_leaves_no_trace_in_either_database(
    client: TestClient,
    auth: dict,
    session: Session,
    engine: Engine,
    tracker_engine: Engine,
    lock_redis: Any,
    team_calendar: None,
) -> None:
    contact_id = _full_history(session, tracker_engine).id
    # The booked call is an event in the team's calendar that names the lead: it must go too.
    calendar = booking.configured_calendar()
    starts = now() + timedelta(days=2)
    calendar.create_event(uid=f"uid-{SENDER_ID}", start=starts, end=starts + timedelta(minutes=30),
                          zone="Europe/Berlin", summary=f"Call mit {NAME}", description=f"WhatsApp {PHONE}")
    assert calendar.get_event(f"uid-{SENDER_ID}") is not None
    # An idle Rasa lock (all tickets expired) is left behind by Rasa; it holds the sender id and must go too.
    lock_redis.set(f"leadbot:lock:{SENDER_ID}", json.dumps({"conversation_id": SENDER_ID, "tickets": []}))
    needles = (PHONE, PHONE[1:], SENDER_ID, NAME, *TEXTS)
    assert len(_search_everywhere(engine, needles)) > 10
    assert _search_everywhere(tracker_engine, needles)

    response = client.post("/privacy/delete", headers=auth, json={"whatsapp_e164": "0151 98765432"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["contact_id"] == contact_id
    assert body["rasa_tracker_events_deleted"] == len(TEXTS) + 1
    assert body["deleted"]["messages"] == len(TEXTS) + 3  # make_contact's, the reply, the handover notice

    assert _search_everywhere(engine, needles) == []
    assert _search_everywhere(tracker_engine, needles) == []
    assert lock_redis.get(f"leadbot:lock:{SENDER_ID}") is None
    with tracker_engine.connect() as connection:
        assert connection.execute(select(sa.func.count()).select_from(rasa_events)).scalar_one() == 1

    session.expire_all()
    for model in (Contact, Conversation, Message, TaskScheduled, Appointment, KnowledgeGap, DeadLetter):
        assert session.execute(select(sa.func.count()).select_from(model)).scalar_one() == 0, model
    [record] = session.execute(select(AuditEvent)).scalars()
    assert record.event_type == "data_deleted" and record.contact_id == contact_id
    [crm] = session.execute(select(CrmOutbox)).scalars()
    assert crm.operation == "delete_contact" and crm.status == "pending"
    assert set(crm.payload_json) == {"contact_id", "crm_id", "phone_sha256"}

    assert calendar.get_event(f"uid-{SENDER_ID}") is None
    assert record.details_json["calendar_events"] == 1

    assert client.post("/privacy/delete", headers=auth, json={"contact_id": contact_id}).status_code == 404


def test_delete_refuses_while_a_turn_is_in_flight_and_deletes_nothing(
    client: TestClient, auth: dict, session: Session, tracker_engine: Engine, lock_redis: Any, team_calendar: None
) -> None:
    contact = _full_history(session, tracker_engine)
    conversation = session.execute(select(Conversation)).scalar_one()
    session.add(
        Message(conversation_id=conversation.id, direction="inbound", provider_message_id="SMinflight", content="Ja")
    )
    session.commit()
    refused = client.post("/privacy/delete", headers=auth, json={"contact_id": contact.id})
    assert refused.status_code == 409 and refused.headers["retry-after"] == "5"

    inflight = session.execute(select(Message).where(Message.provider_message_id == "SMinflight")).scalar_one()
    inflight.processed_at = now()
    session.commit()
    ticket = json.dumps({"number": 0, "expires": time.time() + 60})
    lock_redis.set(f"leadbot:lock:{SENDER_ID}", json.dumps({"conversation_id": SENDER_ID, "tickets": [ticket]}))
    refused = client.post("/privacy/delete", headers=auth, json={"contact_id": contact.id})
    assert refused.status_code == 409 and "Rasa" in refused.json()["detail"]

    session.expire_all()
    assert session.get(Contact, contact.id) is not None
    assert session.execute(select(sa.func.count()).select_from(AuditEvent)).scalar_one() > 1
    with tracker_engine.connect() as connection:
        assert connection.execute(select(sa.func.count()).select_from(rasa_events)).scalar_one() == len(TEXTS) + 2

    lock_redis.delete(f"leadbot:lock:{SENDER_ID}")
    assert client.post("/privacy/delete", headers=auth, json={"contact_id": contact.id}).status_code == 200


def test_delete_with_the_tracker_database_down_deletes_nothing_and_can_be_repeated(
    client: TestClient,
    auth: dict,
    session: Session,
    team_calendar: None,
    tracker_engine: Engine,
    tracker_database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    contact_id = _full_history(session, tracker_engine).id
    monkeypatch.setenv("RASA_TRACKER_URL", "postgresql://postgres@127.0.0.1:9/rasa")  # nothing listens there
    settings.cache_clear()
    down = client.post("/privacy/delete", headers=auth, json={"contact_id": contact_id})
    assert down.status_code == 503 and "nothing was deleted" in down.json()["detail"]
    assert client.post("/privacy/export", headers=auth, json={"contact_id": contact_id}).status_code == 503
    session.expire_all()
    assert session.get(Contact, contact_id) is not None
    assert session.execute(select(sa.func.count()).select_from(Message)).scalar_one() == len(TEXTS) + 3

    monkeypatch.setenv("RASA_TRACKER_URL", tracker_database_url)
    settings.cache_clear()
    assert client.post("/privacy/delete", headers=auth, json={"contact_id": contact_id}).status_code == 200
    assert _search_everywhere(tracker_engine, (SENDER_ID, NAME)) == []


def test_export_returns_every_table_with_the_seeds_field_names(
    client: TestClient, auth: dict, session: Session, tracker_engine: Engine
) -> None:
    contact = _full_history(session, tracker_engine)
    response = client.post("/privacy/export", headers=auth, json={"contact_id": contact.id})
    assert response.status_code == 200, response.text
    data = response.json()
    assert set(data) >= {
        "contacts",
        "conversations",
        "messages",
        "qualification_answers",
        "tasks_scheduled",
        "audit_events",
        "appointments",
        "handovers",
        "knowledge_gaps",
        "rasa_tracker_events",
    }
    seed_fields = {
        "contacts": {"id", "whatsapp_e164", "first_name", "timezone", "language", "consent_status", "consent_source",
                     "consent_text_version", "consent_timestamp", "created_at", "updated_at"},
        "conversations": {"id", "contact_id", "status", "current_state", "last_inbound_at", "last_outbound_at",
                          "service_window_expires_at", "owner", "created_at", "updated_at"},
        "messages": {"id", "conversation_id", "direction", "channel", "provider_message_id", "message_type",
                     "content", "template_name", "delivery_status", "error_code", "created_at"},
        "qualification_answers": {"id", "conversation_id", "ads_running", "monthly_leads_bucket", "qualified",
                                  "reason", "updated_at"},
        "tasks_scheduled": {"id", "conversation_id", "task_type", "run_at", "payload_json", "status", "attempts"},
        "audit_events": {"id", "contact_id", "event_type", "details_json", "created_at"},
    }
    for table, fields in seed_fields.items():
        assert data[table], table
        for row in data[table]:
            assert fields <= set(row), (table, fields - set(row))
    [person] = data["contacts"]
    assert person["whatsapp_e164"] == PHONE and person["first_name"] == NAME and person["consent_status"] == "granted"
    assert data["conversations"][0]["status"] == "handover" and data["conversations"][0]["owner"] == "human"
    assert {m["content"] for m in data["messages"]} >= set(TEXTS)
    assert {m["direction"] for m in data["messages"]} == {"inbound", "outbound"}
    assert data["qualification_answers"][0]["monthly_leads_bucket"] == "100-300"
    assert {t["task_type"] for t in data["tasks_scheduled"]} >= {"reminder_22h", "handover_sla"}
    assert data["appointments"][0]["status"] == "booked"
    assert data["handovers"][0]["reason"] == "keyword"
    assert data["knowledge_gaps"][0]["question"] == TEXTS[2]
    tracker = data["rasa_tracker_events"]
    assert tracker["sender_id"] == SENDER_ID
    assert [e["data"]["text"] for e in tracker["events"] if e["type_name"] == "user"] == list(TEXTS)
    assert "bleibt" not in json.dumps(data)

    session.expire_all()
    exported = session.execute(select(AuditEvent).where(AuditEvent.event_type == "data_exported")).scalar_one()
    assert exported.contact_id == contact.id


def test_revoke_consent_does_what_stop_does(client: TestClient, auth: dict, session: Session) -> None:
    contact, _ = make_contact(session)
    response = client.post("/privacy/revoke-consent", headers=auth, json={"whatsapp_e164": contact.whatsapp_e164})
    assert response.status_code == 200
    assert response.json() == {"contact_id": contact.id, "consent_status": "revoked"}
    again = client.post("/privacy/revoke-consent", headers=auth, json={"contact_id": contact.id})
    assert again.status_code == 200
    session.expire_all()
    events = session.execute(select(AuditEvent).where(AuditEvent.event_type == "consent_revoked")).scalars().all()
    assert len(events) == 1
    confirmations = session.execute(
        select(Message).where(Message.direction == "outbound", Message.sender_role == "system")
    ).scalars().all()
    assert len(confirmations) == 1 and confirmations[0].delivery_status == "queued"


def test_privacy_requests_need_exactly_one_known_contact(client: TestClient, auth: dict, session: Session) -> None:
    contact, _ = make_contact(session)
    for path in ("/privacy/export", "/privacy/delete", "/privacy/revoke-consent"):
        assert client.post(path, headers=auth, json={}).status_code == 422
        both = client.post(path, headers=auth, json={"contact_id": contact.id, "whatsapp_e164": PHONE})
        assert both.status_code == 422 and "exactly one" in both.text
        assert client.post(path, headers=auth, json={"whatsapp_e164": "kein Telefon"}).status_code == 422
        assert client.post(path, headers=auth, json={"whatsapp_e164": PHONE}).status_code == 404
        assert client.post(path, headers=auth, json={"contact_id": 777}).status_code == 404
