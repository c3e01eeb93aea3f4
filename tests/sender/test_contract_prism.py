"""Contract: our Twilio requests conform to Twilio's published OpenAPI specs (Prism validates them).

Prism (`tests/contract/package.json`, installed with `npm ci` there) mocks the Messages API and the Content API
from `../shared/specs/twilio/`; it answers 422 to any request that does not match the spec. Prism keeps no state,
so what was sent is asserted against the recording fake in the other tests.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pytest

from leadbot.adapters.twilio_transport import OutboundMessage, TwilioTransport
from leadbot.config import Settings

ROOT = Path(__file__).resolve().parents[2]
PRISM = ROOT / "tests" / "contract" / "node_modules" / ".bin" / "prism"
SPECS = ROOT.parent / "shared" / "specs" / "twilio"
ACCOUNT_SID = "AC" + "a" * 32
STARTUP_SECONDS = 90


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_until_listening(port: int, process: subprocess.Popen, deadline: float) -> None:
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"prism exited with {process.returncode}: {process.stdout.read()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"prism did not listen on {port} within {STARTUP_SECONDS} s")


@pytest.fixture(scope="module")
def prism() -> Iterator[dict[str, str]]:
    if shutil.which("node") is None:
        pytest.skip("node is not installed: the Prism contract tests need Node 20 (see tests/contract/package.json)")
    if not PRISM.exists():
        pytest.fail("Prism is missing: run `npm ci` in tests/contract")
    processes, urls = [], {}
    try:
        for name, spec in (("api", "twilio_api_v2010.json"), ("content", "twilio_content_v1.json")):
            port = _free_port()
            process = subprocess.Popen(
                [str(PRISM), "mock", "-h", "127.0.0.1", "-p", str(port), str(SPECS / spec)],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            processes.append((process, port))
            urls[name] = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + STARTUP_SECONDS
        for process, port in processes:  # both start in parallel
            _wait_until_listening(port, process, deadline)
        yield urls
    finally:
        for process, _port in processes:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.fixture
def prism_settings(env, prism) -> Settings:
    return env.apply(
        TWILIO_ACCOUNT_SID=ACCOUNT_SID,
        TWILIO_AUTH_TOKEN="prism-token",
        TWILIO_API_BASE_URL=prism["api"],
        TWILIO_CONTENT_API_BASE_URL=prism["content"],
        TWILIO_TIMEOUT_SECONDS="10",
        PUBLIC_BASE_URL="https://bot.example.test",
    )


def test_prism_rejects_a_request_that_breaks_the_spec(prism) -> None:
    """Guards the other tests: Prism really validates (a create without `To` is refused)."""
    response = httpx.post(
        f"{prism['api']}/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json",
        data={"From": "whatsapp:+14155238886", "Body": "Hallo"},
        auth=(ACCOUNT_SID, "prism-token"),
    )
    assert response.status_code == 422


@pytest.mark.parametrize(
    "message",
    [
        OutboundMessage(1, "+4915112345678", body="Hallo, danke für deine Anfrage"),
        OutboundMessage(2, "+4915112345678", content_sid="HX" + "b" * 32, content_variables={"1": "Max"}),
        OutboundMessage(3, "+4915112345678", body="Passt das?", buttons=(("Ja, passt", "/affirm"), ("Später", "/x"))),
        pytest.param(
            OutboundMessage(4, "+4915112345678", body="Bild", media_url="https://bot.example.test/a.png"),
            marks=pytest.mark.xfail(
                strict=True,
                reason="Prism 5.14 reads one form field `MediaUrl=...` as a string, not the spec's array; Twilio "
                "documents exactly this encoding (repeat the field per URL) and the recording fake accepts it",
            ),
        ),
    ],
    ids=["text", "template", "quick-reply", "media"],
)
def test_our_requests_conform_to_the_published_spec(prism_settings, message: OutboundMessage) -> None:
    result = TwilioTransport(prism_settings).send(message)
    assert result.error is None, result.error
    assert result.sid.startswith("SM")


def test_messaging_service_request_conforms(prism_settings, env) -> None:
    cfg = env.apply(TWILIO_MESSAGING_SERVICE_SID="MG" + "c" * 32)
    result = TwilioTransport(cfg).send(OutboundMessage(5, "+4915112345678", body="Hallo"))
    assert result.error is None, result.error


@pytest.mark.parametrize("service", ["", "MG" + "c" * 32], ids=["from", "messaging-service"])
def test_lookup_of_an_ambiguous_send_conforms(prism_settings, env, service: str) -> None:
    """The Messages list request that reconciles a timed-out send (Prism answers the spec's example page)."""
    cfg = env.apply(TWILIO_MESSAGING_SERVICE_SID=service)
    message = OutboundMessage(6, "+4915112345678", body="Hallo")
    lookup = TwilioTransport(cfg).find_accepted(message, datetime.now(timezone.utc))
    assert lookup.error is None, lookup.error
    assert lookup.matches == ()  # the example messages go to other numbers
