"""A local server faithful to the parts of HubSpot's CRM v3 API that leadbot uses, for tests.

Endpoints (paths and payload shapes as HubSpot documents them):
- `POST /crm/v3/objects/contacts/search`: `filterGroups` (OR) of `filters` (AND) with `EQ`/`NEQ`/`HAS_PROPERTY`,
  `properties`, `sorts`, `limit`; answers `{"total", "results": [SimplePublicObject]}`.
- `POST /crm/v3/objects/contacts` (201), `PATCH /crm/v3/objects/contacts/{id}` (200, 404 when unknown),
  `GET /crm/v3/objects/contacts/{id}`, `DELETE /crm/v3/objects/contacts/{id}` (204; archives the record).
- `POST /crm/v3/objects/notes`, `POST /crm/v3/objects/tasks` (201) with `associations`
  `[{"to": {"id"}, "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 202|204}]}]`.
- A SimplePublicObject: `{"id", "properties": {..., "hs_object_id", "createdate", "lastmodifieddate"},
  "createdAt", "updatedAt", "archived": false}`.

Behaviour HubSpot has and the adapter must cope with:
- `Authorization: Bearer <token>`; otherwise 401 `INVALID_AUTHENTICATION`.
- Only existing properties may be written (400 `VALIDATION_ERROR`, error code `PROPERTY_DOESNT_EXIST`);
  `hs_lead_status` and `lifecyclestage` accept only their enumeration options (`INVALID_OPTION`).
- `email` is unique: a create with a taken e-mail is 409 `CONFLICT` "Contact already exists. Existing ID: <id>".
- `hs_timestamp` is required on notes and tasks; associations must point at an existing contact.
- Errors: `{"status": "error", "message", "correlationId", "category"}` (+ `errors` for validation); 429 as
  `{"status": "error", "message": "You have reached your secondly limit.", "errorType": "RATE_LIMIT", ...}`.

Scripting: `outage(status)` makes every request fail (before processing) until `recover()`; `fail_next(n, status)`
fails the next n requests; `lose_responses(n)` processes the next n writes and then answers 502, the model of a
response lost on the way back. Every request is recorded in `requests`.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TOKEN = "pat-eu1-fake-token"
CONTACT_PROPERTIES = {
    "email", "firstname", "lastname", "phone", "mobilephone", "hs_lead_status", "lifecyclestage", "company",
    "hubspot_owner_id", "hs_whatsapp_phone_number",
}
LEAD_STATUS_OPTIONS = {
    "NEW", "OPEN", "IN_PROGRESS", "OPEN_DEAL", "UNQUALIFIED", "ATTEMPTED_TO_CONTACT", "CONNECTED", "BAD_TIMING",
}
LIFECYCLE_OPTIONS = {
    "subscriber", "lead", "marketingqualifiedlead", "salesqualifiedlead", "opportunity", "customer", "evangelist",
    "other",
}
ENUMERATIONS = {"hs_lead_status": LEAD_STATUS_OPTIONS, "lifecyclestage": LIFECYCLE_OPTIONS}
NOTE_PROPERTIES = {"hs_timestamp", "hs_note_body", "hubspot_owner_id", "hs_attachment_ids"}
TASK_PROPERTIES = {
    "hs_timestamp", "hs_task_body", "hs_task_subject", "hs_task_status", "hs_task_priority", "hs_task_type",
    "hubspot_owner_id",
}
ASSOCIATION_TYPES = {"notes": 202, "tasks": 204}
_OBJECT = re.compile(r"^/crm/v3/objects/(?P<kind>contacts|notes|tasks)(?:/(?P<id>[^/?]+))?$")


def _now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class HubSpotError(Exception):
    def __init__(self, status: int, category: str, message: str, errors: list[dict[str, Any]] | None = None):
        super().__init__(message)
        self.status, self.category, self.message, self.errors = status, category, message, errors

    def body(self) -> dict[str, Any]:
        if self.status == 429:
            return {
                "status": "error",
                "message": self.message,
                "errorType": "RATE_LIMIT",
                "correlationId": str(uuid.uuid4()),
                "policyName": "SECONDLY",
                "groupName": "publicapi",
            }
        body: dict[str, Any] = {
            "status": "error",
            "message": self.message,
            "correlationId": str(uuid.uuid4()),
            "category": self.category,
        }
        if self.errors:
            body["errors"] = self.errors
        return body


class HubSpotFake:
    def __init__(self, token: str = TOKEN) -> None:
        self.token = token
        self.lock = threading.Lock()
        self.objects: dict[str, dict[str, dict[str, Any]]] = {"contacts": {}, "notes": {}, "tasks": {}}
        self.associations: dict[str, list[tuple[str, int]]] = {}  # engagement id -> [(contact id, type id)]
        self.archived: set[str] = set()
        self.requests: list[tuple[str, str, Any]] = []
        self._next_id = 1001
        self._outage: int | None = None
        self._fail_next: list[int] = []
        self._lose = 0
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    # --- lifecycle and scripting ----------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> HubSpotFake:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def outage(self, status: int = 503) -> None:
        with self.lock:
            self._outage = status

    def recover(self) -> None:
        with self.lock:
            self._outage = None

    def fail_next(self, count: int, status: int = 503) -> None:
        with self.lock:
            self._fail_next.extend([status] * count)

    def lose_responses(self, count: int) -> None:
        with self.lock:
            self._lose += count

    # --- views for assertions -------------------------------------------------------------------------------
    def contacts(self) -> list[dict[str, Any]]:
        return [c for i, c in self.objects["contacts"].items() if i not in self.archived]

    def engagements(self, kind: str, contact_id: str) -> list[dict[str, Any]]:
        return [
            obj for obj_id, obj in self.objects[kind].items()
            if any(target == contact_id for target, _ in self.associations.get(obj_id, []))
        ]

    # --- the API ---------------------------------------------------------------------------------------------
    def _new_id(self) -> str:
        self._next_id += 1
        return str(self._next_id)

    def _validate(self, kind: str, properties: Any) -> dict[str, str]:
        if not isinstance(properties, dict):
            raise HubSpotError(400, "VALIDATION_ERROR", "Invalid input JSON: properties must be an object")
        allowed = {"contacts": CONTACT_PROPERTIES, "notes": NOTE_PROPERTIES, "tasks": TASK_PROPERTIES}[kind]
        errors = []
        for name, value in properties.items():
            if name not in allowed:
                errors.append({"message": f'Property "{name}" does not exist', "code": "PROPERTY_DOESNT_EXIST",
                               "context": {"propertyName": [name]}})
            elif value not in ENUMERATIONS.get(name, {value}):
                errors.append({"message": f"{value} was not one of the allowed options", "code": "INVALID_OPTION",
                               "context": {"propertyName": [name]}})
        if errors:
            raise HubSpotError(400, "VALIDATION_ERROR", f"Property values were not valid: {json.dumps(errors)}", errors)
        return {k: "" if v is None else str(v) for k, v in properties.items()}

    def _object(self, kind: str, properties: dict[str, str]) -> dict[str, Any]:
        obj_id, stamp = self._new_id(), _now_iso()
        props = {**properties, "hs_object_id": obj_id, "createdate": stamp, "lastmodifieddate": stamp}
        obj = {"id": obj_id, "properties": props, "createdAt": stamp, "updatedAt": stamp, "archived": False}
        self.objects[kind][obj_id] = obj
        return obj

    def _live_contact(self, contact_id: str) -> dict[str, Any]:
        contact = self.objects["contacts"].get(contact_id)
        if contact is None or contact_id in self.archived:
            raise HubSpotError(404, "OBJECT_NOT_FOUND", "resource not found")
        return contact

    def handle(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        if method == "POST" and path == "/crm/v3/objects/contacts/search":
            return 200, self._search(body or {})
        match = _OBJECT.match(path)
        if not match:
            raise HubSpotError(404, "OBJECT_NOT_FOUND", f"Unable to route {method} request for {path}")
        kind, obj_id = match.group("kind"), match.group("id")
        if method == "POST" and obj_id is None:
            properties = self._validate(kind, (body or {}).get("properties"))
            if kind == "contacts":
                email = properties.get("email")
                for existing in self.contacts():
                    if email and existing["properties"].get("email") == email:
                        raise HubSpotError(409, "CONFLICT", f"Contact already exists. Existing ID: {existing['id']}")
                return 201, self._object(kind, properties)
            if not properties.get("hs_timestamp"):
                raise HubSpotError(400, "VALIDATION_ERROR", "Property values were not valid: hs_timestamp required",
                                   [{"message": "hs_timestamp is required", "code": "REQUIRED_FIELD"}])
            links = []
            for association in (body or {}).get("associations") or []:
                target = str((association.get("to") or {}).get("id"))
                for kind_type in association.get("types") or []:
                    if kind_type.get("associationTypeId") != ASSOCIATION_TYPES[kind]:
                        raise HubSpotError(400, "VALIDATION_ERROR", "One or more association types are invalid")
                    self._live_contact(target)
                    links.append((target, kind_type["associationTypeId"]))
            obj = self._object(kind, properties)
            self.associations[obj["id"]] = links
            return 201, obj
        if obj_id is None:
            raise HubSpotError(405, "VALIDATION_ERROR", "Method not allowed")
        if method == "GET":
            return 200, self._live_contact(obj_id) if kind == "contacts" else self.objects[kind][obj_id]
        if method == "PATCH" and kind == "contacts":
            contact = self._live_contact(obj_id)
            properties = self._validate(kind, (body or {}).get("properties"))
            contact["properties"].update(properties)
            contact["updatedAt"] = contact["properties"]["lastmodifieddate"] = _now_iso()
            return 200, contact
        if method == "DELETE" and kind == "contacts":
            if obj_id in self.objects["contacts"]:
                self.archived.add(obj_id)
            return 204, None
        raise HubSpotError(405, "VALIDATION_ERROR", "Method not allowed")

    def _search(self, body: dict[str, Any]) -> dict[str, Any]:
        def matches(contact: dict[str, Any], flt: dict[str, Any]) -> bool:
            value = contact["properties"].get(flt.get("propertyName"))
            operator = flt.get("operator")
            if operator == "EQ":
                return value is not None and str(value).lower() == str(flt.get("value")).lower()
            if operator == "NEQ":
                return value is None or str(value).lower() != str(flt.get("value")).lower()
            if operator == "HAS_PROPERTY":
                return bool(value)
            raise HubSpotError(400, "VALIDATION_ERROR", f"Unsupported operator {operator}")

        groups = body.get("filterGroups") or []
        found = [
            c for c in self.contacts()
            if not groups or any(all(matches(c, f) for f in g.get("filters") or []) for g in groups)
        ]
        found.sort(key=lambda c: int(c["id"]))
        wanted = body.get("properties") or ["firstname", "lastname", "email"]
        limit = int(body.get("limit") or 10)
        results = [
            {**c, "properties": {k: c["properties"].get(k) for k in [*wanted, "hs_object_id", "createdate",
                                                                      "lastmodifieddate"]}}
            for c in found[:limit]
        ]
        return {"total": len(found), "results": results}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return

            def _dispatch(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = None
                with fake.lock:
                    fake.requests.append((self.command, self.path, body))
                    try:
                        status, answer = fake._route(self.command, self.path, self.headers.get("Authorization"), body)
                    except HubSpotError as exc:
                        status, answer = exc.status, exc.body()
                payload = b"" if answer is None else json.dumps(answer).encode()
                self.send_response(status)
                if status == 429:
                    self.send_header("Retry-After", "1")
                if payload:
                    self.send_header("Content-Type", "application/json;charset=utf-8")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PATCH = do_DELETE = _dispatch

        return Handler

    def _route(self, method: str, path: str, auth: str | None, body: Any) -> tuple[int, Any]:
        if auth != f"Bearer {self.token}":
            raise HubSpotError(
                401,
                "INVALID_AUTHENTICATION",
                "Authentication credentials not found. This API supports OAuth 2.0 authentication and you can find "
                "more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview",
            )
        failure = self._outage or (self._fail_next.pop(0) if self._fail_next else None)
        if failure == 429:
            raise HubSpotError(429, "RATE_LIMITS", "You have reached your secondly limit.")
        if failure:
            raise HubSpotError(failure, "INTERNAL_ERROR" if failure < 503 else "SERVICE_UNAVAILABLE",
                               "internal error" if failure < 503 else "Service Unavailable")
        status, answer = self.handle(method, path.split("?", 1)[0], body)
        if self._lose and method != "GET" and not path.endswith("/search"):
            self._lose -= 1
            raise HubSpotError(502, "INTERNAL_ERROR", "Bad Gateway")
        return status, answer
