"""Issue 3 points 2-7: idempotency, persistence, fast ack, input hygiene, opt-out, human ownership."""

from __future__ import annotations

import asyncio
import random
import string
import time
import unicodedata
import uuid
from datetime import timedelta

import httpx

from tests.channel.conftest import (
    INBOUND_PATH,
    RASA_API_TOKEN,
    inbound_form,
    inbound_rows,
    outbound_rows,
    random_e164,
    sign,
    wait_until,
)


def _sender(e164: str) -> str:
    return "wa" + e164.lstrip("+")


def _contact(db, e164):
    rows = db("SELECT * FROM contacts WHERE whatsapp_e164 = :e164", e164=e164)
    return rows[0] if rows else None


def test_inbound_is_persisted_and_acknowledged_with_empty_twiml(rasa, db, settle):
    e164 = random_e164()
    sid = "SM" + uuid.uuid4().hex
    answer = rasa.inbound(e164, "hallo", sid=sid, ProfileName="Erika")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/xml")
    assert answer.text.endswith("<Response/>")
    contact = _contact(db, e164)
    assert contact["first_name"] == "Erika"
    conversation = db("SELECT * FROM conversations WHERE contact_id = :id", id=contact["id"])[0]
    assert conversation["last_inbound_at"] is not None
    assert conversation["service_window_expires_at"] - conversation["last_inbound_at"] == timedelta(hours=24)
    [message] = inbound_rows(db, e164)
    assert message["provider_message_id"] == sid
    assert message["content"] == "hallo"
    assert message["message_type"] == "text"
    settle()
    [message] = inbound_rows(db, e164)
    assert message["processed_at"] is not None
    assert [row["content"] for row in outbound_rows(db, e164)] == ["Hallo! Schön, dass du da bist."]
    # MessageSid is Rasa's message_id.
    tracker = rasa.client.get(
        f"{rasa.base}/conversations/{_sender(e164)}/tracker", params={"token": RASA_API_TOKEN}
    ).json()
    user_events = [event for event in tracker["events"] if event["event"] == "user"]
    assert [event["message_id"] for event in user_events] == [sid]
    assert user_events[0]["input_channel"] == "whatsapp"


def test_ack_does_not_wait_for_the_turn(rasa, db, settle, action_server):
    """The slow action takes 3 s; the webhook is answered before the turn has finished."""
    e164 = random_e164()
    action_server.delay_seconds = 3.0
    try:
        started = time.monotonic()
        answer = rasa.inbound(e164, "langsam")
        elapsed = time.monotonic() - started
        assert answer.status_code == 200
        assert elapsed < 2.5
        assert inbound_rows(db, e164)[0]["processed_at"] is None
        settle()
    finally:
        action_server.delay_seconds = 1.5
    assert [row["content"] for row in outbound_rows(db, e164)] == ["Langsame Antwort auf: langsam"]


def test_50_concurrent_redeliveries_give_exactly_one_reply(rasa, db, settle):
    e164 = random_e164()
    form = inbound_form(e164, "hallo")
    signature = sign(rasa.auth_token, rasa.public(INBOUND_PATH), form)

    async def fire() -> list[int]:
        async with httpx.AsyncClient(timeout=60) as client:
            requests = [
                client.post(
                    rasa.base + INBOUND_PATH,
                    data=form,
                    headers={"X-Twilio-Signature": signature},
                )
                for _ in range(50)
            ]
            return [response.status_code for response in await asyncio.gather(*requests)]

    codes = asyncio.run(fire())
    assert codes == [200] * 50
    settle()
    time.sleep(0.5)
    assert len(inbound_rows(db, e164)) == 1
    assert len(outbound_rows(db, e164)) == 1
    assert len(db("SELECT id FROM contacts WHERE whatsapp_e164 = :e164", e164=e164)) == 1
    assert (
        len(
            db(
                "SELECT c.id FROM conversations c JOIN contacts k ON k.id = c.contact_id WHERE k.whatsapp_e164 = :e164",
                e164=e164,
            )
        )
        == 1
    )
    # A later redelivery is acknowledged and triggers nothing.
    assert rasa.post_signed(INBOUND_PATH, form).status_code == 200
    time.sleep(0.8)
    assert len(outbound_rows(db, e164)) == 1


def test_text_is_nfc_normalised(rasa, db, settle):
    e164 = random_e164()
    decomposed = unicodedata.normalize("NFD", "Grüße")
    assert decomposed != "Grüße"
    assert rasa.inbound(e164, decomposed).status_code == 200
    settle()
    assert inbound_rows(db, e164)[0]["content"] == "Grüße"


def test_typed_slash_intent_is_neutralised(rasa, db, settle):
    """A lead typing `/forced` must not force the intent (our bot answers `/forced` only when forced)."""
    e164 = random_e164()
    assert rasa.inbound(e164, '/forced{"x": "1"}').status_code == 200
    settle()
    assert "Button-Intent erkannt." not in [row["content"] for row in outbound_rows(db, e164)]
    tracker = rasa.client.get(
        f"{rasa.base}/conversations/{_sender(e164)}/tracker", params={"token": RASA_API_TOKEN}
    ).json()
    intents = [event["parse_data"]["intent"].get("name") for event in tracker["events"] if event["event"] == "user"]
    assert "forced" not in intents


def test_button_payload_we_sent_maps_to_its_intent_and_a_foreign_one_does_not(rasa, db, settle):
    e164 = random_e164()
    assert rasa.inbound(e164, "zwei").status_code == 200  # bot sends buttons with payloads /affirm and /forced
    settle()
    buttons = outbound_rows(db, e164)[-1]["payload_json"]["buttons"]
    assert {"title": "Später", "payload": "/forced"} in buttons
    # A button reply carrying our payload forces the intent it stands for.
    assert rasa.inbound(e164, "Später", ButtonPayload="/forced", ButtonText="Später").status_code == 200
    settle()
    assert outbound_rows(db, e164)[-1]["content"] == "Button-Intent erkannt."
    assert inbound_rows(db, e164)[-1]["message_type"] == "interactive"
    count = len(outbound_rows(db, e164))
    # A payload we never sent is treated as text: no forced intent.
    other = random_e164()
    assert rasa.inbound(other, "x", ButtonPayload="/forced", ButtonText="x").status_code == 200
    settle()
    assert "Button-Intent erkannt." not in [row["content"] for row in outbound_rows(db, other)]
    # A typed reply equal to a button title means that button.
    assert rasa.inbound(e164, "zwei").status_code == 200
    settle()
    assert rasa.inbound(e164, "später").status_code == 200
    settle()
    assert outbound_rows(db, e164)[-1]["content"] == "Button-Intent erkannt."
    assert len(outbound_rows(db, e164)) == count + 3


def test_media_gets_a_friendly_german_reply(rasa, db, settle):
    e164 = random_e164()
    answer = rasa.inbound(
        e164,
        "",
        NumMedia="1",
        MediaUrl0="https://api.twilio.com/2010-04-01/Accounts/AC0/Messages/MM1/Media/ME1",
        MediaContentType0="image/jpeg",
    )
    assert answer.status_code == 200
    settle()
    [message] = inbound_rows(db, e164)
    assert message["message_type"] == "media"
    assert message["payload_json"]["media"][0]["content_type"] == "image/jpeg"
    replies = outbound_rows(db, e164)
    assert len(replies) == 1
    assert "nicht auswerten" in replies[0]["content"]


def test_empty_body_and_missing_fields_never_give_5xx(rasa, db, settle):
    e164 = random_e164()
    assert rasa.inbound(e164, None).status_code == 200  # no Body at all
    assert rasa.inbound(e164, "   ").status_code == 200
    settle()
    assert len(inbound_rows(db, e164)) == 2
    assert outbound_rows(db, e164) == []
    # Signed, but no MessageSid or no sender: a client error, not a server error.
    assert rasa.post_signed(INBOUND_PATH, {"Body": "hallo", "From": f"whatsapp:{e164}"}).status_code == 400
    assert rasa.post_signed(INBOUND_PATH, {"Body": "hallo", "MessageSid": "SMx", "From": "garbage"}).status_code == 400


def test_fuzzed_form_fields_never_give_5xx(rasa, db, settle):
    rng = random.Random(1234)
    fields = [
        "MessageSid",
        "From",
        "To",
        "Body",
        "NumMedia",
        "MediaUrl0",
        "MediaContentType0",
        "ProfileName",
        "WaId",
        "ButtonPayload",
        "ButtonText",
        "MessagingServiceSid",
        "SmsStatus",
        "Latitude",
        "Longitude",
    ]
    alphabet = string.printable + "äöüß€😀\u0301\u200b\x00/{}[]\"'"

    def junk() -> str:
        choice = rng.random()
        if choice < 0.2:
            return ""
        if choice < 0.3:
            return "whatsapp:+49151" + "".join(rng.choice(string.digits) for _ in range(8))
        if choice < 0.4:
            return str(rng.randint(-5, 10**12))
        return "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 300)))

    codes = []
    for _ in range(120):
        form = {name: junk() for name in rng.sample(fields, rng.randint(0, len(fields)))}
        if rng.random() < 0.7:
            form["MessageSid"] = "SM" + uuid.uuid4().hex
        if rng.random() < 0.7:
            form["From"] = f"whatsapp:{random_e164()}"
        codes.append(rasa.post_signed(INBOUND_PATH, form).status_code)
    assert all(code < 500 for code in codes), codes
    assert 200 in codes
    settle(timeout=60)


def _revocations(db, contact_id):
    return db("SELECT * FROM audit_events WHERE contact_id = :id AND event_type = 'consent_revoked'", id=contact_id)


def test_opt_out_revokes_consent_once_confirms_once_and_cancels_marketing(rasa, db, settle, engine):
    e164 = random_e164()
    assert rasa.inbound(e164, "hallo").status_code == 200
    settle()
    contact = _contact(db, e164)
    conversation_id = db("SELECT id FROM conversations WHERE contact_id = :id", id=contact["id"])[0]["id"]
    with engine.begin() as connection:
        connection.exec_driver_sql(
            "UPDATE contacts SET consent_status = 'granted' WHERE id = %(id)s", {"id": contact["id"]}
        )
        connection.exec_driver_sql(
            "INSERT INTO tasks_scheduled (conversation_id, task_type, run_at, status, attempts, created_at, "
            "updated_at) VALUES (%(c)s, 'followup_24h', now() + interval '1 day', 'pending', 0, now(), now())",
            {"c": conversation_id},
        )
    replies_before = len(outbound_rows(db, e164))

    assert rasa.inbound(e164, "STOP").status_code == 200
    settle()
    contact = _contact(db, e164)
    assert contact["consent_status"] == "revoked"
    assert len(_revocations(db, contact["id"])) == 1
    replies = outbound_rows(db, e164)[replies_before:]
    assert len(replies) == 1
    assert replies[0]["sender_role"] == "system"
    assert replies[0]["payload_json"]["purpose"] == "opt_out_confirmation"
    assert "keine Nachrichten mehr" in replies[0]["content"]
    assert replies[0]["delivery_status"] == "queued"
    tasks = db("SELECT status FROM tasks_scheduled WHERE conversation_id = :c", c=conversation_id)
    assert [task["status"] for task in tasks] == ["cancelled"]
    crm = db("SELECT * FROM crm_outbox WHERE contact_id = :id AND operation = 'lead_upsert'", id=contact["id"])
    assert crm and crm[-1]["payload_json"]["consent_status"] == "revoked"
    # No dialogue turn ran for STOP.
    tracker = rasa.client.get(
        f"{rasa.base}/conversations/{_sender(e164)}/tracker", params={"token": RASA_API_TOKEN}
    ).json()
    assert [event["text"] for event in tracker["events"] if event["event"] == "user"] == ["hallo"]

    # A repeated opt-out: no second confirmation, no second audit event.
    assert rasa.inbound(e164, "Bitte keine Nachrichten mehr").status_code == 200
    settle()
    assert len(outbound_rows(db, e164)) == replies_before + 1
    assert len(_revocations(db, contact["id"])) == 1


def test_human_owned_conversation_forwards_and_the_bot_stays_silent(rasa, db, settle, engine):
    e164 = random_e164()
    assert rasa.inbound(e164, "hallo").status_code == 200
    settle()
    with engine.begin() as connection:
        connection.exec_driver_sql(
            "UPDATE conversations SET owner = 'human' WHERE contact_id = "
            "(SELECT id FROM contacts WHERE whatsapp_e164 = %(e)s)",
            {"e": e164},
        )
    before = len(outbound_rows(db, e164))
    assert rasa.inbound(e164, "Ich hätte gern einen Rückruf").status_code == 200
    settle()
    assert len(outbound_rows(db, e164)) == before
    message = inbound_rows(db, e164)[-1]
    assert message["content"] == "Ich hätte gern einen Rückruf"
    assert message["processed_at"] is not None
    contact = _contact(db, e164)
    [activity] = db("SELECT * FROM crm_outbox WHERE contact_id = :id AND operation = 'activity'", id=contact["id"])
    assert activity["payload_json"]["text"] == "Ich hätte gern einen Rückruf"
    assert activity["payload_json"]["message_id"] == message["id"]
    tracker = rasa.client.get(
        f"{rasa.base}/conversations/{_sender(e164)}/tracker", params={"token": RASA_API_TOKEN}
    ).json()
    assert [event["text"] for event in tracker["events"] if event["event"] == "user"] == ["hallo"]


def test_health_and_metrics(rasa):
    health = rasa.client.get(rasa.base + "/webhooks/whatsapp/health")
    assert health.status_code == 200
    assert health.json()["database"] == "ok"
    metrics = rasa.client.get(rasa.base + "/webhooks/whatsapp/metrics")
    assert metrics.status_code == 200
    assert "leadbot_webhook_ack_seconds" in metrics.text
    wait_until(lambda: "leadbot_inbound_messages_total" in metrics.text, timeout=1)
