"""Generic signed-webhook adapter: any CRM (or Zapier/Make/n8n) that can receive a JSON POST.

Every CRM write is one `POST {CRM_WEBHOOK_URL}` with a JSON body:

    {"id": "crm-outbox-17", "event": "lead_upsert|activity|handover|delete_contact",
     "sent_at": "<ISO UTC>", "contact": {...}, "data": {...}}

and three headers:

    X-Leadbot-Delivery:  crm-outbox-17             (stable across retries: deduplicate on it)
    X-Leadbot-Timestamp: 1795683600                (Unix seconds when this attempt was signed)
    X-Leadbot-Signature: v1=<hex HMAC-SHA256(CRM_WEBHOOK_SECRET, "<timestamp>." + raw body bytes)>

Verifying on the receiving side (see `verify_signature`, usable as-is from Python):
1. Take the raw request body bytes, before any JSON parsing.
2. Compute HMAC-SHA256 with the shared secret over `timestamp + "." + body` and compare it with the hex digest
   after `v1=` using a constant-time comparison.
3. Reject the request when the timestamp is more than 5 minutes away from your clock (replay protection), and
   ignore a delivery id you already processed (retries after a lost response resend the same id).
Answer any 2xx to acknowledge. For `lead_upsert` you may answer `{"crm_id": "<your id>"}`: leadbot stores it and
sends it back as `contact.crm_id` in later events and in `delete_contact`, which carries no personal data: only
`contact_id`, `crm_id` and, when no CRM id is known, `phone_sha256` (hex SHA-256 of the E.164 number).
Non-2xx answers are retried with backoff; other 4xx than 401/403/408/425/429 go to the dead letters at once.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from dataclasses import asdict
from datetime import datetime, timezone
from typing import Any

import httpx

from leadbot.adapters.crm.port import CrmActivity, CrmContact, CrmError, CrmResult, CrmTask, retryable_status

SIGNATURE_HEADER = "X-Leadbot-Signature"
TIMESTAMP_HEADER = "X-Leadbot-Timestamp"
DELIVERY_HEADER = "X-Leadbot-Delivery"
TOLERANCE_SECONDS = 300


def sign(secret: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"v1={digest}"


def verify_signature(
    secret: str, body: bytes, timestamp: str, signature: str, *, now: float | None = None,
    tolerance: int = TOLERANCE_SECONDS,
) -> bool:
    """The receiver's check: a valid HMAC over timestamp and raw body, and a timestamp within the tolerance."""
    try:
        stamp = int(timestamp)
    except (TypeError, ValueError):
        return False
    current = time.time() if now is None else now
    if abs(current - stamp) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, stamp, body), signature or "")


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat()


class WebhookCrm:
    name = "webhook"

    def __init__(
        self, url: str, secret: str, timeout: float = 10.0, client: httpx.Client | None = None,
        clock: Any = time.time,
    ) -> None:
        if not url or not secret:
            raise ValueError("CRM_WEBHOOK_URL and CRM_WEBHOOK_SECRET are required for CRM_ADAPTER=webhook")
        self.url = url
        self.secret = secret
        self._client = client or httpx.Client(timeout=timeout)
        # Wall-clock seconds for the signature: receivers compare against their real clock, not our test clock.
        self._clock = clock

    def _post(self, key: str, event: str, contact: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        stamp = int(self._clock())
        payload = {
            "id": key,
            "event": event,
            "sent_at": datetime.fromtimestamp(stamp, timezone.utc).isoformat(),
            "contact": contact,
            "data": data,
        }
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode()
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            DELIVERY_HEADER: key,
            TIMESTAMP_HEADER: str(stamp),
            SIGNATURE_HEADER: sign(self.secret, stamp, body),
        }
        try:
            response = self._client.post(self.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise CrmError(f"webhook unreachable: {type(exc).__name__}", retryable=True) from exc
        if response.status_code >= 300:
            raise CrmError(
                f"webhook answered {response.status_code}: {response.text[:200]}",
                retryable=retryable_status(response.status_code),
                status=response.status_code,
            )
        try:
            answer = response.json() if response.content else {}
        except ValueError:
            answer = {}
        return answer if isinstance(answer, dict) else {}

    @staticmethod
    def _contact(contact: CrmContact) -> dict[str, Any]:
        return asdict(contact)

    def upsert_contact(self, contact: CrmContact, *, key: str) -> CrmResult:
        answer = self._post(key, "lead_upsert", self._contact(contact), dict(contact.extra))
        crm_id = answer.get("crm_id")
        return CrmResult(crm_contact_id=str(crm_id) if crm_id else contact.crm_id)

    def add_activity(self, contact: CrmContact, activity: CrmActivity, *, key: str) -> CrmResult:
        data = {**activity.data, "type": activity.type, "text": activity.text}
        data["occurred_at"] = _iso(activity.occurred_at)
        self._post(key, "activity", self._contact(contact), data)
        return CrmResult(crm_contact_id=contact.crm_id)

    def create_handover_task(self, contact: CrmContact, task: CrmTask, *, key: str) -> CrmResult:
        data = {"subject": task.subject, "text": task.text, "due_at": _iso(task.due_at), "reason": task.reason}
        self._post(key, "handover", self._contact(contact), data)
        return CrmResult(crm_contact_id=contact.crm_id)

    def delete_contact(
        self, contact_id: int, crm_id: str | None, *, key: str, phone_sha256: str | None = None
    ) -> CrmResult:
        reference = {"contact_id": contact_id, "crm_id": crm_id, "phone_sha256": phone_sha256}
        self._post(key, "delete_contact", reference, {})
        return CrmResult()
