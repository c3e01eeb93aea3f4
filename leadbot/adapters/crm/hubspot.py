"""HubSpot adapter (CRM API v3, private-app access token).

- Contact upsert by phone: the stored `contacts.crm_id` first (PATCH); when unknown or gone (404), a search on
  `phone`/`mobilephone` equal to the E.164 number; only when nothing matches, a create. A retry after a lost
  response therefore finds the contact it created instead of duplicating it. HubSpot's search index lags a few
  seconds behind writes; the outbox backoff (30 s and more) is longer than that.
- Activities become notes, a handover becomes a high-priority task; both are associated with the contact
  (HubSpot-defined association types 202 note→contact and 204 task→contact). HubSpot has no idempotency keys,
  so a note whose response was lost can appear twice (at-least-once); contacts never do.
- Only standard properties are written (`phone`, `firstname`, `email`, `hs_lead_status`, `lifecyclestage`), so
  the adapter works on a fresh portal without custom properties. `lifecyclestage` and the initial lead status
  are set on create only; later upserts change `hs_lead_status` only for a qualification outcome, so a status set
  by sales is not overwritten by every message.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any

import httpx

from leadbot.adapters.crm.port import (
    CrmActivity,
    CrmContact,
    CrmError,
    CrmResult,
    CrmTask,
    retryable_status,
)

NOTE_TO_CONTACT = 202
TASK_TO_CONTACT = 204
_EXISTING_ID = re.compile(r"Existing ID:\s*(\d+)")


def hubspot_timestamp(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def lead_status(contact: CrmContact) -> str | None:
    """The qualification outcome as HubSpot's standard `hs_lead_status` (None: no outcome yet)."""
    if contact.qualified == "true":
        return "IN_PROGRESS"
    if contact.qualified == "false" or contact.conversation_status == "disqualified":
        return "UNQUALIFIED"
    return None


class HubSpotCrm:
    name = "hubspot"

    def __init__(self, base_url: str, access_token: str, timeout: float = 10.0, client: httpx.Client | None = None):
        if not access_token:
            raise ValueError("HUBSPOT_ACCESS_TOKEN is required for CRM_ADAPTER=hubspot")
        self.base_url = base_url.rstrip("/")
        self._client = client or httpx.Client(timeout=timeout)
        self._headers = {"Authorization": f"Bearer {access_token}", "Content-Type": "application/json"}

    # --- HTTP ---------------------------------------------------------------------------------------------
    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
        try:
            response = self._client.request(method, self.base_url + path, json=body, headers=self._headers)
        except httpx.HTTPError as exc:
            raise CrmError(f"HubSpot unreachable: {type(exc).__name__}", retryable=True) from exc
        return response

    @staticmethod
    def _error(response: httpx.Response) -> CrmError:
        try:
            data = response.json()
        except ValueError:
            data = {}
        message = str(data.get("message") or response.text[:200] or response.reason_phrase)
        category = data.get("category") or data.get("errorType") or ""
        correlation = data.get("correlationId") or ""
        retry_after = response.headers.get("Retry-After")
        return CrmError(
            f"HubSpot {response.status_code} {category}: {message} [correlationId {correlation}]".strip(),
            retryable=retryable_status(response.status_code),
            status=response.status_code,
            retry_after=float(retry_after) if retry_after and retry_after.replace(".", "", 1).isdigit() else None,
        )

    def _ok(self, response: httpx.Response) -> dict[str, Any]:
        if response.status_code >= 400:
            raise self._error(response)
        return response.json() if response.content else {}

    # --- contacts -----------------------------------------------------------------------------------------
    def find_by_phone(self, e164: str) -> str | None:
        body = {
            "filterGroups": [  # groups are ORed: the number may be in either field
                {"filters": [{"propertyName": prop, "operator": "EQ", "value": e164}]}
                for prop in ("phone", "mobilephone")
            ],
            "properties": ["phone", "mobilephone", "firstname"],
            "sorts": [{"propertyName": "createdate", "direction": "ASCENDING"}],
            "limit": 10,
        }
        results = self._ok(self._request("POST", "/crm/v3/objects/contacts/search", body)).get("results") or []
        # Several matches (a duplicate entered by hand): the oldest record is the one sales has been using.
        return min((r["id"] for r in results), key=int) if results else None

    def _update_properties(self, contact: CrmContact) -> dict[str, str]:
        properties = {"phone": contact.whatsapp_e164}
        if contact.first_name:
            properties["firstname"] = contact.first_name
        if contact.extra.get("email"):
            properties["email"] = str(contact.extra["email"])
        status = lead_status(contact)
        if status:
            properties["hs_lead_status"] = status
        return properties

    def _patch(self, crm_id: str, properties: dict[str, str]) -> bool:
        response = self._request("PATCH", f"/crm/v3/objects/contacts/{crm_id}", {"properties": properties})
        if response.status_code == 404:  # deleted or merged away in HubSpot: find or create it again
            return False
        self._ok(response)
        return True

    def upsert_contact(self, contact: CrmContact, *, key: str) -> CrmResult:
        properties = self._update_properties(contact)
        if contact.crm_id and self._patch(contact.crm_id, properties):
            return CrmResult(crm_contact_id=contact.crm_id, object_id=contact.crm_id)
        found = self.find_by_phone(contact.whatsapp_e164)
        if found and self._patch(found, properties):
            return CrmResult(crm_contact_id=found, object_id=found)
        create = {"lifecyclestage": "lead", "hs_lead_status": "NEW", **properties}
        response = self._request("POST", "/crm/v3/objects/contacts", {"properties": create})
        if response.status_code == 409:  # the e-mail belongs to an existing contact: update that one
            match = _EXISTING_ID.search(self._error(response).args[0])
            if match and self._patch(match.group(1), properties):
                return CrmResult(crm_contact_id=match.group(1), object_id=match.group(1))
        crm_id = str(self._ok(response)["id"])
        return CrmResult(crm_contact_id=crm_id, object_id=crm_id)

    def _contact_id(self, contact: CrmContact, key: str) -> str:
        """Activities attach to the contact; an activity delivered before its upsert creates the contact first."""
        if contact.crm_id:
            return contact.crm_id
        return self.upsert_contact(contact, key=key).crm_contact_id or ""

    def _create_engagement(self, kind: str, crm_id: str, type_id: int, properties: dict[str, str]) -> str:
        association = {"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": type_id}
        body = {"properties": properties, "associations": [{"to": {"id": crm_id}, "types": [association]}]}
        return str(self._ok(self._request("POST", f"/crm/v3/objects/{kind}", body))["id"])

    def add_activity(self, contact: CrmContact, activity: CrmActivity, *, key: str) -> CrmResult:
        crm_id = self._contact_id(contact, key)
        note_id = self._create_engagement(
            "notes",
            crm_id,
            NOTE_TO_CONTACT,
            {"hs_timestamp": hubspot_timestamp(activity.occurred_at), "hs_note_body": activity.text},
        )
        return CrmResult(crm_contact_id=crm_id, object_id=note_id)

    def create_handover_task(self, contact: CrmContact, task: CrmTask, *, key: str) -> CrmResult:
        crm_id = self._contact_id(contact, key)
        task_id = self._create_engagement(
            "tasks",
            crm_id,
            TASK_TO_CONTACT,
            {
                "hs_timestamp": hubspot_timestamp(task.due_at),
                "hs_task_subject": task.subject,
                "hs_task_body": task.text,
                "hs_task_status": "NOT_STARTED",
                "hs_task_priority": "HIGH",
                "hs_task_type": "TODO",
            },
        )
        return CrmResult(crm_contact_id=crm_id, object_id=task_id)

    def delete_contact(
        self, contact_id: int, crm_id: str | None, *, key: str, phone_sha256: str | None = None
    ) -> CrmResult:
        # Without an id the contact never reached HubSpot through us (HubSpot cannot search by a hash).
        if not crm_id:
            return CrmResult()
        response = self._request("DELETE", f"/crm/v3/objects/contacts/{crm_id}")
        if response.status_code != 404:  # 404: already gone, which is the goal
            self._ok(response)
        return CrmResult(object_id=crm_id)
