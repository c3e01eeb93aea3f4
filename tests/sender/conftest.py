"""Sender fixtures: the recording Twilio fake, settings pointing at it, a signed status-webhook receiver."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import pytest
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from leadbot.clock import now
from leadbot.config import Settings, settings
from leadbot.db.models import Contact, Conversation, Message
from leadbot.db.session import session_scope
from leadbot.services import outbound
from tests.fakes.twilio_fake import ACCOUNT_SID, AUTH_TOKEN, TwilioFake

STATUS_PATH = "/webhooks/whatsapp/status"


@pytest.fixture
def twilio_fake() -> Iterator[TwilioFake]:
    with TwilioFake() as fake:
        yield fake


@dataclass
class EnvSettings:
    """Sets environment variables for the sender and re-reads settings; restored at teardown."""

    saved: dict[str, str | None] = field(default_factory=dict)

    def apply(self, **values: str) -> Settings:
        for name, value in values.items():
            self.saved.setdefault(name, os.environ.get(name))
            os.environ[name] = value
        settings.cache_clear()
        return settings()

    def unset(self, *names: str) -> Settings:
        for name in names:
            self.saved.setdefault(name, os.environ.get(name))
            os.environ.pop(name, None)
        settings.cache_clear()
        return settings()

    def restore(self) -> None:
        for name, value in self.saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        settings.cache_clear()


@pytest.fixture
def env(database_url: str) -> Iterator[EnvSettings]:
    state = EnvSettings()
    yield state
    state.restore()


@dataclass
class StatusReceiver:
    """The channel's status webhook as Twilio sees it: checks the signature, applies the channel's real logic."""

    base_url: str
    token: str
    received: list[tuple[dict[str, str], bool]] = field(default_factory=list)  # (form, signature valid)


@pytest.fixture
def status_receiver(engine: Engine) -> Iterator[Callable[[str], StatusReceiver]]:
    servers: list[ThreadingHTTPServer] = []

    def start(token: str) -> StatusReceiver:
        from twilio.request_validator import RequestValidator

        from leadbot.services import inbound

        receiver = StatusReceiver(base_url="", token=token)

        class Handler(BaseHTTPRequestHandler):
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return None

            def do_POST(self) -> None:  # noqa: N802
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode("utf-8")
                form = {k: v[0] for k, v in parse_qs(raw, keep_blank_values=True).items()}
                url = receiver.base_url + self.path
                valid = RequestValidator(token).validate(url, form, self.headers.get("X-Twilio-Signature", ""))
                receiver.received.append((form, bool(valid)))
                if valid and self.path == STATUS_PATH:
                    with session_scope(engine) as session:
                        inbound.apply_status(session, form)
                self.send_response(200 if valid else 403)
                self.send_header("Content-Length", "0")
                self.end_headers()

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        receiver.base_url = f"http://127.0.0.1:{server.server_address[1]}"
        return receiver

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def twilio_settings(env: EnvSettings, twilio_fake: TwilioFake) -> Settings:
    """Real Twilio mode against the recording fake: no backoff, three attempts, short timeouts."""
    return env.apply(
        TWILIO_ACCOUNT_SID=ACCOUNT_SID,
        TWILIO_AUTH_TOKEN=AUTH_TOKEN,
        TWILIO_API_BASE_URL=twilio_fake.base_url,
        TWILIO_TIMEOUT_SECONDS="0.5",
        SEND_MAX_ATTEMPTS="3",
        SEND_BACKOFF_BASE_SECONDS="0",
        PUBLIC_BASE_URL="https://bot.example.test",
        REPLY_DELAY_MIN_SECONDS="0",
        REPLY_DELAY_MAX_SECONDS="0",
    )


_numbers = iter(range(10_000_000))


def make_conversation(
    session: Session,
    *,
    consent: str = "granted",
    window: timedelta | None = timedelta(hours=20),
    tz: str = "Europe/Berlin",
    owner: str = "bot",
) -> Conversation:
    """A contact with a fresh German mobile number and its conversation (service window open by default)."""
    e164 = f"+49151{next(_numbers):08d}"
    current = now()
    contact = Contact(whatsapp_e164=e164, first_name="Max", timezone=tz, consent_status=consent, created_at=current)
    session.add(contact)
    session.flush()
    conversation = Conversation(
        contact_id=contact.id,
        owner=owner,
        last_inbound_at=current if window else None,
        service_window_expires_at=current + window if window else None,
        created_at=current,
    )
    session.add(conversation)
    session.flush()
    return conversation


def enqueue_texts(session: Session, conversation: Conversation, *texts: str) -> list[int]:
    """Queue session texts through the one outbound path and commit; returns the message ids in order."""
    ids = [outbound.enqueue(session, conversation, text=text).message_id for text in texts]
    session.commit()
    return ids


def reload(session: Session, message_id: int) -> Message:
    """The message row as the database has it now (after another thread or process changed it)."""
    session.expire_all()
    return session.get(Message, message_id)
