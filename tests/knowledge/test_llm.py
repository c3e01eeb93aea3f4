"""The optional LLM path against a fake OpenAI-compatible server on loopback."""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from leadbot.knowledge import HANDOVER_PHRASE, KnowledgeAssistant


class FakeOpenAI:
    def __init__(self) -> None:
        self.reply = ""
        self.status = 200
        self.requests: list[dict] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server API
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
                payload = {"choices": [{"index": 0, "message": {"role": "assistant", "content": fake.reply}}]}
                data = json.dumps(payload).encode()
                self.send_response(fake.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"


@pytest.fixture()
def fake_llm() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI()
    thread = threading.Thread(target=fake.server.serve_forever, daemon=True)
    thread.start()
    yield fake
    fake.server.shutdown()
    fake.server.server_close()


@pytest.fixture()
def llm_assistant(fake_llm, settings, assistant, embedder) -> KnowledgeAssistant:
    # The session index is already built, so this only loads it.
    llm_settings = dataclasses.replace(settings, llm_base_url=fake_llm.url, llm_model="fake-model",
                                       llm_api_key="test-key", llm_timeout_seconds=5.0)
    return KnowledgeAssistant.from_settings(llm_settings, embedder)


def test_grounded_llm_answer_is_used_and_prompted_with_the_rules_and_sources(fake_llm, llm_assistant):
    fake_llm.reply = "Der Pilot kostet einmalig 990 € netto und läuft 30 Tage 🙂"
    answer = llm_assistant.answer("Was kostet der Pilot?")
    assert (answer.escalate, answer.reason, answer.source) == (False, "answered", "pricing.md")
    assert answer.text == f"{fake_llm.reply} (Quelle: Preise – Pilot (risikofrei))"
    request = fake_llm.requests[0]
    assert request["path"] == "/v1/chat/completions" and request["auth"] == "Bearer test-key"
    system, user = request["body"]["messages"]
    assert "Nutze nur Fakten aus den Quellen" in system["content"] and "per du" in system["content"]
    assert "990 €" in user["content"] and user["content"].endswith("Frage: Was kostet der Pilot?")


def test_hallucinated_price_is_rejected_by_the_grounding_check(fake_llm, llm_assistant):
    fake_llm.reply = "Der Pilot kostet nur 490 € und ist garantiert in 3 Tagen live!"
    answer = llm_assistant.answer("Was kostet der Pilot?")
    assert (answer.escalate, answer.reason, answer.source) == (True, "ungrounded", None)
    assert HANDOVER_PHRASE in answer.text and "490" not in answer.text


def test_llm_that_does_not_know_hands_over(fake_llm, llm_assistant):
    fake_llm.reply = "UNBEKANNT"
    answer = llm_assistant.answer("Wie lange ist die Mindestlaufzeit?")
    assert (answer.escalate, answer.reason) == (True, "low_confidence")


def test_unreachable_llm_falls_back_to_the_extractive_answer(fake_llm, llm_assistant, assistant):
    fake_llm.status = 500
    question = "Wie lange ist die Mindestlaufzeit?"
    assert llm_assistant.answer(question) == assistant.answer(question)
    assert len(fake_llm.requests) == 1


def test_llm_is_not_asked_below_the_threshold(fake_llm, llm_assistant):
    assert llm_assistant.answer("Habt ihr ein Büro in Wien?").reason == "low_confidence"
    assert fake_llm.requests == []


def test_source_named_by_the_model_is_replaced_by_the_retrieved_one(fake_llm, llm_assistant):
    fake_llm.reply = "Die Mindestlaufzeit beträgt 3 Monate. (Quelle: irgendwo)"
    answer = llm_assistant.answer("Wie lange ist die Mindestlaufzeit?")
    assert answer.text == "Die Mindestlaufzeit beträgt 3 Monate. (Quelle: Rechtliches – Vertragslaufzeit)"
