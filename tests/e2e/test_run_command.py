"""The README's run command brings up every process on the embedded default, and a German greeting is answered."""

from __future__ import annotations

import httpx
import pytest

from tests.e2e.harness import LeadbotSystem

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    running = LeadbotSystem(tmp_path_factory.mktemp("run")).start()
    yield running
    # Graceful shutdown: SIGTERM stops every process without a traceback.
    running.stop()
    assert "Traceback" not in running.log_tail(2000), running.log_tail()


def test_every_process_is_healthy(system):
    for name, url in system.health_urls.items():
        assert httpx.get(url, timeout=5).status_code == 200, name


def test_every_process_exports_metrics(system):
    metrics_paths = {
        "rasa": "/webhooks/whatsapp/metrics", "actions": "/metrics", "api": "/metrics",
        "scheduler": "/metrics", "sender": "/metrics",
    }
    for name, path in metrics_paths.items():
        body = httpx.get(system.url(name, path), timeout=5).text
        assert "python_info" in body or "leadbot_" in body, name


def test_german_greeting_gets_a_german_answer(system):
    reply = httpx.post(
        system.url("rasa", "/webhooks/rest/webhook"), json={"sender": "e2e-greeting", "message": "Hallo!"}, timeout=60
    ).json()
    texts = " ".join(message.get("text", "") for message in reply)
    assert texts, reply
    assert any(word in texts.lower() for word in ("hallo", "hi", "hey", "danke", "ich", "du", "dir")), texts


def test_rasa_http_api_requires_the_token(system):
    assert httpx.get(system.url("rasa", "/conversations/x/tracker"), timeout=5).status_code in (401, 403)
