"""Issue 3 point 1 and issue 10 point 9: the signature is checked against exactly what Twilio signed."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from tests.channel.conftest import (
    INBOUND_PATH,
    STATUS_PATH,
    free_port,
    inbound_form,
    inbound_rows,
    outbound_rows,
    random_e164,
    sign,
)


def _failures(rasa, endpoint: str) -> float:
    text = rasa.client.get(rasa.base + "/webhooks/whatsapp/metrics").text
    match = re.search(
        rf'^leadbot_webhook_signature_failures_total\{{endpoint="{endpoint}"\}} ([0-9.e+]+)$', text, re.MULTILINE
    )
    return float(match.group(1)) if match else 0.0


def _nothing_persisted(db) -> bool:
    return db("SELECT (SELECT count(*) FROM messages) + (SELECT count(*) FROM contacts) AS n")[0]["n"] == 0


def test_forged_signature_is_rejected_counted_and_persists_nothing(rasa, db):
    before = _failures(rasa, "inbound")
    form = inbound_form(random_e164(), "hallo")
    forged = sign("not-the-token", rasa.public(INBOUND_PATH), form)
    answer = rasa.post_signed(INBOUND_PATH, form, signature=forged)
    assert answer.status_code == 403
    assert _failures(rasa, "inbound") == before + 1
    assert _nothing_persisted(db)


def test_missing_signature_is_rejected(rasa, db):
    answer = rasa.post_signed(INBOUND_PATH, inbound_form(random_e164(), "hallo"), signature="")
    assert answer.status_code == 403
    assert _nothing_persisted(db)


def test_tampered_body_is_rejected(rasa, db):
    form = inbound_form(random_e164(), "hallo")
    signature = sign(rasa.auth_token, rasa.public(INBOUND_PATH), form)
    answer = rasa.post_signed(INBOUND_PATH, {**form, "Body": "ja"}, signature=signature)
    assert answer.status_code == 403
    assert _nothing_persisted(db)


def test_signature_over_the_internal_url_is_rejected(rasa, db):
    """The internal host/port/scheme (http://127.0.0.1:port) is not what Twilio signed."""
    form = inbound_form(random_e164(), "hallo")
    answer = rasa.post_signed(INBOUND_PATH, form, signed_url=rasa.base + INBOUND_PATH)
    assert answer.status_code == 403
    assert _nothing_persisted(db)


def test_query_string_of_the_configured_url_is_part_of_the_signature(rasa, db, settle):
    e164 = random_e164()
    form = inbound_form(e164, "hallo")
    query = "tenant=acme&v=2"
    # Signed without the query: rejected.
    answer = rasa.post_signed(INBOUND_PATH, form, query=query, signed_url=rasa.public(INBOUND_PATH))
    assert answer.status_code == 403
    # Signed with it (what Twilio does for a webhook URL with a query string): accepted.
    answer = rasa.post_signed(INBOUND_PATH, form, query=query)
    assert answer.status_code == 200
    settle()
    assert len(inbound_rows(db, e164)) == 1
    assert [row["content"] for row in outbound_rows(db, e164)] == ["Hallo! Schön, dass du da bist."]


def test_messaging_service_webhook_is_accepted(rasa, db, settle):
    e164 = random_e164()
    form = inbound_form(e164, "hallo", MessagingServiceSid="MG" + "1" * 32, To="whatsapp:+4930123456")
    answer = rasa.post_signed(INBOUND_PATH, form)
    assert answer.status_code == 200
    settle()
    rows = inbound_rows(db, e164)
    assert len(rows) == 1
    assert rows[0]["payload_json"]["messaging_service_sid"] == "MG" + "1" * 32
    assert len(outbound_rows(db, e164)) == 1


@pytest.fixture
def proxy(rasa) -> Iterator[str]:
    """A reverse proxy on another port: the public https URL maps to Rasa's internal http port."""
    port = free_port()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            headers = {
                key: value
                for key, value in self.headers.items()
                if key.lower() not in {"host", "content-length", "connection"}
            }
            headers.update(
                {
                    "Host": "leadbot.example.test",
                    "X-Forwarded-Proto": "https",
                    "X-Forwarded-Host": "leadbot.example.test",
                    "X-Forwarded-For": "203.0.113.7",
                }
            )
            upstream = httpx.post(rasa.base + self.path, content=body, headers=headers, timeout=30)
            self.send_response(upstream.status_code)
            self.send_header("Content-Type", upstream.headers.get("content-type", "text/plain"))
            self.send_header("Content-Length", str(len(upstream.content)))
            self.end_headers()
            self.wfile.write(upstream.content)

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}"
    server.shutdown()
    server.server_close()


def test_behind_a_proxy_with_another_internal_port(rasa, db, settle, proxy):
    e164 = random_e164()
    form = inbound_form(e164, "hallo")
    answer = rasa.post_signed(INBOUND_PATH, form, base=proxy, query="src=proxy")
    assert answer.status_code == 200
    assert answer.text.endswith("<Response/>")
    # The proxy's own URL is not what Twilio signed either.
    other = inbound_form(random_e164(), "hallo")
    answer = rasa.post_signed(INBOUND_PATH, other, base=proxy, signed_url=proxy + INBOUND_PATH)
    assert answer.status_code == 403
    settle()
    assert len(inbound_rows(db, e164)) == 1
    assert len(outbound_rows(db, e164)) == 1


def test_status_callback_needs_a_signature(rasa, db):
    before = _failures(rasa, "status")
    params = {"MessageSid": "SM" + "2" * 32, "MessageStatus": "delivered"}
    answer = rasa.post_signed(STATUS_PATH, params, signature="bogus")
    assert answer.status_code == 403
    assert _failures(rasa, "status") == before + 1
