"""End-to-end conversation flows of the seed (§4 decision tree, §5 templates, §9 test plan) against the whole system.

Everything runs for real (see `conftest.py`): the lead's messages are Twilio-signed webhooks to our Rasa channel,
the scheduler fires the welcome and the reminders through Rasa's trigger-intent API when the shared clock moves,
the sender delivers into the sandbox outbox, which reports `sent`/`delivered` as signed status callbacks, booking
writes to the local CalDAV server, and the team works through the ops API. Each test has its own lead.
"""

from __future__ import annotations

import concurrent.futures
import secrets
import time
from datetime import datetime, timedelta
from datetime import time as clock_time

import httpx
import pytest
import sqlalchemy as sa
from twilio.request_validator import RequestValidator

from leadbot.adapters.calendar.caldav_adapter import CalDavCalendar
from tests.e2e.conftest import BERLIN, Driver, Lead, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

Q1 = "Schaltest du aktuell Ads?"
Q2 = "Wie viele Leads generierst du ca. pro Monat?"
QUALIFIED = "Das klingt so, als könnten wir dir gut helfen"
SLOTS = "Terminvorschläge"
BOOKED = "Perfekt, dein Termin steht"
NO_ADS = "aktuell passt es deshalb noch nicht"
LOW_VOLUME = "Meld dich gern später"
HANDOVER = "ich gebe dich an mein Team weiter"
OPT_OUT_CONFIRMATION = "du bekommst von uns keine Nachrichten mehr"
REMINDERS = {
    "reminder_22h": "appointment_reminder_22h_v1",
    "reminder_55m": "appointment_reminder_55m_v1",
    "reminder_5m": "appointment_reminder_5m_v1",
}
# The sandbox's Twilio auth token (TWILIO_SANDBOX_AUTH_TOKEN's default): what the channel checks signatures with.
SANDBOX_AUTH_TOKEN = "leadbot-sandbox"


def agree_to_questions(driver: Driver, lead: Lead) -> dict:
    """"Ja klar" to the welcome; returns Q1 as the lead receives it."""
    after = driver.answer(lead, "Ja klar")
    return driver.wait_for_bot(lead, Q1, after=after)


def lead_at_q1(driver: Driver, first_name: str) -> tuple[Lead, dict]:
    """A lead welcomed on a weekday morning who agreed to the questions; returns the lead and Q1."""
    driver.daytime()
    lead = driver.welcomed_lead(first_name)
    return lead, agree_to_questions(driver, lead)


def qualify(driver: Driver, lead: Lead) -> dict:
    """Welcome consent, Q1 yes, Q2 150/month; returns the slot proposal."""
    agree_to_questions(driver, lead)
    after = driver.answer(lead, "Ja, Meta und Google")
    driver.wait_for_bot(lead, Q2, after=after)
    after = driver.answer(lead, "so ca. 150 im Monat")
    driver.wait_for_bot(lead, QUALIFIED, after=after)
    return driver.wait_for_bot(lead, SLOTS, after=after)


def bot_texts(driver: Driver, lead: Lead, after: int = 0) -> list[str]:
    return [m["content"] or "" for m in driver.outbound(lead, after=after)]


# --- 1. Happy path ----------------------------------------------------------------------------------------------------


def test_happy_path_qualifies_books_and_reminds(driver: Driver) -> None:
    driver.daytime()
    lead = driver.new_lead("Lena")
    assert [t["task_type"] for t in driver.tasks(lead)] == ["welcome"]
    assert not driver.outbound(lead), "nothing is sent before the welcome delay"

    driver.advance(300)
    welcome = driver.wait_for_bot(lead, template="lead_welcome_v1")
    assert welcome["content"].startswith("Hey Lena, danke für deine Anfrage")
    assert welcome["payload_json"]["variables"] == {"1": "Lena"}
    assert driver.wait_for_status(welcome["id"], "delivered")["provider_message_id"]

    proposal = qualify(driver, lead)
    answers = driver.one("SELECT * FROM qualification_answers WHERE conversation_id = :id", id=lead.conversation_id)
    assert (answers["ads_running"], answers["monthly_leads_bucket"], answers["qualified"]) == ("yes", "100-300", "true")
    assert driver.conversation(lead)["status"] == "qualified"

    slot_buttons = [b for b in proposal["payload_json"]["buttons"] if b["payload"].startswith("/book_slot")]
    assert len(slot_buttons) == 2, proposal["payload_json"]["buttons"]

    # The lead taps the first proposal: WhatsApp posts the button's payload and title.
    tap = driver.answer(lead, slot_buttons[0]["title"], button_payload=slot_buttons[0]["payload"],
                        button_text=slot_buttons[0]["title"])
    confirmation = driver.wait_for_bot(lead, BOOKED, after=tap)
    appointment = driver.one("SELECT * FROM appointments WHERE conversation_id = :id", id=lead.conversation_id)
    assert appointment["status"] == "booked"
    assert appointment["meeting_link"] in confirmation["content"]
    assert slot_buttons[0]["title"] in confirmation["content"]
    port = driver.system.ports["calendar"]
    event = CalDavCalendar(f"http://127.0.0.1:{port}/", "leadbot", "", "leadbot").get_event(appointment["calendar_uid"])
    assert event is not None and event.start == appointment["starts_at"]
    driver.wait_for_status(confirmation["id"], "delivered")

    reminders = {t["task_type"]: t for t in driver.tasks(lead) if t["task_type"] in REMINDERS}
    assert set(reminders) == set(REMINDERS) and all(t["status"] == "pending" for t in reminders.values())
    starts_at = appointment["starts_at"]
    for task_type, before in (("reminder_22h", timedelta(hours=22)), ("reminder_55m", timedelta(minutes=55)),
                              ("reminder_5m", timedelta(minutes=5))):
        assert reminders[task_type]["run_at"] == starts_at - before
        driver.advance_to(starts_at - before + timedelta(seconds=5))
        reminder = driver.wait_for_bot(lead, template=REMINDERS[task_type], after=confirmation["id"])
        # Outside the 24 h service window only an approved template may go out: the gate let these through.
        assert reminder["message_type"] == "template"
        driver.wait_for_status(reminder["id"], "delivered")
    local_start = starts_at.astimezone(BERLIN)
    reminder_22h = driver.wait_for_bot(lead, template=REMINDERS["reminder_22h"], after=confirmation["id"])
    assert f"{local_start:%H:%M}" in reminder_22h["content"]
    link = driver.wait_for_bot(lead, template=REMINDERS["reminder_55m"], after=confirmation["id"])
    assert appointment["meeting_link"] in link["content"]
    assert not driver.rows("SELECT id FROM audit_events WHERE contact_id = :id AND event_type = 'policy_blocked_send'",
                           id=lead.contact_id)

    # A day after the lead's last message the service window is closed: free text is blocked, and says why.
    blocked = driver.api("POST", "/messages/send", json={
        "contact_id": lead.contact_id, "type": "session_text", "text": "Bis gleich!",
    })
    assert blocked.status_code == 409 and blocked.json()["reason"] == "outside_service_window", blocked.text


# --- 2. Disqualification --------------------------------------------------------------------------------------------


def test_no_ads_disqualifies_politely_without_another_question(driver: Driver) -> None:
    lead, _ = lead_at_q1(driver, "Jonas")
    after = driver.answer(lead, "nein, aktuell nicht")
    driver.wait_for_bot(lead, NO_ADS, after=after)
    texts = bot_texts(driver, lead, after=after)
    assert not any(Q2 in text or "?" in text for text in texts), texts
    answers = driver.one("SELECT * FROM qualification_answers WHERE conversation_id = :id", id=lead.conversation_id)
    assert (answers["ads_running"], answers["qualified"]) == ("no", "false")
    assert driver.conversation(lead)["status"] == "disqualified"


def test_under_100_leads_disqualifies_with_an_invitation_to_come_back(driver: Driver) -> None:
    lead, _ = lead_at_q1(driver, "Mia")
    after = driver.answer(lead, "Ja, Meta")
    driver.wait_for_bot(lead, Q2, after=after)
    after = driver.answer(lead, "so 40 im Monat")
    driver.wait_for_bot(lead, LOW_VOLUME, after=after)
    assert not any(SLOTS in text for text in bot_texts(driver, lead, after=after))
    answers = driver.one("SELECT * FROM qualification_answers WHERE conversation_id = :id", id=lead.conversation_id)
    assert (answers["ads_running"], answers["monthly_leads_bucket"], answers["qualified"]) == ("yes", "<100", "false")
    assert driver.conversation(lead)["status"] == "disqualified"


def test_a_free_question_is_answered_from_the_sources_and_the_question_asked_again(driver: Driver) -> None:
    lead, _ = lead_at_q1(driver, "Lukas")
    after = driver.answer(lead, "Ist das DSGVO konform?")
    answer = driver.wait_for_bot(lead, "(Quelle:", after=after)
    again = driver.wait_for_bot(lead, Q1, after=after)
    assert answer["id"] < again["id"]
    assert driver.conversation(lead)["owner"] == "bot"
    after = driver.answer(lead, "Ja, Meta")
    driver.wait_for_bot(lead, Q2, after=after)


# --- 3. Handover ------------------------------------------------------------------------------------------------------


def test_handover_silences_the_bot_and_hand_back_resumes_the_open_question(driver: Driver) -> None:
    lead, _ = lead_at_q1(driver, "Tom")

    after = driver.answer(lead, "Kann mich ein Berater anrufen?")
    driver.wait_for_bot(lead, HANDOVER, after=after)
    conversation = driver.conversation(lead)
    assert (conversation["owner"], conversation["status"]) == ("human", "handover")
    assert driver.rows("SELECT id FROM audit_events WHERE contact_id = :id AND event_type = 'handover'",
                       id=lead.contact_id)

    # The lead writes again: stored and processed (forwarded to the team), and the bot says nothing.
    silent = driver.answer(lead, "Hallo? Ist da jemand?")
    assert driver.outbound(lead, after=silent) == []

    human = driver.api_ok("POST", "/messages/send", json={
        "contact_id": lead.contact_id, "type": "session_text", "sent_by": "human",
        "text": "Hi Tom, hier ist Sarah aus dem Team. Ich ruf dich gleich an!",
    })
    row = driver.one("SELECT * FROM messages WHERE id = :id", id=human["message_id"])
    assert (row["sender_role"], row["direction"]) == ("human", "outbound")
    driver.wait_for_status(human["message_id"], "delivered")

    back = driver.api_ok("POST", f"/conversations/{lead.conversation_id}/hand-back")
    assert back["owner"] == "bot" and back["resume_triggered"] is True
    driver.wait_for_bot(lead, Q1, after=human["message_id"])

    # The lead answers the resumed question: the flow continues, and Q1 was asked again exactly once.
    after = driver.answer(lead, "Ja, Google Ads")
    driver.wait_for_bot(lead, Q2, after=after)
    assert sum(Q1 in text for text in bot_texts(driver, lead, after=human["message_id"])) == 1
    assert driver.conversation(lead)["owner"] == "bot"


def test_an_unanswered_handover_escalates_and_tells_the_lead_once(driver: Driver) -> None:
    lead, _ = lead_at_q1(driver, "Sara")
    after = driver.answer(lead, "Ich will mit einem Mitarbeiter sprechen")
    announcement = driver.wait_for_bot(lead, HANDOVER, after=after)

    def handover() -> dict:
        return driver.one("SELECT * FROM handovers WHERE conversation_id = :id", id=lead.conversation_id)

    # Nobody from the team answers within the SLA (15 minutes of team hours): escalated, the lead hears once.
    driver.advance(16 * 60)
    wait_until(lambda: handover()["escalated_at"] is not None, "the handover escalated")
    notice = wait_until(lambda: driver.outbound(lead, after=announcement["id"]), "the lead told to wait")
    assert len(notice) == 1 and handover()["lead_notified_at"] is not None
    driver.wait_for_status(notice[0]["id"], "delivered")
    driver.advance(60 * 60)
    wait_until(lambda: not [t for t in driver.tasks(lead) if t["task_type"] == "handover_sla"
                            and t["status"] in ("pending", "running") and t["run_at"] <= driver.now()],
               "every due SLA check ran")
    assert [m["id"] for m in driver.outbound(lead, after=announcement["id"])] == [notice[0]["id"]]
    assert driver.conversation(lead)["owner"] == "human"


# --- 4. Opt-out -------------------------------------------------------------------------------------------------------


def test_stop_revokes_consent_confirms_once_and_cancels_marketing(driver: Driver) -> None:
    driver.daytime()
    lead = driver.welcomed_lead("Paul")
    proposal = qualify(driver, lead)
    pending = [t for t in driver.tasks(lead) if t["status"] == "pending"]
    assert pending, "a qualified lead without a booking has follow-ups (and a nudge) pending"

    stop = driver.answer(lead, "STOP")
    confirmation = driver.wait_for_bot(lead, OPT_OUT_CONFIRMATION, after=stop)
    assert driver.one("SELECT consent_status FROM contacts WHERE id = :id", id=lead.contact_id) == {
        "consent_status": "revoked"
    }
    assert driver.rows("SELECT id FROM audit_events WHERE contact_id = :id AND event_type = 'consent_revoked'",
                       id=lead.contact_id)
    assert [m["id"] for m in driver.outbound(lead, after=proposal["id"])] == [confirmation["id"]]
    tasks = {t["id"]: t for t in driver.tasks(lead)}
    assert all(tasks[t["id"]]["status"] == "cancelled" for t in pending), list(tasks.values())
    driver.wait_for_status(confirmation["id"], "delivered")

    # Past every nudge and follow-up moment (48 h and more): nothing else reaches the lead.
    driver.advance(50 * 3600)
    wait_until(lambda: not [t for t in driver.tasks(lead) if t["status"] in ("pending", "running")],
               "no task of the opted-out lead left to run")
    assert [m["id"] for m in driver.outbound(lead, after=proposal["id"])] == [confirmation["id"]]
    assert not [m for m in driver.outbound(lead) if m["is_marketing"] and m["id"] > stop]


# --- 5. Quiet hours ---------------------------------------------------------------------------------------------------


def test_a_reply_at_23_30_waits_until_07_00(driver: Driver) -> None:
    lead, q1 = lead_at_q1(driver, "Nina")
    # No answer for 30 minutes: the nudge goes out in the afternoon, as it would have in real time.
    driver.advance(31 * 60)
    nudge = driver.wait_for_bot(lead, template="lead_nudge_v1", after=q1["id"])
    driver.wait_for_status(nudge["id"], "delivered")

    local = driver.now().astimezone(BERLIN)
    driver.advance_to(datetime.combine(local.date(), clock_time(23, 30), tzinfo=BERLIN))
    after = driver.answer(lead, "Ja, Meta und Google")
    reply = driver.wait_for_bot(lead, Q2, after=after)
    morning = datetime.combine(local.date() + timedelta(days=1), clock_time(7, 0), tzinfo=BERLIN)
    assert reply["send_at"] == morning
    assert reply["delivery_status"] == "queued"
    # The nudge for Q2 counts from when Q2 reaches the lead, not from the night-time turn.
    pending_nudges = [t for t in driver.tasks(lead) if t["task_type"] == "nudge_30m" and t["status"] == "pending"]
    assert [t["run_at"] for t in pending_nudges] == [morning + timedelta(minutes=30)], pending_nudges

    # The sender polls several times a second: during the night the reply stays queued ...
    observed_until = time.monotonic() + 3
    while time.monotonic() < observed_until:
        row = driver.one("SELECT delivery_status, sent_at FROM messages WHERE id = :id", id=reply["id"])
        assert (row["delivery_status"], row["sent_at"]) == ("queued", None)
        time.sleep(0.3)
    # ... and at 07:00 it goes out.
    driver.advance_to(morning + timedelta(seconds=5))
    sent = driver.wait_for_status(reply["id"], "delivered")
    assert sent["sent_at"] >= morning


def test_busy_during_the_questions_is_no_answer_and_gets_one_reminder_the_next_day(driver: Driver) -> None:
    lead, _ = lead_at_q1(driver, "Paul")
    after = driver.answer(lead, "passt gerade nicht")
    busy = driver.wait_for_bot(lead, "Kein Stress", after=after)
    assert driver.conversation(lead)["status"] != "disqualified"
    # No 30-minute nudge for a lead who said "not now": one reminder after the follow-up delay instead.
    [reminder] = [t for t in driver.tasks(lead) if t["task_type"] == "nudge_30m" and t["status"] == "pending"]
    assert reminder["run_at"] >= driver.now() + timedelta(hours=23)
    driver.advance(31 * 60)
    assert not any(m["template_name"] for m in driver.outbound(lead, after=busy["id"]))
    driver.advance_to(reminder["run_at"] + timedelta(seconds=5))
    nudge = driver.wait_for_bot(lead, template="lead_nudge_v1", after=busy["id"])
    after = driver.answer(lead, "Ja, Meta")
    reply = driver.wait_for_bot(lead, Q2, after=after)
    assert nudge["id"] < reply["id"]


# --- 6. Duplicates and order ------------------------------------------------------------------------------------------


def signed_inbound(driver: Driver, lead: Lead, sid: str, body: str) -> tuple[str, dict[str, str], dict[str, str]]:
    """Twilio's incoming-message webhook, signed over PUBLIC_BASE_URL + path like Twilio does."""
    url = driver.system.env["PUBLIC_BASE_URL"] + "/webhooks/whatsapp/inbound"
    params = {
        "MessageSid": sid, "SmsMessageSid": sid, "SmsSid": sid, "AccountSid": "AC" + "0" * 32,
        "From": f"whatsapp:{lead.phone}", "To": "whatsapp:+14155238886", "Body": body, "NumMedia": "0",
        "NumSegments": "1", "SmsStatus": "received", "MessageType": "text", "ProfileName": lead.first_name,
        "WaId": lead.phone.lstrip("+"), "ApiVersion": "2010-04-01",
    }
    signature = RequestValidator(SANDBOX_AUTH_TOKEN).compute_signature(url, params)
    return driver.system.url("rasa", "/webhooks/whatsapp/inbound"), params, {"X-Twilio-Signature": signature}


def test_a_redelivered_message_sid_is_answered_once(driver: Driver) -> None:
    driver.daytime()
    lead = driver.welcomed_lead("Ben")
    before = driver.messages(lead)[-1]["id"]
    sid = "SM" + secrets.token_hex(16)
    url, params, headers = signed_inbound(driver, lead, sid, "Ja klar")

    def post(_: int) -> int:
        return httpx.post(url, data=params, headers=headers, timeout=30).status_code

    with concurrent.futures.ThreadPoolExecutor(max_workers=10) as pool:
        statuses = list(pool.map(post, range(10)))
    assert statuses == [200] * 10
    inbound_id = driver.wait_processed(sid)
    assert len(driver.messages(lead, after=before, direction="inbound")) == 1
    driver.wait_for_bot(lead, Q1, after=inbound_id)
    # The turn's replies are queued with the inbound's processed mark: what is there now is all there is.
    assert sum(Q1 in text for text in bot_texts(driver, lead, after=before)) == 1


def test_a_burst_is_answered_once_each_in_order(driver: Driver) -> None:
    lead, q1 = lead_at_q1(driver, "Lea")

    first = driver.say(lead, "Ja")
    time.sleep(0.1)  # the burst's spacing, not an assertion
    second = driver.say(lead, "150")
    first_id, second_id = driver.wait_processed(first), driver.wait_processed(second)
    assert first_id < second_id
    driver.wait_for_bot(lead, QUALIFIED, after=second_id)
    texts = bot_texts(driver, lead, after=q1["id"])
    assert sum(Q2 in text for text in texts) == 1, texts
    assert sum(QUALIFIED in text for text in texts) == 1, texts
    assert next(i for i, t in enumerate(texts) if Q2 in t) < next(i for i, t in enumerate(texts) if QUALIFIED in t)
    answers = driver.one("SELECT * FROM qualification_answers WHERE conversation_id = :id", id=lead.conversation_id)
    assert (answers["ads_running"], answers["monthly_leads_bucket"]) == ("yes", "100-300")


# --- 7. Privacy -------------------------------------------------------------------------------------------------------


SEED_TABLES = {"contacts", "conversations", "messages", "qualification_answers", "tasks_scheduled", "audit_events"}


def rows_mentioning(engine: sa.engine.Engine, needle: str) -> dict[str, int]:
    """Every text-like column of every table in the database that contains `needle`, with its count."""
    found: dict[str, int] = {}
    with engine.connect() as connection:
        columns = connection.execute(sa.text(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'public' "
            "AND data_type IN ('text', 'character varying', 'json', 'jsonb', 'bytea')"
        )).all()
        for table, column in columns:
            count = connection.execute(
                sa.text(f'SELECT count(*) FROM "{table}" WHERE "{column}"::text LIKE :needle'),
                {"needle": f"%{needle}%"},
            ).scalar()
            if count:
                found[f"{table}.{column}"] = count
    return found


def test_export_then_delete_leaves_nothing_with_the_number(driver: Driver) -> None:
    lead, _ = lead_at_q1(driver, "Eva")
    after = driver.answer(lead, "nein, aktuell nicht")
    done = driver.wait_for_bot(lead, NO_ADS, after=after)
    wait_until(lambda: all(m["delivery_status"] in ("delivered", "read") for m in driver.outbound(lead, after=after)),
               "the disqualification delivered")
    assert done

    exported = driver.api_ok("POST", "/privacy/export", json={"whatsapp_e164": lead.phone})
    assert set(exported) >= SEED_TABLES, sorted(exported)
    assert exported["contacts"][0]["whatsapp_e164"] == lead.phone
    assert {m["content"] for m in exported["messages"]} >= {"Ja klar", "nein, aktuell nicht"}
    assert exported["qualification_answers"][0]["ads_running"] == "no"
    tracker = exported["rasa_tracker_events"]
    assert tracker["sender_id"] == lead.sender_id
    user_texts = [e["data"]["text"] for e in tracker["events"] if e["type_name"] == "user"]
    assert "nein, aktuell nicht" in user_texts, user_texts

    deleted = driver.api_ok("POST", "/privacy/delete", json={"whatsapp_e164": lead.phone})
    assert deleted["rasa_tracker_events_deleted"] > 0
    digits = lead.phone.lstrip("+")
    tracker_engine = sa.create_engine(driver.system.env["RASA_TRACKER_URL"], future=True)
    try:
        # The number appears with and without "+" (E.164, Rasa's sender id wa49...): its digits catch both.
        assert rows_mentioning(driver.engine, digits) == {}
        assert rows_mentioning(tracker_engine, digits) == {}
    finally:
        tracker_engine.dispose()
    assert driver.api("POST", "/privacy/export", json={"whatsapp_e164": lead.phone}).status_code == 404
