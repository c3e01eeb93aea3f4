"""Issue 3 point 9 and issue 10 point 4: every bot message goes to the outbound queue, in Rasa's order."""

from __future__ import annotations

from tests.channel.conftest import RASA_API_TOKEN, outbound_rows, random_e164, wait_until


def test_text_then_buttons_are_enqueued_in_order(rasa, db, settle):
    e164 = random_e164()
    assert rasa.inbound(e164, "zwei").status_code == 200
    settle()
    first, second = outbound_rows(db, e164)
    assert first["content"] == "Erste Nachricht."
    assert first["message_type"] == "text"
    assert second["content"] == "Zweite Nachricht: passt das?"
    assert second["message_type"] == "interactive"
    assert second["payload_json"]["buttons"] == [
        {"title": "Ja, passt", "payload": "/affirm"},
        {"title": "Später", "payload": "/forced"},
    ]
    assert first["id"] < second["id"]
    # Never overtakes: the second goes out no earlier than the first (the shared reply delay is proven on the
    # replica, which has a 30-90 s delay: test_ordering.py::test_reply_delay_is_drawn_once_per_turn).
    assert first["send_at"] <= second["send_at"]
    assert {row["delivery_status"] for row in (first, second)} == {"queued"}
    assert {row["sender_role"] for row in (first, second)} == {"bot"}


def test_a_question_schedules_the_nudge(rasa, db, settle):
    """After the turn the scheduler hook runs: the bot asked a question (buttons), so a nudge is pending."""
    e164 = random_e164()
    assert rasa.inbound(e164, "zwei").status_code == 200
    settle()
    tasks = db(
        """SELECT t.task_type, t.status FROM tasks_scheduled t JOIN conversations c ON c.id = t.conversation_id
           JOIN contacts k ON k.id = c.contact_id WHERE k.whatsapp_e164 = :e""",
        e=e164,
    )
    assert tasks == [{"task_type": "nudge_30m", "status": "pending"}]
    # The lead's next message cancels it (after_lead_message).
    assert rasa.inbound(e164, "hallo").status_code == 200
    settle()
    statuses = db(
        """SELECT t.status FROM tasks_scheduled t JOIN conversations c ON c.id = t.conversation_id
           JOIN contacts k ON k.id = c.contact_id WHERE k.whatsapp_e164 = :e ORDER BY t.id""",
        e=e164,
    )
    assert statuses[0]["status"] == "cancelled"


def test_custom_json_template_becomes_a_template_send(rasa, db, settle):
    e164 = random_e164()
    assert rasa.inbound(e164, "vorlage").status_code == 200
    settle()
    [row] = outbound_rows(db, e164)
    assert row["message_type"] == "template"
    assert row["template_name"] == "lead_nudge_v1"
    assert "Reminder" in row["content"]


def test_trigger_intent_with_whatsapp_output_channel_enqueues(rasa, db, settle):
    """Rasa's trigger_intent API (the scheduler's path) uses our output channel: rows, not Twilio calls."""
    e164 = random_e164()
    assert rasa.inbound(e164, "hallo").status_code == 200
    settle()
    answer = rasa.client.post(
        f"{rasa.base}/conversations/wa{e164.lstrip('+')}/trigger_intent",
        params={"output_channel": "whatsapp", "token": RASA_API_TOKEN},
        json={"name": "zwei", "entities": {}},
    )
    assert answer.status_code == 200, answer.text
    rows = wait_until(lambda: len(outbound_rows(db, e164)) == 3 and outbound_rows(db, e164))
    assert [row["content"] for row in rows] == [
        "Hallo! Schön, dass du da bist.",
        "Erste Nachricht.",
        "Zweite Nachricht: passt das?",
    ]
