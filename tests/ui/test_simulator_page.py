"""The simulator page against the ops API alone, in headless Chromium.

The channel is replaced by a tiny server that checks and records Twilio-signed requests (what the simulator posts
is exactly what the real channel would get); bot messages are inserted into the database as the sender leaves
them, and render in the chat. `test_simulator_system.py` runs the same page against the whole running system.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from twilio.request_validator import RequestValidator

from leadbot import clock as clock_module
from leadbot.clock import OffsetFileClock
from leadbot.config import settings
from leadbot.db.models import AuditEvent, Contact, Conversation, Message, TaskScheduled
from leadbot.domain.templates import get_template
from tests.ui.conftest import API_KEY, enter_api_key, free_port, screenshot

WEBHOOK_TOKEN = "simulator-test-token"


class SignedRecorder:
    """Stands in for the channel: accepts only requests signed like Twilio's, records their form fields."""

    def __init__(self) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.rejected = 0
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
                form = dict(parse_qsl(body, keep_blank_values=True))
                url = recorder.base_url + self.path
                valid = RequestValidator(WEBHOOK_TOKEN).validate(url, form, self.headers.get("X-Twilio-Signature", ""))
                if valid:
                    recorder.requests.append((self.path, form))
                else:
                    recorder.rejected += 1
                self.send_response(200 if valid else 403)
                self.send_header("Content-Type", "text/xml")
                self.end_headers()
                self.wfile.write(b'<?xml version="1.0" encoding="UTF-8"?><Response/>')

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def posted(self, path: str) -> list[dict[str, str]]:
        return [form for posted_path, form in self.requests if posted_path == path]


@pytest.fixture
def recorder() -> Iterator[SignedRecorder]:
    recorder = SignedRecorder()
    yield recorder
    recorder.server.shutdown()


@pytest.fixture
def simulator_env(recorder: SignedRecorder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Sandbox settings: no Twilio, the recorder as PUBLIC_BASE_URL, a shared clock offset file."""
    offset_file = tmp_path / "clock_offset"
    for name, value in {
        "PUBLIC_BASE_URL": recorder.base_url, "TWILIO_SANDBOX_AUTH_TOKEN": WEBHOOK_TOKEN,
        "LEADBOT_CLOCK_OFFSET_FILE": str(offset_file), "TWILIO_ACCOUNT_SID": "", "TWILIO_AUTH_TOKEN": "",
        "WELCOME_DELAY_SECONDS": "300",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("SIMULATOR_ENABLED", raising=False)
    settings.cache_clear()
    clock_module.set_clock(OffsetFileClock(str(offset_file)))
    yield offset_file
    clock_module.set_clock(None)


def bot_message(session, conversation_id: int, **fields) -> Message:
    current = clock_module.now()
    fields = {"created_at": current, "sent_at": current, "send_at": current, **fields}
    message = Message(conversation_id=conversation_id, direction="outbound", **fields)
    session.add(message)
    session.commit()
    return message


def test_opt_in_skip_ahead_chat_and_ticks(page, simulator_env, ops_api, recorder, session):
    page.goto(f"{ops_api}/simulator")
    enter_api_key(page)
    page.wait_for_selector("body[data-ready=true]")

    page.fill("#optin-first-name", "Lena")
    page.fill("#optin-number", "0151 12345678")
    page.fill("#optin-timezone", "Europe/Vienna")
    page.click("#optin-submit")
    chat = page.locator(".chat").first
    chat.locator(".pending-tasks:has-text('Willkommensnachricht')").wait_for()
    contact = session.execute(select(Contact)).scalar_one()
    assert (contact.whatsapp_e164, contact.first_name, contact.timezone) == ("+4915112345678", "Lena", "Europe/Vienna")
    assert contact.consent_status == "granted" and contact.consent_source == "simulator"
    assert session.execute(select(AuditEvent.event_type)).scalars().all() == ["consent_granted"]
    welcome_task = session.execute(select(TaskScheduled)).scalar_one()
    assert welcome_task.task_type == "welcome"
    assert chat.get_attribute("data-contact") == str(contact.id)
    assert "+4915112345678" in page.locator("#lead-list").inner_text()

    # "+5 min" moves every process's clock: the welcome task is due now.
    page.click("#skip button[data-seconds='300']")
    page.wait_for_selector("#sim-offset:has-text('+5 min')")
    assert float(simulator_env.read_text()) == 300
    assert clock_module.now() >= welcome_task.run_at

    # The sender delivered the welcome (template with variables and quick replies): the lead sees it rendered.
    conversation = session.execute(select(Conversation)).scalar_one()
    template = get_template("lead_welcome_v1")
    welcome = bot_message(
        session, conversation.id, message_type="template", template_name=template.name,
        content=template.render({"first_name": "Lena"}), delivery_status="delivered",
        provider_message_id="SM" + "a" * 32,
        payload_json={"variables": {"1": "Lena"}, "buttons": [{"title": b, "payload": b} for b in template.buttons]},
    )
    row = chat.locator(f".row.bot[data-message-id='{welcome.id}']")
    row.wait_for()
    assert "Hey Lena, danke für deine Anfrage 🙌" in row.locator(".text").inner_text()
    assert row.locator(".quick-reply").all_inner_texts() == ["Ja, passt", "Später"]
    # Seen by the lead: a signed `read` status callback for exactly that message, and the ticks turn blue.
    _wait_for(lambda: recorder.posted("/webhooks/whatsapp/status"))
    welcome.delivery_status = "read"  # the channel's part: it applies the callback
    session.commit()
    chat.locator(f".row.bot[data-message-id='{welcome.id}'] .ticks[data-status=read]").wait_for()
    read = recorder.posted("/webhooks/whatsapp/status")
    assert [(form["MessageSid"], form["MessageStatus"]) for form in read] == [(welcome.provider_message_id, "read")]
    assert read[0]["To"] == "whatsapp:+4915112345678"

    # Tapping a quick reply sends what Twilio sends for a button: signed, fresh SM sid, payload and text.
    row.locator(".quick-reply", has_text="Ja, passt").click()
    page.wait_for_function("document.querySelectorAll('.row.lead[data-status=pending]').length === 1")
    _wait_for(lambda: recorder.posted("/webhooks/whatsapp/inbound"))
    tap = recorder.posted("/webhooks/whatsapp/inbound")[0]
    assert tap["MessageSid"].startswith("SM") and len(tap["MessageSid"]) == 34
    assert (tap["ButtonPayload"], tap["ButtonText"], tap["Body"]) == ("Ja, passt", "Ja, passt", "Ja, passt")
    assert (tap["From"], tap["WaId"], tap["ProfileName"]) == ("whatsapp:+4915112345678", "4915112345678", "Lena")
    assert tap["To"] == "whatsapp:+14155238886" and tap["NumMedia"] == "0"

    # Once the channel stored it, the pending bubble becomes the stored message (✓✓), blue once processed.
    inbound = Message(conversation_id=conversation.id, direction="inbound", content="Ja, passt",
                      provider_message_id=tap["MessageSid"], message_type="interactive", delivery_status="delivered",
                      sender_role="human", created_at=clock_module.now())
    session.add(inbound)
    session.commit()
    chat.locator(f".row.lead[data-message-id='{inbound.id}'][data-status=delivered]").wait_for()
    assert page.locator(".row.lead[data-status=pending]").count() == 0
    assert chat.locator(".row.lead .label").count() == 0  # the lead is a human too, but not "Team"
    inbound.processed_at = clock_module.now()
    session.commit()
    chat.locator(f".row.lead[data-message-id='{inbound.id}'][data-status=read]").wait_for()

    # Free text from the composer; a queued reply shows with a clock, then ticks as the status moves.
    chat.locator(".composer input").fill("Ja, wir schalten Meta Ads")
    chat.locator(".composer button").click()
    _wait_for(lambda: len(recorder.posted("/webhooks/whatsapp/inbound")) == 2)
    typed = recorder.posted("/webhooks/whatsapp/inbound")[1]
    assert typed["Body"] == "Ja, wir schalten Meta Ads" and "ButtonPayload" not in typed
    question = bot_message(session, conversation.id, content="Super! Wie viele Leads generierst du ca. pro Monat?",
                           delivery_status="queued", sent_at=None)
    chat.locator(f".row.bot[data-message-id='{question.id}'] .ticks[data-status=queued]").wait_for()
    question.delivery_status, question.sent_at = "sent", clock_module.now()
    session.commit()
    chat.locator(f".row.bot[data-message-id='{question.id}'] .ticks[data-status=sent]").wait_for()
    blocked = bot_message(session, conversation.id, content="Kurzer Reminder", delivery_status="failed",
                          error_code="policy:quiet_hours", sent_at=None)
    chat.locator(f".system-note.failed[data-message-id='{blocked.id}']").wait_for()

    # Times are the lead's local time (Vienna), the day separator is there.
    assert chat.locator(".day").count() >= 1
    assert recorder.rejected == 0
    screenshot(page, "simulator-page.png")


def _wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def test_simulator_is_404_with_twilio_credentials(database_url, monkeypatch):
    monkeypatch.setenv("OPS_API_KEY", API_KEY)
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", "AC" + "1" * 32)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "real-token")
    monkeypatch.delenv("SIMULATOR_ENABLED", raising=False)
    settings.cache_clear()
    from leadbot.api.app import create_app

    client = TestClient(create_app())
    auth = {"Authorization": f"Bearer {API_KEY}"}
    assert client.get("/simulator").status_code == 404
    assert client.get("/simulator/api/state", headers=auth).status_code == 404
    assert client.post("/simulator/api/clock/advance", json={"seconds": 60}, headers=auth).status_code == 404
    monkeypatch.setenv("SIMULATOR_ENABLED", "1")  # a staging system may switch it on explicitly
    settings.cache_clear()
    assert client.get("/simulator/api/state", headers=auth).json()["sandbox"] is False
    settings.cache_clear()


def test_time_travel_only_forwards_and_needs_the_key(simulator_env, ops_api):
    auth = {"Authorization": f"Bearer {API_KEY}"}
    assert httpx.post(f"{ops_api}/simulator/api/clock/advance", json={"seconds": 60}).status_code == 401
    assert httpx.post(f"{ops_api}/simulator/api/clock/advance", json={"seconds": -60}, headers=auth).status_code == 422
    before = clock_module.now()
    state = httpx.post(f"{ops_api}/simulator/api/clock/advance", json={"seconds": 86400}, headers=auth).json()
    assert state["offset_seconds"] == 86400 and state["time_travel"] is True
    assert clock_module.now() - before >= timedelta(days=1)
