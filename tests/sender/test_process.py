"""The sender process: sends, serves /health and /metrics on SENDER_PORT, and stops cleanly on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from leadbot.db.models import Message
from leadbot.services import outbound
from tests.sender.conftest import make_conversation

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _poll(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_sender_process_sends_reports_and_stops_on_sigterm(engine, session, env, database_url) -> None:
    # No quiet hours, so the test passes at any time of day with the real clock of the subprocess.
    env.apply(QUIET_HOURS_START="00:00", QUIET_HOURS_END="00:00")
    message_id = outbound.enqueue(session, make_conversation(session), text="Hallo vom Prozess").message_id
    session.commit()
    port = _free_port()
    child_env = {
        key: value for key, value in os.environ.items() if key not in ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN")
    }
    child_env.update(
        DATABASE_URL=database_url,
        SENDER_PORT=str(port),
        SENDER_POLL_SECONDS="0.1",
        SENDER_THREADS="2",
        PUBLIC_BASE_URL="http://127.0.0.1:9",  # the sandbox's callbacks fail, which must not matter
        QUIET_HOURS_START="00:00",
        QUIET_HOURS_END="00:00",
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "leadbot.sender"],
        cwd=ROOT,
        env=child_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:

        def accepted() -> bool:
            session.expire_all()
            return session.get(Message, message_id).provider_message_id is not None

        assert _poll(accepted, timeout=30), "the sender process did not send the message"

        def healthy() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200
            except httpx.HTTPError:
                return False

        assert _poll(healthy, timeout=10)
        health = httpx.get(f"http://127.0.0.1:{port}/health").json()
        assert (health["status"], health["transport"], health["threads"]) == ("ok", "sandbox", 2)
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        assert 'leadbot_send_attempts_total{outcome="accepted"} 1.0' in metrics
        assert "leadbot_outbound_queue_depth" in metrics

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
        assert "sender stopped" in process.stdout.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
