"""The CRM port: what leadbot needs from any CRM, independent of the vendor.

The outbox worker (`outbox_worker.py`) is the only caller. It turns a `crm_outbox` row into one call here;
adapters raise `CrmError` and the worker decides about retries from `retryable`.

Outbox payloads (what `leadbot.services.crm_outbox.enqueue` callers put in `payload_json`):
- `lead_upsert`: optional extra fields (e.g. `{"reason": "qualified", "email": "..."}`). The worker sends the
  contact's CURRENT state from our database (phone, first name, consent, conversation status, qualification),
  so a late retry never overwrites newer data with an old snapshot; payload keys are added as `extra`.
- `activity`: `{"type": "appointment_booked", "text": "<German note text>", "occurred_at": "<ISO>", ...}`.
- `handover`: `{"reason": "...", "text": "<what the team should do>", "due_at": "<ISO, optional>"}`.
- `delete_contact`: `{"crm_id": "<CRM id or null>", "phone_sha256": "<hex, when no CRM id is known>"}`; it
  carries no personal data because our contact row is already gone when it is delivered.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol


@dataclass(frozen=True)
class CrmContact:
    """A contact as the CRM sees it: our id, the CRM's id (if known) and the fields we sync."""

    contact_id: int
    crm_id: str | None
    whatsapp_e164: str
    first_name: str | None = None
    consent_status: str = "unknown"
    conversation_status: str | None = None
    ads_running: str | None = None
    monthly_leads_bucket: str | None = None
    qualified: str | None = None
    qualification_reason: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CrmActivity:
    type: str
    text: str
    occurred_at: datetime
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CrmTask:
    subject: str
    text: str
    due_at: datetime
    reason: str


@dataclass(frozen=True)
class CrmResult:
    """`crm_contact_id`: the CRM's id of the contact (stored in `contacts.crm_id`); `object_id`: what was created."""

    crm_contact_id: str | None = None
    object_id: str | None = None


class CrmError(Exception):
    """A failed CRM call. `retryable=False` means retrying the same request cannot succeed (bad data)."""

    def __init__(
        self, message: str, *, retryable: bool, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status
        self.retry_after = retry_after

    @property
    def code(self) -> str:
        return f"http_{self.status}" if self.status else "network"


def retryable_status(status: int) -> bool:
    """Server errors, rate limits and timeouts heal by themselves; 401/403 heal once ops fix the credentials,
    which is why they are retried (and dead-lettered after the last attempt) instead of dropped at once."""
    return status >= 500 or status in (401, 403, 408, 425, 429)


class CrmPort(Protocol):
    """Every method gets `key`, stable across retries of one outbox row (`crm-outbox-<id>`), for CRMs that can
    deduplicate deliveries (the webhook adapter sends it; HubSpot has no idempotency keys, see hubspot.py)."""

    name: str

    def upsert_contact(self, contact: CrmContact, *, key: str) -> CrmResult: ...

    def add_activity(self, contact: CrmContact, activity: CrmActivity, *, key: str) -> CrmResult: ...

    def create_handover_task(self, contact: CrmContact, task: CrmTask, *, key: str) -> CrmResult: ...

    def delete_contact(
        self, contact_id: int, crm_id: str | None, *, key: str, phone_sha256: str | None = None
    ) -> CrmResult: ...


class NoCrm:
    """`CRM_ADAPTER=none`: nothing is sent. The worker marks rows done with the note `skipped: CRM_ADAPTER=none`
    (visible in `crm_outbox.last_error`) instead of keeping them pending: a deployment without a CRM is a valid
    choice, and pending rows would pile up forever and flood a CRM configured months later with stale writes."""

    name = "none"

    def upsert_contact(self, contact: CrmContact, *, key: str) -> CrmResult:
        return CrmResult()

    def add_activity(self, contact: CrmContact, activity: CrmActivity, *, key: str) -> CrmResult:
        return CrmResult()

    def create_handover_task(self, contact: CrmContact, task: CrmTask, *, key: str) -> CrmResult:
        return CrmResult()

    def delete_contact(
        self, contact_id: int, crm_id: str | None, *, key: str, phone_sha256: str | None = None
    ) -> CrmResult:
        return CrmResult()
