"""Fixtures for the ops API: the app with an API key, Rasa's tracker database, a Rasa HTTP stand-in, Redis."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from leadbot.adapters.calendar.caldav_adapter import CalDavCalendar
from leadbot.clock import FrozenClock
from leadbot.config import settings
from leadbot.db.models import Contact, Conversation, Message
from leadbot.db.session import create_db_engine
from leadbot.services import booking, privacy
from tests.conftest import create_database, drop_database
from tests.integrations.conftest import CALDAV_PASSWORD, CALDAV_USER, radicale_url  # noqa: F401 - fixture

API_KEY = "test-ops-key-0123456789"
RASA_TOKEN = "test-rasa-token"
LOCK_REDIS_URL = "redis://127.0.0.1:6379/15"

# Rasa 3.6's SQLTrackerStore table (rasa/core/tracker_store.py, `SQLEvent`), created here as Rasa creates it.
_tracker_metadata = sa.MetaData()
rasa_events = sa.Table(
    "events",
    _tracker_metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("sender_id", sa.String(255), nullable=False, index=True),
    sa.Column("type_name", sa.String(255), nullable=False),
    sa.Column("timestamp", sa.Float),
    sa.Column("intent_name", sa.String(255)),
    sa.Column("action_name", sa.String(255)),
    sa.Column("data", sa.Text),
)


@pytest.fixture(scope="session")
def tracker_database_url() -> Iterator[str]:
    name = f"leadbot_tracker_test_{uuid.uuid4().hex[:10]}"
    url = create_database(name)
    engine = create_db_engine(url)
    _tracker_metadata.create_all(engine)
    engine.dispose()
    yield url
    privacy._tracker_engine.cache_clear()
    drop_database(name)


@pytest.fixture
def tracker_engine(tracker_database_url: str) -> Iterator[Engine]:
    engine = privacy._tracker_engine(tracker_database_url)
    yield engine
    with engine.begin() as connection:
        connection.execute(sa.text("TRUNCATE events RESTART IDENTITY"))


class RasaStandIn:
    """Loopback HTTP server answering Rasa's trigger_intent API like Rasa does, recording each call."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.status = 200
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                parts = urlsplit(self.path)
                stand_in.calls.append(
                    {
                        "path": parts.path,
                        "query": {key: values[0] for key, values in parse_qs(parts.query).items()},
                        "json": json.loads(self.rfile.read(length) or b"null"),
                    }
                )
                body = json.dumps({"tracker": {}, "messages": []}).encode()
                self.send_response(stand_in.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def rasa() -> Iterator[RasaStandIn]:
    stand_in = RasaStandIn()
    yield stand_in
    stand_in.close()


@pytest.fixture
def lock_redis() -> Iterator[Any]:
    import redis

    client = redis.Redis.from_url(LOCK_REDIS_URL)
    yield client
    for key in client.scan_iter("leadbot:lock:*"):
        client.delete(key)
    client.close()


@pytest.fixture
def api_env(
    monkeypatch: pytest.MonkeyPatch,
    engine: Engine,
    tracker_database_url: str,
    tracker_engine: Engine,
    rasa: RasaStandIn,
    lock_redis: Any,
) -> Iterator[None]:
    for name, value in {
        "OPS_API_KEY": API_KEY,
        "RASA_URL": rasa.url,
        "RASA_API_TOKEN": RASA_TOKEN,
        "RASA_TRACKER_URL": tracker_database_url,
        "RASA_LOCK_URL": LOCK_REDIS_URL,
        "REPLY_DELAY_MAX_SECONDS": "0",
        "HANDOVER_SLA_MINUTES": "15",
        "TEAM_HOURS_START": "09:00",
        "TEAM_HOURS_END": "18:00",
        "TEAM_WORKDAYS": "0,1,2,3,4",
        "TEAM_TIMEZONE": "Europe/Berlin",
    }.items():
        monkeypatch.setenv(name, value)
    settings.cache_clear()
    yield
    settings.cache_clear()


@pytest.fixture
def client(api_env: None, frozen_clock: FrozenClock) -> Iterator[TestClient]:
    from leadbot.api.app import create_app

    with TestClient(create_app(), raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def bare_client(monkeypatch: pytest.MonkeyPatch, database_url: str) -> Iterator[TestClient]:
    """The app with its API key but without per-test database cleanup: for requests that never write."""
    from leadbot.api.app import create_app

    monkeypatch.setenv("OPS_API_KEY", API_KEY)
    settings.cache_clear()
    with TestClient(create_app(), raise_server_exceptions=False) as test_client:
        yield test_client
    settings.cache_clear()


@pytest.fixture
def team_calendar(
    radicale_url: str, monkeypatch: pytest.MonkeyPatch, api_env: None  # noqa: F811 - the imported fixture
) -> Iterator[None]:
    """A fresh calendar on the real Radicale server, configured through CALDAV_* like a deployment."""
    name = f"leadbot-api-{uuid.uuid4().hex[:8]}"
    url = CalDavCalendar.create_calendar(radicale_url, CALDAV_USER, CALDAV_PASSWORD, name)
    for key, value in {
        "CALDAV_URL": radicale_url,
        "CALDAV_USERNAME": CALDAV_USER,
        "CALDAV_PASSWORD": CALDAV_PASSWORD,
        "CALDAV_CALENDAR": url,
    }.items():
        monkeypatch.setenv(key, value)
    settings.cache_clear()
    monkeypatch.setattr(booking, "_calendar", None)  # the process-wide client is built from the settings above
    yield


@pytest.fixture
def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {API_KEY}"}


def make_contact(
    session: Session,
    e164: str = "+4915112345678",
    first_name: str | None = "Mareike",
    consent_status: str = "granted",
    window_open: bool = True,
) -> tuple[Contact, Conversation]:
    """A contact with an open conversation; `window_open` puts a lead message 1 h ago (24 h window open)."""
    from leadbot.clock import now

    current = now()
    contact = Contact(
        whatsapp_e164=e164,
        first_name=first_name,
        consent_status=consent_status,
        consent_source="landingpage" if consent_status == "granted" else None,
        consent_timestamp=current - timedelta(hours=2) if consent_status == "granted" else None,
        created_at=current,
        updated_at=current,
    )
    session.add(contact)
    session.flush()
    conversation = Conversation(contact_id=contact.id, created_at=current, updated_at=current)
    session.add(conversation)
    session.flush()
    if window_open:
        inbound_at = current - timedelta(hours=1)
        session.add(
            Message(
                conversation_id=conversation.id,
                direction="inbound",
                provider_message_id=f"SM{uuid.uuid4().hex}",
                content="Hallo, ich habe Interesse",
                delivery_status="delivered",
                sender_role="human",
                created_at=inbound_at,
                processed_at=inbound_at,
            )
        )
        conversation.last_inbound_at = inbound_at
        conversation.service_window_expires_at = inbound_at + timedelta(hours=24)
    session.commit()
    return contact, conversation


def at_berlin(day: datetime, hour: int, minute: int = 0) -> datetime:
    """An aware UTC datetime for a Berlin wall-clock time on `day`'s date."""
    from datetime import timezone
    from zoneinfo import ZoneInfo

    local = datetime(day.year, day.month, day.day, hour, minute, tzinfo=ZoneInfo("Europe/Berlin"))
    return local.astimezone(timezone.utc)
