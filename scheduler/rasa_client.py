"""The scheduler's only way into the dialogue: Rasa's `trigger_intent` HTTP API.

Contract (docs/architecture.md): `POST {RASA_URL}/conversations/{sender_id}/trigger_intent?output_channel=whatsapp
&token=...` with `{"name": "EXTERNAL_<task_type>", "entities": {"task_id": "<id>"}}`. Rasa answers 200 with the
tracker; its output goes through our WhatsApp channel and thereby through the policy gate.
"""

from __future__ import annotations

from typing import Any, Protocol

import httpx

from leadbot.config import Settings, settings


class RasaError(RuntimeError):
    """The trigger did not reach a 200 from Rasa (network error, timeout, or an error status)."""

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class RasaClient(Protocol):
    def trigger_intent(self, sender_id: str, intent: str, entities: dict[str, str]) -> dict[str, Any]: ...


class HttpRasaClient:
    def __init__(
        self,
        base_url: str,
        token: str,
        timeout_seconds: float = 15.0,
        output_channel: str = "whatsapp",
        client: httpx.Client | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.output_channel = output_channel
        self._client = client or httpx.Client(timeout=timeout_seconds)

    @classmethod
    def from_settings(cls, cfg: Settings | None = None) -> HttpRasaClient:
        cfg = cfg or settings()
        return cls(cfg.rasa_url, cfg.rasa_api_token, cfg.rasa_timeout_seconds)

    def trigger_intent(self, sender_id: str, intent: str, entities: dict[str, str]) -> dict[str, Any]:
        # Sanic 21 does not decode path parameters, so only ids that need no percent-encoding are allowed.
        if not sender_id.isascii() or not sender_id.isalnum():
            raise ValueError("sender id must be ASCII letters and digits")
        params = {"output_channel": self.output_channel}
        if self.token:
            params["token"] = self.token
        try:
            response = self._client.post(
                f"{self.base_url}/conversations/{sender_id}/trigger_intent",
                params=params,
                json={"name": intent, "entities": entities},
            )
        except httpx.HTTPError as exc:
            raise RasaError(f"{type(exc).__name__}: {exc}") from exc
        if response.status_code != 200:
            raise RasaError(f"HTTP {response.status_code}: {response.text[:200]}", response.status_code)
        return response.json()

    def close(self) -> None:
        self._client.close()
