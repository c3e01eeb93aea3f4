"""`POST /leads`: the opt-in that starts the flow (issue 5 point 1)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from leadbot.api.routes.leads import router
from leadbot.db.models import AuditEvent, Contact, CrmOutbox, TaskScheduled
from leadbot.services import tasks

AUTH = {"Authorization": "Bearer test-ops-key"}


@pytest.fixture
def client(engine, frozen_clock, scheduler_env) -> Iterator[TestClient]:
    app = FastAPI()
    app.include_router(router)
    with TestClient(app) as test_client:
        yield test_client


def _body(**overrides):
    body = {
        "whatsapp_e164": "0151 12345678",
        "first_name": "Lena",
        "timezone": "Europe/Berlin",
        "consent_source": "landingpage:pilot",
        "consent_text_version": "v3",
        "consent_timestamp": "2026-11-25T09:58:00+01:00",
    }
    body.update(overrides)
    return body


def _counts(engine):
    with Session(engine, future=True) as session:
        return tuple(
            session.execute(select(func.count()).select_from(model)).scalar_one()
            for model in (Contact, TaskScheduled, AuditEvent, CrmOutbox)
        )


def test_opt_in_creates_contact_audits_and_schedules_welcome(client, engine, frozen_clock):
    response = client.post("/leads", json=_body(), headers=AUTH)
    assert response.status_code == 201, response.text
    data = response.json()
    assert data["contact_created"] is True and data["welcome_scheduled"] is True
    with Session(engine, future=True) as session:
        contact = session.get(Contact, data["contact_id"])
        assert (contact.whatsapp_e164, contact.consent_status, contact.consent_text_version) == (
            "+4915112345678", "granted", "v3"
        )
        assert contact.consent_timestamp.isoformat() == "2026-11-25T08:58:00+00:00"
        welcome = session.get(TaskScheduled, data["welcome_task_id"])
        assert (welcome.task_type, welcome.status) == ("welcome", "pending")
        assert welcome.run_at == frozen_clock.now() + timedelta(minutes=5)
        audit = session.execute(select(AuditEvent)).scalar_one()
        assert (audit.event_type, audit.details_json["source"]) == ("consent_granted", "landingpage:pilot")


def test_repeated_opt_in_does_not_schedule_a_second_welcome(client, engine, frozen_clock):
    first = client.post("/leads", json=_body(), headers=AUTH).json()
    frozen_clock.advance(timedelta(minutes=2))
    second = client.post("/leads", json=_body(first_name="Lena-Marie", timezone="Asia/Tokyo"), headers=AUTH).json()
    assert second["welcome_task_id"] == first["welcome_task_id"]
    assert second["welcome_run_at"] == first["welcome_run_at"]
    assert (second["contact_created"], second["welcome_scheduled"]) == (False, False)
    with Session(engine, future=True) as session:
        contact = session.get(Contact, first["contact_id"])
        assert (contact.first_name, contact.timezone) == ("Lena-Marie", "Asia/Tokyo")
        assert session.execute(select(func.count()).select_from(TaskScheduled)).scalar_one() == 1


def test_opt_in_after_revocation_revives_the_unsent_welcome(client, engine, frozen_clock):
    first = client.post("/leads", json=_body(), headers=AUTH).json()
    with Session(engine, future=True) as session:
        contact = session.get(Contact, first["contact_id"])
        contact.consent_status = "revoked"
        tasks.on_consent_revoked(session, contact.conversations[0])
        session.commit()
    frozen_clock.advance(timedelta(hours=1))
    again = client.post("/leads", json=_body(consent_timestamp="2026-11-25T10:59:00+01:00"), headers=AUTH).json()
    assert again["welcome_task_id"] == first["welcome_task_id"] and again["welcome_scheduled"] is True
    with Session(engine, future=True) as session:
        welcome = session.get(TaskScheduled, first["welcome_task_id"])
        assert welcome.status == "pending"
        assert welcome.run_at == frozen_clock.now() + timedelta(minutes=5)


def test_idempotency_key_replays_the_first_answer(client, engine):
    headers = {**AUTH, "Idempotency-Key": "form-submit-1"}
    first = client.post("/leads", json=_body(), headers=headers)
    replay = client.post("/leads", json=_body(), headers=headers)
    assert (first.status_code, replay.status_code) == (201, 201)
    assert replay.json() == first.json()
    assert _counts(engine) == (1, 1, 1, 1)  # the replay wrote nothing (no second audit, no CRM row)
    other_body = client.post("/leads", json=_body(first_name="Max"), headers=headers)
    assert other_body.status_code == 422


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"whatsapp_e164": "12345"}, "whatsapp_e164"),
        ({"whatsapp_e164": "+49 151"}, "whatsapp_e164"),
        ({"timezone": "Mars/Olympus_Mons"}, "timezone"),
        ({"timezone": "../../etc/passwd"}, "timezone"),
        ({"consent_source": "  "}, "consent_source"),
        ({"consent_text_version": ""}, "consent_text_version"),
        ({"consent_timestamp": "2026-11-25T09:58:00"}, "consent_timestamp"),
        ({"consent_timestamp": "2027-01-01T00:00:00+00:00"}, "consent_timestamp"),
        ({"consent_timestamp": "gestern"}, "consent_timestamp"),
        ({"consent_source": None}, "consent_source"),
        ({"unexpected": "field"}, "unexpected"),
    ],
)
def test_invalid_input_is_422_with_reason_and_writes_nothing(client, engine, overrides, field):
    response = client.post("/leads", json=_body(**overrides), headers=AUTH)
    assert response.status_code == 422, response.text
    assert any(field in [str(part) for part in error["loc"]] for error in response.json()["detail"])
    assert _counts(engine) == (0, 0, 0, 0)


def test_api_key_is_required(client, engine):
    assert client.post("/leads", json=_body()).status_code == 401
    assert client.post("/leads", json=_body(), headers={"Authorization": "Bearer wrong"}).status_code == 403
    assert _counts(engine) == (0, 0, 0, 0)
