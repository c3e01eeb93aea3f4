"""The simulator in headless Chromium against the whole running system (the README's run command).

Rasa with the trained model, the action server, the scheduler, the sender (sandbox outbox) and the ops API run on
free ports; the page opts a lead in, skips ahead 5 minutes so the scheduler sends the welcome, and goes through a
qualified conversation by tapping and typing like a lead.
"""

from __future__ import annotations

import random
from datetime import datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from tests.e2e.harness import LeadbotSystem
from tests.ui.conftest import enter_api_key, screenshot

pytestmark = pytest.mark.slow

BERLIN = ZoneInfo("Europe/Berlin")
TURN_TIMEOUT_MS = 90_000


def next_weekday_morning() -> datetime:
    """10:00 Berlin on the next weekday: outside quiet hours and inside team hours, whenever the test runs."""
    day = datetime.now(BERLIN).date() + timedelta(days=1)
    while day.weekday() >= 5:
        day += timedelta(days=1)
    return datetime.combine(day, time(10, 0), tzinfo=BERLIN)


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("simulator-system")
    # The simulated clock starts on a weekday morning, so no message waits for the end of quiet hours.
    offset = next_weekday_morning() - datetime.now(timezone.utc)
    (workdir / "clock_offset").write_text(str(offset.total_seconds()))
    running = LeadbotSystem(workdir, env={"REPLY_DELAY_MIN_SECONDS": "0", "REPLY_DELAY_MAX_SECONDS": "0"}).start()
    yield running
    running.stop()


def bot_text(chat, text: str):
    row = chat.locator(".row.bot").filter(has_text=text).last
    row.wait_for(timeout=TURN_TIMEOUT_MS)
    return row


def say(chat, text: str) -> None:
    chat.locator(".composer input").fill(text)
    chat.locator(".composer button").click()


def test_a_lead_qualifies_in_the_simulator(page, system):
    page.goto(system.url("api", "/simulator"))
    enter_api_key(page, system.api_key)
    page.wait_for_selector("body[data-ready=true]")
    assert "Sandbox" in page.locator("#mode").inner_text()

    number = f"+49151{random.randrange(10**8):08d}"
    page.fill("#optin-first-name", "Lena")
    page.fill("#optin-number", number)
    page.fill("#optin-timezone", "Europe/Berlin")
    page.click("#optin-submit")
    chat = page.locator(".chat").first
    chat.locator(".pending-tasks:has-text('Willkommensnachricht')").wait_for(timeout=10_000)

    # Skip ahead 5 minutes: the scheduler fires the welcome, the sender delivers it, the lead sees it (read).
    page.click("#skip button[data-seconds='300']")
    welcome = bot_text(chat, "Hey Lena, danke für deine Anfrage")
    assert welcome.locator(".template").inner_text() == "Vorlage lead_welcome_v1"
    welcome.locator(".ticks[data-status=read]").wait_for(timeout=30_000)

    welcome.locator(".quick-reply", has_text="Ja, passt").click()
    bot_text(chat, "Schaltest du aktuell Ads?")
    say(chat, "Ja, wir schalten Meta Ads")
    bot_text(chat, "Wie viele Leads generierst du ca. pro Monat?")
    say(chat, "ca. 150 pro Monat")
    bot_text(chat, "Das klingt so, als könnten wir dir gut helfen")

    # Every message of the lead was stored and processed by the bot (blue ticks); nothing is left pending.
    page.wait_for_function(
        "[...document.querySelectorAll('.chat .row.lead')].every((row) => row.dataset.status === 'read')",
        timeout=30_000,
    )
    page.wait_for_timeout(3000)  # what follows the confirmation (slot proposals or the team) arrives too
    screenshot(page, "simulator.png")

    engine = sa.create_engine(system.env["DATABASE_URL"])
    with engine.connect() as connection:
        qualified, bucket, status = connection.execute(sa.text(
            "SELECT q.qualified, q.monthly_leads_bucket, v.status FROM qualification_answers q "
            "JOIN conversations v ON v.id = q.conversation_id JOIN contacts c ON c.id = v.contact_id "
            "WHERE c.whatsapp_e164 = :number"), {"number": number}).one()
        inbound = connection.execute(sa.text(
            "SELECT m.provider_message_id FROM messages m JOIN conversations v ON v.id = m.conversation_id "
            "JOIN contacts c ON c.id = v.contact_id WHERE c.whatsapp_e164 = :number AND m.direction = 'inbound'"),
            {"number": number}).scalars().all()
    engine.dispose()
    assert qualified == "true" and bucket == "100-300"
    assert status in ("qualified", "handover")  # handover: no calendar configured, the team offers the slots
    assert len(inbound) == 3 and all(sid.startswith("SM") for sid in inbound)
