"""Scheduler test fixtures: the fake Rasa server (see `helpers.FakeRasa`) and the scheduler's settings."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer

import pytest

from leadbot.config import settings
from tests.scheduler.helpers import TOKEN, FakeRasa, rasa_handler


class RasaHTTPServer(ThreadingHTTPServer):
    # Sanic's listen backlog (100), not socketserver's 5: concurrent scheduler workers would otherwise see resets
    # that the real server never gives them.
    request_queue_size = 100


@pytest.fixture
def fake_rasa() -> Iterator[FakeRasa]:
    fake = FakeRasa(url="")
    server = RasaHTTPServer(("127.0.0.1", 0), rasa_handler(fake))
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield fake
    server.shutdown()
    server.server_close()


@pytest.fixture
def scheduler_env(monkeypatch: pytest.MonkeyPatch, database_url: str) -> Iterator[None]:
    """Settings for the scheduler under test: the fake Rasa's token, quick retries."""
    monkeypatch.setenv("RASA_API_TOKEN", TOKEN)
    monkeypatch.setenv("TASK_BACKOFF_BASE_SECONDS", "10")
    monkeypatch.setenv("TASK_BACKOFF_MAX_SECONDS", "60")
    monkeypatch.setenv("TASK_MAX_ATTEMPTS", "3")
    monkeypatch.setenv("OPS_API_KEY", "test-ops-key")
    settings.cache_clear()
    yield
    monkeypatch.undo()
    settings.cache_clear()


