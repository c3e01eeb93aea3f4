"""A turn that keeps failing never leaves the lead in silence: after the retries the team takes over."""

from __future__ import annotations

from tests.channel.conftest import AUTH_TOKEN, outbound_rows, random_e164, start_rasa, wait_until


def test_failing_turns_hand_the_lead_to_the_team(bot_model, database_url, tracker_db_url, action_server, db):
    # Rasa's lock store is unreachable, so every dialogue turn raises (as with Redis or the tracker DB down).
    broken = start_rasa(
        "broken-lock",
        model=bot_model,
        database_url=database_url,
        tracker_url=tracker_db_url,
        redis_url="redis://127.0.0.1:1/0",
        action_url=action_server.url,
        auth_token=AUTH_TOKEN,
    )
    try:
        e164 = random_e164()
        assert broken.inbound(e164, "hallo").status_code == 200  # persisted and acknowledged all the same

        [inbound] = wait_until(
            lambda: db(
                """SELECT m.* FROM messages m JOIN conversations c ON c.id = m.conversation_id
                   JOIN contacts k ON k.id = c.contact_id
                   WHERE k.whatsapp_e164 = :e164 AND m.direction = 'inbound' AND m.processed_at IS NOT NULL""",
                e164=e164,
            ),
            timeout=60,
        )
        assert inbound["error_code"] == "turn_failed"
        [conversation] = db(
            "SELECT c.* FROM conversations c JOIN contacts k ON k.id = c.contact_id WHERE k.whatsapp_e164 = :e164",
            e164=e164,
        )
        assert (conversation["owner"], conversation["status"]) == ("human", "handover")
        [handover] = db("SELECT * FROM handovers WHERE conversation_id = :id", id=conversation["id"])
        assert handover["reason"] == "turn_failed"
        # The lead is told that a person will answer; the team is notified through the CRM handover port.
        [notice] = outbound_rows(db, e164)
        assert notice["sender_role"] == "system" and notice["delivery_status"] == "queued"
        assert db("SELECT operation FROM crm_outbox WHERE operation = 'handover'")
    finally:
        broken.stop()
