"""Fixtures for the WhatsApp channel tests: they drive REAL Rasa servers over HTTP with signed Twilio requests.

- `bot_model`: a tiny model trained from `tests/channel/bot/` (keyword NLU + rules, seconds to train), cached in
  `var/test-models/` by a hash of the fixture files.
- `tracker_db_url`: Rasa's own tracker database (separate from ours), created for this run.
- `action_server`: a fake Rasa action server (the webhook protocol) whose `action_slow` takes a while and which
  records every call, so tests can see whether two turns of one lead ever overlapped.
- `rasa`: the Rasa server with our channel (`rasa run --enable-api`), on the test database and Redis.
- `rasa_replica`: a second Rasa process on the same databases and Redis (multi-replica ordering), which has no
  TWILIO_AUTH_TOKEN and so validates with the sandbox token.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
import sqlalchemy as sa
from twilio.request_validator import RequestValidator

from tests.conftest import create_database, drop_database

ROOT = Path(__file__).resolve().parents[2]
BOT_DIR = Path(__file__).resolve().parent / "bot"
RASA_BIN = ROOT / ".venv-rasa" / "bin" / "rasa"
MODEL_CACHE = ROOT / "var" / "test-models"
LOG_DIR = ROOT / "var" / "test-logs"
ENDPOINTS = Path(__file__).resolve().parent / "endpoints.yml"

PUBLIC_BASE_URL = "https://leadbot.example.test"
AUTH_TOKEN = "channel-test-auth-token"
SANDBOX_TOKEN = "leadbot-sandbox"
RASA_API_TOKEN = "channel-test-rasa-token"
REDIS_TEST_DB = int(os.environ.get("LEADBOT_TEST_REDIS_DB", "11"))
REDIS_BASE = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379")
INBOUND_PATH = "/webhooks/whatsapp/inbound"
STATUS_PATH = "/webhooks/whatsapp/status"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def random_e164() -> str:
    """A valid German mobile number that no other test uses."""
    return f"+49151{random.randint(10_000_000, 99_999_999)}"


def sign(token: str, url: str, params: dict[str, str]) -> str:
    return RequestValidator(token).compute_signature(url, params)


# --- The tiny model ---------------------------------------------------------------------------------------------


def _fixture_hash() -> str:
    digest = hashlib.sha256()
    for path in sorted(BOT_DIR.rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(BOT_DIR)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def train_bot_model() -> Path:
    """The tiny channel-test model, trained once per content of `tests/channel/bot/` (cached)."""
    name = f"channel-{_fixture_hash()}"
    model = MODEL_CACHE / f"{name}.tar.gz"
    if model.exists():
        return model
    MODEL_CACHE.mkdir(parents=True, exist_ok=True)
    out = MODEL_CACHE / f"tmp-{uuid.uuid4().hex[:8]}"
    subprocess.run(
        [
            str(RASA_BIN),
            "train",
            "--domain",
            str(BOT_DIR / "domain.yml"),
            "--data",
            str(BOT_DIR / "data"),
            "--config",
            str(BOT_DIR / "config.yml"),
            "--fixed-model-name",
            name,
            "--out",
            str(out),
        ],
        cwd=ROOT,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=600,
    )
    os.replace(out / f"{name}.tar.gz", model)
    shutil.rmtree(out, ignore_errors=True)
    return model


@pytest.fixture(scope="session")
def bot_model() -> Path:
    return train_bot_model()


# --- Rasa's tracker database and Redis ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tracker_db_url() -> Iterator[str]:
    name = f"leadbot_rasa_tracker_{uuid.uuid4().hex[:10]}"
    url = create_database(name)
    yield url
    drop_database(name)


@pytest.fixture(scope="session")
def redis_url() -> str:
    import redis

    url = f"{REDIS_BASE}/{REDIS_TEST_DB}"
    redis.Redis.from_url(url).flushdb()
    return url


# --- A fake action server ----------------------------------------------------------------------------------------


@dataclass
class ActionCall:
    sender_id: str
    text: str
    started: float
    ended: float = 0.0


@dataclass
class FakeActionServer:
    url: str
    delay_seconds: float = 1.5
    calls: list[ActionCall] = field(default_factory=list)
    in_flight: dict[str, int] = field(default_factory=dict)
    max_in_flight: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def for_sender(self, sender_id: str) -> list[ActionCall]:
        with self.lock:
            return [call for call in self.calls if call.sender_id == sender_id]


@pytest.fixture(scope="session")
def action_server() -> Iterator[FakeActionServer]:
    port = free_port()
    state = FakeActionServer(url=f"http://127.0.0.1:{port}/webhook")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:  # noqa: N802 - http.server API
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            sender = body.get("sender_id", "")
            text = ((body.get("tracker") or {}).get("latest_message") or {}).get("text", "")
            call = ActionCall(sender_id=sender, text=text, started=time.monotonic())
            with state.lock:
                state.calls.append(call)
                state.in_flight[sender] = state.in_flight.get(sender, 0) + 1
                state.max_in_flight[sender] = max(state.max_in_flight.get(sender, 0), state.in_flight[sender])
            time.sleep(state.delay_seconds)
            with state.lock:
                state.in_flight[sender] -= 1
                call.ended = time.monotonic()
            answer = json.dumps({"events": [], "responses": [{"text": f"Langsame Antwort auf: {text}"}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


# --- Rasa servers -------------------------------------------------------------------------------------------------


@dataclass
class RasaServer:
    """A running `rasa run` with our channel, plus helpers to send it signed Twilio webhooks."""

    name: str
    port: int
    auth_token: str
    public_base_url: str
    process: subprocess.Popen | None = None
    log_path: Path | None = None
    client: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=30))

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def public(self, path: str, query: str = "") -> str:
        return self.public_base_url + path + (f"?{query}" if query else "")

    def post_signed(
        self,
        path: str,
        params: dict[str, str],
        *,
        query: str = "",
        signed_url: str | None = None,
        token: str | None = None,
        signature: str | None = None,
        base: str | None = None,
    ) -> httpx.Response:
        url_signed = signed_url or self.public(path, query)
        header = signature if signature is not None else sign(token or self.auth_token, url_signed, params)
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        if header:
            headers["X-Twilio-Signature"] = header
        target = (base or self.base) + path + (f"?{query}" if query else "")
        return self.client.post(target, content=urlencode(params), headers=headers)

    def inbound(self, e164: str, body: str | None, *, sid: str | None = None, **extra: str) -> httpx.Response:
        return self.post_signed(INBOUND_PATH, inbound_form(e164, body, sid=sid, **extra))

    def status(self, sid: str, status: str, **extra: str) -> httpx.Response:
        params = {
            "MessageSid": sid,
            "SmsSid": sid,
            "MessageStatus": status,
            "SmsStatus": status,
            "AccountSid": "AC" + "0" * 32,
            **extra,
        }
        return self.post_signed(STATUS_PATH, params)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.client.close()


def inbound_form(e164: str, body: str | None, *, sid: str | None = None, **extra: str) -> dict[str, str]:
    params = {
        "MessageSid": sid or "SM" + uuid.uuid4().hex,
        "SmsMessageSid": sid or "",
        "AccountSid": "AC" + "0" * 32,
        "From": f"whatsapp:{e164}",
        "To": "whatsapp:+14155238886",
        "NumMedia": "0",
        "NumSegments": "1",
        "ProfileName": "Erika",
        "WaId": e164.lstrip("+"),
        "SmsStatus": "received",
        "ApiVersion": "2010-04-01",
    }
    params["SmsMessageSid"] = params["MessageSid"]
    if body is not None:
        params["Body"] = body
    params.update(extra)
    return params


def start_rasa(
    name: str,
    *,
    model: Path,
    database_url: str,
    tracker_url: str,
    redis_url: str,
    action_url: str,
    auth_token: str | None,
    extra_env: dict[str, str] | None = None,
    credentials: Path | None = None,
) -> RasaServer:
    port = free_port()
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log_path = LOG_DIR / f"rasa-{name}-{port}.log"
    env = {key: value for key, value in os.environ.items() if not key.startswith(("TWILIO_", "RASA_", "LEADBOT_"))}
    env.update(
        {
            "DATABASE_URL": database_url,
            "RASA_TRACKER_URL": tracker_url,
            "RASA_LOCK_URL": redis_url,
            "ACTION_ENDPOINT_URL": action_url,
            "PUBLIC_BASE_URL": PUBLIC_BASE_URL,
            "REPLY_DELAY_MIN_SECONDS": "0",
            "REPLY_DELAY_MAX_SECONDS": "0",
            "INBOUND_REORDER_WINDOW_MS": "300",
            "INBOUND_SWEEP_SECONDS": "3600",
            "SQLALCHEMY_SILENCE_UBER_WARNING": "1",
            "PYTHONUNBUFFERED": "1",
            "RASA_TELEMETRY_ENABLED": "false",
        }
    )
    if auth_token:
        env["TWILIO_AUTH_TOKEN"] = auth_token
    env.update(extra_env or {})
    command = [
        str(RASA_BIN),
        "run",
        "--enable-api",
        "--auth-token",
        RASA_API_TOKEN,
        "-p",
        str(port),
        "--credentials",
        str(credentials or ROOT / "credentials.yml"),
        "--endpoints",
        str(ENDPOINTS),
        "-m",
        str(model),
    ]
    log = open(log_path, "wb")  # noqa: SIM115 - lives as long as the process
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    server = RasaServer(
        name=name,
        port=port,
        auth_token=auth_token or SANDBOX_TOKEN,
        public_base_url=PUBLIC_BASE_URL,
        process=process,
        log_path=log_path,
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"rasa {name} exited with {process.returncode}; see {log_path}")
        try:
            answer = server.client.get(server.base + "/webhooks/whatsapp/health", timeout=2)
            if answer.status_code == 200 and answer.json().get("model_ready"):
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    server.stop()
    raise RuntimeError(f"rasa {name} did not become ready; see {log_path}")


@pytest.fixture(scope="session")
def rasa(bot_model, database_url, tracker_db_url, redis_url, action_server) -> Iterator[RasaServer]:
    server = start_rasa(
        "main",
        model=bot_model,
        database_url=database_url,
        tracker_url=tracker_db_url,
        redis_url=redis_url,
        action_url=action_server.url,
        auth_token=AUTH_TOKEN,
    )
    yield server
    server.stop()


# --- Database helpers --------------------------------------------------------------------------------------------


@pytest.fixture
def db(engine) -> Iterator[Callable[..., list[dict[str, Any]]]]:
    """Run a query on the test database and get the rows as dicts.

    On teardown (before `engine` truncates the tables) it waits until no turn is running any more, so a turn of
    this test never writes into the next one.
    """

    def query(sql: str, **params: Any) -> list[dict[str, Any]]:
        with engine.connect() as connection:
            return [dict(row._mapping) for row in connection.execute(sa.text(sql), params)]

    yield query
    with contextlib.suppress(AssertionError):
        wait_until(lambda: _unprocessed(engine) == 0, timeout=30)
    time.sleep(0.3)


def wait_until(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


@pytest.fixture
def settle(db) -> Callable[..., None]:
    """Wait until every inbound message in the database has been processed (no turn still running)."""

    def wait(timeout: float = 30.0) -> None:
        wait_until(
            lambda: (
                db("SELECT count(*) AS n FROM messages WHERE direction='inbound' AND processed_at IS NULL")[0]["n"] == 0
            ),
            timeout=timeout,
        )

    return wait


def _unprocessed(engine) -> int:
    with engine.connect() as connection:
        return connection.execute(
            sa.text("SELECT count(*) FROM messages WHERE direction='inbound' AND processed_at IS NULL")
        ).scalar_one()


def outbound_rows(db, e164: str) -> list[dict[str, Any]]:
    return db(
        """SELECT m.* FROM messages m JOIN conversations c ON c.id = m.conversation_id
           JOIN contacts k ON k.id = c.contact_id
           WHERE k.whatsapp_e164 = :e164 AND m.direction = 'outbound' ORDER BY m.id""",
        e164=e164,
    )


def inbound_rows(db, e164: str) -> list[dict[str, Any]]:
    return db(
        """SELECT m.* FROM messages m JOIN conversations c ON c.id = m.conversation_id
           JOIN contacts k ON k.id = c.contact_id
           WHERE k.whatsapp_e164 = :e164 AND m.direction = 'inbound' ORDER BY m.id""",
        e164=e164,
    )


# --- A second replica --------------------------------------------------------------------------------------------


@dataclass
class Replica:
    server: RasaServer
    orphan_e164: str  # an inbound message left unprocessed "by a crash" before this replica started


def seed_orphan(database_url: str) -> str:
    """The state a crash between ack and turn leaves behind: a persisted, unprocessed inbound message."""
    e164 = random_e164()
    engine = sa.create_engine(database_url, future=True)
    with engine.begin() as connection:
        contact_id = connection.execute(
            sa.text(
                "INSERT INTO contacts (whatsapp_e164, first_name, timezone, language, consent_status, created_at, "
                "updated_at) VALUES (:e, 'Orphan', 'Europe/Berlin', 'de', 'unknown', now(), now()) RETURNING id"
            ),
            {"e": e164},
        ).scalar_one()
        conversation_id = connection.execute(
            sa.text(
                "INSERT INTO conversations (contact_id, status, current_state, owner, last_inbound_at, "
                "service_window_expires_at, created_at, updated_at) VALUES (:c, 'open', 'start', 'bot', "
                "(now() at time zone 'utc') - interval '1 minute', (now() at time zone 'utc') + interval '23 hours', "
                "now(), now()) RETURNING id"
            ),
            {"c": contact_id},
        ).scalar_one()
        connection.execute(
            sa.text(
                "INSERT INTO messages (conversation_id, direction, channel, provider_message_id, message_type, "
                "content, delivery_status, sender_role, is_marketing, attempts, created_at) VALUES (:c, 'inbound', "
                "'whatsapp', :sid, 'text', 'hallo', 'delivered', 'human', false, 0, "
                "(now() at time zone 'utc') - interval '1 minute')"
            ),
            {"c": conversation_id, "sid": "SM" + uuid.uuid4().hex},
        )
    engine.dispose()
    return e164


@pytest.fixture(scope="session")
def rasa_replica(rasa, bot_model, database_url, tracker_db_url, redis_url, action_server) -> Iterator[Replica]:
    """A second Rasa process on the same databases and Redis. It has no TWILIO_AUTH_TOKEN (so it validates with
    the sandbox token) and a 30-90 s reply delay. Before it starts, a crash-orphaned inbound message is seeded,
    which only its replay-on-start can pick up (the main server sweeps hourly)."""
    orphan = seed_orphan(database_url)
    server = start_rasa(
        "replica",
        model=bot_model,
        database_url=database_url,
        tracker_url=tracker_db_url,
        redis_url=redis_url,
        action_url=action_server.url,
        auth_token=None,
        extra_env={"REPLY_DELAY_MIN_SECONDS": "30", "REPLY_DELAY_MAX_SECONDS": "90"},
    )
    yield Replica(server=server, orphan_e164=orphan)
    server.stop()
