"""Issue 3 point 8: signed status callbacks update delivery_status/error_code and never move a status backwards."""

from __future__ import annotations

import uuid

import pytest

from tests.channel.conftest import outbound_rows, random_e164


@pytest.fixture
def sent_message(rasa, db, settle, engine):
    """A bot reply the sender has handed to Twilio (it has a provider id and is `queued`)."""
    e164 = random_e164()
    assert rasa.inbound(e164, "hallo").status_code == 200
    settle()
    [reply] = outbound_rows(db, e164)
    sid = "SM" + uuid.uuid4().hex
    with engine.begin() as connection:
        connection.exec_driver_sql(
            "UPDATE messages SET provider_message_id = %(sid)s WHERE id = %(id)s", {"sid": sid, "id": reply["id"]}
        )
    return e164, sid, reply["id"]


def _message(db, message_id):
    return db("SELECT delivery_status, error_code FROM messages WHERE id = :id", id=message_id)[0]


def test_status_moves_forward_only(rasa, db, sent_message):
    _, sid, message_id = sent_message
    for twilio_status, expected in [
        ("sending", "queued"),
        ("sent", "sent"),
        ("delivered", "delivered"),
        ("sent", "delivered"),  # late callback: not backwards
        ("read", "read"),
        ("delivered", "read"),
        ("queued", "read"),
        ("undelivered", "read"),  # failed never replaces delivered/read
    ]:
        answer = rasa.status(sid, twilio_status)
        assert answer.status_code == 200
        assert _message(db, message_id)["delivery_status"] == expected, twilio_status


def test_failed_replaces_sent_with_the_error_code(rasa, db, sent_message):
    _, sid, message_id = sent_message
    assert rasa.status(sid, "sent").status_code == 200
    assert rasa.status(sid, "undelivered", ErrorCode="30008").status_code == 200
    assert _message(db, message_id) == {"delivery_status": "failed", "error_code": "30008"}
    # Nothing leaves failed.
    assert rasa.status(sid, "delivered").status_code == 200
    assert _message(db, message_id)["delivery_status"] == "failed"


def test_opted_out_error_code_revokes_consent(rasa, db, sent_message):
    e164, sid, message_id = sent_message
    assert rasa.status(sid, "failed", ErrorCode="63032").status_code == 200
    assert _message(db, message_id) == {"delivery_status": "failed", "error_code": "63032"}
    [contact] = db("SELECT id, consent_status FROM contacts WHERE whatsapp_e164 = :e", e=e164)
    assert contact["consent_status"] == "revoked"
    events = db(
        "SELECT details_json FROM audit_events WHERE contact_id = :id AND event_type='consent_revoked'",
        id=contact["id"],
    )
    assert len(events) == 1
    # A repeated callback changes nothing and confirms nothing twice.
    count = len(outbound_rows(db, e164))
    assert rasa.status(sid, "failed", ErrorCode="21610").status_code == 200
    assert len(outbound_rows(db, e164)) == count


def test_unknown_message_id_is_acknowledged(rasa, db):
    assert rasa.status("SM" + uuid.uuid4().hex, "delivered").status_code == 200
