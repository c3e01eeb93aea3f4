"""Optional generated answers through an OpenAI-compatible chat completions endpoint (off by default)."""

from __future__ import annotations

import httpx

from leadbot.knowledge.index import Hit

# The model answers with this marker when the sources do not cover the question.
UNKNOWN_MARKER = "UNBEKANNT"

# Seed §12 (minimal prompting design) and §7 (RAG policy), in the language of the conversation.
SYSTEM_PROMPT = f"""Du bist der digitale Assistent eines Teams, das WhatsApp-Bots für Sales-Teams einrichtet.
Regeln:
1. Antworte präzise, freundlich und kurz: höchstens drei Sätze, per du, passend für WhatsApp.
2. Nutze nur Fakten aus den Quellen unten. Erfinde keine Zahlen, Preise, Fristen oder Zusagen.
3. Wenn die Quellen die Frage nicht sicher beantworten, antworte nur mit dem Wort {UNKNOWN_MARKER}.
4. Keine Rechts- oder Vertragsberatung über die Quellen hinaus, keine individuellen Vertragszusagen.
5. Gib dich nie als Mensch aus."""


class LLMError(RuntimeError):
    pass


class ChatClient:
    def __init__(self, base_url: str, model: str, api_key: str = "", timeout_seconds: float = 15.0) -> None:
        self._url = base_url.rstrip("/") + "/chat/completions"
        self._model = model
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._timeout = timeout_seconds

    def answer(self, question: str, hits: list[Hit]) -> str:
        sources = "\n".join(f"[{n}] {hit.chunk.label}: {hit.chunk.body}" for n, hit in enumerate(hits, start=1))
        payload = {
            "model": self._model,
            "temperature": 0,
            "messages": [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": f"Quellen:\n{sources}\n\nFrage: {question}"},
            ],
        }
        try:
            response = httpx.post(self._url, json=payload, headers=self._headers, timeout=self._timeout)
            response.raise_for_status()
            return str(response.json()["choices"][0]["message"]["content"]).strip()
        except (httpx.HTTPError, KeyError, IndexError, TypeError, ValueError) as exc:
            raise LLMError(f"LLM request failed: {exc}") from exc
