"""A recording fake of the Twilio REST API for tests: Messages create and list (2010-04-01), Content create (v1).

Faithful to what Twilio does with our requests (see `../shared/specs/twilio/`):
- HTTP basic auth `AccountSid:AuthToken`; a wrong pair answers 401 with code 20003, another account's path 404/20404.
- Messages: form-encoded body; `To` required (400/21604), `From` or `MessagingServiceSid` (400/21603), one of
  `Body`, `MediaUrl`, `ContentSid` (400/21619); `ContentVariables` must be a JSON object (400/21656); a WhatsApp
  sender needs a WhatsApp recipient (400/63007). Success: 201 with a message resource (`sid` "SM...", `status`
  "queued"). A message sent by `ContentSid` shows the content's text with the variables filled in as its `body`
  (quick replies created here, and the account's approved templates: our registry's sandbox Content SIDs).
- Messages list: `GET` with the filters `To`, `From` (exact), `DateSent` / `DateSent<` / `DateSent>` (on, on or
  before, on or after a GMT date `YYYY-MM-DD` or an ISO date-time; a message Twilio has not sent yet has no
  `date_sent` and matches none of them), `PageSize` (1-1000, default 50), `Page`/`PageToken`; newest first; the
  page shape `{"messages", "page", "page_size", "uri", "first_page_uri", "next_page_uri", ...}`. Resources show
  their current status: the status callbacks played by `deliver_status_callbacks` move it (and set `date_sent`).
- Content: JSON body with `language` and `types` (400/20001 otherwise); 201 with `sid` "HX...".
- Errors are Twilio's JSON: `{"code", "message", "more_info", "status"}`.

Every accepted request is recorded in order (`accepted`, `contents`); every Messages request, accepted or not, in
`attempts`. Failures can be scripted per call (`script(...)`) or drawn with a probability: the draw is seeded per
(recipient, body, attempt number), so it does not depend on thread interleaving and repeats across runs.
A `Fault.timeout` hangs longer than the client waits and then answers 504 without accepting: the model of a request
that is lost before Twilio processes it. A `Fault.accepted_timeout` accepts the message and then hangs past the
client's timeout before it answers 201: the answer is lost, the message is not. List requests take their own
script (`script_list(...)`) and are recorded in `lists`.

Twilio's clock (`date_created`, `date_sent`) is `leadbot.clock.now` unless given: Twilio's and our servers agree on
the time (NTP), and tests move ours with a frozen or offset clock.
"""

from __future__ import annotations

import base64
import json
import random
import re
import secrets
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from email.utils import format_datetime, parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode

from leadbot import clock

ACCOUNT_SID = "AC" + "1" * 32
AUTH_TOKEN = "fake-auth-token"
_MESSAGES_PATH = re.compile(r"^/2010-04-01/Accounts/(?P<account>[^/]+)/Messages\.json$")
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
_PLACEHOLDER = re.compile(r"\{\{(\d+)\}\}")
# Twilio's status words for the callbacks `deliver_status_callbacks` plays; `sent` and later have a date_sent.
_SENT_STATUSES = frozenset({"sent", "delivered", "read", "undelivered"})


@dataclass(frozen=True)
class Fault:
    status: int = 500
    code: int | None = None
    message: str = "Internal Server Error"
    hang_seconds: float = 0.0  # > 0: a timeout for clients that wait less
    accept: bool = False  # the message is accepted anyway (only the answer is late)

    @classmethod
    def server_error(cls, status: int = 500) -> Fault:
        # Twilio's own 5xx bodies carry 20500 / 20503.
        if status == 503:
            return cls(status=503, code=20503, message="Service Unavailable")
        return cls(status=status, code=20500, message="Internal Server Error")

    @classmethod
    def rate_limited(cls) -> Fault:
        return cls(status=429, code=20429, message="Too Many Requests")

    @classmethod
    def outside_window(cls) -> Fault:
        return cls(
            status=400,
            code=63016,
            message="Failed to send freeform message because you are outside the allowed window.",
        )

    @classmethod
    def unsubscribed(cls) -> Fault:
        return cls(status=400, code=21610, message="Attempt to send to unsubscribed recipient")

    @classmethod
    def bad_request(cls, code: int = 21211, message: str = "The 'To' number is not a valid phone number.") -> Fault:
        return cls(status=400, code=code, message=message)

    @classmethod
    def timeout(cls, hang_seconds: float = 2.0) -> Fault:
        return cls(status=504, code=20504, message="Gateway Timeout", hang_seconds=hang_seconds)

    @classmethod
    def accepted_timeout(cls, hang_seconds: float = 2.0) -> Fault:
        """Twilio accepts the message, but its 201 comes after the client gave up: the ambiguous outcome."""
        return cls(status=201, code=None, message="Created", hang_seconds=hang_seconds, accept=True)


@dataclass
class Recorded:
    path: str
    params: dict[str, Any]  # form fields (single value, or a list when repeated) or the JSON body
    sid: str | None = None
    status: int = 0
    error_code: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    called_back: bool = False
    answered_late: bool = False  # accepted, but the 201 hung past the client's timeout
    resource: dict[str, Any] | None = None  # the message resource as the list shows it now (accepted only)


def error_body(status: int, code: int | None, message: str) -> dict[str, Any]:
    return {
        "code": code or status,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code or status}",
        "status": status,
    }


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        return None  # clients that timed out reset their connections: expected, not worth a traceback


class TwilioFake:
    def __init__(
        self,
        account_sid: str = ACCOUNT_SID,
        auth_token: str = AUTH_TOKEN,
        *,
        failure_rate: float = 0.0,
        failure_faults: tuple[Fault, ...] = (Fault.server_error(500), Fault.server_error(503)),
        seed: int = 0,
        latency_seconds: float = 0.0,
        now: Callable[[], datetime] = clock.now,
        approved_contents: dict[str, str] | None = None,
    ) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.failure_rate = failure_rate
        self.failure_faults = failure_faults
        self.seed = seed
        self.latency_seconds = latency_seconds  # every Messages create takes this long (overlap in race tests)
        self.now = now
        # Content SID -> text with {{n}} placeholders: what a message sent with that content shows as its body.
        self.content_bodies = dict(approved_contents if approved_contents is not None else _approved_templates())
        self.accepted: list[Recorded] = []
        self.attempts: list[Recorded] = []
        self.contents: list[Recorded] = []
        self.lists: list[Recorded] = []
        self._script: list[Fault | None] = []
        self._list_script: list[Fault | None] = []
        self._script_for: dict[str, list[Fault | None]] = {}
        self._tries: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ------------------------------------------------------------------------------------------
    def start(self) -> TwilioFake:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out as two writes: avoid the 40 ms delayed ACK

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet test output
                return None

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                status, body = fake.handle(self.path, dict(self.headers.items()), raw)
                self._answer(status, body)

            def do_GET(self) -> None:  # noqa: N802
                status, body = fake.handle_get(self.path, dict(self.headers.items()))
                self._answer(status, body)

            def _answer(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode("utf-8")
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout): exactly what a hanging fault is for

        self._server = _QuietServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="twilio-fake", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> TwilioFake:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        assert self._server is not None, "start() the fake first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # --- scripting and inspection ---------------------------------------------------------------------------
    def script(self, *faults: Fault | None) -> None:
        """The next Messages creates answer these faults in order (None: answer normally)."""
        with self._lock:
            self._script.extend(faults)

    def script_for(self, to: str, *faults: Fault | None) -> None:
        """The next Messages creates to this recipient (E.164, with or without `whatsapp:`) answer these faults."""
        with self._lock:
            self._script_for.setdefault(to.removeprefix("whatsapp:"), []).extend(faults)

    def script_list(self, *faults: Fault | None) -> None:
        """The next Messages list requests answer these faults in order (None: answer normally)."""
        with self._lock:
            self._list_script.extend(faults)

    def deliver_status_callbacks(self, statuses: tuple[str, ...] = ("sent", "delivered")) -> list[int]:
        """Post Twilio's signed status callbacks for every accepted message not yet called back (in order).

        Real Twilio posts them on its own; here the test decides when, so the outcome is deterministic.
        """
        import httpx
        from twilio.request_validator import RequestValidator

        validator = RequestValidator(self.auth_token)
        with self._lock:
            pending = [r for r in self.accepted if not r.called_back and r.params.get("StatusCallback")]
            for record in pending:
                record.called_back = True
                self._set_status(record, statuses[-1])

        def post_all(record: Recorded) -> list[int]:
            url = str(record.params["StatusCallback"])
            answers = []
            for status in statuses:  # one message's callbacks in order; different messages in parallel
                form = {
                    "MessageSid": str(record.sid),
                    "SmsSid": str(record.sid),
                    "MessageStatus": status,
                    "SmsStatus": status,
                    "AccountSid": self.account_sid,
                    "From": str(record.params.get("From") or ""),
                    "To": str(record.params["To"]),
                    "ApiVersion": "2010-04-01",
                    "ChannelPrefix": "whatsapp",
                }
                if record.params.get("MessagingServiceSid"):
                    form["MessagingServiceSid"] = str(record.params["MessagingServiceSid"])
                signature = validator.compute_signature(url, form)
                answers.append(http.post(url, data=form, headers={"X-Twilio-Signature": signature}).status_code)
            return answers

        limits = httpx.Limits(max_connections=8)
        with httpx.Client(timeout=10.0, limits=limits) as http, ThreadPoolExecutor(8) as pool:
            codes = [code for answers in pool.map(post_all, pending) for code in answers]
        return codes

    def accepted_bodies(self, to: str | None = None) -> list[str]:
        with self._lock:
            return [
                str(r.params.get("Body") or r.params.get("ContentSid"))
                for r in self.accepted
                if to is None or r.params.get("To") in (to, f"whatsapp:{to}")
            ]

    def _set_status(self, record: Recorded, status: str) -> None:
        """What the resource shows once Twilio got that far (the caller holds the lock)."""
        assert record.resource is not None
        now = self.now()
        record.resource["status"] = status
        record.resource["date_updated"] = format_datetime(now)
        if status in _SENT_STATUSES and record.resource["date_sent"] is None:
            record.resource["date_sent"] = format_datetime(now)

    # --- the API ----------------------------------------------------------------------------------------------
    def handle(self, path: str, headers: dict[str, str], raw: bytes) -> tuple[int, dict[str, Any]]:
        path = path.split("?", 1)[0]
        match = _MESSAGES_PATH.match(path)
        if match is None and path != "/v1/Content":
            return 404, error_body(404, 20404, "The requested resource was not found")
        auth_error = self._check_auth(headers)
        if auth_error:
            return auth_error
        if match is not None:
            if match.group("account") != self.account_sid:
                return 404, error_body(404, 20404, f"The requested resource {path} was not found")
            return self._create_message(path, headers, raw)
        return self._create_content(path, headers, raw)

    def handle_get(self, target: str, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
        path, _, query = target.partition("?")
        match = _MESSAGES_PATH.match(path)
        if match is None:
            return 404, error_body(404, 20404, "The requested resource was not found")
        auth_error = self._check_auth(headers)
        if auth_error:
            return auth_error
        if match.group("account") != self.account_sid:
            return 404, error_body(404, 20404, f"The requested resource {path} was not found")
        filters = {k: v[0] for k, v in parse_qs(query, keep_blank_values=True).items()}
        record = Recorded(path=path, params=filters, headers=dict(headers))
        with self._lock:
            fault = self._list_script.pop(0) if self._list_script else None
        status, body = self._list_messages(path, filters)
        if fault is not None:
            status, body = fault.status, error_body(fault.status, fault.code, fault.message)
        record.status = status
        record.error_code = None if status == 200 else body.get("code")
        with self._lock:
            self.lists.append(record)
        if fault is not None and fault.hang_seconds:
            self._stopping.wait(fault.hang_seconds)
        return status, body

    def _list_messages(self, path: str, filters: dict[str, str]) -> tuple[int, dict[str, Any]]:
        try:
            page_size = int(filters.get("PageSize") or 50)
            page = int(filters.get("Page") or 0)
        except ValueError:
            return 400, error_body(400, 20001, "Invalid paging parameter")
        if not 1 <= page_size <= 1000 or page < 0:
            return 400, error_body(400, 20001, "PageSize must be between 1 and 1000")
        date_filters = []
        for name, compare in (("DateSent", "on"), ("DateSent<", "until"), ("DateSent>", "since")):
            if filters.get(name):
                bound = _parse_date_filter(filters[name])
                if bound is None:
                    return 400, error_body(400, 20001, f"Invalid {name} parameter")
                date_filters.append((compare, bound))
        with self._lock:
            selected = [
                dict(r.resource)
                for r in reversed(self.accepted)  # newest first: `accepted` is in creation order
                if r.resource is not None
                and (not filters.get("To") or r.resource["to"] == filters["To"])
                and (not filters.get("From") or r.resource["from"] == filters["From"])
                and all(_date_sent_matches(r.resource["date_sent"], compare, bound) for compare, bound in date_filters)
            ]
        chunk = selected[page * page_size : (page + 1) * page_size]
        kept = {k: v for k, v in filters.items() if k not in ("Page", "PageToken", "PageSize")}

        def page_uri(number: int) -> str:
            query = {**kept, "PageSize": page_size, "Page": number}
            if number > 0:
                query["PageToken"] = f"PA{secrets.token_hex(16)}"
            return f"{path}?{urlencode(query)}"

        more = len(selected) > (page + 1) * page_size
        return 200, {
            "messages": chunk,
            "page": page,
            "page_size": page_size,
            "start": page * page_size,
            "end": page * page_size + max(len(chunk) - 1, 0),
            "uri": page_uri(page),
            "first_page_uri": page_uri(0),
            "next_page_uri": page_uri(page + 1) if more else None,
            "previous_page_uri": page_uri(page - 1) if page > 0 else None,
        }

    def _check_auth(self, headers: dict[str, str]) -> tuple[int, dict[str, Any]] | None:
        value = {k.lower(): v for k, v in headers.items()}.get("authorization", "")
        expected = "Basic " + base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        if value != expected:
            return 401, error_body(401, 20003, "Authenticate")
        return None

    def _create_message(self, path: str, headers: dict[str, str], raw: bytes) -> tuple[int, dict[str, Any]]:
        content_type = {k.lower(): v for k, v in headers.items()}.get("content-type", "")
        if not content_type.startswith("application/x-www-form-urlencoded"):
            return 415, error_body(415, 20415, "Unsupported Media Type")
        fields = parse_qs(raw.decode("utf-8"), keep_blank_values=True)
        params = {k: v[0] if len(v) == 1 else v for k, v in fields.items()}
        record = Recorded(path=path, params=params, headers=dict(headers))
        status, body = self._validate_message(params)
        if self.latency_seconds:
            self._stopping.wait(self.latency_seconds)
        fault = self._next_fault(params) if status == 201 else None
        if fault is not None and not fault.accept:
            status, body = fault.status, error_body(fault.status, fault.code, fault.message)
        record.status = status
        record.error_code = None if status == 201 else body.get("code")
        record.answered_late = fault is not None and fault.accept
        with self._lock:
            self.attempts.append(record)  # recorded on arrival, also when it then hangs
            if status == 201:
                record.sid = body["sid"]
                record.resource = dict(body)
                self.accepted.append(record)
        if fault is not None and fault.hang_seconds:
            self._stopping.wait(fault.hang_seconds)
        return status, body

    def _validate_message(self, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        to, sender = str(params.get("To") or ""), str(params.get("From") or "")
        if not to:
            return 400, error_body(400, 21604, "A 'To' phone number is required.")
        if not sender and not params.get("MessagingServiceSid"):
            return 400, error_body(400, 21603, "A 'From' phone number is required.")
        if not (params.get("Body") or params.get("MediaUrl") or params.get("ContentSid")):
            return 400, error_body(400, 21619, "A text message body or media urls must be specified.")
        if sender.startswith("whatsapp:") != to.startswith("whatsapp:") and sender:
            return 400, error_body(400, 63007, "Twilio could not find a Channel with the specified From address")
        if not _E164.match(to.removeprefix("whatsapp:")):
            return 400, error_body(400, 21211, f"The 'To' number {to} is not a valid phone number.")
        if "ContentVariables" in params:
            try:
                variables = json.loads(str(params["ContentVariables"]))
            except ValueError:
                variables = None
            if not isinstance(variables, dict):
                return 400, error_body(400, 21656, "The ContentVariables Parameter is invalid.")
        if params.get("ContentSid") and not str(params["ContentSid"]).startswith("HX"):
            return 400, error_body(400, 21655, "The ContentSid is Invalid.")
        sid = "SM" + secrets.token_hex(16)
        now = format_datetime(self.now())
        uri = f"/2010-04-01/Accounts/{self.account_sid}/Messages/{sid}.json"
        return 201, {
            "account_sid": self.account_sid,
            "api_version": "2010-04-01",
            "body": self._shown_body(params),
            "date_created": now,
            "date_sent": None,
            "date_updated": now,
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": sender or None,
            "messaging_service_sid": params.get("MessagingServiceSid"),
            "num_media": "1" if params.get("MediaUrl") else "0",
            "num_segments": "1",
            "price": None,
            "price_unit": None,
            "sid": sid,
            "status": "queued",
            "subresource_uris": {"media": uri.replace(".json", "/Media.json")},
            "to": to,
            "uri": uri,
        }

    def _shown_body(self, params: dict[str, Any]) -> str:
        if not params.get("ContentSid"):
            return str(params.get("Body") or "")
        with self._lock:
            text = self.content_bodies.get(str(params["ContentSid"]), "")
        variables = json.loads(str(params.get("ContentVariables") or "{}"))
        return _PLACEHOLDER.sub(lambda m: str(variables.get(m.group(1), m.group(0))), text)

    def _next_fault(self, params: dict[str, Any]) -> Fault | None:
        key = (str(params.get("To")), str(params.get("Body") or params.get("ContentSid")))
        with self._lock:
            self._tries[key] += 1
            attempt = self._tries[key]
            per_recipient = self._script_for.get(key[0].removeprefix("whatsapp:"))
            if per_recipient:
                return per_recipient.pop(0)
            if self._script:
                return self._script.pop(0)
        if self.failure_rate <= 0:
            return None
        draw = random.Random(f"{self.seed}:{key[0]}:{key[1]}:{attempt}")
        if draw.random() < self.failure_rate:
            return draw.choice(self.failure_faults)
        return None

    def _create_content(self, path: str, headers: dict[str, str], raw: bytes) -> tuple[int, dict[str, Any]]:
        try:
            payload = json.loads(raw.decode("utf-8") or "null")
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            return 400, error_body(400, 20001, "Invalid JSON body")
        for required in ("language", "types"):
            if not payload.get(required):
                return 400, error_body(400, 20001, f"Missing required parameter {required} in the post body")
        quick_reply = payload["types"].get("twilio/quick-reply")
        if quick_reply is not None and (not quick_reply.get("body") or not quick_reply.get("actions")):
            return 400, error_body(400, 20001, "twilio/quick-reply needs body and actions")
        sid = "HX" + secrets.token_hex(16)
        record = Recorded(path=path, params=payload, sid=sid, status=201, headers=dict(headers))
        shown = next((t.get("body") for t in payload["types"].values() if isinstance(t, dict) and t.get("body")), "")
        with self._lock:
            self.contents.append(record)
            self.content_bodies[sid] = str(shown)
        now = self.now().astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        return 201, {
            "sid": sid,
            "account_sid": self.account_sid,
            "friendly_name": payload.get("friendly_name") or "",
            "language": payload["language"],
            "variables": payload.get("variables") or {},
            "types": payload["types"],
            "url": f"https://content.twilio.com/v1/Content/{sid}",
            "date_created": now,
            "date_updated": now,
            "links": {},
        }


def _approved_templates() -> dict[str, str]:
    """The account's approved WhatsApp templates: the registry's sandbox Content SIDs and their texts."""
    from leadbot.domain.templates import load_registry

    return {t.content_sid: t.body for t in load_registry("sandbox").values() if t.content_sid}


def _parse_date_filter(raw: str) -> date | datetime | None:
    """`YYYY-MM-DD` (a GMT day) or an ISO date-time (the twilio SDK sends `2026-11-25T09:00:00Z`)."""
    try:
        if len(raw) == 10:
            return date.fromisoformat(raw)
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _date_sent_matches(date_sent: str | None, compare: str, bound: date | datetime) -> bool:
    if date_sent is None:
        return False  # not sent yet: no sent date to filter on
    moment = parsedate_to_datetime(date_sent)
    # A day filter compares days (GMT); a date-time filter compares instants.
    sent, limit = (moment, bound) if isinstance(bound, datetime) else (moment.date(), bound)
    if compare == "on":
        return sent == limit
    return sent <= limit if compare == "until" else sent >= limit
