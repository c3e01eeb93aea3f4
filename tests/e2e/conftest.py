"""The whole running system on PostgreSQL for the end-to-end conversation flows, and a driver that plays the lead.

One system per module (`scripts/run` through `LeadbotSystem`): Rasa with our WhatsApp channel, the action server,
the scheduler, the sender (sandbox outbox: no Twilio account, signed status callbacks), the ops API and the local
CalDAV server (Radicale), on the session's migrated test database, a tracker database of its own and a Redis lock
store. Nothing is mocked: the lead's messages are Twilio-signed webhooks posted through the simulator's API, the
clock of every process moves through the shared offset file, and every check reads the databases or the APIs.

Tests share the clock (it only moves forward), so each one brings its own lead and first moves the clock to a time
its flow needs (`daytime()`, `advance_to()`).
"""

from __future__ import annotations

import os
import secrets
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from datetime import time as clock_time
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from leadbot.db.session import engine_for
from tests.conftest import create_database, drop_database, truncate_all
from tests.e2e.harness import ROOT, LeadbotSystem

T = TypeVar("T")

BERLIN = ZoneInfo("Europe/Berlin")
# Generous: two shared cores run other engineers' tests too, and a Rasa turn with actions can take seconds there.
DEADLINE_SECONDS = 90.0
# A Redis database of its own for the Rasa lock store (channel tests use 11, the fault chain 13, the API tests 15).
REDIS_DB = int(os.environ.get("LEADBOT_E2E_REDIS_DB", "9"))
WELCOME_DELAY_SECONDS = 300
# Slots start at least 25 h ahead, so a booking made in the morning still gets its 22 h reminder.
BOOKING_LEAD_TIME_MINUTES = 25 * 60


def wait_until(condition: Callable[[], T | None], what: str, timeout: float = DEADLINE_SECONDS,
               interval: float = 0.25) -> T:
    """Poll until `condition()` returns something truthy and return it; fail with `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for: {what}")
        time.sleep(interval)


def next_weekday_morning(after: datetime) -> datetime:
    day = after.astimezone(BERLIN).date() + timedelta(days=1)
    while day.weekday() >= 5:
        day += timedelta(days=1)
    return datetime.combine(day, clock_time(10, 0), tzinfo=BERLIN)


@pytest.fixture(scope="module")
def system(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LeadbotSystem]:
    workdir = tmp_path_factory.mktemp("e2e-flows")
    # Start on a weekday morning: outside quiet hours and inside team hours, whenever the suite runs.
    offset = next_weekday_morning(datetime.now(timezone.utc)) - datetime.now(timezone.utc)
    (workdir / "clock_offset").write_text(str(offset.total_seconds()))
    # Train first when config, domain or data changed (what `scripts/test` does before pytest), so a retraining on
    # busy cores does not eat the harness's start deadline.
    subprocess.run(["bash", "-c", "source scripts/lib.sh && ensure_model"], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL)
    tracker_name = f"leadbot_e2e_tracker_{uuid.uuid4().hex[:10]}"
    tracker_url = create_database(tracker_name)
    redis_url = f"redis://127.0.0.1:6379/{REDIS_DB}"
    running = LeadbotSystem(
        workdir,
        database_url=database_url,
        tracker_url=tracker_url,
        env={
            "RASA_LOCK_URL": redis_url,
            "REDIS_URL": redis_url,
            "WELCOME_DELAY_SECONDS": str(WELCOME_DELAY_SECONDS),
            "INBOUND_REORDER_WINDOW_MS": "300",
            "REPLY_DELAY_MIN_SECONDS": "0",
            "REPLY_DELAY_MAX_SECONDS": "0",
            "BOOKING_LEAD_TIME_MINUTES": str(BOOKING_LEAD_TIME_MINUTES),
            "SENDER_POLL_SECONDS": "0.2",
            "SCHEDULER_POLL_SECONDS": "0.5",
            "CRM_ADAPTER": "none",
            "KNOWLEDGE_WARMUP": "0",
        },
    )
    try:
        running.start()
        yield running
    finally:
        running.stop()
        drop_database(tracker_name)
        # The shared test database is empty again for the modules after this one (other fixtures truncate per test).
        truncate_all(engine_for(database_url))


def _aware(value: Any) -> Any:
    """Raw SQL returns our `UTCDateTime` columns naive (the ORM type adds the zone): they are UTC."""
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value


@dataclass
class Lead:
    phone: str
    first_name: str
    contact_id: int
    conversation_id: int

    @property
    def sender_id(self) -> str:
        return "wa" + self.phone.lstrip("+")


class Driver:
    """Plays the lead (signed webhooks through the simulator's API) and the team (ops API), and reads the state."""

    def __init__(self, system: LeadbotSystem, engine: Engine) -> None:
        self.system = system
        self.engine = engine
        self.http = httpx.Client(headers={"Authorization": f"Bearer {system.api_key}"}, timeout=60)

    # -- HTTP --

    def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.request(method, self.system.url("api", path), **kwargs)

    def api_ok(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.api(method, path, **kwargs)
        assert response.status_code < 300, f"{method} {path}: {response.status_code} {response.text}"
        return response.json()

    # -- Clock --

    def now(self) -> datetime:
        return datetime.fromisoformat(self.api_ok("GET", "/simulator/api/state")["now"])

    def advance(self, seconds: float) -> datetime:
        state = self.api_ok("POST", "/simulator/api/clock/advance", json={"seconds": max(1, int(seconds) + 1)})
        return datetime.fromisoformat(state["now"])

    def advance_to(self, moment: datetime) -> datetime:
        current = self.now()
        assert moment > current, f"the clock only moves forward: {moment} <= {current}"
        return self.advance((moment - current).total_seconds())

    def daytime(self) -> datetime:
        """Move to a weekday morning unless it already is one (team hours, far from quiet hours)."""
        local = self.now().astimezone(BERLIN)
        if local.weekday() < 5 and clock_time(9, 0) <= local.time() <= clock_time(15, 0):
            return local
        return self.advance_to(next_weekday_morning(local))

    # -- The lead --

    def new_lead(self, first_name: str = "Lena") -> Lead:
        phone = f"+49151{secrets.randbelow(10**8):08d}"
        body = self.api_ok("POST", "/leads", json={
            "whatsapp_e164": phone,
            "first_name": first_name,
            "timezone": "Europe/Berlin",
            "consent_source": "landingpage:e2e",
            "consent_text_version": "v3",
            "consent_timestamp": self.now().isoformat(),
        })
        return Lead(phone, first_name, body["contact_id"], body["conversation_id"])

    def welcomed_lead(self, first_name: str = "Lena") -> Lead:
        """Opt-in, five minutes later the welcome template reaches the phone (sandbox: delivered)."""
        lead = self.new_lead(first_name)
        self.advance(WELCOME_DELAY_SECONDS)
        welcome = self.wait_for_bot(lead, template="lead_welcome_v1")
        self.wait_for_status(welcome["id"], "delivered")
        return lead

    def say(self, lead: Lead, text: str = "", *, button_payload: str = "", button_text: str = "") -> str:
        """What the lead types or taps: a signed Twilio webhook; returns its MessageSid."""
        body = {"contact_id": lead.contact_id, "text": text}
        if button_payload:
            body.update(button_payload=button_payload, button_text=button_text)
        return self.api_ok("POST", "/simulator/api/send", json=body)["message_sid"]

    def answer(self, lead: Lead, text: str = "", **kwargs: str) -> int:
        """Say something and wait until the bot's turn for it is done; returns the inbound message's id."""
        sid = self.say(lead, text, **kwargs)
        return self.wait_processed(sid)

    # -- Reading the state --

    def rows(self, sql: str, **params: Any) -> list[dict[str, Any]]:
        with self.engine.connect() as connection:
            return [
                {key: _aware(value) for key, value in row.items()}
                for row in connection.execute(sa.text(sql), params).mappings()
            ]

    def one(self, sql: str, **params: Any) -> dict[str, Any]:
        rows = self.rows(sql, **params)
        assert len(rows) == 1, rows
        return rows[0]

    def messages(self, lead: Lead, *, after: int = 0, direction: str | None = None) -> list[dict[str, Any]]:
        sql = (
            "SELECT m.* FROM messages m JOIN conversations v ON v.id = m.conversation_id "
            "WHERE v.contact_id = :contact AND m.id > :after"
        )
        if direction:
            sql += " AND m.direction = :direction"
        return self.rows(sql + " ORDER BY m.id", contact=lead.contact_id, after=after, direction=direction)

    def outbound(self, lead: Lead, *, after: int = 0) -> list[dict[str, Any]]:
        return self.messages(lead, after=after, direction="outbound")

    def wait_for_bot(self, lead: Lead, text: str | None = None, *, template: str | None = None,
                     after: int = 0) -> dict[str, Any]:
        """The first outbound message after `after` whose text contains `text` (or with that template)."""

        def found() -> dict[str, Any] | None:
            for message in self.outbound(lead, after=after):
                if template is not None and message["template_name"] == template:
                    return message
                if text is not None and text in (message["content"] or ""):
                    return message
            return None

        return wait_until(found, f"bot message {text or template!r} for {lead.first_name} after id {after}; "
                                 f"got {[m['content'] for m in self.outbound(lead, after=after)]}")

    def wait_processed(self, message_sid: str) -> int:
        def processed() -> int | None:
            rows = self.rows("SELECT id, processed_at FROM messages WHERE provider_message_id = :sid", sid=message_sid)
            return rows[0]["id"] if rows and rows[0]["processed_at"] is not None else None

        return wait_until(processed, f"the turn for inbound {message_sid}")

    def wait_for_status(self, message_id: int, status: str) -> dict[str, Any]:
        order = ["queued", "sent", "delivered", "read"]

        def reached() -> dict[str, Any] | None:
            row = self.one("SELECT * FROM messages WHERE id = :id", id=message_id)
            assert row["delivery_status"] != "failed", row
            return row if order.index(row["delivery_status"]) >= order.index(status) else None

        return wait_until(reached, f"message {message_id} {status}")

    def conversation(self, lead: Lead) -> dict[str, Any]:
        return self.one("SELECT * FROM conversations WHERE id = :id", id=lead.conversation_id)

    def tasks(self, lead: Lead) -> list[dict[str, Any]]:
        return self.rows(
            "SELECT * FROM tasks_scheduled WHERE conversation_id = :id ORDER BY run_at, id", id=lead.conversation_id
        )


@pytest.fixture(scope="module")
def driver(system: LeadbotSystem, database_url: str) -> Iterator[Driver]:
    # Not the `engine` fixture: that one truncates after each test, under a running system.
    engine = sa.create_engine(database_url, future=True)
    flows = Driver(system, engine)
    yield flows
    flows.http.close()
    engine.dispose()
