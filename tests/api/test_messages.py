"""`POST /messages/send`: policy gate, block reasons with the row kept, validation, idempotency, human replies."""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from leadbot.clock import FrozenClock
from leadbot.db.models import AuditEvent, Conversation, Handover, IdempotencyKey, Message
from leadbot.services import handover
from tests.api.conftest import at_berlin, make_contact


def _outbound(session: Session) -> list[Message]:
    session.expire_all()
    return list(session.execute(select(Message).where(Message.direction == "outbound").order_by(Message.id)).scalars())


def test_session_text_inside_window_is_queued(client: TestClient, auth: dict, session: Session) -> None:
    contact, conversation = make_contact(session)
    response = client.post(
        "/messages/send", headers=auth, json={"contact_id": contact.id, "type": "session_text", "text": "Hi Mareike!"}
    )
    assert response.status_code == 202, response.text
    body = response.json()
    [message] = _outbound(session)
    assert body["message_id"] == message.id
    assert body["conversation_id"] == conversation.id
    assert body["status"] == "queued" and message.delivery_status == "queued"
    assert body["send_at"] == "2026-11-25T09:00:00Z"
    assert message.content == "Hi Mareike!" and message.sender_role == "bot"


def test_blocked_send_answers_the_reason_and_keeps_the_row_and_audit(
    client: TestClient, auth: dict, session: Session
) -> None:
    contact, _ = make_contact(session, window_open=False)
    response = client.post(
        "/messages/send", headers=auth, json={"contact_id": contact.id, "type": "session_text", "text": "Hallo?"}
    )
    assert response.status_code == 409
    body = response.json()
    assert body["reason"] == "outside_service_window"
    [message] = _outbound(session)
    assert message.id == body["message_id"]
    assert message.delivery_status == "failed" and message.error_code == "policy:outside_service_window"
    audit = session.execute(select(AuditEvent).where(AuditEvent.event_type == "policy_blocked_send")).scalar_one()
    assert audit.details_json["message_id"] == message.id


def test_template_needs_consent(client: TestClient, auth: dict, session: Session) -> None:
    unknown, _ = make_contact(session, e164="+4915100000001", consent_status="unknown")
    granted, _ = make_contact(session, e164="+4915100000002", consent_status="granted", window_open=False)
    request = {"type": "template", "template_name": "lead_nudge_v1"}
    blocked = client.post("/messages/send", headers=auth, json={"contact_id": unknown.id, **request})
    assert blocked.status_code == 409 and blocked.json()["reason"] == "no_consent"
    sent = client.post("/messages/send", headers=auth, json={"contact_id": granted.id, **request})
    assert sent.status_code == 202, sent.text
    assert _outbound(session)[-1].template_name == "lead_nudge_v1"


def test_quiet_hours_move_send_at(client: TestClient, auth: dict, session: Session, frozen_clock: FrozenClock) -> None:
    frozen_clock.set(at_berlin(frozen_clock.now(), 23, 30))
    contact, _ = make_contact(session)
    response = client.post(
        "/messages/send", headers=auth, json={"contact_id": contact.id, "type": "session_text", "text": "Spät"}
    )
    assert response.status_code == 202
    assert response.json()["send_at"] == "2026-11-26T06:00:00Z"  # 07:00 Berlin
    assert response.json()["deferred_for_quiet_hours"] is True


def test_unknown_contact_is_404(client: TestClient, auth: dict) -> None:
    body = {"contact_id": 4242, "type": "session_text", "text": "x"}
    response = client.post("/messages/send", headers=auth, json=body)
    assert response.status_code == 404
    assert response.json()["detail"] == "unknown contact"


def test_invalid_requests_are_422_with_a_reason_and_write_nothing(
    client: TestClient, auth: dict, session: Session
) -> None:
    contact, _ = make_contact(session)
    cases = [
        ({"contact_id": contact.id, "type": "session_text"}, "needs a non-empty text"),
        ({"contact_id": contact.id, "type": "template"}, "needs template_name"),
        ({"contact_id": contact.id, "type": "sms", "text": "x"}, "session_text"),
        ({"contact_id": contact.id, "type": "session_text", "text": "x", "colour": "red"}, "Extra inputs"),
        ({"contact_id": 0, "type": "session_text", "text": "x"}, "greater than 0"),
        ({"contact_id": contact.id, "type": "session_text", "text": "a\x00b"}, "pattern"),
        ({"contact_id": contact.id, "type": "template", "template_name": "nope_v1"}, "unknown template"),
        ({"contact_id": contact.id, "type": "template", "template_name": "lead_welcome_v1"}, "needs variables"),
        ({"contact_id": contact.id, "type": "session_text", "text": "x", "send_at": "2026-11-25T10:00:00"}, "timezone"),
    ]
    conversations_before = session.execute(select(func.count()).select_from(Conversation)).scalar_one()
    for body, reason in cases:
        response = client.post("/messages/send", headers=auth, json=body)
        assert response.status_code == 422, (body, response.text)
        assert reason in response.text, (reason, response.text)
    assert _outbound(session) == []
    assert session.execute(select(func.count()).select_from(Conversation)).scalar_one() == conversations_before


def test_idempotency_key_replays_the_first_answer(client: TestClient, auth: dict, session: Session) -> None:
    contact, _ = make_contact(session)
    body = {"contact_id": contact.id, "type": "session_text", "text": "Einmal bitte"}
    headers = {**auth, "Idempotency-Key": "send-1"}
    first = client.post("/messages/send", headers=headers, json=body)
    again = client.post("/messages/send", headers=headers, json=body)
    assert first.status_code == again.status_code == 202
    assert first.json() == again.json()
    assert len(_outbound(session)) == 1
    other = client.post("/messages/send", headers=headers, json={**body, "text": "Anders"})
    assert other.status_code == 422 and "different request body" in other.text
    assert len(_outbound(session)) == 1
    assert session.execute(select(func.count()).select_from(IdempotencyKey)).scalar_one() == 1


def test_blocked_answer_is_replayed_without_a_second_row(client: TestClient, auth: dict, session: Session) -> None:
    contact, _ = make_contact(session, window_open=False)
    body = {"contact_id": contact.id, "type": "session_text", "text": "Hallo?"}
    headers = {**auth, "Idempotency-Key": "blocked-1"}
    first = client.post("/messages/send", headers=headers, json=body)
    again = client.post("/messages/send", headers=headers, json=body)
    assert first.status_code == again.status_code == 409
    assert first.json() == again.json()
    assert len(_outbound(session)) == 1


def test_during_handover_the_bot_is_blocked_and_a_humans_first_reply_counts(
    client: TestClient, auth: dict, session: Session, frozen_clock: FrozenClock
) -> None:
    contact, conversation = make_contact(session)
    handover.start(session, conversation, "keyword")
    session.commit()
    bot = client.post(
        "/messages/send", headers=auth, json={"contact_id": contact.id, "type": "session_text", "text": "Bot hier"}
    )
    assert bot.status_code == 409 and bot.json()["reason"] == "human_owns_conversation"

    frozen_clock.advance(timedelta(minutes=4))
    human = {"contact_id": contact.id, "type": "session_text", "text": "Hi, hier ist Jonas", "sent_by": "human"}
    assert client.post("/messages/send", headers=auth, json=human).status_code == 202
    frozen_clock.advance(timedelta(minutes=3))
    assert client.post("/messages/send", headers=auth, json={**human, "text": "Noch was"}).status_code == 202

    session.expire_all()
    row = session.execute(select(Handover)).scalar_one()
    assert row.first_human_response_at == row.started_at + timedelta(minutes=4)
    humans = [m for m in _outbound(session) if m.sender_role == "human"]
    assert [m.delivery_status for m in humans] == ["queued", "queued"]
